// tcpinject: sends one hand-made IPv4/TCP segment from a raw socket (IP_HDRINCL), with any source
// address, e.g. a spoofed out-of-window RST; or, with --sniff, prints the sequence numbers of the
// next segment of a given connection seen on an interface, so a test can compute a sequence
// number relative to the live one.
//
//   tcpinject --src A:P --dst A:P --flags R|S|A|RA|FA|... [--seq N] [--ack N] [--payload-len L]
//             [--window W] [--ttl T] [--count C]
//   tcpinject --sniff IFACE --src A:P --dst A:P [--timeout S]      (port 0 matches any)
// Exit status: 0 sent (or seen), 1 nothing seen before the timeout, 2 usage or setup error.

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net_util.h"

namespace {

using namespace tandem::tools;

constexpr const char* kProg = "tcpinject";
constexpr size_t kIpHeaderLen = 20;
constexpr size_t kTcpHeaderLen = 20;

constexpr const char* kUsage = R"(usage:
  tcpinject --src A:P --dst A:P --flags FLAGS [--seq N] [--ack N] [--payload-len L]
            [--window W] [--ttl T] [--count C]
      FLAGS: letters of F S R P A U E C, e.g. R, S, A, RA, FA, PA
  tcpinject --sniff IFACE --src A:P --dst A:P [--timeout S]
      prints 'seq=N ack=N flags=FLAGS len=L' of the next matching segment (port 0 = any)
)";

struct Options {
  sockaddr_in src{};
  sockaddr_in dst{};
  bool have_src = false;
  bool have_dst = false;
  uint8_t flags = 0;
  bool have_flags = false;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint16_t window = 65535;
  uint8_t ttl = 64;
  size_t payload_len = 0;
  uint64_t count = 1;
  std::string sniff_ifname;
  double timeout_s = 5;
};

void store16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void store32(uint8_t* p, uint32_t v) {
  store16(p, static_cast<uint16_t>(v >> 16));
  store16(p + 2, static_cast<uint16_t>(v));
}
uint16_t load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t load32(const uint8_t* p) {
  return static_cast<uint32_t>(load16(p)) << 16 | load16(p + 2);
}

// RFC 1071 one's-complement sum of 16-bit big-endian words.
uint32_t sum16(uint32_t sum, const uint8_t* data, size_t len) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += load16(data + i);
  if (len & 1) sum += static_cast<uint32_t>(data[len - 1]) << 8;
  return sum;
}
uint16_t finish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

std::optional<uint8_t> parseFlags(std::string_view s) {
  static constexpr std::string_view kLetters = "FSRPAUEC";  // bit order of the flags byte
  if (s.empty()) return std::nullopt;
  uint8_t f = 0;
  for (char ch : s) {
    const size_t bit = kLetters.find(static_cast<char>(ch & ~0x20));
    if (bit == std::string_view::npos) return std::nullopt;
    f = static_cast<uint8_t>(f | (1u << bit));
  }
  return f;
}

std::string flagString(uint8_t f) {
  static constexpr std::string_view kLetters = "FSRPAUEC";
  std::string s;
  for (size_t bit = 0; bit < 8; ++bit) {
    if (f & (1u << bit)) s += kLetters[bit];
  }
  return s.empty() ? "-" : s;
}

uint32_t hostAddr(const sockaddr_in& sa) { return ntohl(sa.sin_addr.s_addr); }

