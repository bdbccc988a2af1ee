#include "proxy/tandemd/pair.h"

#include <event2/event.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "proxy/io/log.h"
#include "proxy/tandemd/flow_record.h"
#include "proxy/tandemd/pair_impl.h"

namespace tandem {

using namespace pair_detail;  // NOLINT: this file's own constants and helpers

void PairController::Impl::open() {
  keys.add(config.key_id, config.key);
  keys.setSendKey(config.key_id);
  channel.open();
  // One window of upserts must fit the peer's receive buffer (sized like ours): a 1.4 kB
  // datagram of 6 costs the buffer about 2.3 kB, so about 400 bytes a message.
  constexpr uint64_t kBufferBytesPerMessage = 400;
  if (uint64_t{config.send_window} * kBufferBytesPerMessage >
      static_cast<uint64_t>(channel.effectiveRcvbuf())) {
    logf(LogLevel::kWarn,
         "pair: sync.send_window %u needs about %llu kB of socket buffer, the sync socket has "
         "%d kB: a bulk resync may overflow the peer's buffer (lower sync.send_window)",
         config.send_window,
         static_cast<unsigned long long>(config.send_window * kBufferBytesPerMessage / 1024),
         channel.effectiveRcvbuf() / 1024);
  }
  for (const GroupMember& m : config.addresses.members) {
    size_t i = 0;
    while (i < garps.size() && garps[i]->interface() != m.interface) ++i;
    if (i == garps.size()) {
      garps.push_back(std::make_unique<GarpSender>(m.interface));
      garps.back()->open();
    }
    garp_of_member.push_back(i);
  }
  if (config.takeover == TakeoverMode::kVmac) {
    vmac = std::make_unique<VmacTakeover>(base, engine, config);
  }
  tx.reserve(sync::kDefaultMaxFrame);
  polled.reserve(kPollBatch);
  openFront();
  openBarrier();
  // Tracking from the start: the standby discards its own changes each tick, the active drains
  // them to the peer; a node that takes over needs no switch-on step.
  engine.enableChangeTracking();
  engine.setStandby(true, monotonicNs());  // every node starts as a standby
  startBulk(monotonicNs());
}

void PairController::Impl::startBulk(uint64_t now) noexcept {
  roles.setReady(false);
  receiver.cancelFollow();
  // A request id the active has not seen: it ignores repeats of its last one.
  uint64_t rt = 0;
  try {
    rt = realtimeNs();
  } catch (const std::system_error&) {
    rt = now;
  }
  bulk_receiver.start(static_cast<uint32_t>(rt / 1000), now);
}

void PairController::Impl::apply(const sync::Update& u) noexcept {
  const uint64_t now = monotonicNs();
  switch (u.kind) {
    case sync::UpdateKind::kUpsert: {
      Flow f;
      if (!recordToFlow(u.flow, f)) {
        ++records_refused;
        return;
      }
      if (engine.installFlow(f, now) == DropReason::kNone) {
        ++counters.flows_installed;
      } else {
        ++counters.install_failures;
      }
      return;
    }
    case sync::UpdateKind::kDelete:
      if (engine.removeFlow(toCoreKey(u.flow.key))) ++counters.flows_removed;
      return;
    case sync::UpdateKind::kBulkEnd:
      if (bulk_receiver.onBulkEnd(u.request_id, u.bulk_flows)) {
        roles.setReady(true);
        logf(LogLevel::kInfo, "pair: bulk resync complete (%u flows): standby ready",
             u.bulk_flows);
      }
      return;
  }
}

bool PairController::Impl::next(uint64_t& cursor, sync::FlowRecord& out) noexcept {
  constexpr uint64_t kDone = UINT64_MAX;
  if (cursor == kDone || cursor > UINT32_MAX) return false;
  bool found = false;
  const uint64_t now = now_for_source;
  const uint32_t after = engine.forEachLiveFlow(static_cast<uint32_t>(cursor), 1,
                                                [&](const Flow& f) {
                                                  out = flowToRecord(f, now);
                                                  found = true;
                                                });
  cursor = after == 0 ? kDone : after;
  return found;
}

bool PairController::Impl::seal(sync::FrameWriter& w) noexcept {
  sync::FrameHeader h;
  h.node_id = config.node_id;
  h.epoch = roles.epoch();
  if (!sealer.seal(w, h)) {
    ++counters.seal_failures;
    return false;
  }
  const std::span<uint8_t> f = w.frame();
  // Errors are counted by the channel (and rate-limit logged there); reliability resends.
  // (Heartbeat frames are timed in sendHeartbeat().)
  (void)channel.send(std::span<const uint8_t>(f.data(), f.size()));
  ++counters.frames_sent;
  return true;
}

void PairController::Impl::sendHeartbeat(bool periodic) noexcept {
  if (hb_thread) {
    // Published before the thread's next send: the role and epoch it sends change when the
    // loop changes them. A heartbeat the role machine wants now (a role change, the handover,
    // the loser of two actives) leaves at once from the thread too, so there is one sender.
    hb_thread->publish(heartbeatSnapshot());
    if (!periodic) hb_thread->sendNow();
    return;
  }
  const uint64_t now = monotonicNs();
  if (timing.hb_sent_prev_ns != 0) {
    timing.hb_tx_gap_max_ns = std::max(timing.hb_tx_gap_max_ns, now - timing.hb_sent_prev_ns);
  }
  timing.hb_sent_prev_ns = now;
  sync::FrameWriter w(tx);
  const size_t flows = engine.activeFlows();
  sync::Heartbeat hb =
      roles.heartbeat(flows > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(flows));
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) == 0) {  // diagnostics only (wire.h, sent_ns)
    hb.sent_ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull +
                 static_cast<uint64_t>(ts.tv_nsec);
  }
  bool ok = w.add(hb);
  // The active's heartbeats carry its update session: a standby learns of a new session (this
  // node stopped syncing to it while it was silent, or took over) without waiting for an update.
  if (ok && roles.role() == sync::Role::kActive) ok = w.add(sender.base());
  if (ok) seal(w);
  sendFrontHeartbeat(hb);
}

