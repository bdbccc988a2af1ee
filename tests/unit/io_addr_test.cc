// addr_netlink's pure parts: prefix parsing, golden bytes of the RTM_NEWADDR / RTM_DELADDR /
// RTM_GETADDR requests, and the reply scanner (acks, errors, dumps, stale and malformed replies).
// Also udp_channel's address conversions and socket options (no datagram is sent).
#include "proxy/io/addr_netlink.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include "proxy/io/udp_channel.h"

namespace tandem {
namespace {

using Bytes = std::vector<uint8_t>;

// The netlink header is in host byte order; the golden bytes are written for little endian.
#define SKIP_UNLESS_LITTLE_ENDIAN()                           \
  if constexpr (std::endian::native != std::endian::little) { \
    GTEST_SKIP() << "golden netlink bytes are little-endian"; \
  }

Bytes built(const uint8_t* p, size_t n) { return Bytes(p, p + n); }

struct PrefixCase {
  const char* text;
  bool ok;
  uint32_t addr;
  uint8_t len;
};

TEST(Ipv4PrefixTest, ParsesTable) {
  const PrefixCase cases[] = {
      {"10.20.1.100/32", true, 0x0a140164, 32},
      {"10.20.1.100", true, 0x0a140164, 32},
      {"192.168.0.1/24", true, 0xc0a80001, 24},
      {"0.0.0.0/0", true, 0, 0},
      {"10.0.0.1/33", false, 0, 0},
      {"10.0.0.1/", false, 0, 0},
      {"10.0.0.1/-1", false, 0, 0},
      {"10.0.0.1/2x", false, 0, 0},
      {"10.0.0/24", false, 0, 0},
      {"::1/128", false, 0, 0},
      {"", false, 0, 0},
  };
  for (const auto& c : cases) {
    const auto p = Ipv4Prefix::parse(c.text);
    ASSERT_EQ(p.has_value(), c.ok) << c.text;
    if (!c.ok) continue;
    EXPECT_EQ(p->addr, c.addr) << c.text;
    EXPECT_EQ(p->prefix_len, c.len) << c.text;
  }
  // An embedded NUL in a string_view is refused, not silently cut.
  EXPECT_FALSE(Ipv4Prefix::parse(std::string_view("10.0.0.1\0/8", 11)).has_value());
  EXPECT_EQ(Ipv4Prefix::parse("10.20.1.100/32")->toString(), "10.20.1.100/32");
  EXPECT_EQ(Ipv4Prefix::parse("10.1.2.3")->toString(), "10.1.2.3/32");
}

TEST(AddrRequestTest, NewAddrGoldenBytes) {
  SKIP_UNLESS_LITTLE_ENDIAN();
  alignas(4) uint8_t buf[kAddrRequestMaxLen];
  const size_t n =
      buildAddrRequest(buf, AddrOp::kAdd, 7, *Ipv4Prefix::parse("10.20.1.100/32"), 0x01020304);
  const Bytes expected = {
      0x28, 0x00, 0x00, 0x00,  // nlmsg_len 40
      0x14, 0x00,              // RTM_NEWADDR (20)
      0x05, 0x06,              // NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE
      0x04, 0x03, 0x02, 0x01,  // seq
      0x00, 0x00, 0x00, 0x00,  // pid: the kernel's business
      0x02, 0x20, 0x00, 0x00,  // AF_INET, /32, flags 0, RT_SCOPE_UNIVERSE
      0x07, 0x00, 0x00, 0x00,  // ifindex 7
      0x08, 0x00, 0x02, 0x00, 0x0a, 0x14, 0x01, 0x64,  // IFA_LOCAL 10.20.1.100
      0x08, 0x00, 0x01, 0x00, 0x0a, 0x14, 0x01, 0x64,  // IFA_ADDRESS 10.20.1.100
  };
  EXPECT_EQ(built(buf, n), expected);
}

TEST(AddrRequestTest, DelAddrGoldenBytes) {
  SKIP_UNLESS_LITTLE_ENDIAN();
  alignas(4) uint8_t buf[kAddrRequestMaxLen];
  const size_t n =
      buildAddrRequest(buf, AddrOp::kRemove, 0x102, *Ipv4Prefix::parse("192.168.7.1/24"), 9);
  const Bytes expected = {
      0x28, 0x00, 0x00, 0x00,                          // nlmsg_len 40
      0x15, 0x00,                                      // RTM_DELADDR (21)
      0x05, 0x00,                                      // NLM_F_REQUEST | NLM_F_ACK
      0x09, 0x00, 0x00, 0x00,                          // seq
      0x00, 0x00, 0x00, 0x00,                          // pid
      0x02, 0x18, 0x00, 0x00,                          // AF_INET, /24
      0x02, 0x01, 0x00, 0x00,                          // ifindex 0x102
      0x08, 0x00, 0x02, 0x00, 0xc0, 0xa8, 0x07, 0x01,  // IFA_LOCAL
      0x08, 0x00, 0x01, 0x00, 0xc0, 0xa8, 0x07, 0x01,  // IFA_ADDRESS (the prefix is matched)
  };
  EXPECT_EQ(built(buf, n), expected);
}

TEST(AddrRequestTest, DumpGoldenBytes) {
  SKIP_UNLESS_LITTLE_ENDIAN();
  alignas(4) uint8_t buf[kAddrRequestMaxLen];
  const size_t n = buildAddrDumpRequest(buf, 0xaabbccdd);
  const Bytes expected = {
      0x18, 0x00, 0x00, 0x00,                          // nlmsg_len 24
      0x16, 0x00,                                      // RTM_GETADDR (22)
      0x01, 0x03,                                      // NLM_F_REQUEST | NLM_F_DUMP
      0xdd, 0xcc, 0xbb, 0xaa,                          // seq
      0x00, 0x00, 0x00, 0x00,                          // pid
      0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // AF_INET, no filter
  };
  EXPECT_EQ(built(buf, n), expected);
}

TEST(AddrRequestTest, RefusesShortBuffer) {
  alignas(4) uint8_t buf[kAddrRequestMaxLen - 1];
  EXPECT_EQ(buildAddrRequest(buf, AddrOp::kAdd, 1, Ipv4Prefix{}, 1), 0u);
  EXPECT_EQ(buildAddrDumpRequest(buf, 1), 0u);
}

// Kernel-side messages for the scanner, built with libmnl like the kernel lays them out.
class ReplyBuilder {
 public:
  ReplyBuilder() : buf_(8192) {}

