#pragma once
/// @file tcpcheck: a verifying TCP traffic generator for integration tests. Each connection
/// starts with a WireHeader (wire.h); then client and server each send their own deterministic
/// pattern (pattern.h) and check every byte they receive.

#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace tandem::tools {

/// Exit statuses of tcpcheck (the integration tests rely on them).
inline constexpr int kExitOk = 0;      ///< every connection had the expected outcome
inline constexpr int kExitFailed = 1;  ///< at least one connection did not
inline constexpr int kExitUsage = 2;   ///< bad arguments or a local setup error

enum class ClientMode : uint8_t {
  kVerify,       ///< N connections, B bytes each way, half-close, every byte checked
  kStream,       ///< a paced verified stream both ways for a duration; reports the largest gap
  kRr,           ///< request/response ping-pong (count, or duration); reports latency percentiles
  kConnectRate,  ///< short verified exchanges back to back for a duration; reports conns/s
};

/// What a run must end with for tcpcheck to exit 0.
enum class Expect : uint8_t {
  kSuccess,  ///< every connection verified and closed cleanly
  kFail,     ///< every connection failed (any reason: reset, timeout, refused, ...)
  kReset,    ///< every connection was ended by a RST (refused, reset) from the peer or a box
};

struct ClientOptions {
  ClientMode mode = ClientMode::kVerify;
  Expect expect = Expect::kSuccess;
  sockaddr_in connect{};
  sockaddr_in bind{};  ///< sin_family == 0: no bind
  uint32_t conns = 1;
  uint64_t bytes = 65536;                ///< verify: each way; rr: request and response size
  uint64_t timeout_ns = 10'000'000'000;  ///< a connection failing to progress this long fails
  uint64_t hold_ns = 0;                  ///< verify: idle time between exchange and close
  bool rst = false;                      ///< verify: abort with a RST instead of a FIN
  uint64_t duration_ns = 0;              ///< stream, connect-rate
  uint64_t rate = 1 << 20;               ///< stream: bytes/s each way, 0 = unlimited;
                                         ///< rr: round trips/s per connection, 0 = unpaced
  uint64_t count = 1000;                 ///< rr: round trips per connection
  uint64_t seed = 0;                     ///< 0: derive one from the clock
  std::string trace_path;                ///< non-empty: write a received-bytes trace (CSV) here
  uint64_t trace_bin_ns = 10'000'000;    ///< the trace's bin width
  uint64_t log_gaps_ns = 0;              ///< stream, rr: log each gap this long or longer
};

/// Runs a client; returns kExitOk when the outcome was the expected one.
int runClient(const ClientOptions& options);

/// Serves until SIGTERM/SIGINT (exit 0); SIGUSR1 prints the counters line.
int runServer(const sockaddr_in& listen_addr);

}  // namespace tandem::tools
