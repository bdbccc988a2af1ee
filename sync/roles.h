#pragma once
/// @file The role state machine of one node of the pair: ACTIVE, STANDBY or FAULT.
///
/// Pure: inputs are events with the current monotonic time (a heartbeat received on a path, a
/// timer tick, a local fault, an admin switchover request); outputs say what to do (log a role
/// change with its reason, send a heartbeat now, take or release the address group). The daemon
/// performs them; tests drive it on a fake clock.
///
/// Rules (the "why" of each is in roles.cc):
/// - The peer is dead only when heartbeats stopped on *both* paths (sync link and front network)
///   for miss_count intervals, so losing one link never makes two actives.
/// - A standby takes over when the peer is dead or in FAULT, when the peer hands over, when no
///   peer was heard for miss_count intervals after start, when both are standby and it is the
///   better candidate (ready, then priority, then node id), or, with preempt on, when it is ready
///   and has a strictly higher priority than the active.
///   A standby that is not ready (bulk resync in progress) and last heard an active peer waits
///   twice that long: it would take over with part of the table only.
/// - Every takeover increases the epoch past any epoch seen. A non-active heartbeat with an
///   epoch below the peer's last active one was overtaken on the other path: ignored.
/// - Two actives: the higher epoch wins, then the higher priority, then the higher node id; the
///   loser steps down (releases its addresses) on the first heartbeat it sees.
/// - An admin switchover on the active hands over to a live, ready standby: the active becomes
///   standby and announces `handover`, so the peer takes over without waiting for a timeout.
///   After it, this node does not preempt until restarted (or until setPreempt()).
/// - Receive-path barrier (barrier_timeout_ns > 0): silence is not proof while the kernel still
///   holds the peer's frames. When the peer would be dead, the standby first asks for a barrier
///   (RoleOutput::start_barrier: the daemon sends probes through its own kernel's receive
///   queues and calls barrierDone() when all came back, so every frame queued before them has
///   reached the sockets and been read). A heartbeat heard meanwhile cancels the takeover; the
///   takeover happens when the barrier is done and the peer is still silent, or when the barrier
///   has not completed within barrier_timeout_ns.
/// - Own stalls (RolesConfig::own_stalls): a tick() later than nextTimerNs() by more than one interval means this node
///   itself was not running (its loop starved of CPU). Silence measured across that gap is not
///   the peer's: a stall that froze this node often froze the peer's sender too (same host,
///   same hypervisor). The peer then has a whole dead interval, observed from that tick on, to
///   be heard before it counts as dead.

#include <array>
#include <cstddef>
#include <cstdint>

#include "sync/wire.h"

namespace tandem::sync {

/// The two independent paths heartbeats travel on.
enum class Path : uint8_t { kSync = 0, kFront = 1 };
inline constexpr size_t kPathCount = 2;

struct RolesConfig {
  uint32_t node_id = 0;               ///< unique in the pair, non-zero
  uint8_t priority = 100;             ///< higher is preferred
  bool preempt = false;               ///< a higher-priority ready standby takes over
  uint64_t interval_ns = 50'000'000;  ///< heartbeat interval (down to 1 ms)
  uint32_t miss_count = 3;            ///< intervals without a heartbeat on both paths = dead
  /// 0: no receive-path barrier (take over as soon as the peer is dead). Otherwise the longest
  /// wait for one before taking over anyway.
  uint64_t barrier_timeout_ns = 0;
  /// The own-stall rule (below). The daemon, which ticks several times an interval, turns it
  /// on; a caller that ticks only at nextTimerNs() may see its own late ticks as stalls.
  bool own_stalls = false;
};

/// What the daemon must do after an event. Several flags can be set at once; do them in the
/// order: release addresses, take addresses, send heartbeat.
struct RoleOutput {
  bool changed = false;           ///< role changed from `from` to `to` (log it with `reason`)
  Role from = Role::kStandby;
  Role to = Role::kStandby;
  const char* reason = nullptr;   ///< why it changed, or why a request was refused
  bool send_heartbeat = false;
  bool take_addresses = false;    ///< install flows, then bring the VIP group up, then GARP
  bool release_addresses = false; ///< bring the VIP group down (stop forwarding first)
  /// Probe the local receive path now, then call barrierDone() (see the barrier rule above).
  bool start_barrier = false;
};

class RoleMachine {
 public:
  /// Starts in STANDBY at `now_ns`.
  RoleMachine(RolesConfig config, uint64_t now_ns) noexcept;

