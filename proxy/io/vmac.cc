#include "proxy/io/vmac.h"

#include <net/if.h>  // before the linux/ headers, which then skip their own copy

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "common/bytes.h"
#include "proxy/io/addr_netlink.h"
#include "proxy/io/log.h"
#include "proxy/io/sysctl.h"

namespace tandem {
namespace {

constexpr MacAddress kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
constexpr size_t kNlBufSize = 8192;
constexpr int kAckTimeoutMs = 1000;

/// Ethernet + ARP header, ARP body fields filled by the callers.
uint8_t* arpFrame(std::array<uint8_t, kGarpFrameLen>& f, const MacAddress& dst,
                  const MacAddress& src, uint16_t op) noexcept {
  uint8_t* p = f.data();
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  store16(p + 12, ETH_P_ARP);
  uint8_t* a = p + 14;
  store16(a + 0, ARPHRD_ETHER);
  store16(a + 2, ETH_P_IP);
  a[4] = 6;
  a[5] = 4;
  store16(a + 6, op);
  return a;
}

}  // namespace

std::optional<MacAddress> parseMac(std::string_view text) noexcept {
  if (text.size() != 17) return std::nullopt;
  MacAddress mac{};
  for (size_t i = 0; i < 6; ++i) {
    if (i > 0 && text[i * 3 - 1] != ':') return std::nullopt;
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = text[i * 3 + k];
      unsigned d = 0;
      if (c >= '0' && c <= '9') {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        return std::nullopt;
      }
      v = v * 16 + d;
    }
    mac[i] = static_cast<uint8_t>(v);
  }
  return mac;
}

bool isLocalUnicastMac(const MacAddress& mac) noexcept {
  return (mac[0] & 0x02) != 0 && (mac[0] & 0x01) == 0;
}

std::optional<ArpRequest> parseArpRequest(std::span<const uint8_t> frame) noexcept {
  if (frame.size() < kGarpPayloadEnd) return std::nullopt;
  const uint8_t* p = frame.data();
  if (load16(p + 12) != ETH_P_ARP) return std::nullopt;
  const uint8_t* a = p + 14;
  if (load16(a) != ARPHRD_ETHER || load16(a + 2) != ETH_P_IP || a[4] != 6 || a[5] != 4 ||
      load16(a + 6) != ARPOP_REQUEST) {
    return std::nullopt;
  }
  ArpRequest r;
  std::memcpy(r.sender_mac.data(), a + 8, 6);
  r.sender_ip = load32(a + 14);
  r.target_ip = load32(a + 24);
  return r;
}

std::array<uint8_t, kGarpFrameLen> buildVmacArpReply(const MacAddress& eth_src,
                                                     const MacAddress& vmac, uint32_t ip,
                                                     const ArpRequest& req) noexcept {
  std::array<uint8_t, kGarpFrameLen> f{};
  uint8_t* a = arpFrame(f, req.sender_mac, eth_src, ARPOP_REPLY);
  std::memcpy(a + 8, vmac.data(), 6);
  store32(a + 14, ip);
  std::memcpy(a + 18, req.sender_mac.data(), 6);
  store32(a + 24, req.sender_ip);
  return f;
}

std::array<uint8_t, kGarpFrameLen> buildVmacAnnouncement(const MacAddress& eth_src,
                                                         const MacAddress& vmac,
                                                         uint32_t ip) noexcept {
  std::array<uint8_t, kGarpFrameLen> f{};
  uint8_t* a = arpFrame(f, kBroadcast, eth_src, ARPOP_REQUEST);
  std::memcpy(a + 8, vmac.data(), 6);
  store32(a + 14, ip);
  store32(a + 24, ip);  // target MAC stays zero (RFC 5227 section 2.1.1)
  return f;
}

size_t buildMacvlanCreate(std::span<uint8_t> buf, const std::string& name,
                          uint32_t parent_ifindex, const MacAddress& mac, uint32_t seq) noexcept {
  if (buf.size() < 256 || name.empty() || name.size() >= IFNAMSIZ) return 0;
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_NEWLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  nlh->nlmsg_seq = seq;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  // Down, and never answering ARP itself (the responder does, from the parent's MAC).
  ifi->ifi_flags = IFF_NOARP;
  ifi->ifi_change = IFF_NOARP | IFF_UP;
  mnl_attr_put_strz(nlh, IFLA_IFNAME, name.c_str());
  mnl_attr_put_u32(nlh, IFLA_LINK, parent_ifindex);
  mnl_attr_put(nlh, IFLA_ADDRESS, mac.size(), mac.data());
  nlattr* info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
  mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "macvlan");
  nlattr* data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
  // Private: no frames between macvlans of one parent; it only ever receives from the wire.
  mnl_attr_put_u32(nlh, IFLA_MACVLAN_MODE, MACVLAN_MODE_PRIVATE);
  mnl_attr_nest_end(nlh, data);
  mnl_attr_nest_end(nlh, info);
  return nlh->nlmsg_len;
}

