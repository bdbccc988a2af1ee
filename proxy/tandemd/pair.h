#pragma once
/// @file The proxy pair controller: ties the pure sync library (frames, authentication,
/// reliable delivery, bulk resync, roles) to the daemon's I/O (UDP channel, rtnetlink
/// addresses, gratuitous ARP, libevent timers) and to the engine's checkpointing API.
///
/// Active: every kTickNs the engine's changes are drained into the reliable sender (once per
/// event, never per packet) and sent; a standby's BULK_REQUEST is answered by walking the table.
/// Standby: received updates are installed in (or removed from) the engine in order; the node
/// reports ready once a bulk transfer completed. Takeover: pending frames are applied first, then
/// the address group comes up, then the GARP burst starts, so the kernel never sees a packet for
/// the VIP before its flow is in the table. Step-down: the group is withdrawn at once.
///
/// Heartbeats travel on the sync path and, with sync.front_bind / front_peer, on the front
/// network too (its own socket, sealer and replay window; heartbeats only), so that losing one
/// link does not make two actives (RoleMachine: the peer is dead only when both paths are
/// silent). If two actives still meet, the loser withdraws its group at once and the winner
/// sends a gratuitous ARP burst again.
///
/// Loop priorities: the role timer (heartbeats, takeover decisions) and the sync and front
/// sockets run at libevent priority 0, before the data tick (checkpoints, bulk steps paced by
/// time) and the data path; the standby never declares the peer dead with its frames unread.
/// The active keeps no checkpoint queue for a silent peer (it bulk-resyncs when it returns).
/// After a clean planned handover the old active keeps its table and follows the new active's
/// stream (no bulk). Files: pair.cc, pair_paths.cc, pair_control.cc, pair_impl.h.
///
/// Deferral (sync.defer, with a live sync path and a ready standby): a new flow's backend
/// SYN-ACK is held by the engine until the standby acknowledged the flow's upsert, at most
/// sync.defer_timeout_ms (deferral.h); the daemon then offers the NFQUEUE hold store again
/// (setHeldReleaser).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/ip_addr.h"
#include "proxy/core/engine.h"
#include "proxy/tandemd/config.h"

struct event_base;
struct event;

namespace tandem {

/// Counters of the pair beyond those of the sync library's own classes.
struct PairCounters {
  uint64_t role_changes = 0;
  uint64_t takeovers = 0;
  uint64_t flows_installed = 0;
  uint64_t install_failures = 0;
  uint64_t flows_removed = 0;
  uint64_t frames_sent = 0;
  uint64_t seal_failures = 0;
  uint64_t changes_lost = 0;    ///< drainChanges() reported lost removals (resync needed)
  uint64_t addr_failures = 0;   ///< group apply/withdraw failures
};

class PairController {
 public:
  /// Opens the sync socket, the netlink socket and the GARP sockets, and registers the timer and
  /// the socket event on `base`. Throws (startup only) on a failure.
  PairController(event_base* base, Engine& engine, const SyncConfig& config);
  ~PairController();
  PairController(const PairController&) = delete;
  PairController& operator=(const PairController&) = delete;

  /// Withdraws the address group if this node holds it (clean shutdown).
  void shutdown() noexcept;

  /// Deferral: called (with the monotonic time) when held SYN-ACKs may go, i.e. when the
  /// engine's spliceGeneration() moved outside packet processing; the daemon offers the NFQUEUE
  /// hold store to the engine again (NfQueue::offerHeld).
  void setHeldReleaser(std::function<void(uint64_t)> fn);
  /// Call after each NFQUEUE batch: while deferring, new flows' checkpoints are sent at once.
  void afterPackets() noexcept;

  /// "active", "standby" or "fault".
  const char* roleName() const noexcept;
  bool ready() const noexcept;
  /// Prometheus text for /metrics.
  std::string metricsText() const;
  /// JSON members (without braces) for /status.
  std::string statusJson() const;

  // Planned switchover and control (the last block of pair.cc).

  /// The outcome of a planned switchover, for the control endpoint.
  struct SwitchoverResult {
    int http_status = 200;  ///< 200 done; 409 refused or aborted; 503 cannot run here
    std::string message;    ///< one line for the operator
  };
  using SwitchoverDone = std::function<void(const SwitchoverResult&)>;
  /// Called once by the daemon once its loop is set up. `hold_data_path`: how a planned
  /// switchover holds the data path: hold(true) stops reading the NFQUEUE (packets wait in the
  /// kernel's queue, nothing is dropped), hold(false) resumes and processes what waited at once.
  /// Also starts the control watch: the active warns while its standby is not ready.
  void enableControl(std::function<void(bool hold)> hold_data_path);
  /// Planned switchover (POST /switchover, tandemctl switchover). On the active with a live,
  /// ready standby: holds the data path, flushes the last flow changes to the standby, waits
  /// for their acknowledgement, announces the handover and withdraws the address group, then
  /// resumes. `done` runs exactly once: at once if refused, else once the peer is heard active
  /// or the attempt failed.
  void requestSwitchover(SwitchoverDone done);
  /// GET /pair: "key value" lines about this node, its peer and the last switchover.
  std::string pairText() const;
  /// Prometheus text of the switchover counters (appended to /metrics).
  std::string controlMetricsText() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
