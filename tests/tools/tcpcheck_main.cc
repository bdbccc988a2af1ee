// tcpcheck: command line of the verifying traffic tool (see tcpcheck.h and usage below).

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "net_util.h"
#include "tcpcheck.h"

namespace {

using namespace tandem::tools;

constexpr const char* kUsage = R"(usage:
  tcpcheck server --listen ADDR:PORT
      Serves until SIGTERM/SIGINT; SIGUSR1 (and exit) print
      'tcpcheck-server: listen=.. conns=N ok=N failed=N active=N bytes_verified=.. bytes_sent=..
       peers=ADDR(N),..' (peers: the source addresses the server saw, with their counts).
  tcpcheck client --connect ADDR:PORT [options] [mode]
    options:
      --conns N          concurrent connections (default 1)
      --bytes B          verify: bytes each way (default 65536); rr: request/response size
      --bind ADDR        source address
      --timeout S        a connection that makes no progress for S seconds fails (default 10)
      --hold-ms MS       verify: stay open and idle MS ms after the exchange, then close
      --rst              verify: abort with a RST (SO_LINGER 0) after the exchange
      --expect-fail      exit 0 only if every connection fails (reset, timeout, refused, ...)
      --expect-reset     exit 0 only if every connection is ended by a RST (reset, refused)
      --seed N           base seed of the patterns (default: from the clock)
      --trace FILE       write a CSV of the bytes received (and rr round trips) per bin:
                         'unix_ms,rx_bytes,round_trips,max_gap_ms', unix_ms the bin's start
                         (wall clock), max_gap_ms the largest gap between two receptions of a
                         connection that ended in the bin
      --trace-bin-ms MS  the trace's bin width (default 10)
      --log-gaps-ms MS   print 'tcpcheck-gap: kind=.. conn=.. end=UNIX_TIME ms=..' to stderr
                         for each receive gap (stream), round trip (rr) or whole connection
                         (connect-rate) that took MS or longer
    modes (default: verify):
      --stream --duration S [--rate BYTES_PER_S]   paced stream both ways (default 1048576,
                                                   0 = unlimited); reports max_gap_ms
      --rr [--count K | --duration S] [--size BYTES] [--rate N]
                                                   request/response, one request in flight per
                                                   connection, K round trips each or for S
                                                   seconds; --rate: round trips per second on
                                                   each connection (default 0 = back to back);
                                                   reports p50/p99/max (us) and max_gap_ms
                                                   (largest gap between responses)
      --connect-rate --duration S                  back-to-back short exchanges on --conns
                                                   workers (default --bytes 64); reports conns/s
  Prints one line 'tcpcheck: conns=N ok=N failed=N bytes_sent=.. bytes_verified=.. key=value..'.
  Exit status: 0 expected outcome, 1 unexpected outcome, 2 usage or setup error.
)";

int usageError(const std::string& msg) {
  std::fprintf(stderr, "tcpcheck: %s (tcpcheck --help for usage)\n", msg.c_str());
  return kExitUsage;
}

int serverMain(int argc, char** argv) {
  std::optional<sockaddr_in> listen_addr;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen_addr = parseEndpoint(argv[++i]);
      if (!listen_addr) return usageError(std::string("bad --listen '") + argv[i] + "'");
    } else {
      return usageError(std::string("unknown server argument '") + argv[i] + "'");
    }
  }
  if (!listen_addr) return usageError("server needs --listen ADDR:PORT");
  return runServer(*listen_addr);
}

int clientMain(int argc, char** argv) {
  ClientOptions o;
  bool have_connect = false;
  bool have_bytes = false;
  bool have_duration = false;
  bool have_rate = false;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    auto number = [&](uint64_t& out) {
      const auto v = has_value ? parseU64(argv[++i]) : std::nullopt;
      if (v) out = *v;
      return v.has_value();
    };
    auto seconds = [&](uint64_t& out_ns) {
      const auto v = has_value ? parseSeconds(argv[++i]) : std::nullopt;
      if (v) out_ns = static_cast<uint64_t>(*v * 1e9);
      return v.has_value();
    };
    uint64_t n = 0;
    bool ok = true;
    if (arg == "--connect") {
      const auto ep = has_value ? parseEndpoint(argv[++i]) : std::nullopt;
      ok = ep.has_value();
      if (ok) o.connect = *ep;
      have_connect = ok;
    } else if (arg == "--bind") {
      const auto ep = has_value ? parseEndpoint(argv[++i], true) : std::nullopt;
      ok = ep.has_value();
      if (ok) o.bind = *ep;
    } else if (arg == "--conns") {
      ok = number(n) && n > 0 && n <= 100000;
      o.conns = static_cast<uint32_t>(n);
    } else if (arg == "--bytes" || arg == "--size") {
      ok = number(o.bytes);
      have_bytes = true;
    } else if (arg == "--timeout") {
      ok = seconds(o.timeout_ns) && o.timeout_ns > 0;
    } else if (arg == "--hold-ms") {
      ok = number(n);
      o.hold_ns = n * kNsPerMs;
    } else if (arg == "--rst") {
      o.rst = true;
    } else if (arg == "--expect-fail") {
      o.expect = Expect::kFail;
    } else if (arg == "--expect-reset") {
      o.expect = Expect::kReset;
    } else if (arg == "--log-gaps-ms") {
      ok = number(n) && n > 0;
      o.log_gaps_ns = n * kNsPerMs;
    } else if (arg == "--seed") {
      ok = number(o.seed);
    } else if (arg == "--stream") {
      o.mode = ClientMode::kStream;
    } else if (arg == "--rr") {
      o.mode = ClientMode::kRr;
    } else if (arg == "--connect-rate") {
      o.mode = ClientMode::kConnectRate;
    } else if (arg == "--duration") {
      ok = seconds(o.duration_ns);
      have_duration = true;
    } else if (arg == "--rate") {
      ok = number(o.rate);
      have_rate = true;
    } else if (arg == "--trace") {
      ok = has_value;
      if (ok) o.trace_path = argv[++i];
    } else if (arg == "--trace-bin-ms") {
      ok = number(n) && n > 0;
      o.trace_bin_ns = n * kNsPerMs;
    } else if (arg == "--count") {
      ok = number(o.count) && o.count > 0;
    } else {
      return usageError(std::string("unknown client argument '") + std::string(arg) + "'");
    }
    if (!ok) return usageError("bad or missing value for " + std::string(arg));
  }
  if (!have_connect) return usageError("client needs --connect ADDR:PORT");
  switch (o.mode) {
    case ClientMode::kVerify:
      if (o.rst && o.expect != Expect::kSuccess) return usageError("--rst is a successful close");
      break;
    case ClientMode::kStream:
      if (!have_duration) return usageError("--stream needs --duration S");
      break;
    case ClientMode::kRr:
      if (!have_bytes) o.bytes = 64;
      if (o.bytes == 0) return usageError("--rr needs --size > 0");
      if (!have_rate) o.rate = 0;
      break;
    case ClientMode::kConnectRate:
      if (!have_duration) return usageError("--connect-rate needs --duration S");
      if (!have_bytes) o.bytes = 64;
      break;
  }
  if ((o.hold_ns > 0 || o.rst) && o.mode != ClientMode::kVerify) {
    return usageError("--hold-ms and --rst apply to the verify mode only");
  }
  return runClient(o);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usageError("missing role");
  const std::string_view role = argv[1];
  if (role == "server") return serverMain(argc - 2, argv + 2);
  if (role == "client") return clientMain(argc - 2, argv + 2);
  if (role == "--help" || role == "-h") {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  return usageError("unknown role '" + std::string(role) + "'");
}
