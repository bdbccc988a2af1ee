// Virtual MAC mode's pure parts: MAC parsing, the ARP request parser, the reply and the
// announcement (golden bytes: the Ethernet source is the real MAC, only the ARP payload names the
// vMAC), and the macvlan netlink request.
#include "proxy/io/vmac.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>

#include <cstring>

#include "common/bytes.h"
#include <string>
#include <vector>

namespace tandem {
namespace {

const MacAddress kReal = {0x02, 0x00, 0x00, 0x00, 0x00, 0x11};
const MacAddress kVmac = {0x02, 0x54, 0x44, 0x4d, 0x00, 0x01};
const MacAddress kClient = {0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};

TEST(VmacTest, ParsesMacs) {
  EXPECT_EQ(parseMac("02:54:44:4D:00:01"), kVmac);
  EXPECT_FALSE(parseMac("02:54:44:4d:00"));
  EXPECT_FALSE(parseMac("02-54-44-4d-00-01"));
  EXPECT_FALSE(parseMac("02:54:44:4d:00:0g"));
  EXPECT_TRUE(isLocalUnicastMac(kVmac));
  EXPECT_FALSE(isLocalUnicastMac({0x00, 0x16, 0x3e, 0, 0, 1}));  // vendor assigned
  EXPECT_FALSE(isLocalUnicastMac({0x03, 0, 0, 0, 0, 1}));        // multicast
}

std::vector<uint8_t> request(uint32_t sender_ip, uint32_t target_ip) {
  std::vector<uint8_t> f = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
                            0x0f, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
                            0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                            0, 0, 0, 0};
  store32(&f[28], sender_ip);
  store32(&f[38], target_ip);
  return f;
}

TEST(VmacTest, ParsesArpRequestsOnly) {
  const auto r = parseArpRequest(request(0x0a140102, 0x0a140164));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->sender_mac, kClient);
  EXPECT_EQ(r->sender_ip, 0x0a140102u);
  EXPECT_EQ(r->target_ip, 0x0a140164u);
  std::vector<uint8_t> reply = request(1, 2);
  reply[21] = 2;  // op reply
  EXPECT_FALSE(parseArpRequest(reply));
  std::vector<uint8_t> ip = request(1, 2);
  ip[13] = 0x00;  // EtherType IPv4
  EXPECT_FALSE(parseArpRequest(ip));
  EXPECT_FALSE(parseArpRequest(std::vector<uint8_t>(30, 0)));
}

TEST(VmacTest, ReplyGoldenBytes) {
  const auto req = parseArpRequest(request(0x0a140102, 0x0a140164));
  ASSERT_TRUE(req);
  const auto f = buildVmacArpReply(kReal, kVmac, 0x0a140164, *req);
  const std::vector<uint8_t> expected = {
      0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,  // Ethernet destination: the requester
      0x02, 0x00, 0x00, 0x00, 0x00, 0x11,  // Ethernet source: the real MAC, never the vMAC
      0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
      0x00, 0x02,                          // op: reply
      0x02, 0x54, 0x44, 0x4d, 0x00, 0x01,  // sender MAC: the vMAC
      0x0a, 0x14, 0x01, 0x64,              // sender IP: the VIP
      0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,  // target: the requester
      0x0a, 0x14, 0x01, 0x02,
  };
  EXPECT_EQ(std::vector<uint8_t>(f.begin(), f.begin() + 42), expected);
}

TEST(VmacTest, AnnouncementComesFromTheRealMac) {
  const auto f = buildVmacAnnouncement(kReal, kVmac, 0x0a140164);
  EXPECT_EQ(std::vector<uint8_t>(f.begin(), f.begin() + 6), std::vector<uint8_t>(6, 0xff));
  EXPECT_EQ(std::vector<uint8_t>(f.begin() + 6, f.begin() + 12),
            std::vector<uint8_t>(kReal.begin(), kReal.end()));
  EXPECT_EQ(std::vector<uint8_t>(f.begin() + 22, f.begin() + 28),
            std::vector<uint8_t>(kVmac.begin(), kVmac.end()));
  EXPECT_EQ(load16(&f[20]), 1);               // a request (see garp.h)
  EXPECT_EQ(load32(&f[28]), 0x0a140164u);     // sender IP
  EXPECT_EQ(load32(&f[38]), 0x0a140164u);     // target IP = sender IP: gratuitous
}