  void ack(uint32_t seq, int error) {
    nlmsghdr* nlh = header(NLMSG_ERROR, seq, NLM_F_CAPPED);
    auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    err->error = -error;
    err->msg.nlmsg_seq = seq;
    finish(nlh);
  }
  void done(uint32_t seq, int status = 0) {
    nlmsghdr* nlh = header(NLMSG_DONE, seq, NLM_F_MULTI);
    auto* v = static_cast<int*>(mnl_nlmsg_put_extra_header(nlh, sizeof(int)));
    *v = status;
    finish(nlh);
  }
  /// An RTM_NEWADDR as the kernel dumps it; `peer` != 0 makes IFA_ADDRESS differ (p2p).
  void addr(uint32_t seq, uint32_t ifindex, uint32_t local, uint8_t plen, uint32_t peer = 0,
            uint16_t flags = NLM_F_MULTI, uint16_t local_len = 4) {
    nlmsghdr* nlh = header(RTM_NEWADDR, seq, flags);
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = plen;
    ifa->ifa_index = ifindex;
    const uint32_t a = htonl(peer != 0 ? peer : local);
    const uint32_t l = htonl(local);
    mnl_attr_put(nlh, IFA_ADDRESS, sizeof(a), &a);
    mnl_attr_put(nlh, IFA_LOCAL, local_len, &l);
    mnl_attr_put_strz(nlh, IFA_LABEL, "front");
    finish(nlh);
  }
  std::span<const uint8_t> bytes() const { return {buf_.data(), len_}; }

