#pragma once
/// @file Configuration of the packet core: services, flow cap and per-state timeouts.
/// Plain data; validation with key names happens where the file is parsed (proxy/tandemd).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/ip_addr.h"
#include "proxy/core/bind_rules.h"

namespace tandem {

enum class Mode : uint8_t { kPassthrough, kSplice };
enum class Addressing : uint8_t { kTransparent, kSnat };
enum class Scheduler : uint8_t { kRoundRobin, kHash };
/// Splice mode: open the backend leg on the client's cookie ACK, or on its first data segment
/// (whose bytes may choose the backend: ServiceConfig::routes).
enum class BindOn : uint8_t { kAck, kData };

const char* modeName(Mode m) noexcept;
const char* addressingName(Addressing a) noexcept;
const char* schedulerName(Scheduler s) noexcept;
const char* bindOnName(BindOn b) noexcept;

inline constexpr uint64_t kNsPerSec = 1'000'000'000ull;

struct ServiceConfig {
  std::string name;
  Endpoint vip;                     ///< what clients connect to
  std::vector<Endpoint> backends;   ///< static pool
  Mode mode = Mode::kPassthrough;
  Addressing addressing = Addressing::kTransparent;
  Scheduler scheduler = Scheduler::kRoundRobin;
  IpAddr snat_addr;                 ///< source address on the backend leg (addressing = snat)
  uint16_t snat_port_min = 20000;
  uint16_t snat_port_max = 59999;
  BindOn bind = BindOn::kAck;       ///< splice mode only
  /// bind = data: the first rule matching the client's first data segment picks the backend;
  /// none matching, the scheduler does.
  std::vector<RouteRule> routes;
  /// Splice mode: move quiescent flows off a backend that is down or draining to another one
  /// (resplice.cc). Only safe for protocols whose requests do not depend on the connection's
  /// history (HTTP/1.1 keep-alive, memcached text); off by default.
  bool resplice = false;
  /// Splice mode: the proxy's SYN-ACK offers a zero window, so the client sends nothing until
  /// the backend leg is up; the proxy then opens the window with the backend's (an ACK to the
  /// client) and puts the flow on the fast path at once. Nothing waits in NFQUEUE. Off: the
  /// SYN-ACK offers SpliceConfig::window and data sent early is held until the leg is up.
  /// tandemd turns it on for bind = ack (handshake_window = zero); bind = data needs it off.
  bool zero_window_handshake = false;
};

/// Idle timeouts per TCP state, as Linux conntrack names them (nf_conntrack_proto_tcp.c).
struct Timeouts {
  uint64_t syn_sent_ns = 30 * kNsPerSec;
  uint64_t syn_recv_ns = 30 * kNsPerSec;
  uint64_t established_ns = 7200 * kNsPerSec;
  uint64_t fin_wait_ns = 120 * kNsPerSec;
  uint64_t close_wait_ns = 60 * kNsPerSec;
  uint64_t last_ack_ns = 30 * kNsPerSec;
  uint64_t time_wait_ns = 120 * kNsPerSec;
  uint64_t close_ns = 10 * kNsPerSec;
};

/// Splice mode: what the proxy answers clients with while it binds the backend late.
struct SpliceConfig {
  /// SYN-cookie secret (at least 16 bytes; a standby shares it). Empty: a random one.
  std::vector<uint8_t> cookie_secret;
  uint64_t cookie_period_ns = 64 * kNsPerSec;
  /// MSS the proxy advertises to clients, and the most it offers a backend on a client's behalf
  /// (the backend SYN carries min(client MSS, this)). tandemd lowers it to the service
  /// interfaces' MTU - 40.
  uint16_t mss = 1460;
  uint8_t wscale = 7;       ///< receive shift the proxy offers clients
  uint16_t window = 65535;  ///< SYN-ACK window field
  /// A backend that has not answered the proxy's SYN by then gets the client reset: the next
  /// client segment is turned into a RST the client accepts.
  uint64_t connect_timeout_ns = 3 * kNsPerSec;
  /// Re-splicing: a quiescent flow counts as between requests only once it has been idle this
  /// long (a response written in one go is complete by then); a draining backend's flows move,
  /// and an idle flow's close by its backend is absorbed, only after it.
  uint64_t resplice_min_idle_ns = 200'000'000;
};

struct EngineConfig {
  std::vector<ServiceConfig> services;
  size_t max_flows = 1'000'000;
  Timeouts timeouts;
  SpliceConfig splice;
  uint64_t hash_seed = 0;  ///< keys the flow hash; 0 picks a random seed
  /// Flow slots the expiry sweep visits per expire() call, at least; it visits more when the
  /// table is large so a whole sweep takes at most ~32 calls.
  uint32_t expire_batch = 4096;
};

}  // namespace tandem