std::vector<uint8_t> buildSegment(const Options& o) {
  const size_t total = kIpHeaderLen + kTcpHeaderLen + o.payload_len;
  std::vector<uint8_t> p(total, 0);
  uint8_t* ip = p.data();
  ip[0] = 0x45;
  store16(ip + 2, static_cast<uint16_t>(total));
  store16(ip + 4, static_cast<uint16_t>(getpid()));
  store16(ip + 6, 0x4000);  // DF
  ip[8] = o.ttl;
  ip[9] = IPPROTO_TCP;
  store32(ip + 12, hostAddr(o.src));
  store32(ip + 16, hostAddr(o.dst));
  store16(ip + 10, finish(sum16(0, ip, kIpHeaderLen)));

  uint8_t* tcp = ip + kIpHeaderLen;
  store16(tcp, ntohs(o.src.sin_port));
  store16(tcp + 2, ntohs(o.dst.sin_port));
  store32(tcp + 4, o.seq);
  store32(tcp + 8, o.ack);
  tcp[12] = static_cast<uint8_t>((kTcpHeaderLen / 4) << 4);
  tcp[13] = o.flags;
  store16(tcp + 14, o.window);
  std::memset(tcp + kTcpHeaderLen, 'x', o.payload_len);
  // Pseudo-header (RFC 9293 3.1): source, destination, zero, protocol, TCP length.
  const size_t tcp_len = kTcpHeaderLen + o.payload_len;
  uint32_t sum = sum16(0, ip + 12, 8);
  sum += IPPROTO_TCP;
  sum += static_cast<uint32_t>(tcp_len);
  store16(tcp + 16, finish(sum16(sum, tcp, tcp_len)));
  return p;
}

int inject(const Options& o) {
  Fd fd(socket(AF_INET, SOCK_RAW, IPPROTO_RAW));
  if (!fd.valid()) dieErrno(kProg, "socket(SOCK_RAW) (needs CAP_NET_RAW)");
  int one = 1;
  if (setsockopt(fd.get(), IPPROTO_IP, IP_HDRINCL, &one, sizeof one) != 0) {
    dieErrno(kProg, "IP_HDRINCL");
  }
  const std::vector<uint8_t> seg = buildSegment(o);
  sockaddr_in to = o.dst;
  to.sin_port = 0;
  for (uint64_t i = 0; i < o.count; ++i) {
    const ssize_t n = sendto(fd.get(), seg.data(), seg.size(), 0,
                             reinterpret_cast<const sockaddr*>(&to), sizeof to);
    if (n != static_cast<ssize_t>(seg.size())) dieErrno(kProg, "sendto");
  }
  std::printf("tcpinject: sent %" PRIu64 " x %s %s -> %s seq=%u ack=%u len=%zu\n", o.count,
              flagString(o.flags).c_str(), endpointString(o.src).c_str(),
              endpointString(o.dst).c_str(), o.seq, o.ack, o.payload_len);
  return 0;
}

bool matches(const sockaddr_in& want, uint32_t addr, uint16_t port) {
  return hostAddr(want) == addr && (want.sin_port == 0 || ntohs(want.sin_port) == port);
}

