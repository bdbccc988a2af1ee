#pragma once
/// @file tandemd's configuration: an INI file (Boost.Program_options syntax: [sections],
/// `key = value`, `#` comments) plus command-line overrides of the same dotted keys, e.g.
/// `--daemon.queue=3 --timeouts.established=2 --service.web.backends="10.0.0.2:80 10.0.0.3:80"`.
///
/// Parsing happens once at startup and throws ConfigError, whose message starts with the key it
/// is about: `service.web.vip: expected ADDRESS:PORT, got '10.0.0.1'`.

#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/ip_addr.h"
#include "proxy/core/engine_config.h"
#include "proxy/io/addr_netlink.h"
#include "proxy/io/log.h"
#include "proxy/io/nfqueue.h"
#include "proxy/io/rules.h"
#include "proxy/io/vmac.h"

namespace tandem {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How the active role moves: the addresses with gratuitous ARP, or (vmac) a virtual MAC that
/// both nodes receive, with the standby shadowing the traffic and replaying the outage window.
enum class TakeoverMode : uint8_t { kGarp, kVmac };

/// The [sync] section of the configuration.
struct SyncConfig {
  uint32_t node_id = 0;
  uint8_t priority = 100;
  bool preempt = false;
  Endpoint bind;
  Endpoint peer;
  std::vector<uint8_t> key;
  uint16_t key_id = 1;
  uint64_t heartbeat_interval_ns = 50'000'000;
  uint32_t miss_count = 3;
  AddressGroup addresses;  ///< moves with the active role
  uint32_t garp_count = 5;
  /// Deferral: the backend's SYN-ACK of a new flow waits for the standby's acknowledgement of
  /// the flow, at most defer_timeout_ns (then it goes anyway, counted).
  bool defer = true;
  uint64_t defer_timeout_ns = 50'000'000;
  /// Heartbeats on the front network too (both set, or neither): this node's front socket and
  /// the peer's, so that losing the sync link alone does not make two actives.
  std::optional<Endpoint> front_bind;
  std::optional<Endpoint> front_peer;
  /// Gratuitous ARP refresh while active, one round per interval; 0 = off.
  uint64_t garp_refresh_ns = 0;
  TakeoverMode takeover = TakeoverMode::kGarp;
  MacAddress vmac{};                ///< takeover = vmac
  uint64_t shadow_bytes = 32u << 20;  ///< the standby's shadow ring
  /// Sync messages in flight at most, unacknowledged by the standby (sync::ReliableConfig::
  /// window): paces a bulk resync by the standby's acks; one window must fit its receive buffer.
  uint32_t send_window = 8192;
  /// Heartbeats sent from a thread of their own while the loop keeps turning
  /// (heartbeat_thread.h; docs/pair_sync.md, "Heartbeat thread").
  bool heartbeat_thread = true;
};

/// Active health checks of a service's backends (proxy/tandemd/health).
enum class HealthCheck : uint8_t { kNone, kTcp, kHttp };
struct HealthConfig {
  HealthCheck check = HealthCheck::kNone;
  uint64_t interval_ns = 2'000'000'000;
  uint64_t timeout_ns = 1'000'000'000;  ///< at most the interval
  /// While a backend is changing state (a failed check while UP, a passed one while DOWN), the
  /// next check starts this soon after the last one and may take at most this long (HAProxy's
  /// fastinter); at most the interval, 0 = the interval.
  uint64_t fastinter_ns = 0;
  uint32_t rise = 2;  ///< consecutive successes that bring a DOWN backend UP
  uint32_t fall = 3;  ///< consecutive failures that take an UP backend DOWN
  std::string http_path = "/";
  int http_status = 200;
};

/// The kernel fast path (docs/fastpath.md): a tc ingress program translates the packets of
/// established splice flows in the kernel, off NFQUEUE.
struct FastPathConfig {
  bool enabled = false;
  /// Interfaces to attach to; empty: every interface that is up and not loopback at start-up.
  std::vector<std::string> interfaces;
  bool close_fast = true;  ///< FIN and RST translated in the kernel too (TANDEM_FP_CLOSE_FAST)
  /// Splice SYNs answered in the kernel (syncookie.bpf.c) while active; only with `enabled`.
  bool syn = true;
  /// Zero-window splices' backend SYN-ACKs answered in the kernel (TANDEM_FP_SYNACK); only with
  /// `enabled`. Off by default: slower on the benchmark's 2-CPU host (docs/fastpath.md).
  bool splice = false;
  /// Splice cookie ACKs bound in the kernel: the backend SYN and both entries written there, so
  /// that no packet of a connection crosses NFQUEUE; needs `syn` (docs/fastpath.md).
  bool bind = false;
  /// Translated packets sent straight out of the routed interface (TANDEM_FP_CFG_REDIRECT),
  /// past the IP stack and netfilter's forwarding hooks; only with `enabled`.
  bool redirect = false;
  /// Map entries (one per flow direction); parseConfig() sets the default from max_flows.
  uint32_t max_entries = 0;
  /// The default: two per flow of daemon.max_flows, at most this many (the map is preallocated).
  static constexpr uint32_t kDefaultMaxEntries = 262'144;
  static constexpr uint32_t kMaxEntries = 16'777'216;
};

struct DaemonConfig {
  EngineConfig engine;
  NfQueueOptions queue;
  RulesMode rules = RulesMode::kIptables;
  /// HTTP endpoint for tandemctl and Prometheus; nullopt when `daemon.metrics = ""`.
  std::optional<Endpoint> metrics = Endpoint{IpAddr::fromV4(0x7f000001), 9100};
  bool set_sysctls = false;
  LogLevel log_level = LogLevel::kInfo;
  /// SCHED_FIFO priority of tandemd (1-99); 0 keeps the normal scheduler. For a pair with
  /// heartbeats of a few ms on a loaded host (bench/RESULTS.md): CPU starvation, not the loop,
  /// delays heartbeats there.
  uint32_t realtime_priority = 0;
  /// The proxy pair; nullopt (no [sync] section) runs a single proxy.
  std::optional<SyncConfig> sync;
  /// Health checks, one per service in the order of engine.services.
  std::vector<HealthConfig> health;
  FastPathConfig fastpath;
};

/// Parses INI text from `file`, then `overrides` (command-line tokens: `--key=value` or
/// `--key value`), which replace the file's values key by key, then validates the result.
DaemonConfig parseConfig(std::istream& file, const std::vector<std::string>& overrides);

/// Opens `path` (ConfigError if it cannot) and parses it as parseConfig() does.
DaemonConfig loadConfig(const std::string& path, const std::vector<std::string>& overrides);

/// tandemd's own command line: its options plus every configuration override.
struct CommandLine {
  std::optional<std::string> config_path;
  bool help = false;
  bool version = false;
  bool check = false;
  std::vector<std::string> overrides;  ///< the remaining tokens, for parseConfig()
};

/// Throws ConfigError on a malformed command line.
CommandLine parseCommandLine(int argc, const char* const argv[]);

/// Reference of every configuration key, for --help.
std::string configKeysHelp();

}  // namespace tandem