void PairController::Impl::sendAck() noexcept {
  sync::FrameWriter w(tx);
  if (w.add(receiver.ack())) {
    seal(w);
    receiver.ackSent();
  }
}

void PairController::Impl::sendBulkRequest(const sync::BulkRequest& r) noexcept {
  sync::FrameWriter w(tx);
  if (w.add(r)) seal(w);
}

void PairController::Impl::sendUpdates(uint64_t now, uint64_t budget_ns) noexcept {
  const uint64_t deadline = monotonicNs() + budget_ns;
  for (int round = 0; round < 16; ++round) {
    if (round > 0 && monotonicNs() >= deadline) {
      // The rest goes with the pump at the loop's next turn (the pump's own calls have no
      // budget: one round each, it loops itself).
      if (budget_ns > 0 && sender.sendable()) schedulePump();
      return;
    }
    polled.clear();
    size_t n = 0;
    try {
      n = sender.poll(now, kPollBatch, polled);
    } catch (const std::bad_alloc&) {
      return;  // reserved to kPollBatch: cannot happen
    }
    size_t i = 0;
    while (i < n) {
      sync::FrameWriter w(tx);
      if (!w.add(sender.base())) return;
      const size_t first = i;
      for (; i < n; ++i) {
        const sync::Update& u = polled[i];
        bool ok = false;
        switch (u.kind) {
          case sync::UpdateKind::kUpsert:
            ok = w.add(sync::FlowUpsert{u.seq, u.flow});
            break;
          case sync::UpdateKind::kDelete:
            ok = w.add(sync::FlowDelete{u.seq, u.flow.key});
            break;
          case sync::UpdateKind::kBulkEnd:
            ok = w.add(sync::BulkEnd{u.seq, u.request_id, u.bulk_flows});
            break;
        }
        if (!ok) break;
      }
      if (i == first) return;  // an item larger than a frame: a bug, never loop on it
      seal(w);
    }
    if (n < kPollBatch) return;
  }
}

void PairController::Impl::garpTick(uint64_t now) noexcept {
  // A round due after the burst is a refresh (GarpSchedule: one per refresh interval).
  const bool refresh = garp_schedule.burstLeft() == 0;
  if (!garp_schedule.poll(now)) return;
  garpRound();
  if (refresh) ++garp_refresh_rounds;
}

void PairController::Impl::garpRound() noexcept {
  ++garp_rounds;
  for (size_t m = 0; m < config.addresses.members.size(); ++m) {
    (void)garps[garp_of_member[m]]->send(config.addresses.members[m].address.addr);
  }
}