struct LinkAttrs {
  std::string name;
  uint32_t link = 0;
  std::vector<uint8_t> address;
  std::string kind;
  uint32_t mode = 0;
};

int dataAttr(const nlattr* a, void* d) {
  if (mnl_attr_get_type(a) == IFLA_MACVLAN_MODE) static_cast<LinkAttrs*>(d)->mode =
      mnl_attr_get_u32(a);
  return MNL_CB_OK;
}
int infoAttr(const nlattr* a, void* d) {
  auto* l = static_cast<LinkAttrs*>(d);
  if (mnl_attr_get_type(a) == IFLA_INFO_KIND) l->kind = mnl_attr_get_str(a);
  if (mnl_attr_get_type(a) == IFLA_INFO_DATA) mnl_attr_parse_nested(a, dataAttr, d);
  return MNL_CB_OK;
}
int linkAttr(const nlattr* a, void* d) {
  auto* l = static_cast<LinkAttrs*>(d);
  switch (mnl_attr_get_type(a)) {
    case IFLA_IFNAME: l->name = mnl_attr_get_str(a); break;
    case IFLA_LINK: l->link = mnl_attr_get_u32(a); break;
    case IFLA_ADDRESS: {
      const auto* p = static_cast<const uint8_t*>(mnl_attr_get_payload(a));
      l->address.assign(p, p + mnl_attr_get_payload_len(a));
      break;
    }
    case IFLA_LINKINFO: mnl_attr_parse_nested(a, infoAttr, d); break;
    default: break;
  }
  return MNL_CB_OK;
}

TEST(VmacTest, MacvlanCreateRequest) {
  std::vector<uint8_t> buf(256);
  const size_t len = buildMacvlanCreate(buf, "tvfront", 7, kVmac, 42);
  ASSERT_GT(len, 0u);
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
  EXPECT_EQ(nlh->nlmsg_type, RTM_NEWLINK);
  EXPECT_EQ(nlh->nlmsg_flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
  EXPECT_EQ(nlh->nlmsg_seq, 42u);
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  EXPECT_EQ(ifi->ifi_flags & IFF_UP, 0u);     // created down
  EXPECT_NE(ifi->ifi_flags & IFF_NOARP, 0u);  // never answers ARP itself
  EXPECT_NE(ifi->ifi_change & (IFF_UP | IFF_NOARP), 0u);
  LinkAttrs l;
  ASSERT_EQ(mnl_attr_parse(nlh, sizeof(ifinfomsg), linkAttr, &l), MNL_CB_OK);
  EXPECT_EQ(l.name, "tvfront");
  EXPECT_EQ(l.link, 7u);
  EXPECT_EQ(l.address, std::vector<uint8_t>(kVmac.begin(), kVmac.end()));
  EXPECT_EQ(l.kind, "macvlan");
  EXPECT_EQ(l.mode, static_cast<uint32_t>(MACVLAN_MODE_PRIVATE));
  EXPECT_EQ(buildMacvlanCreate(buf, "a-name-longer-than-15", 7, kVmac, 1), 0u);
  EXPECT_EQ(MacvlanLinks::deviceName("front"), "tvfront");
  EXPECT_LE(MacvlanLinks::deviceName("a-very-long-interface").size(), 15u);
}

TEST(VmacTest, LinkUpDownRequests) {
  std::vector<uint8_t> buf(64);
  ASSERT_GT(buildLinkSetUp(buf, 9, true, 3), 0u);
  auto* ifi = static_cast<const ifinfomsg*>(
      mnl_nlmsg_get_payload(reinterpret_cast<const nlmsghdr*>(buf.data())));
  EXPECT_EQ(ifi->ifi_index, 9);
  EXPECT_EQ(ifi->ifi_flags, static_cast<unsigned>(IFF_UP));
  EXPECT_EQ(ifi->ifi_change, static_cast<unsigned>(IFF_UP));
  ASSERT_GT(buildLinkSetUp(buf, 9, false, 4), 0u);
  EXPECT_EQ(ifi->ifi_flags, 0u);
}

}  // namespace
}  // namespace tandem