int sniff(const Options& o) {
  const unsigned ifindex = if_nametoindex(o.sniff_ifname.c_str());
  if (ifindex == 0) dieErrno(kProg, "interface " + o.sniff_ifname);
  // ETH_P_ALL: a protocol-specific packet socket never sees outgoing packets (only the
  // ptype_all taps do), and the segment to catch may be the capturing host's own.
  Fd fd(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL)));
  if (!fd.valid()) dieErrno(kProg, "socket(AF_PACKET)");
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_protocol = htons(ETH_P_ALL);
  ll.sll_ifindex = static_cast<int>(ifindex);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&ll), sizeof ll) != 0) {
    dieErrno(kProg, "bind " + o.sniff_ifname);
  }
  const uint64_t deadline = nowNs() + static_cast<uint64_t>(o.timeout_s * 1e9);
  uint8_t buf[65536];
  for (;;) {
    const uint64_t now = nowNs();
    if (now >= deadline) break;
    pollfd pfd{fd.get(), POLLIN, 0};
    const int r = poll(&pfd, 1, static_cast<int>((deadline - now) / kNsPerMs) + 1);
    if (r < 0 && errno != EINTR) dieErrno(kProg, "poll");
    if (r <= 0) continue;
    sockaddr_ll from{};
    socklen_t from_len = sizeof from;
    const ssize_t n = recvfrom(fd.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from),
                               &from_len);
    if (n < static_cast<ssize_t>(kIpHeaderLen + kTcpHeaderLen)) continue;
    if (from.sll_protocol != htons(ETH_P_IP)) continue;
    const size_t len = static_cast<size_t>(n);
    const size_t ihl = static_cast<size_t>(buf[0] & 0x0f) * 4;
    if ((buf[0] >> 4) != 4 || ihl < kIpHeaderLen || buf[9] != IPPROTO_TCP) continue;
    if ((load16(buf + 6) & 0x1fff) != 0 || len < ihl + kTcpHeaderLen) continue;
    const uint8_t* tcp = buf + ihl;
    if (!matches(o.src, load32(buf + 12), load16(tcp)) ||
        !matches(o.dst, load32(buf + 16), load16(tcp + 2))) {
      continue;
    }
    const size_t thl = static_cast<size_t>(tcp[12] >> 4) * 4;
    const size_t ip_total = std::min<size_t>(load16(buf + 2), len);
    const size_t payload = ip_total > ihl + thl ? ip_total - ihl - thl : 0;
    std::printf("seq=%u ack=%u flags=%s len=%zu\n", load32(tcp + 4), load32(tcp + 8),
                flagString(tcp[13]).c_str(), payload);
    return 0;
  }
  std::fprintf(stderr, "%s: no segment %s -> %s on %s within %.1f s\n", kProg,
               endpointString(o.src).c_str(), endpointString(o.dst).c_str(),
               o.sniff_ifname.c_str(), o.timeout_s);
  return 1;
}

int usageError(const std::string& msg) {
  std::fprintf(stderr, "%s: %s (tcpinject --help for usage)\n", kProg, msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (value == nullptr) return usageError("missing value for " + std::string(arg));
    ++i;
    bool ok = true;
    std::optional<uint64_t> n;
    if (arg == "--src" || arg == "--dst") {
      const auto ep = parseEndpoint(value);
      ok = ep.has_value();
      if (ok) (arg == "--src" ? o.src : o.dst) = *ep;
      (arg == "--src" ? o.have_src : o.have_dst) = ok;
    } else if (arg == "--flags") {
      const auto f = parseFlags(value);
      ok = f.has_value();
      o.flags = f.value_or(0);
      o.have_flags = ok;
    } else if (arg == "--seq" || arg == "--ack") {
      n = parseU64(value);
      ok = n && *n <= UINT32_MAX;
      (arg == "--seq" ? o.seq : o.ack) = static_cast<uint32_t>(n.value_or(0));
    } else if (arg == "--payload-len") {
      n = parseU64(value);
      ok = n && *n <= 1400;
      o.payload_len = static_cast<size_t>(n.value_or(0));
    } else if (arg == "--window") {
      n = parseU64(value);
      ok = n && *n <= 65535;
      o.window = static_cast<uint16_t>(n.value_or(0));
    } else if (arg == "--ttl") {
      n = parseU64(value);
      ok = n && *n >= 1 && *n <= 255;
      o.ttl = static_cast<uint8_t>(n.value_or(0));
    } else if (arg == "--count") {
      n = parseU64(value);
      ok = n && *n >= 1 && *n <= 1000;
      o.count = n.value_or(1);
    } else if (arg == "--sniff") {
      o.sniff_ifname = value;
    } else if (arg == "--timeout") {
      const auto s = parseSeconds(value);
      ok = s.has_value();
      o.timeout_s = s.value_or(0);
    } else {
      return usageError("unknown argument '" + std::string(arg) + "'");
    }
    if (!ok) return usageError("bad value '" + std::string(value) + "' for " + std::string(arg));
  }
  if (!o.have_src || !o.have_dst) return usageError("--src and --dst are required");
  if (!o.sniff_ifname.empty()) return sniff(o);
  if (!o.have_flags) return usageError("--flags is required");
  return inject(o);
}