void PairController::Impl::takeAddresses(uint64_t now) noexcept {
  // Every update received so far was installed when it arrived (apply() runs on receipt), so
  // the table is in place before the first address comes up.
  roles.setReady(true);
  if (vmac) {
    addresses_held = vmac->take(now);
    if (!addresses_held) ++counters.addr_failures;
    return;
  }
  const uint64_t t0 = monotonicNs();
  const GroupResult r = netlink.apply(config.addresses);
  const uint64_t t1 = monotonicNs();
  if (!r.ok()) {
    ++counters.addr_failures;
    logf(LogLevel::kError, "pair: cannot bring up %s on %s: %s",
         config.addresses.members[r.failed_member].address.toString().c_str(),
         config.addresses.members[r.failed_member].interface.c_str(), std::strerror(r.error));
    return;
  }
  addresses_held = true;
  garp_schedule.start(now);
  garpRound();
  (void)garp_schedule.poll(now);
  logf(LogLevel::kInfo,
       "pair: address group up (%zu addresses, %zu changed) in %llu us, gratuitous ARP %llu us "
       "later",
       config.addresses.members.size(), r.changed,
       static_cast<unsigned long long>((t1 - t0) / 1000),
       static_cast<unsigned long long>((monotonicNs() - t1) / 1000));
}

void PairController::Impl::releaseAddresses() noexcept {
  garp_schedule.stop();
  bulk_sender.cancel();
  if (vmac) {
    vmac->release();
    addresses_held = false;
    return;
  }
  const uint64_t t0 = monotonicNs();
  const GroupResult r = netlink.withdraw(config.addresses);
  const uint64_t took_us = (monotonicNs() - t0) / 1000;
  addresses_held = false;
  if (!r.ok()) {
    ++counters.addr_failures;
    logf(LogLevel::kError, "pair: cannot remove %s from %s: %s",
         config.addresses.members[r.failed_member].address.toString().c_str(),
         config.addresses.members[r.failed_member].interface.c_str(), std::strerror(r.error));
  } else {
    logf(LogLevel::kInfo, "pair: address group withdrawn (%zu changed) in %llu us", r.changed,
         static_cast<unsigned long long>(took_us));
  }
}

void PairController::Impl::handleRole(const sync::RoleOutput& out, uint64_t now,
                                      bool periodic) noexcept {
  if (out.changed) {
    ++counters.role_changes;
    logf(LogLevel::kInfo, "pair: role %s -> %s (epoch %u): %s", sync::roleName(out.from),
         sync::roleName(out.to), roles.epoch(), out.reason != nullptr ? out.reason : "");
    // Flows expire by their own packets only where the packets arrive.
    engine.setStandby(out.to != sync::Role::kActive, now);
    if (out.to == sync::Role::kActive) {
      ++counters.takeovers;
      receiver.cancelFollow();  // a handover that did not complete: nothing to follow
      // A new session: the peer's receiver follows it, and requests a bulk if it needs one.
      uint64_t session = now;
      try {
        session = realtimeNs();
      } catch (const std::system_error&) {
      }
      sender.reset(session);
    }
    if (out.from == sync::Role::kActive) startBulk(now);
  } else if (out.reason != nullptr) {
    logf(LogLevel::kWarn, "pair: %s", out.reason);
  }
  if (out.release_addresses) releaseAddresses();
  if (out.take_addresses) takeAddresses(now);
  if (out.send_heartbeat) sendHeartbeat(periodic && !out.changed);
  if (out.start_barrier) startBarrier(now);
}

void PairController::Impl::onRoleTick() noexcept {
  uint64_t now = monotonicNs();
  if (timing.role_tick_prev_ns != 0 && now - timing.role_tick_prev_ns > role_tick_ns) {
    timing.role_tick_late_max_ns =
        std::max(timing.role_tick_late_max_ns, now - timing.role_tick_prev_ns - role_tick_ns);
  }
  timing.role_tick_prev_ns = now;
  // Frames already queued are applied before the role timer can decide a takeover, so every
  // update that reached this node is in the table before the addresses come up.
  bool empty = onReadable();
  if (front) onFrontReadable();
  now = monotonicNs();
  // Never declare the peer dead while its frames wait unread in our socket (a bulk or a burst
  // of checkpoints ahead of its heartbeat): read on until the socket is empty, or the peer is
  // heard again.
  for (int i = 0; i < 64 && !empty && roles.role() == sync::Role::kStandby &&
                  !roles.peerAlive(now);
       ++i) {
    ++timing.verdict_reads;
    empty = onReadable();
    now = monotonicNs();
  }
  handleRole(roles.tick(now), now, /*periodic=*/true);
  watchPaths(now);
  // The heartbeat thread sends what was published last: keep flows, readiness and the update
  // session current, and tell it the loop turned.
  if (hb_thread) {
    hb_thread->publish(heartbeatSnapshot());
    loopTurned(monotonicNs());
  }
}