size_t buildLinkSetUp(std::span<uint8_t> buf, uint32_t ifindex, bool up, uint32_t seq) noexcept {
  if (buf.size() < 64) return 0;
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_NEWLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = seq;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = static_cast<int>(ifindex);
  ifi->ifi_flags = up ? IFF_UP : 0;
  ifi->ifi_change = IFF_UP;
  return nlh->nlmsg_len;
}

size_t buildLinkDelete(std::span<uint8_t> buf, uint32_t ifindex, uint32_t seq) noexcept {
  if (buf.size() < 64) return 0;
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_DELLINK;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = seq;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = static_cast<int>(ifindex);
  return nlh->nlmsg_len;
}

// ---- MacvlanLinks ----

MacvlanLinks::MacvlanLinks() : buf_(kNlBufSize) {
  nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (nl_ == nullptr) throw std::system_error(errno, std::generic_category(), "netlink socket");
  int one = 1;
  (void)mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof(one));
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    const int err = errno;
    mnl_socket_close(nl_);
    nl_ = nullptr;
    throw std::system_error(err, std::generic_category(), "netlink bind");
  }
}

MacvlanLinks::~MacvlanLinks() {
  if (nl_ != nullptr) mnl_socket_close(nl_);
}

std::string MacvlanLinks::deviceName(const std::string& parent) {
  return ("tv" + parent).substr(0, IFNAMSIZ - 1);
}

int MacvlanLinks::transact(size_t len, uint32_t seq) noexcept {
  if (len == 0) return EINVAL;
  const ssize_t sent = mnl_socket_sendto(nl_, buf_.data(), len);
  if (sent < 0 || static_cast<size_t>(sent) != len) return sent < 0 ? errno : EMSGSIZE;
  const int fd = mnl_socket_get_fd(nl_);
  const uint64_t deadline = monotonicNs() + uint64_t{kAckTimeoutMs} * 1'000'000u;
  for (;;) {
    const uint64_t now = monotonicNs();
    if (now >= deadline) return ETIMEDOUT;
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>((deadline - now) / 1'000'000u) + 1);
    if (ready < 0 && errno != EINTR) return errno;
    if (ready <= 0) continue;
    const ssize_t n = mnl_socket_recvfrom(nl_, buf_.data(), buf_.size());
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    const NlReplyScan scan = scanNlReply({buf_.data(), static_cast<size_t>(n)}, seq, 0, nullptr);
    if (scan.complete) return scan.error;
  }
}

void MacvlanLinks::create(const std::string& parent, const MacAddress& mac) {
  const std::string name = deviceName(parent);
  const unsigned parent_index = if_nametoindex(parent.c_str());
  if (parent_index == 0) {
    throw std::system_error(errno, std::generic_category(), "vmac: interface " + parent);
  }
  if (const unsigned stale = if_nametoindex(name.c_str()); stale != 0) {
    logf(LogLevel::kWarn, "vmac: removing stale device %s", name.c_str());
    const uint32_t seq = ++seq_;
    const int err = transact(buildLinkDelete(buf_, stale, seq), seq);
    if (err != 0) throw std::system_error(err, std::generic_category(), "vmac: delete " + name);
  }
  const uint32_t seq = ++seq_;
  const int err = transact(buildMacvlanCreate(buf_, name, parent_index, mac, seq), seq);
  if (err != 0) {
    throw std::system_error(err, std::generic_category(), "vmac: create macvlan " + name);
  }
  names_.push_back(name);
  // Before the device ever goes up: no IPv6 (its link-local address, DAD, router solicitation
  // and MLD would all leave with the vMAC as source). Absent when IPv6 is off in the kernel.
  const std::string v6 = "net.ipv6.conf." + name + ".disable_ipv6";
  if (readSysctl(v6)) writeSysctl(v6, "1");
  // Frames for the VIP arrive on this device: it must forward, and the reverse-path test would
  // refuse them (their sources route through the parent).
  writeSysctl("net.ipv4.conf." + name + ".forwarding", "1");
  writeSysctl("net.ipv4.conf." + name + ".rp_filter", "0");
  logf(LogLevel::kInfo, "vmac: macvlan %s on %s with %s (down, noarp, no IPv6)", name.c_str(),
       parent.c_str(), macToString(mac).c_str());
}