 private:
  nlmsghdr* header(uint16_t type, uint32_t seq, uint16_t flags) {
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf_.data() + len_);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
    nlh->nlmsg_pid = 1234;
    return nlh;
  }
  void finish(const nlmsghdr* nlh) { len_ += MNL_ALIGN(nlh->nlmsg_len); }

  std::vector<uint8_t> buf_;
  size_t len_ = 0;
};

TEST(NlReplyScanTest, AckAndErrors) {
  struct Case {
    const char* description;
    int kernel_error;
  } cases[] = {
      {"plain ack", 0}, {"exists", EEXIST}, {"absent", EADDRNOTAVAIL}, {"no permission", EPERM}};
  for (const auto& c : cases) {
    ReplyBuilder r;
    r.ack(5, c.kernel_error);
    const NlReplyScan s = scanNlReply(r.bytes(), 5, 0, nullptr);
    EXPECT_TRUE(s.complete) << c.description;
    EXPECT_EQ(s.error, c.kernel_error) << c.description;
    EXPECT_EQ(s.stale, 0u) << c.description;
  }
}

TEST(NlReplyScanTest, SkipsStaleRepliesBeforeOurs) {
  ReplyBuilder r;
  r.ack(3, ETIMEDOUT);  // the answer to an earlier request that timed out
  r.ack(4, 0);
  const NlReplyScan s = scanNlReply(r.bytes(), 4, 0, nullptr);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.error, 0);
  EXPECT_EQ(s.stale, 1u);

  ReplyBuilder only_stale;
  only_stale.ack(3, 0);
  const NlReplyScan t = scanNlReply(only_stale.bytes(), 4, 0, nullptr);
  EXPECT_FALSE(t.complete);
  EXPECT_EQ(t.stale, 1u);
}

TEST(NlReplyScanTest, DumpCollectsOneInterfacesAddresses) {
  ReplyBuilder r;
  r.addr(8, 7, 0x0a140101, 24);
  r.addr(8, 9, 0x0a140201, 24);  // another interface
  r.addr(8, 7, 0x0a140164, 32);
  r.addr(8, 7, 0x0a0a0a01, 32, 0x0a0a0a02);  // point-to-point: IFA_LOCAL is ours
  std::vector<Ipv4Prefix> got;
  NlReplyScan s = scanNlReply(r.bytes(), 8, 7, &got);
  EXPECT_FALSE(s.complete);  // a dump goes on until NLMSG_DONE
  ReplyBuilder end;
  end.done(8);
  s = scanNlReply(end.bytes(), 8, 7, &got);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.error, 0);
  const std::vector<Ipv4Prefix> expected = {{0x0a140101, 24}, {0x0a140164, 32}, {0x0a0a0a01, 32}};
  EXPECT_EQ(got, expected);
}

TEST(NlReplyScanTest, DumpFailureAndInterruption) {
  ReplyBuilder failed;
  failed.done(2, -EBUSY);
  NlReplyScan s = scanNlReply(failed.bytes(), 2, 1, nullptr);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.error, EBUSY);

  ReplyBuilder intr;
  intr.addr(2, 1, 0x01020304, 32, 0, NLM_F_MULTI | NLM_F_DUMP_INTR);
  std::vector<Ipv4Prefix> got;
  s = scanNlReply(intr.bytes(), 2, 1, &got);
  EXPECT_TRUE(s.interrupted);
}