void PairController::Impl::stopSyncingToDeadPeer(uint64_t now) noexcept {
  // Nobody acknowledges what we queue, so it would be resent every resend interval into a
  // closed port and, when the peer returns, flood its socket ahead of our heartbeats. The peer
  // learns of the new session from our next frame and bulk-resyncs; nothing is kept meanwhile.
  if (!peer_dropped) {
    peer_dropped = true;
    ++dead_peer_drops;
    bulk_sender.cancel();
    uint64_t session = now;
    try {
      session = realtimeNs();
    } catch (const std::system_error&) {
    }
    if (session <= sender.session()) session = sender.session() + 1;
    if (!sender.idle() && roles.peerSeen()) {
      logf(LogLevel::kWarn,
           "pair: peer silent: dropping %zu queued checkpoints (it bulk-resyncs when it returns)",
           sender.pending());
    }
    sender.reset(session);
  }
  // Changes are still taken from the engine (bounded tracking), and go nowhere.
  const bool complete = engine.drainChanges([](const FlowKey&) {}, [&](const Flow& f) {
    if (!f.sync_pending) return;
    (void)engine.markSynced(FlowKey{f.client_addr, f.vip_addr, f.client_port, f.vip_port});
  });
  (void)complete;
}

void PairController::Impl::bulkStep() noexcept {
  // No time budget: the window bounds what can go (the standby's acks open it), kPumpMax
  // bounds one callback. Queued updates (live ones first: they are older) go before new bulk
  // flows are queued, and the bulk queues only into the open window (bulk.h).
  const uint64_t now = monotonicNs();
  now_for_source = now;
  size_t total = 0;
  while (total < kPumpMax) {
    const uint64_t sent0 = sender.counters().sent + sender.counters().resent;
    const size_t n = bulk_sender.active() ? bulk_sender.step(*this, sender, kBulkChunk) : 0;
    sendUpdates(now, 0);  // one round: what was just queued (and due resends)
    const uint64_t sent = sender.counters().sent + sender.counters().resent - sent0;
    total += sent;
    if (n == 0 && sent == 0) break;  // the window is full (waiting for acks), or nothing left
  }
  // Stopped by the callback's bound, not by the window: come back at the loop's next turn
  // rather than at the next tick. (Stopped by the window: the next ack schedules the pump.)
  if (total >= kPumpMax) schedulePump();
}

void PairController::Impl::schedulePump() noexcept {
  if (pump_ev == nullptr || event_pending(pump_ev, EV_TIMEOUT, nullptr) != 0) return;
  const timeval zero{0, 0};
  (void)event_add(pump_ev, &zero);  // fails only without memory: the tick pumps anyway
}

void PairController::Impl::onPump() noexcept {
  if (roles.role() != sync::Role::kActive || peer_dropped) return;
  const uint64_t start = monotonicNs();
  ++pumps;
  bulkStep();
  timing.pump_max_ns = std::max(timing.pump_max_ns, monotonicNs() - start);
}

void PairController::Impl::onTick() noexcept {
  const uint64_t start = monotonicNs();
  loopTurned(start);
  const uint64_t now = start;
  if (vmac) vmac->tick(now);
  if (roles.role() == sync::Role::kActive) {
    if (!roles.peerAlive(now)) {
      stopSyncingToDeadPeer(now);
    } else {
      peer_dropped = false;
      drainToSender(now);
      bulkStep();
    }
    sendUpdates(now);
    updateDeferral(now);
    garpTick(now);
    watchStandby(now);
  } else {
    updateDeferral(now);  // off: not active
    // Installing checkpoints must not echo them back; nothing else changes a standby's table.
    (void)engine.drainChanges([](const FlowKey&) {}, [](const Flow&) {});
    if (receiver.resyncNeeded()) {
      receiver.clearResyncNeeded();
      logf(LogLevel::kInfo, "pair: update stream broken or restarted: asking for a bulk resync");
      startBulk(now);
    }
    if (!bulk_receiver.ready()) {
      if (const auto req = bulk_receiver.poll(now)) sendBulkRequest(*req);
    }
  }
  if (receiver.ackDue()) sendAck();
  timing.data_tick_max_ns = std::max(timing.data_tick_max_ns, monotonicNs() - start);
}

// ---- The standby as the active sees it ----

PairController::Impl::StandbyState PairController::Impl::standbyState(
    uint64_t now) const noexcept {
  if (!roles.peerAlive(now) || roles.peer().role != sync::Role::kStandby) {
    return StandbyState::kAbsent;
  }
  return roles.peer().ready ? StandbyState::kReady : StandbyState::kSyncing;
}

