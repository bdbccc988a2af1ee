// tcpinject: sends one hand-made IPv4/TCP segment from a raw socket (IP_HDRINCL), with any source
// address, e.g. a spoofed out-of-window RST; or, with --sniff, prints the sequence numbers of the
// next segment of a given connection seen on an interface, so a test can compute a sequence
// number relative to the live one; or, with --flood, sends many segments (SYNs by default) from
// random spoofed sources in a network, as fast as possible or paced, e.g. a SYN flood.
//
//   tcpinject --src A:P --dst A:P --flags R|S|A|RA|FA|... [--seq N] [--ack N] [--payload-len L]
//             [--window W] [--ttl T] [--count C]
//   tcpinject --sniff IFACE --src A:P --dst A:P [--timeout S]      (port 0 matches any)
//   tcpinject --flood --src-net A.B.C.D/LEN --dst A:P --count N [--duration S] [--rate PPS]
//             [--flags S] [--seed N] [--ttl T]
// Exit status: 0 sent (or seen), 1 nothing seen before the timeout, 2 usage or setup error.

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
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
  tcpinject --flood --src-net A.B.C.D/LEN --dst A:P --count N [--duration S] [--rate PPS]
            [--flags FLAGS] [--seed N] [--ttl T]
      sends N segments (default flags S; with --duration, stops after S seconds if N are not
      sent yet, and N defaults to unlimited) to A:P, each from a random address of the network
      (not its first or last address when LEN <= 30), a random port >= 1024, a random sequence
      number; a SYN carries the options of a Linux SYN (MSS 1460, SACK-permitted, timestamps,
      window scale 7). --rate paces to PPS segments per second (default 0: as fast as the
      socket takes them). Prints 'tcpinject: sent=N elapsed_ms=.. rate_pps=..'.
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
  bool flood = false;
  uint32_t src_net = 0;     // host byte order, host bits zero
  uint8_t src_prefix = 0;
  bool have_src_net = false;
  uint64_t rate_pps = 0;    // 0: unpaced
  double duration_s = 0;    // 0: until count segments are sent
  bool have_count = false;
  uint64_t seed = 0;
  bool have_seed = false;
};

constexpr uint64_t kMaxCount = 1000;            // single-segment mode
constexpr uint64_t kMaxFloodCount = 1'000'000'000;

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

// "A.B.C.D/LEN" -> network (host bits cleared) and prefix length.
bool parseCidr(std::string_view text, uint32_t& net, uint8_t& prefix) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  const std::string addr(text.substr(0, slash));
  in_addr a{};
  if (inet_pton(AF_INET, addr.c_str(), &a) != 1) return false;
  const auto len = parseU64(text.substr(slash + 1));
  if (!len || *len > 32) return false;
  prefix = static_cast<uint8_t>(*len);
  const uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  net = ntohl(a.s_addr) & mask;
  return true;
}

// splitmix64: fast, good enough to scatter addresses, ports and sequence numbers.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() noexcept {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// A random address of the network; with room for them (LEN <= 30), never the network's first or
// last address, which a stack might treat as the network or broadcast address.
uint32_t randomHost(Rng& rng, uint32_t net, uint8_t prefix) {
  if (prefix >= 32) return net;
  const uint32_t host_mask = ~uint32_t{0} >> prefix;
  for (;;) {
    const uint32_t host = static_cast<uint32_t>(rng.next()) & host_mask;
    if (prefix > 30 || (host != 0 && host != host_mask)) return net | host;
  }
}

// The options of a Linux SYN, in Linux's order: MSS 1460, SACK-permitted, timestamps (TSval set
// per segment), NOP, window scale 7. 20 bytes.
constexpr std::array<uint8_t, 20> kSynOptions = {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0,
                                                 0, 0, 0, 0, 0, 0, 1, 3, 3, 7};
constexpr size_t kSynTsvalOffset = 8;  // within kSynOptions

// Fills one flood segment into `p` (its length already fixed by the template).
void fillFloodSegment(uint8_t* p, size_t len, size_t opt_len, const Options& o, Rng& rng) {
  uint8_t* ip = p;
  uint8_t* tcp = p + kIpHeaderLen;
  const uint64_t r1 = rng.next();
  const uint64_t r2 = rng.next();
  store16(ip + 4, static_cast<uint16_t>(r1));                              // IP id
  store32(ip + 12, randomHost(rng, o.src_net, o.src_prefix));
  ip[10] = ip[11] = 0;
  store16(ip + 10, finish(sum16(0, ip, kIpHeaderLen)));
  store16(tcp, static_cast<uint16_t>(1024 + (r1 >> 16) % (65536 - 1024)));  // source port
  store32(tcp + 4, static_cast<uint32_t>(r2));                               // ISN
  if (opt_len > 0) store32(tcp + kTcpHeaderLen + kSynTsvalOffset, static_cast<uint32_t>(r2 >> 32));
  tcp[16] = tcp[17] = 0;
  const size_t tcp_len = len - kIpHeaderLen;
  uint32_t sum = sum16(0, ip + 12, 8);  // pseudo-header (RFC 9293 3.1)
  sum += IPPROTO_TCP;
  sum += static_cast<uint32_t>(tcp_len);
  store16(tcp + 16, finish(sum16(sum, tcp, tcp_len)));
}