TEST(NlReplyScanTest, MalformedRepliesAreRejected) {
  ReplyBuilder bad_attr;
  bad_attr.addr(2, 1, 0x01020304, 32, 0, NLM_F_MULTI, /*local_len=*/2);
  std::vector<Ipv4Prefix> got;
  NlReplyScan s = scanNlReply(bad_attr.bytes(), 2, 1, &got);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.error, EPROTO);
  EXPECT_TRUE(got.empty());

  // A message claiming more bytes than the datagram has is not read at all.
  ReplyBuilder r;
  r.ack(2, 0);
  std::vector<uint8_t> cut(r.bytes().begin(), r.bytes().end() - 4);
  s = scanNlReply(cut, 2, 0, nullptr);
  EXPECT_FALSE(s.complete);

  // An error message too short to hold its error code.
  alignas(4) uint8_t tiny[NLMSG_HDRLEN] = {};
  auto* nlh = reinterpret_cast<nlmsghdr*>(tiny);
  nlh->nlmsg_len = NLMSG_HDRLEN;
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_seq = 2;
  s = scanNlReply(tiny, 2, 0, nullptr);
  EXPECT_TRUE(s.complete);
  EXPECT_EQ(s.error, EPROTO);

  EXPECT_FALSE(scanNlReply({}, 2, 0, nullptr).complete);
}

// udp_channel: conversions and the configured socket (bound on loopback, nothing sent).

Endpoint endpoint(const char* addr, uint16_t port) { return {*IpAddr::parse(addr), port}; }

TEST(UdpChannelTest, SockaddrRoundTrips) {
  for (const char* text : {"10.20.3.4:7000", "[2001:db8::1]:65535", "0.0.0.0:1"}) {
    const auto ep = Endpoint::parse(text);
    ASSERT_TRUE(ep.has_value()) << text;
    sockaddr_storage sa{};
    const socklen_t len = endpointToSockaddr(*ep, sa);
    EXPECT_EQ(len, ep->addr.isV4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)) << text;
    EXPECT_EQ(sa.ss_family, ep->addr.isV4() ? AF_INET : AF_INET6) << text;
    const auto back = sockaddrToEndpoint(sa, len);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, *ep) << text;
  }
  sockaddr_storage sa{};
  const socklen_t len = endpointToSockaddr(*Endpoint::parse("10.1.2.3:80"), sa);
  EXPECT_FALSE(sockaddrToEndpoint(sa, len - 1).has_value());  // truncated
  sa.ss_family = AF_UNIX;
  EXPECT_FALSE(sockaddrToEndpoint(sa, sizeof(sa)).has_value());
}

TEST(UdpChannelTest, MixedFamiliesAreAStartupError) {
  UdpChannelOptions o;
  o.bind = endpoint("127.0.0.1", 0);  // the kernel picks the port
  o.peer = *Endpoint::parse("[::1]:7000");
  UdpChannel c(o);
  EXPECT_THROW(c.open(), std::system_error);
  EXPECT_EQ(c.fd(), -1);
}

TEST(UdpChannelTest, OpenConfiguresTheSocket) {
  UdpChannelOptions o;
  o.bind = endpoint("127.0.0.1", 0);  // the kernel picks the port
  o.peer = *Endpoint::parse("127.0.0.1:9");
  o.rcvbuf = 256 * 1024;
  UdpChannel c(o);
  c.open();
  ASSERT_GE(c.fd(), 0);
  EXPECT_NE(c.localEndpoint().port, 0);
  EXPECT_EQ(c.localEndpoint().addr, o.bind.addr);
  EXPECT_GE(c.effectiveRcvbuf(), 256 * 1024);

  int tos = 0, prio = 0;
  socklen_t len = sizeof(tos);
  ASSERT_EQ(getsockopt(c.fd(), IPPROTO_IP, IP_TOS, &tos, &len), 0);
  EXPECT_EQ(tos, 0xc0);
  len = sizeof(prio);
  ASSERT_EQ(getsockopt(c.fd(), SOL_SOCKET, SO_PRIORITY, &prio, &len), 0);
  EXPECT_EQ(prio, 6);

  uint8_t buf[64];
  Datagram d;
  EXPECT_EQ(c.recv(buf, d), EAGAIN);  // non-blocking, nothing queued
  EXPECT_EQ(c.counters().recv_errors, 0u);
}

}  // namespace
}  // namespace tandem