void PairController::Impl::watchStandby(uint64_t now) noexcept {
  const StandbyState s = standbyState(now);
  if (s == StandbyState::kReady) {
    if (standby_seen != StandbyState::kReady) {
      logf(LogLevel::kInfo, "pair: standby node %u is ready", roles.peerNodeId());
    }
    standby_seen = s;
    return;
  }
  // A failover now would lose flows (syncing) or everything (absent): say so, but not on every
  // tick: at the change, then every 10 s while it lasts.
  const bool due = standby_warn.allow(now);  // a change uses up the allowance too
  if (s != standby_seen || due) {
    ++standby_warnings;
    if (s == StandbyState::kSyncing) {
      logf(LogLevel::kWarn,
           "pair: standby node %u is not ready (bulk resync in progress, %u of our %zu flows): "
           "a failover now loses the flows it lacks",
           roles.peerNodeId(), roles.peer().flows, engine.activeFlows());
    } else {
      logf(LogLevel::kWarn, "pair: no standby heard: a failure of this node now loses every flow");
    }
  }
  standby_seen = s;
}

// ---- Deferral ----

bool PairController::Impl::wantDeferral(uint64_t now) const noexcept {
  // Only with someone to wait for: a lone proxy, or one whose standby is still catching up
  // (bulk), must not stall new connections.
  // And the acknowledgements travel on the sync path: with only the front path alive, every
  // new connection would wait the whole timeout.
  return config.defer && roles.role() == sync::Role::kActive &&
         roles.pathAlive(sync::Path::kSync, now) && roles.peer().role == sync::Role::kStandby &&
         roles.peer().ready;
}

void PairController::Impl::releaseHeld(uint64_t now) noexcept {
  if (held_releaser) held_releaser(now);
}

void PairController::Impl::drainToSender(uint64_t now) noexcept {
  const bool complete = engine.drainChanges(
      [&](const FlowKey& k) { (void)sender.remove(toSyncKey(k)); },
      [&](const Flow& f) { queueChange(f, now); });
  if (!complete) {
    ++counters.changes_lost;
    if (drain_warn.allow(now)) {
      logf(LogLevel::kWarn, "pair: flow removals were lost before reaching the sync queue");
    }
  }
}

void PairController::Impl::flushNewFlows(uint64_t now) noexcept {
  // While deferring, a new flow's checkpoint leaves with the packet batch that created it, not
  // at the next tick: its round trip to the standby then overlaps the backend's, and the held
  // SYN-ACK rarely waits at all. Once per batch that created flows, never per packet.
  const uint64_t created = engine.counters().flows_created;
  if (!deferring || created == flows_created_seen) {
    flows_created_seen = created;
    return;
  }
  flows_created_seen = created;
  ++early_flushes;
  drainToSender(now);
  sendUpdates(now);
}

void PairController::Impl::queueChange(const Flow& f, uint64_t now) noexcept {
  uint64_t seq = 0;
  const bool queued = sender.upsert(flowToRecord(f, now), &seq);
  if (!f.sync_pending) return;
  const FlowKey key{f.client_addr, f.vip_addr, f.client_port, f.vip_port};
  if (queued && deferring) {
    try {
      deferred.add(key, seq, now);
      return;
    } catch (const std::bad_alloc&) {
    }
  }
  // Not waiting for it (queue full, deferral just stopped): its SYN-ACK may go.
  if (engine.markSynced(key)) releaseHeld(now);
}

void PairController::Impl::pollDeferred(uint64_t now) noexcept {
  bool any = false;
  deferred.poll(
      now, [&](uint64_t seq) { return sender.delivered(seq); },
      [&](const FlowKey& k) { any = engine.markSynced(k) || any; });
  if (any) releaseHeld(now);
}

void PairController::Impl::updateDeferral(uint64_t now) noexcept {
  const bool want = wantDeferral(now);
  if (want != deferring) {
    deferring = want;
    engine.setSyncDeferral(want);
    logf(LogLevel::kInfo, "pair: deferral %s", want ? "on (standby ready)" : "off");
    if (!want) {
      deferred.releaseAll([&](const FlowKey& k) { (void)engine.markSynced(k); });
      releaseHeld(now);  // setSyncDeferral(false) moved the generation
    }
  }
  if (deferring) pollDeferred(now);
}

