// tandem_vipctl: a small command line over the VIP takeover adapters of proxy/io (addr_netlink,
// garp, udp_channel), so the namespace tests can drive them one step at a time. Unlike the other
// tools here it links the code under test: it *is* a thin front end to it.

#include <poll.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_addr.h"
#include "net_util.h"
#include "proxy/io/addr_netlink.h"
#include "proxy/io/garp.h"
#include "proxy/io/log.h"
#include "proxy/io/udp_channel.h"

namespace {

using namespace tandem;

constexpr int kExitOk = 0;
constexpr int kExitNo = 1;  // `has`: absent; udp-recv: not all datagrams arrived
constexpr int kExitError = 2;

constexpr const char* kUsage = R"(usage:
  tandem_vipctl add IFACE ADDR[/PLEN]...     adds each; prints 'added A' or 'present A'
  tandem_vipctl del IFACE ADDR[/PLEN]...     removes each; prints 'removed A' or 'absent A'
  tandem_vipctl has IFACE ADDR[/PLEN]        prints 'yes' (exit 0) or 'no' (exit 1)
  tandem_vipctl list IFACE                   the interface's IPv4 addresses, one a line
  tandem_vipctl group-add IFACE=ADDR[/PLEN]...   adds all as one group (rolled back on failure)
  tandem_vipctl group-del IFACE=ADDR[/PLEN]...   removes all (reverse order, past failures)
  tandem_vipctl garp IFACE ADDR [COUNT [SPACING_MS]]
      a burst of COUNT (default 3) gratuitous ARP requests, SPACING_MS apart (default 20)
  tandem_vipctl udp-send BIND PEER (HEX | --pattern LEN) [--dev IFACE]
      one datagram from a channel bound to BIND (A.B.C.D:PORT) to PEER; prints its hex
  tandem_vipctl udp-recv BIND PEER [COUNT [TIMEOUT_S]] [--dev IFACE]
      prints 'udp-recv: ready ...', then a line per datagram until COUNT (default 1) arrived
      or TIMEOUT_S (default 5) passed
Exit status: 0 success, 1 negative answer ('no', datagrams missing), 2 usage or system error.
)";

int usage(const std::string& msg) {
  std::fprintf(stderr, "tandem_vipctl: %s\n%s", msg.c_str(), kUsage);
  return kExitError;
}

int fail(const std::string& what, int err) {
  std::fprintf(stderr, "tandem_vipctl: %s: %s\n", what.c_str(), std::strerror(err));
  return kExitError;
}

std::string hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[p[i] >> 4];
    s += kDigits[p[i] & 0xf];
  }
  return s;
}