void sleepUntilNs(uint64_t t_ns) {
  const timespec ts{static_cast<time_t>(t_ns / kNsPerSec),
                    static_cast<long>(t_ns % kNsPerSec)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

int flood(const Options& o) {
  Fd fd(socket(AF_INET, SOCK_RAW, IPPROTO_RAW));
  if (!fd.valid()) dieErrno(kProg, "socket(SOCK_RAW) (needs CAP_NET_RAW)");
  int one = 1;
  if (setsockopt(fd.get(), IPPROTO_IP, IP_HDRINCL, &one, sizeof one) != 0) {
    dieErrno(kProg, "IP_HDRINCL");
  }

  // The template: everything but the per-segment random fields.
  const bool syn = (o.flags & 0x02) != 0;
  const size_t opt_len = syn ? kSynOptions.size() : 0;
  const size_t len = kIpHeaderLen + kTcpHeaderLen + opt_len;
  std::vector<uint8_t> tmpl(len, 0);
  tmpl[0] = 0x45;
  store16(tmpl.data() + 2, static_cast<uint16_t>(len));
  store16(tmpl.data() + 6, 0x4000);  // DF
  tmpl[8] = o.ttl;
  tmpl[9] = IPPROTO_TCP;
  store32(tmpl.data() + 16, hostAddr(o.dst));
  uint8_t* tcp = tmpl.data() + kIpHeaderLen;
  store16(tcp + 2, ntohs(o.dst.sin_port));
  store32(tcp + 8, o.ack);
  tcp[12] = static_cast<uint8_t>(((kTcpHeaderLen + opt_len) / 4) << 4);
  tcp[13] = o.flags;
  store16(tcp + 14, o.window);
  if (syn) std::memcpy(tcp + kTcpHeaderLen, kSynOptions.data(), opt_len);

  // Batches of up to 64 segments per sendmmsg; paced, a batch holds at most ~1 ms of segments.
  constexpr size_t kBatch = 64;
  const size_t batch =
      o.rate_pps == 0 ? kBatch : std::clamp<size_t>(static_cast<size_t>(o.rate_pps / 1000), 1,
                                                    kBatch);
  std::vector<uint8_t> bufs(kBatch * len);
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  sockaddr_in to = o.dst;
  to.sin_port = 0;
  for (size_t i = 0; i < kBatch; ++i) {
    std::memcpy(&bufs[i * len], tmpl.data(), len);
    iov[i] = {&bufs[i * len], len};
    msgs[i].msg_hdr.msg_name = &to;
    msgs[i].msg_hdr.msg_namelen = sizeof to;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }

  Rng rng(o.have_seed ? o.seed : nowNs() ^ (static_cast<uint64_t>(getpid()) << 32));
  const uint64_t start = nowNs();
  const uint64_t end = o.duration_s > 0 ? start + static_cast<uint64_t>(o.duration_s * 1e9)
                                        : UINT64_MAX;
  uint64_t sent = 0;
  while (sent < o.count) {
    if (o.rate_pps != 0) {
      const uint64_t due =
          start + static_cast<uint64_t>(static_cast<double>(sent) * 1e9 /
                                        static_cast<double>(o.rate_pps));
      if (due >= end) break;
      if (due > nowNs()) sleepUntilNs(due);
    }
    if (nowNs() >= end) break;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(batch, o.count - sent));
    for (size_t i = 0; i < n; ++i) fillFloodSegment(&bufs[i * len], len, opt_len, o, rng);
    size_t done = 0;
    while (done < n) {
      const int r = sendmmsg(fd.get(), &msgs[done], static_cast<unsigned>(n - done), 0);
      if (r < 0) {
        // A full device queue or socket buffer: wait a little and go on; anything else is fatal.
        if (errno == EINTR) continue;
        if (errno == ENOBUFS || errno == EAGAIN) {
          sleepUntilNs(nowNs() + 50'000);
          continue;
        }
        dieErrno(kProg, "sendmmsg");
      }
      done += static_cast<size_t>(r);
    }
    sent += n;
  }
  const uint64_t elapsed = nowNs() - start;
  const double secs = static_cast<double>(elapsed) / 1e9;
  std::printf("tcpinject: sent=%" PRIu64 " elapsed_ms=%.1f rate_pps=%.0f\n", sent,
              static_cast<double>(elapsed) / 1e6,
              secs > 0 ? static_cast<double>(sent) / secs : 0.0);
  return 0;
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
    if (arg == "--flood") {
      o.flood = true;
      continue;
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
      ok = n && *n >= 1 && *n <= kMaxFloodCount;  // single-segment mode: checked below
      o.count = n.value_or(1);
      o.have_count = ok;
    } else if (arg == "--src-net") {
      ok = parseCidr(value, o.src_net, o.src_prefix);
      o.have_src_net = ok;
    } else if (arg == "--duration") {
      const auto s = parseSeconds(value);
      ok = s.has_value() && *s > 0;
      o.duration_s = s.value_or(0);
    } else if (arg == "--rate") {
      n = parseU64(value);
      ok = n && *n <= 100'000'000;
      o.rate_pps = n.value_or(0);
    } else if (arg == "--seed") {
      n = parseU64(value);
      ok = n.has_value();
      o.seed = n.value_or(0);
      o.have_seed = ok;
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
  if (o.flood) {
    if (!o.have_src_net || !o.have_dst) return usageError("--flood needs --src-net and --dst");
    if (o.have_src || !o.sniff_ifname.empty()) {
      return usageError("--flood takes --src-net, not --src or --sniff");
    }
    if (!o.have_count && o.duration_s <= 0) {
      return usageError("--flood needs --count or --duration");
    }
    if (!o.have_count) o.count = kMaxFloodCount;
    if (!o.have_flags) o.flags = 0x02;  // SYN
    return flood(o);
  }
  if (o.duration_s > 0) return usageError("--duration is for --flood");
  if (o.count > kMaxCount) {
    return usageError("bad value '" + std::to_string(o.count) + "' for --count");
  }
  if (!o.have_src || !o.have_dst) return usageError("--src and --dst are required");
  if (!o.sniff_ifname.empty()) return sniff(o);
  if (!o.have_flags) return usageError("--flags is required");
  return inject(o);
}