bool PairController::Impl::onReadable(int max_frames) noexcept {
  const uint64_t start = monotonicNs();
  bool empty = false;
  for (int n = 0; n < max_frames; ++n) {
    Datagram d;
    const int err = channel.recv(std::span<uint8_t>(rx.data(), rx.size()), d);
    if (err == EAGAIN || err == EWOULDBLOCK) {
      empty = true;
      break;
    }
    if (err != 0) {
      if (err == EMSGSIZE || err == EINTR) continue;
      empty = true;
      break;  // counted by the channel
    }
    const uint64_t now = monotonicNs();
    frame.clear();
    const sync::Verifier::Result r =
        verifier.open(std::span<const uint8_t>(rx.data(), d.len), frame);
    if (r.reject != sync::Reject::kNone) {
      if (reject_warn.allow(now)) {
        logf(LogLevel::kWarn, "pair: sync frame from %s rejected: %s", d.from.toString().c_str(),
             sync::rejectName(r.reject));
      }
      continue;
    }
    if (r.header.node_id == config.node_id) {
      ++own_node_frames;  // our own frame reflected back: authentic, but not the peer's
      continue;
    }
    for (const sync::Ack& a : frame.acks) sender.onAck(a);
    if (!frame.acks.empty() && deferring) pollDeferred(now);
    // Ack-clocked: the ack opened the window (or showed a loss); fill it at the loop's next
    // turn, at the data path's priority, not here among the heartbeats.
    if (!frame.acks.empty() && roles.role() == sync::Role::kActive &&
        (sender.sendable() || bulk_sender.active())) {
      schedulePump();
    }
    for (const sync::BulkRequest& b : frame.bulk_requests) {
      if (roles.role() == sync::Role::kActive) bulk_sender.onRequest(b);
    }
    if (!frame.updates.empty() || frame.has_base) {
      if (roles.role() == sync::Role::kActive) {
        ++updates_while_active;
      } else if (frame.has_base) {
        receiver.onFrame(frame.base, std::span<const sync::Update>(frame.updates));
      }
    }
    for (const sync::Heartbeat& hb : frame.heartbeats) {
      onPeerHeartbeat(sync::Path::kSync, r.header.node_id, hb, now, d.kernel_rx_ns);
    }
  }
  // Acknowledge what arrived at once, not at the next tick: the active may be holding a
  // SYN-ACK for it (deferral).
  if (roles.role() != sync::Role::kActive && receiver.ackDue()) sendAck();
  // A planned switchover moves on as soon as the standby's acknowledgement (or its first
  // heartbeat as active) arrives, rather than at its next poll.
  if (switchover.phase != Switchover::Phase::kIdle) switchoverStep();
  timing.read_max_ns = std::max(timing.read_max_ns, monotonicNs() - start);
  return empty;
}

