#pragma once
/// @file The zero-loss takeover mode of the proxy pair (`sync.takeover = vmac`): the group's
/// addresses resolve to a virtual MAC both nodes receive (proxy/io/vmac.h); the standby keeps
/// the last moments of that traffic in a shadow ring (proxy/io/shadow.h, proxy/core/shadow_ring.h)
/// and, when it takes over, forwards the frames of the outage window through the engine.
///
/// Takeover sequence (the pair controller has already installed every received flow):
///  1. drain the capture rings into the shadow ring;
///  2. bring the macvlan devices up: the kernel now queues new frames to NFQUEUE, which this
///     event loop reads only after step 3, so the outage's frames leave first;
///  3. replay the outage window: frames captured since the dead peer's last heartbeat (minus two
///     heartbeat intervals), client side first, through Engine::process and a raw socket;
///  4. announce the vMAC (gratuitous ARP from the real MACs; caches already point at the vMAC,
///     so this only covers hosts that never asked);
///  5. 10 ms later, when the kernel has handed over the capture block that was still open at
///     step 1, replay the frames captured between steps 1 and 2 (the tail), then close the
///     capture.
/// Step-down: macvlans down at once, capture reopened.
///
/// Frames the dead active had certainly forwarded (the other end acknowledged them in a frame
/// the ring holds; splice flows through their offsets, Engine::planShadowReplay) are left out; the others may arrive twice, which TCP answers with an ACK at
/// most. What the replay must not do, re-open a closed connection, planReplay() prevents for
/// SYNs and the engine's tracker for everything else (data for an unknown or closed flow is
/// dropped and counted there).

#include <cstdint>
#include <memory>
#include <string>

#include "proxy/core/engine.h"
#include "proxy/tandemd/config.h"

struct event_base;

namespace tandem {

struct VmacTakeoverCounters {
  uint64_t replays = 0;          ///< takeovers that replayed a window (tail passes not counted)
  uint64_t replayed = 0;         ///< frames the engine accepted and the raw socket sent
  uint64_t skipped_closed = 0;   ///< SYNs of connections closed since (planReplay)
  uint64_t skipped_delivered = 0;  ///< already acknowledged by the other end, or superseded ACKs
  uint64_t engine_dropped = 0;   ///< frames the engine refused (counted there by reason)
  uint64_t not_tcp = 0;          ///< ring frames that were no whole IPv4/TCP packet
  uint64_t send_errors = 0;      ///< raw socket refusals (ENOBUFS...)
  uint64_t link_failures = 0;    ///< macvlans that would not go up or down
  uint64_t segmented = 0;        ///< super-packets split into MTU-sized segments
  uint64_t windows_learnt = 0;   ///< shadowed frames that moved their flow's window edges
};

/// The last takeover's steps (logged and exported): where the clients' gap went.
struct TakeoverTiming {
  uint64_t since_heartbeat_ns = 0;   ///< the peer's last heartbeat -> the pair's decision
  uint64_t decision_to_take_ns = 0;  ///< decision -> take() (installing, the role change)
  uint64_t drain_ns = 0;             ///< capture rings -> shadow ring
  uint64_t links_up_ns = 0;          ///< macvlans up (rtnetlink)
  uint64_t replay_ns = 0;            ///< planning, translating and sending the window
  uint64_t replayed = 0;             ///< packets sent by the replay
  uint64_t first_live_ns = 0;        ///< replay done -> first live packet (to within a tick)
};

class VmacTakeover {
 public:
  /// Creates the macvlans (down), opens the ARP responders, the capture and the raw socket, and
  /// registers their events on `base`. Throws (startup).
  VmacTakeover(event_base* base, Engine& engine, const SyncConfig& config);
  ~VmacTakeover();
  VmacTakeover(const VmacTakeover&) = delete;
  VmacTakeover& operator=(const VmacTakeover&) = delete;

  /// An authenticated heartbeat from the peer arrived (start of the next outage window).
  void onPeerHeartbeat(uint64_t now_ns) noexcept;
  /// The takeover sequence above. False if the macvlans did not come up.
  bool take(uint64_t now_ns) noexcept;
  /// Step-down: macvlans down, capture on.
  void release() noexcept;
  /// Pair timer: announcements, the tail replay.
  void tick(uint64_t now_ns) noexcept;
  /// Clean exit: deletes the macvlans.
  void shutdown() noexcept;
  /// Prometheus text for /metrics.
  std::string metricsText() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