std::optional<std::vector<uint8_t>> unhex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  std::vector<uint8_t> out;
  for (size_t i = 0; i < text.size(); i += 2) {
    const auto v = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = v(text[i]), lo = v(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

void sleepUntil(uint64_t deadline_ns) {
  timespec ts{static_cast<time_t>(deadline_ns / 1'000'000'000u),
              static_cast<long>(deadline_ns % 1'000'000'000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

int addrMain(const std::string& cmd, const std::vector<std::string>& args) {
  if (args.empty()) return usage(cmd + " needs IFACE");
  AddrNetlink nl;
  if (cmd == "list") {
    std::vector<Ipv4Prefix> addrs;
    if (const int err = nl.list(args[0], addrs); err != 0) return fail("list " + args[0], err);
    for (const auto& a : addrs) std::printf("%s\n", a.toString().c_str());
    return kExitOk;
  }
  if (args.size() < 2) return usage(cmd + " needs IFACE ADDR[/PLEN]");
  std::vector<Ipv4Prefix> prefixes;
  for (size_t i = 1; i < args.size(); ++i) {
    const auto p = Ipv4Prefix::parse(args[i]);
    if (!p) return usage("bad address '" + args[i] + "'");
    prefixes.push_back(*p);
  }
  if (cmd == "has") {
    if (prefixes.size() != 1) return usage("has takes one address");
    bool present = false;
    if (const int err = nl.has(args[0], prefixes[0], present); err != 0) {
      return fail("has " + args[0], err);
    }
    std::printf("%s\n", present ? "yes" : "no");
    return present ? kExitOk : kExitNo;
  }
  for (const auto& p : prefixes) {
    const bool add = cmd == "add";
    const AddrResult r = add ? nl.add(args[0], p) : nl.remove(args[0], p);
    if (!r.ok()) return fail(cmd + " " + p.toString() + " on " + args[0], r.error);
    const char* word = add ? (r.changed ? "added" : "present") : (r.changed ? "removed" : "absent");
    std::printf("%s %s\n", word, p.toString().c_str());
  }
  return kExitOk;
}

int groupMain(const std::string& cmd, const std::vector<std::string>& args) {
  AddressGroup group;
  for (const std::string& a : args) {
    const size_t eq = a.find('=');
    const auto p = eq == std::string::npos ? std::nullopt : Ipv4Prefix::parse(a.substr(eq + 1));
    if (!p || eq == 0) return usage("bad member '" + a + "' (want IFACE=ADDR[/PLEN])");
    group.members.push_back({a.substr(0, eq), *p});
  }
  if (group.members.empty()) return usage(cmd + " needs members");
  AddrNetlink nl;
  const GroupResult r = cmd == "group-add" ? nl.apply(group) : nl.withdraw(group);
  std::printf("%s: changed=%zu error=%s\n", cmd.c_str(), r.changed,
              r.ok() ? "none" : std::strerror(r.error));
  if (!r.ok()) {
    const GroupMember& m = group.members[r.failed_member];
    std::fprintf(stderr, "tandem_vipctl: %s: member %s=%s failed: %s\n", cmd.c_str(),
                 m.interface.c_str(), m.address.toString().c_str(), std::strerror(r.error));
    return kExitError;
  }
  return kExitOk;
}

int garpMain(const std::vector<std::string>& args) {
  if (args.size() < 2 || args.size() > 4) return usage("garp IFACE ADDR [COUNT [SPACING_MS]]");
  const auto vip = Ipv4Prefix::parse(args[1]);
  if (!vip) return usage("bad address '" + args[1] + "'");
  GarpScheduleConfig config;
  config.burst_count = 3;
  if (args.size() > 2) {
    const auto n = tools::parseU64(args[2]);
    if (!n || *n == 0 || *n > 1000) return usage("bad COUNT '" + args[2] + "'");
    config.burst_count = static_cast<uint32_t>(*n);
  }
  if (args.size() > 3) {
    const auto ms = tools::parseU64(args[3]);
    if (!ms || *ms > 60'000) return usage("bad SPACING_MS '" + args[3] + "'");
    config.burst_spacing_ns = *ms * 1'000'000u;
  }
  GarpSender sender(args[0]);
  sender.open();
  GarpSchedule schedule(config);
  schedule.start(monotonicNs());
  while (schedule.nextDueNs() != GarpSchedule::kNever) {
    sleepUntil(schedule.nextDueNs());
    if (schedule.poll(monotonicNs())) {
      if (const int err = sender.send(vip->addr); err != 0) {
        std::fprintf(stderr, "tandem_vipctl: garp send: %s\n", std::strerror(err));
      }
    }
  }
  const GarpCounters& c = sender.counters();
  std::printf("garp: iface=%s mac=%s vip=%s sent=%llu errors=%llu\n", args[0].c_str(),
              macToString(sender.mac()).c_str(), args[1].c_str(),
              static_cast<unsigned long long>(c.sent),
              static_cast<unsigned long long>(c.send_errors));
  return c.send_errors == 0 ? kExitOk : kExitError;
}

void printCounters(const char* prog, const UdpChannel& ch) {
  const UdpChannelCounters& c = ch.counters();
  std::printf(
      "%s: sent=%llu received=%llu foreign=%llu truncated=%llu would_block=%llu "
      "send_errors=%llu recv_errors=%llu\n",
      prog, static_cast<unsigned long long>(c.sent), static_cast<unsigned long long>(c.received),
      static_cast<unsigned long long>(c.foreign), static_cast<unsigned long long>(c.recv_truncated),
      static_cast<unsigned long long>(c.send_would_block),
      static_cast<unsigned long long>(c.send_errors),
      static_cast<unsigned long long>(c.recv_errors));
}

int udpMain(const std::string& cmd, std::vector<std::string> args) {
  UdpChannelOptions o;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--dev" && i + 1 < args.size()) {
      o.device = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
      break;
    }
  }
  if (args.size() < 2) return usage(cmd + " needs BIND PEER");
  const auto bind = Endpoint::parse(args[0]);
  const auto peer = Endpoint::parse(args[1]);
  if (!bind || !peer) return usage("bad BIND or PEER (want A.B.C.D:PORT)");
  o.bind = *bind;
  o.peer = *peer;
  UdpChannel ch(o);
  ch.open();

  if (cmd == "udp-send") {
    std::vector<uint8_t> payload;
    if (args.size() == 4 && args[2] == "--pattern") {
      const auto n = tools::parseU64(args[3]);
      if (!n || *n > 65507) return usage("bad --pattern LEN");
      for (uint64_t i = 0; i < *n; ++i) payload.push_back(static_cast<uint8_t>(i * 7 + 3));
    } else if (args.size() == 3) {
      auto bytes = unhex(args[2]);
      if (!bytes) return usage("bad HEX payload");
      payload = std::move(*bytes);
    } else {
      return usage("udp-send BIND PEER (HEX | --pattern LEN) [--dev IFACE]");
    }
    if (const int err = ch.send(payload); err != 0) return fail("send", err);
    std::printf("udp-send: from=%s to=%s len=%zu hex=%s\n", ch.localEndpoint().toString().c_str(),
                o.peer.toString().c_str(), payload.size(),
                hex(payload.data(), payload.size()).c_str());
    printCounters("udp-send", ch);
    return kExitOk;
  }

  uint64_t want = 1;
  uint64_t timeout_ns = 5'000'000'000u;
  if (args.size() > 2) {
    const auto n = tools::parseU64(args[2]);
    if (!n || *n == 0) return usage("bad COUNT");
    want = *n;
  }
  if (args.size() > 3) {
    const auto s = tools::parseSeconds(args[3]);
    if (!s) return usage("bad TIMEOUT_S");
    timeout_ns = static_cast<uint64_t>(*s * 1e9);
  }
  std::printf("udp-recv: ready bind=%s rcvbuf=%d tos=0x%02x device=%s\n",
              ch.localEndpoint().toString().c_str(), ch.effectiveRcvbuf(), o.tos,
              o.device.empty() ? "-" : o.device.c_str());
  std::fflush(stdout);
  std::vector<uint8_t> buf(65536);
  uint64_t got = 0;
  const uint64_t deadline = monotonicNs() + timeout_ns;
  while (got < want) {
    const uint64_t now = monotonicNs();
    if (now >= deadline) break;
    pollfd pfd{ch.fd(), POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>((deadline - now) / 1'000'000u) + 1);
    if (ready < 0 && errno != EINTR) return fail("poll", errno);
    for (;;) {
      Datagram d;
      const int err = ch.recv(buf, d);
      if (err == EAGAIN) break;
      if (err != 0) {
        std::fprintf(stderr, "tandem_vipctl: recv: %s\n", std::strerror(err));
        continue;
      }
      ++got;
      std::printf("udp-recv: from=%s peer=%s len=%zu hex=%s\n", d.from.toString().c_str(),
                  d.from_peer ? "yes" : "no", d.len, hex(buf.data(), d.len).c_str());
      std::fflush(stdout);
    }
  }
  printCounters("udp-recv", ch);
  return got >= want ? kExitOk : kExitNo;
}

}  // namespace

int main(int argc, char** argv) {
  setLogProgram("tandem_vipctl");
  if (argc < 2) return usage("no command");
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "add" || cmd == "del" || cmd == "has" || cmd == "list") return addrMain(cmd, args);
    if (cmd == "group-add" || cmd == "group-del") return groupMain(cmd, args);
    if (cmd == "garp") return garpMain(args);
    if (cmd == "udp-send" || cmd == "udp-recv") return udpMain(cmd, args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tandem_vipctl: %s\n", e.what());
    return kExitError;
  }
  return usage("unknown command '" + cmd + "'");
}