PairController::PairController(event_base* base, Engine& engine, const SyncConfig& config)
    : impl_(std::make_unique<Impl>(base, engine, config)) {
  impl_->open();
  Impl* self = impl_.get();
  self->timer_ev = event_new(
      base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onTick(); }, self);
  self->role_ev = event_new(
      base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onRoleTick(); }, self);
  self->read_ev = event_new(
      base, self->channel.fd(), EV_READ | EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { (void)static_cast<Impl*>(arg)->onReadable(); },
      self);
  self->pump_ev = event_new(
      base, -1, 0, [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onPump(); },
      self);
  const timeval tick{0, static_cast<suseconds_t>(kTickNs / 1000)};
  // The role timer is the heartbeats' clock and the detection's resolution: below 10 ms
  // intervals it runs at a quarter interval (at least 0.5 ms) instead of the 2 ms tick.
  const uint64_t role_tick_ns =
      std::clamp<uint64_t>(config.heartbeat_interval_ns / 4, 500'000, kTickNs);
  const timeval role_tick{0, static_cast<suseconds_t>(role_tick_ns / 1000)};
  self->role_tick_ns = role_tick_ns;
  // Heartbeats and the sync socket first: with the base's priorities set up (main.cc), a busy
  // data path (NFQUEUE batches, checkpoints, bulk steps) cannot delay them by more than the one
  // callback already running. Without priorities (a base set up elsewhere), this is a no-op.
  if (self->timer_ev == nullptr || self->read_ev == nullptr || self->role_ev == nullptr ||
      self->pump_ev == nullptr ||
      (event_base_get_npriorities(base) > 1 &&
       (event_priority_set(self->role_ev, kPriorityHeartbeat) != 0 ||
        event_priority_set(self->read_ev, kPriorityHeartbeat) != 0)) ||
      event_add(self->timer_ev, &tick) != 0 || event_add(self->role_ev, &role_tick) != 0 ||
      event_add(self->read_ev, nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the sync events to the loop");
  }
  self->registerFront();
  self->registerBarrier();
  logf(LogLevel::kInfo,
       "pair: node %u priority %u%s, sync %s -> %s, heartbeat %.3f s x %u, %zu addresses",
       config.node_id, config.priority, config.preempt ? " preempt" : "",
       impl_->channel.localEndpoint().toString().c_str(), config.peer.toString().c_str(),
       static_cast<double>(config.heartbeat_interval_ns) / 1e9, config.miss_count,
       config.addresses.members.size());
  if (config.heartbeat_thread) self->startHeartbeatThread();
}

PairController::~PairController() {
  if (impl_->hb_thread) impl_->hb_thread->stop();  // before the events and sockets go
  if (impl_->timer_ev != nullptr) event_free(impl_->timer_ev);
  if (impl_->role_ev != nullptr) event_free(impl_->role_ev);
  if (impl_->read_ev != nullptr) event_free(impl_->read_ev);
  if (impl_->pump_ev != nullptr) event_free(impl_->pump_ev);
  if (impl_->front_ev != nullptr) event_free(impl_->front_ev);
  if (impl_->barrier_ev != nullptr) event_free(impl_->barrier_ev);
}

void PairController::afterPackets() noexcept {
  const uint64_t now = monotonicNs();
  impl_->loopTurned(now);  // a data-path batch done: the loop is turning
  if (impl_->roles.role() == sync::Role::kActive) impl_->flushNewFlows(now);
}

void PairController::setHeldReleaser(std::function<void(uint64_t)> fn) {
  impl_->held_releaser = std::move(fn);
}

void PairController::shutdown() noexcept {
  // A node shutting down is silent at once: the peer takes over as from a crash.
  if (impl_->hb_thread) impl_->hb_thread->stop();
  if (impl_->addresses_held) impl_->releaseAddresses();
  if (impl_->vmac) impl_->vmac->shutdown();
}

const char* PairController::roleName() const noexcept {
  return sync::roleName(impl_->roles.role());
}

bool PairController::ready() const noexcept { return impl_->roles.ready(); }

void PairController::Impl::pathMetrics(PromText& m) const {
  static constexpr const char* kNames[sync::kPathCount] = {"sync", "front"};
  const uint64_t now = monotonicNs();
  m.family("tandem_pair_path_alive", "gauge",
           "1 while the peer's heartbeats arrive on this path.");
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    m.sample("tandem_pair_path_alive", roles.pathAlive(static_cast<sync::Path>(i), now) ? 1 : 0,
             "path", kNames[i]);
  }
  m.family("tandem_pair_heartbeats_received_total", "counter",
           "Authentic peer heartbeats, by path.");
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    m.sample("tandem_pair_heartbeats_received_total", heartbeats_rx[i], "path", kNames[i]);
  }
  m.family("tandem_pair_path_losses_total", "counter",
           "Times the peer's heartbeats stopped on a path.");
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    m.sample("tandem_pair_path_losses_total", path_losses[i], "path", kNames[i]);
  }
  m.family("tandem_front_rejected_total", "counter",
           "Received front heartbeat frames dropped, by reason.");
  for (size_t i = 1; i < static_cast<size_t>(sync::Reject::kCount); ++i) {
    m.sample("tandem_front_rejected_total", front_verifier ? front_verifier->counters()[i] : 0,
             "reason", sync::rejectName(static_cast<sync::Reject>(i)));
  }
}