int MacvlanLinks::setUp(bool up) noexcept {
  int first = 0;
  for (const std::string& name : names_) {
    const unsigned index = if_nametoindex(name.c_str());
    int err = index == 0 ? ENODEV : 0;
    if (err == 0) {
      const uint32_t seq = ++seq_;
      err = transact(buildLinkSetUp(buf_, index, up, seq), seq);
    }
    if (err != 0) {
      logf(LogLevel::kError, "vmac: cannot set %s %s: %s", name.c_str(), up ? "up" : "down",
           std::strerror(err));
      if (first == 0) first = err;
    }
  }
  up_ = up && first == 0;
  return first;
}

void MacvlanLinks::removeAll() noexcept {
  for (const std::string& name : names_) {
    const unsigned index = if_nametoindex(name.c_str());
    if (index == 0) continue;
    const uint32_t seq = ++seq_;
    const int err = transact(buildLinkDelete(buf_, index, seq), seq);
    if (err != 0) {
      logf(LogLevel::kError, "vmac: cannot delete %s: %s", name.c_str(), std::strerror(err));
    }
  }
  names_.clear();
  up_ = false;
}

// ---- ArpResponder ----

ArpResponder::~ArpResponder() {
  if (fd_ >= 0) close(fd_);
}

void ArpResponder::open() {
  const unsigned index = if_nametoindex(interface_.c_str());
  if (index == 0) {
    throw std::system_error(errno, std::generic_category(), "arp: interface " + interface_);
  }
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ARP));
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "arp: AF_PACKET socket");
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", interface_.c_str());
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0 || ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
    const int err = errno != 0 ? errno : EAFNOSUPPORT;
    close(fd);
    throw std::system_error(err, std::generic_category(), "arp: MAC of " + interface_);
  }
  std::memcpy(own_mac_.data(), ifr.ifr_hwaddr.sa_data, 6);
  // Our own replies and announcements are not requests to answer.
  int one = 1;
  (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ARP);
  sll.sll_ifindex = static_cast<int>(index);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) < 0) {
    const int err = errno;
    close(fd);
    throw std::system_error(err, std::generic_category(), "arp: bind to " + interface_);
  }
  fd_ = fd;
  ifindex_ = static_cast<int>(index);
}

bool ArpResponder::sendFrame(const uint8_t* frame, size_t len, const MacAddress& to) noexcept {
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ARP);
  sll.sll_ifindex = ifindex_;
  sll.sll_halen = ETH_ALEN;
  std::memcpy(sll.sll_addr, to.data(), ETH_ALEN);
  const ssize_t n = sendto(fd_, frame, len, 0, reinterpret_cast<sockaddr*>(&sll), sizeof(sll));
  if (n < 0 || static_cast<size_t>(n) != len) {
    ++counters_.send_errors;
    return false;
  }
  return true;
}

void ArpResponder::onReadable() noexcept {
  if (fd_ < 0) return;
  uint8_t frame[256];
  for (int i = 0; i < 256; ++i) {
    sockaddr_ll from{};
    socklen_t from_len = sizeof(from);
    const ssize_t n = recvfrom(fd_, frame, sizeof(frame), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) return;  // EAGAIN: drained; anything else: nothing to answer now
    if (from.sll_pkttype == PACKET_OUTGOING) continue;
    const auto req = parseArpRequest({frame, static_cast<size_t>(n)});
    if (!req) continue;
    // A gratuitous ARP for one of our addresses is the peer's announcement: not a question.
    if (req->sender_ip == req->target_ip) continue;
    if (std::find(addresses_.begin(), addresses_.end(), req->target_ip) == addresses_.end()) {
      continue;
    }
    ++counters_.requests;
    const auto reply = buildVmacArpReply(own_mac_, vmac_, req->target_ip, *req);
    if (sendFrame(reply.data(), reply.size(), req->sender_mac)) ++counters_.replies;
  }
}

void ArpResponder::announce() noexcept {
  if (fd_ < 0) return;
  for (uint32_t ip : addresses_) {
    const auto f = buildVmacAnnouncement(own_mac_, vmac_, ip);
    if (sendFrame(f.data(), f.size(), kBroadcast)) ++counters_.announcements;
  }
}

}  // namespace tandem
