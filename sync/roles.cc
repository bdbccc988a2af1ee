#include "sync/roles.h"

#include <algorithm>

namespace tandem::sync {

RoleMachine::RoleMachine(RolesConfig config, uint64_t now_ns) noexcept
    : config_(config), watch_from_ns_(now_ns), next_heartbeat_ns_(now_ns) {
  if (config_.interval_ns == 0) config_.interval_ns = 1;
  if (config_.miss_count == 0) config_.miss_count = 1;
}

uint64_t RoleMachine::deadIntervalNs() const noexcept {
  // Use the slower of the two intervals, so a peer configured slower is not declared dead
  // between two of its own heartbeats.
  const uint64_t peer_interval = peer_seen_ ? uint64_t{peer_.interval_ms} * 1'000'000 : 0;
  return std::max(config_.interval_ns, peer_interval) * config_.miss_count;
}

bool RoleMachine::pathAlive(Path p, uint64_t now_ns) const noexcept {
  const size_t i = static_cast<size_t>(p);
  return heard_[i] && now_ns - last_heard_ns_[i] < deadIntervalNs();
}

bool RoleMachine::peerHeardWithin(uint64_t now_ns, uint64_t window_ns) const noexcept {
  for (size_t i = 0; i < kPathCount; ++i) {
    if (heard_[i] && now_ns - last_heard_ns_[i] < window_ns) return true;
  }
  return false;
}

bool RoleMachine::peerAlive(uint64_t now_ns) const noexcept {
  return pathAlive(Path::kSync, now_ns) || pathAlive(Path::kFront, now_ns);
}

uint64_t RoleMachine::nextTimerNs() const noexcept {
  uint64_t t = next_heartbeat_ns_;
  if (role_ == Role::kStandby) {
    uint64_t dead_at = watch_from_ns_ + deadIntervalNs();
    for (size_t i = 0; i < kPathCount; ++i) {
      if (heard_[i]) dead_at = std::max(dead_at, last_heard_ns_[i] + deadIntervalNs());
    }
    t = std::min(t, dead_at);
    if (barrier_pending_) t = std::min(t, barrier_started_ns_ + config_.barrier_timeout_ns);
  }
  return t;
}

Heartbeat RoleMachine::heartbeat(uint32_t flows) const noexcept {
  Heartbeat hb;
  hb.role = role_;
  hb.priority = config_.priority;
  hb.ready = ready_ || role_ == Role::kActive;
  hb.handover = handover_;
  hb.epoch = epoch_;
  hb.flows = flows;
  hb.interval_ms = static_cast<uint32_t>(std::min<uint64_t>(config_.interval_ns / 1'000'000,
                                                            UINT32_MAX));
  return hb;
}

void RoleMachine::sendSoon(RoleOutput& out, uint64_t now_ns) noexcept {
  out.send_heartbeat = true;
  next_heartbeat_ns_ = now_ns + config_.interval_ns;
}

RoleOutput RoleMachine::change(Role to, const char* reason) noexcept {
  RoleOutput out;
  out.changed = true;
  out.from = role_;
  out.to = to;
  out.reason = reason;
  out.release_addresses = role_ == Role::kActive;
  out.take_addresses = to == Role::kActive;
  barrier_pending_ = false;
  barrier_done_ = false;
  // A node leaving ACTIVE or FAULT no longer follows the active's update stream from a known
  // point: it must bulk-resync before it counts as ready.
  if (to == Role::kStandby && role_ != Role::kStandby) ready_ = false;
  role_ = to;
  return out;
}

RoleOutput RoleMachine::takeOver(const char* reason) noexcept {
  // A new epoch above every epoch seen: any other active that still runs will see it and yield.
  epoch_ = std::max(epoch_, peer_seen_ ? peer_.epoch : 0) + 1;
  handover_ = false;
  return change(Role::kActive, reason);
}

bool RoleMachine::peerWinsActiveTie(uint32_t node_id, const Heartbeat& hb) const noexcept {
  if (hb.epoch != epoch_) return hb.epoch > epoch_;
  if (hb.priority != config_.priority) return hb.priority > config_.priority;
  return node_id > config_.node_id;
}

bool RoleMachine::betterStandbyThanPeer() const noexcept {
  // Prefer the node that holds the table, then priority, then node id: deterministic on both.
  if (ready_ != peer_.ready) return ready_;
  if (config_.priority != peer_.priority) return config_.priority > peer_.priority;
  return config_.node_id > peer_node_;
}

RoleOutput RoleMachine::onHeartbeat(Path path, uint32_t node_id, const Heartbeat& hb,
                                    uint64_t now_ns) noexcept {
  RoleOutput out;
  if (node_id == config_.node_id) return out;  // our own, looped back
  const size_t p = static_cast<size_t>(path);
  heard_[p] = true;
  last_heard_ns_[p] = now_ns;
  // Heard while a barrier was outstanding: the silence was the receive path's, not the peer's.
  if (barrier_pending_) ++barrier_saves_;
  barrier_pending_ = false;
  barrier_done_ = false;
  // A non-active heartbeat older than the peer's last active one: sent before the peer took
  // over, overtaken on the other path (the paths reorder freely). It proves the peer alive but
  // says nothing current: acting on it ("both standby") would make a second active.
  if (peer_seen_ && peer_node_ == node_id && role_ != Role::kActive &&
      hb.role != Role::kActive && peer_.role == Role::kActive && hb.epoch < peer_.epoch) {
    ++stale_heartbeats_;
    return out;
  }
  peer_seen_ = true;
  peer_node_ = node_id;
  peer_ = hb;

  switch (role_) {
    case Role::kActive:
      if (hb.role == Role::kActive) {
        if (peerWinsActiveTie(node_id, hb)) {
          const char* why = hb.epoch != epoch_
                                ? "two actives: peer has the higher epoch"
                                : "two actives, same epoch: peer wins on priority or node id";
          epoch_ = std::max(epoch_, hb.epoch);
          out = change(Role::kStandby, why);
        }
        sendSoon(out, now_ns);  // the loser learns at once, either way
      }
      break;
    case Role::kStandby:
      epoch_ = std::max(epoch_, hb.epoch);
      if (hb.role == Role::kActive) {
        handover_ = false;  // the peer took over: our handover is complete
        if (hb.handover) break;
        if (config_.preempt && !preempt_suppressed_ && ready_ &&
            config_.priority > hb.priority) {
          out = takeOver("preempt: higher priority than the active peer");
          sendSoon(out, now_ns);
        }
      } else if (hb.role == Role::kFault) {
        out = takeOver("peer in fault");
        sendSoon(out, now_ns);
      } else if (hb.handover) {
        out = takeOver("peer handed over (planned switchover)");
        sendSoon(out, now_ns);
      } else if (!handover_ && betterStandbyThanPeer()) {
        out = takeOver("both standby: this node is the better candidate");
        sendSoon(out, now_ns);
      }
      break;
    case Role::kFault:
      epoch_ = std::max(epoch_, hb.epoch);
      break;
  }
  return out;
}

RoleOutput RoleMachine::tick(uint64_t now_ns) noexcept {
  RoleOutput out;
  // Own stall: this node was frozen past its own timer by more than an interval. The peer's
  // heartbeats were likely frozen by the same cause (both nodes starved on one host, or the
  // peer's sent at the same instant we resumed and not yet through the kernel), so its silence
  // so far proves nothing: watch it for a whole dead interval from now.
  if (expected_tick_ns_ != 0 && now_ns > expected_tick_ns_ &&
      now_ns - expected_tick_ns_ > config_.interval_ns) {
    ++self_stalls_;
    if (config_.own_stalls && role_ == Role::kStandby) watch_from_ns_ = std::max(watch_from_ns_, now_ns);
  }
  // A standby still resyncing holds only part of the table: a takeover would lose the rest,
  // and a lapse that short is more likely a loaded loop or a flooded socket than a dead active.
  // It waits twice the dead interval while the last peer it heard was active.
  const bool patient = !ready_ && peer_seen_ && peer_.role == Role::kActive &&
                       peerHeardWithin(now_ns, 2 * deadIntervalNs());
  if (role_ == Role::kStandby && !peerAlive(now_ns) && !handover_ && !patient &&
      now_ns - watch_from_ns_ >= deadIntervalNs()) {
    const bool barrier = config_.barrier_timeout_ns != 0;
    if (!barrier || barrier_done_) {
      out = takeOver(peer_seen_ ? "peer heartbeats lost on both paths"
                                : "no peer heard since start");
    } else if (!barrier_pending_) {
      // Everything the kernel held when the peer became dead must be read before deciding.
      barrier_pending_ = true;
      barrier_started_ns_ = now_ns;
      out.start_barrier = true;
    } else if (now_ns - barrier_started_ns_ >= config_.barrier_timeout_ns) {
      ++barrier_timeouts_;
      out = takeOver(peer_seen_ ? "peer heartbeats lost on both paths (receive-path barrier "
                                  "timed out)"
                                : "no peer heard since start (receive-path barrier timed out)");
    }
  } else if (role_ == Role::kStandby && handover_ && !peerAlive(now_ns)) {
    // We handed over, and the peer died before taking over: take the addresses back.
    out = takeOver("peer died during the handover");
  }
  if (out.changed || now_ns >= next_heartbeat_ns_) sendSoon(out, now_ns);
  expected_tick_ns_ = nextTimerNs();
  return out;
}

RoleOutput RoleMachine::barrierDone(uint64_t now_ns) noexcept {
  if (barrier_pending_) {
    barrier_pending_ = false;
    barrier_done_ = true;
  }
  return tick(now_ns);
}

RoleOutput RoleMachine::setFault(bool fault, uint64_t now_ns) noexcept {
  RoleOutput out;
  if (fault == fault_) return out;
  fault_ = fault;
  if (fault) {
    handover_ = false;
    out = change(Role::kFault, "local fault");
  } else {
    watch_from_ns_ = now_ns;  // give the peer a dead interval to be heard before taking over
    out = change(Role::kStandby, "local fault cleared");
  }
  sendSoon(out, now_ns);
  return out;
}

const char* RoleMachine::switchoverRefusal(uint64_t now_ns) const noexcept {
  if (role_ != Role::kActive) return "switchover refused: this node is not active";
  if (!peerAlive(now_ns)) return "switchover refused: peer not alive";
  if (peer_.role != Role::kStandby || !peer_.ready) {
    return "switchover refused: peer is not a ready standby";
  }
  return nullptr;
}

RoleOutput RoleMachine::requestSwitchover(uint64_t now_ns) noexcept {
  RoleOutput out;
  if (const char* why = switchoverRefusal(now_ns)) {
    out.reason = why;
  } else {
    out = change(Role::kStandby, "admin switchover");
    handover_ = true;
    preempt_suppressed_ = true;  // otherwise a preempting node would take straight back
    sendSoon(out, now_ns);
  }
  return out;
}

}  // namespace tandem::sync