std::string PairController::metricsText() const {
  const Impl& p = *impl_;
  PromText m;
  m.family("tandem_pair_role", "gauge", "1 for the role this node is in.");
  for (sync::Role r : {sync::Role::kStandby, sync::Role::kActive, sync::Role::kFault}) {
    m.sample("tandem_pair_role", p.roles.role() == r ? 1 : 0, "role", sync::roleName(r));
  }
  m.single("tandem_pair_ready", "gauge", "1 when this node holds the whole flow table.",
           p.roles.ready() ? 1 : 0);
  m.single("tandem_pair_epoch", "gauge", "Takeover epoch.", p.roles.epoch());
  m.single("tandem_pair_addresses_held", "gauge", "1 while this node holds the address group.",
           p.addresses_held ? 1 : 0);
  p.pathMetrics(m);
  m.single("tandem_pair_standby_ready", "gauge",
           "On the active: 1 while a ready standby is heard (0: absent or still bulk-resyncing).",
           p.roles.role() == sync::Role::kActive &&
                   p.standbyState(monotonicNs()) == Impl::StandbyState::kReady
               ? 1
               : 0);
  m.single("tandem_pair_standby_warnings_total", "counter",
           "Warnings logged by the active: standby absent or not ready.", p.standby_warnings);
  m.single("tandem_pair_deferral", "gauge", "1 while new flows wait for the standby's ack.",
           p.deferring ? 1 : 0);
  m.single("tandem_pair_deferred_waiting", "gauge", "New flows waiting for the standby's ack.",
           p.deferred.size());
  m.family("tandem_sync_rejected_total", "counter", "Received sync frames dropped, by reason.");
  for (size_t i = 1; i < static_cast<size_t>(sync::Reject::kCount); ++i) {
    m.sample("tandem_sync_rejected_total", p.verifier.counters()[i], "reason",
             sync::rejectName(static_cast<sync::Reject>(i)));
  }
  const PairCounters& c = p.counters;
  const sync::ReliableSender::Counters& s = p.sender.counters();
  const sync::ReliableReceiver::Counters& rc = p.receiver.counters();
  const UdpChannelCounters& u = p.channel.counters();
  const std::pair<const char*, uint64_t> counters[] = {
      {"tandem_sync_frames_accepted_total", p.verifier.accepted()},
      {"tandem_sync_frames_sent_total", c.frames_sent},
      {"tandem_sync_own_node_frames_total", p.own_node_frames},
      {"tandem_sync_foreign_datagrams_total", u.foreign},
      {"tandem_sync_send_errors_total", u.send_errors + u.send_would_block},
      {"tandem_sync_updates_queued_total", s.queued},
      {"tandem_sync_updates_sent_total", s.sent},
      {"tandem_sync_updates_resent_total", s.resent},
      {"tandem_sync_updates_acked_total", s.acked},
      {"tandem_sync_updates_overflow_total", s.overflow},
      {"tandem_sync_updates_lost_resent_total", s.lost},
      {"tandem_sync_resend_timeouts_total", s.timeouts},
      {"tandem_sync_window_full_total", s.window_full},
      {"tandem_sync_pumps_total", p.pumps},
      {"tandem_sync_updates_delivered_total", rc.delivered},
      {"tandem_sync_updates_lost_total", rc.lost},
      {"tandem_pair_role_changes_total", c.role_changes},
      {"tandem_pair_takeovers_total", c.takeovers},
      {"tandem_pair_flows_installed_total", c.flows_installed},
      {"tandem_pair_install_failures_total", c.install_failures + p.records_refused},
      {"tandem_pair_flows_removed_total", c.flows_removed},
      {"tandem_pair_changes_lost_total", c.changes_lost},
      {"tandem_pair_address_failures_total", c.addr_failures},
      {"tandem_pair_bulk_transfers_total", p.bulk_sender.counters().completed},
      {"tandem_pair_front_ignored_items_total", p.front_ignored_items},
      {"tandem_pair_garp_rounds_total", p.garp_rounds},
      {"tandem_pair_garp_refresh_rounds_total", p.garp_refresh_rounds},
      {"tandem_pair_garp_frames_sent_total", p.garpFrames(false)},
      {"tandem_pair_garp_send_errors_total", p.garpFrames(true)},
      {"tandem_pair_active_conflicts_total", p.active_conflicts},
      {"tandem_pair_deferred_flows_total", p.deferred.counters().tracked},
      {"tandem_pair_early_flushes_total", p.early_flushes},
      {"tandem_pair_deferred_acked_total", p.deferred.counters().acked},
      {"tandem_pair_deferred_timeouts_total", p.deferred.counters().timed_out},
      {"tandem_pair_deferred_abandoned_total", p.deferred.counters().abandoned},
      {"tandem_pair_dead_peer_drops_total", p.dead_peer_drops},
      {"tandem_pair_stale_heartbeats_total", p.roles.staleHeartbeats()},
  };
  for (const auto& [name, value] : counters) {
    m.single(name, "counter", "See proxy/tandemd/pair.h.", value);
  }
  p.timingMetrics(m);
  p.heartbeatThreadMetrics(m);
  if (p.vmac) m.append(p.vmac->metricsText());
  return m.take();
}


std::string PairController::Impl::statusExtras() const {
  const uint64_t now = monotonicNs();
  const char* standby = "n/a";  // only the active has a standby
  if (roles.role() == sync::Role::kActive) {
    switch (standbyState(now)) {
      case StandbyState::kAbsent: standby = "absent"; break;
      case StandbyState::kSyncing: standby = "syncing"; break;
      case StandbyState::kReady: standby = "ready"; break;
    }
  }
  return std::string(",\"standby\":\"") + standby + "\",\"deferral\":" +
         (deferring ? "true" : "false") + ",\"sync_path\":" +
         (roles.pathAlive(sync::Path::kSync, now) ? "true" : "false") + ",\"front_path\":" +
         (front ? (roles.pathAlive(sync::Path::kFront, now) ? "true" : "false") : "null");
}

std::string PairController::statusJson() const {
  const Impl& p = *impl_;
  return std::string("\"pair\":{\"role\":\"") + sync::roleName(p.roles.role()) +
         "\",\"ready\":" + (p.roles.ready() ? "true" : "false") +
         ",\"epoch\":" + std::to_string(p.roles.epoch()) +
         ",\"addresses_held\":" + (p.addresses_held ? "true" : "false") +
         ",\"peer_seen\":" + (p.roles.peerSeen() ? "true" : "false") + p.statusExtras() + "}";
}

}  // namespace tandem