  /// An authenticated heartbeat from node `node_id` (the frame header's sender) on `path`.
  RoleOutput onHeartbeat(Path path, uint32_t node_id, const Heartbeat& hb,
                         uint64_t now_ns) noexcept;
  /// Timer: call at nextTimerNs() or any time sooner.
  RoleOutput tick(uint64_t now_ns) noexcept;
  /// The receive-path barrier asked for by start_barrier completed: every frame queued in the
  /// kernel before it has been read. Decides at once (the same as tick()).
  RoleOutput barrierDone(uint64_t now_ns) noexcept;
  /// A barrier is outstanding (asked for, neither done nor cancelled).
  bool barrierPending() const noexcept { return barrier_pending_; }
  /// Takeovers a barrier prevented: the peer was heard while it was outstanding.
  uint64_t barrierSaves() const noexcept { return barrier_saves_; }
  /// Takeovers made because a barrier did not complete within barrier_timeout_ns.
  uint64_t barrierTimeouts() const noexcept { return barrier_timeouts_; }
  /// Ticks that came more than one interval late (see the own-stall rule above).
  uint64_t selfStalls() const noexcept { return self_stalls_; }
  /// A local fault appeared (true) or cleared (false): a link down, the data path unhealthy.
  RoleOutput setFault(bool fault, uint64_t now_ns) noexcept;
  /// Planned switchover (tandemctl switchover), on the active. Refused (reason set, nothing
  /// changed) unless the peer is alive, standby and ready.
  RoleOutput requestSwitchover(uint64_t now_ns) noexcept;
  /// Why requestSwitchover() would be refused now, or nullptr if it would proceed. Lets the
  /// daemon check before it holds its data path and flushes its last updates to the peer.
  const char* switchoverRefusal(uint64_t now_ns) const noexcept;
  /// This node handed over and the peer has not been heard as active since.
  bool handingOver() const noexcept { return handover_; }
  /// Whether this node holds the whole flow table (bulk resync done); travels in heartbeats.
  void setReady(bool ready) noexcept { ready_ = ready; }
  void setPreempt(bool preempt) noexcept {
    config_.preempt = preempt;
    preempt_suppressed_ = false;
  }

  /// The heartbeat this node sends now.
  Heartbeat heartbeat(uint32_t flows) const noexcept;
  Role role() const noexcept { return role_; }
  uint32_t epoch() const noexcept { return epoch_; }
  bool ready() const noexcept { return ready_; }
  bool peerSeen() const noexcept { return peer_seen_; }
  /// Heartbeats ignored as overtaken: a non-active one older than the peer's last active one.
  uint64_t staleHeartbeats() const noexcept { return stale_heartbeats_; }
  bool peerAlive(uint64_t now_ns) const noexcept;
  bool pathAlive(Path p, uint64_t now_ns) const noexcept;
  const Heartbeat& peer() const noexcept { return peer_; }
  uint32_t peerNodeId() const noexcept { return peer_node_; }
  /// When tick() next has something to do.
  uint64_t nextTimerNs() const noexcept;
  /// The peer is dead after this long without heartbeats on both paths.
  uint64_t deadIntervalNs() const noexcept;

 private:
  RoleOutput change(Role to, const char* reason) noexcept;
  RoleOutput takeOver(const char* reason) noexcept;
  bool peerWinsActiveTie(uint32_t node_id, const Heartbeat& hb) const noexcept;
  bool betterStandbyThanPeer() const noexcept;
  bool peerHeardWithin(uint64_t now_ns, uint64_t window_ns) const noexcept;
  void sendSoon(RoleOutput& out, uint64_t now_ns) noexcept;

  RolesConfig config_;
  Role role_ = Role::kStandby;
  uint32_t epoch_ = 0;          ///< own epoch while active; highest seen otherwise
  bool ready_ = false;
  bool fault_ = false;
  bool handover_ = false;       ///< announcing a planned handover
  bool preempt_suppressed_ = false;
  /// Silence counts from here: start-up, a cleared fault, this node's own last stall.
  uint64_t watch_from_ns_;
  uint64_t next_heartbeat_ns_;
  uint64_t expected_tick_ns_ = 0;  ///< nextTimerNs() as of the last tick()
  uint64_t self_stalls_ = 0;
  bool peer_seen_ = false;
  uint32_t peer_node_ = 0;
  Heartbeat peer_;
  std::array<uint64_t, kPathCount> last_heard_ns_{};
  std::array<bool, kPathCount> heard_{};
  uint64_t stale_heartbeats_ = 0;
  bool barrier_pending_ = false;  ///< asked for, not yet done
  bool barrier_done_ = false;     ///< done, and no heartbeat heard since it was asked for
  uint64_t barrier_started_ns_ = 0;
  uint64_t barrier_saves_ = 0;
  uint64_t barrier_timeouts_ = 0;
};

}  // namespace tandem::sync
