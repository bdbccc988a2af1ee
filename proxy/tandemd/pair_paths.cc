// PairController: the heartbeat paths (the front network's socket besides the sync link), what
// each path's heartbeats say about the peer, and the loop timing they measure.
#include <event2/event.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <string>

#include "proxy/io/log.h"
#include "proxy/tandemd/pair_impl.h"

namespace tandem {

using namespace pair_detail;  // NOLINT: pair_impl.h's constants and helpers
// ---- Heartbeat paths ----

void PairController::Impl::openFront() {
  if (!config.front_bind || !config.front_peer) return;
  front.emplace(UdpChannelOptions{*config.front_bind, *config.front_peer, {}, 256u << 10,
                                  256u << 10, 0xc0, 6});
  front->open();
  front_sealer.emplace(keys, realtimeNs());
  front_verifier.emplace(keys);
}

void PairController::Impl::registerFront() {
  if (!front) return;
  front_ev = event_new(
      base, front->fd(), EV_READ | EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onFrontReadable(); },
      this);
  if (front_ev == nullptr ||
      (event_base_get_npriorities(base) > 1 &&
       event_priority_set(front_ev, kPriorityHeartbeat) != 0) ||
      event_add(front_ev, nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the front heartbeat socket to the loop");
  }
}

void PairController::Impl::openBarrier() {
  try {
    barrier.open();
    barrier_open = true;
  } catch (const std::system_error& e) {
    // Without loopback (a namespace whose lo is down) the standby decides on silence alone.
    logf(LogLevel::kWarn, "pair: no receive-path barrier before takeovers: %s", e.what());
  }
}

void PairController::Impl::registerBarrier() {
  if (!barrier_open) return;
  barrier_ev = event_new(
      base, barrier.fd(), EV_READ | EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onBarrierReadable(); },
      this);
  if (barrier_ev == nullptr ||
      (event_base_get_npriorities(base) > 1 &&
       event_priority_set(barrier_ev, kPriorityHeartbeat) != 0) ||
      event_add(barrier_ev, nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the receive-path barrier socket to the loop");
  }
}

void PairController::Impl::startBarrier(uint64_t now) noexcept {
  if (!barrier_open || !barrier.start()) {
    // No barrier possible: decide on the silence as it is.
    handleRole(roles.barrierDone(now), now);
    return;
  }
  barrier_started_ns = now;
}

void PairController::Impl::onBarrierReadable() noexcept {
  if (!barrier.onReadable() || !roles.barrierPending()) return;
  uint64_t now = monotonicNs();
  barrier_wait_last_ns = now - barrier_started_ns;
  barrier_wait_max_ns = std::max(barrier_wait_max_ns, barrier_wait_last_ns);
  // The backlogs are drained up to the probes: what they held is in our sockets now. Read it
  // before deciding (a heartbeat among it cancels the takeover in the role machine).
  (void)onReadable();
  if (front) onFrontReadable();
  now = monotonicNs();
  if (!roles.barrierPending()) {
    logf(LogLevel::kInfo,
         "pair: peer heard again after the receive-path barrier (%.1f ms, %u CPUs): no takeover",
         static_cast<double>(barrier_wait_last_ns) / 1e6, barrier.cpus());
    return;
  }
  logf(LogLevel::kInfo, "pair: receive-path barrier done in %.1f ms (%u CPUs), peer still silent",
       static_cast<double>(barrier_wait_last_ns) / 1e6, barrier.cpus());
  handleRole(roles.barrierDone(now), now);
}

void PairController::Impl::sendFrontHeartbeat(const sync::Heartbeat& hb) noexcept {
  if (!front) return;
  sync::FrameWriter w(tx);
  if (!w.add(hb)) return;
  sync::FrameHeader h;
  h.node_id = config.node_id;
  h.epoch = roles.epoch();
  if (!front_sealer->seal(w, h)) {
    ++counters.seal_failures;
    return;
  }
  const std::span<uint8_t> f = w.frame();
  (void)front->send(std::span<const uint8_t>(f.data(), f.size()));  // counted by the channel
}

void PairController::Impl::onFrontReadable() noexcept {
  for (int n = 0; n < 256; ++n) {
    Datagram d;
    const int err = front->recv(std::span<uint8_t>(rx.data(), rx.size()), d);
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (err != 0) {
      if (err == EMSGSIZE || err == EINTR) continue;
      return;
    }
    const uint64_t now = monotonicNs();
    front_frame.clear();
    const sync::Verifier::Result r =
        front_verifier->open(std::span<const uint8_t>(rx.data(), d.len), front_frame);
    if (r.reject != sync::Reject::kNone) {
      if (reject_warn.allow(now)) {
        logf(LogLevel::kWarn, "pair: front heartbeat frame from %s rejected: %s",
             d.from.toString().c_str(), sync::rejectName(r.reject));
      }
      continue;
    }
    if (r.header.node_id == config.node_id) {
      ++own_node_frames;
      continue;
    }
    // Only heartbeats travel here; anything else is a peer bug, counted and ignored.
    front_ignored_items += front_frame.acks.size() + front_frame.bulk_requests.size() +
                           front_frame.updates.size() + (front_frame.has_base ? 1 : 0);
    for (const sync::Heartbeat& hb : front_frame.heartbeats) {
      onPeerHeartbeat(sync::Path::kFront, r.header.node_id, hb, now, d.kernel_rx_ns);
    }
  }
}

void PairController::Impl::heartbeatDelays(size_t pi, const sync::Heartbeat& hb,
                                            uint64_t kernel_rx_ns) noexcept {
  timespec ts{};
  if (kernel_rx_ns == 0 || clock_gettime(CLOCK_REALTIME, &ts) != 0) return;
  const uint64_t rt = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull +
                      static_cast<uint64_t>(ts.tv_nsec);
  const uint64_t interval = config.heartbeat_interval_ns;
  // Either difference is negative only when the clocks disagree (two hosts): left out.
  if (rt >= kernel_rx_ns) {
    const uint64_t loop = rt - kernel_rx_ns;
    timing.hb_loop_delay_last_ns[pi] = loop;
    timing.hb_loop_delay_max_ns[pi] = std::max(timing.hb_loop_delay_max_ns[pi], loop);
    if (loop > interval) ++timing.hb_loop_delay_over[pi];
  }
  if (hb.sent_ns == 0) return;  // a peer before revision 1.2
  if (kernel_rx_ns >= hb.sent_ns) {
    const uint64_t net = kernel_rx_ns - hb.sent_ns;
    timing.hb_kernel_delay_last_ns[pi] = net;
    timing.hb_kernel_delay_max_ns[pi] = std::max(timing.hb_kernel_delay_max_ns[pi], net);
    if (net > interval) ++timing.hb_kernel_delay_over[pi];
  }
  timing.hb_sent_gap_last_ns[pi] =
      timing.peer_sent_prev_ns[pi] != 0 && hb.sent_ns > timing.peer_sent_prev_ns[pi]
          ? hb.sent_ns - timing.peer_sent_prev_ns[pi]
          : 0;
  timing.peer_sent_prev_ns[pi] = hb.sent_ns;
}

void PairController::Impl::onPeerHeartbeat(sync::Path path, uint32_t node_id,
                                            const sync::Heartbeat& hb, uint64_t now,
                                            uint64_t kernel_rx_ns) noexcept {
  const size_t pi = static_cast<size_t>(path);
  ++heartbeats_rx[pi];
  heartbeatDelays(pi, hb, kernel_rx_ns);
  // The gap since the previous heartbeat on this path: sender's lateness + network + ours.
  // A gap over 10 s is a peer that was gone (restart), not lateness.
  if (timing.hb_rx_prev_ns[pi] != 0 && now - timing.hb_rx_prev_ns[pi] < 10'000'000'000ull) {
    const uint64_t gap = now - timing.hb_rx_prev_ns[pi];
    timing.hb_rx_gap_max_ns[pi] = std::max(timing.hb_rx_gap_max_ns[pi], gap);
    if (gap > 2 * config.heartbeat_interval_ns) {
      ++timing.hb_rx_late[pi];
      if (late_warn.allow(now)) {
        logf(LogLevel::kWarn,
             "pair: peer heartbeat on the %s path %.1f ms after the previous one (interval %.1f "
             "ms; this one: sent %.1f ms after the peer's previous, %.1f ms from send to our "
             "kernel, %.1f ms in our kernel and loop; our role timer late by up to %.1f ms, "
             "longest sync read %.1f ms, data tick %.1f ms)",
             path == sync::Path::kSync ? "sync" : "front", static_cast<double>(gap) / 1e6,
             static_cast<double>(config.heartbeat_interval_ns) / 1e6,
             static_cast<double>(timing.hb_sent_gap_last_ns[pi]) / 1e6,
             static_cast<double>(timing.hb_kernel_delay_last_ns[pi]) / 1e6,
             static_cast<double>(timing.hb_loop_delay_last_ns[pi]) / 1e6,
             static_cast<double>(timing.role_tick_late_max_ns) / 1e6,
             static_cast<double>(timing.read_max_ns) / 1e6,
             static_cast<double>(timing.data_tick_max_ns) / 1e6);
      }
    }
  }
  timing.hb_rx_prev_ns[pi] = now;
  if (vmac) vmac->onPeerHeartbeat(now);  // the peer was alive now, on either path
  const bool was_active = roles.role() == sync::Role::kActive;
  const sync::RoleOutput out = roles.onHeartbeat(path, node_id, hb, now);
  if (was_active && hb.role == sync::Role::kActive) {
    ++active_conflicts;
    // Two actives met: the loser withdraws its addresses at once (roles.cc); the winner
    // announces its own again, since the loser's gratuitous ARP may have moved the neighbours.
    if (!out.changed && addresses_held) {
      garp_schedule.start(now);
      garpRound();
      (void)garp_schedule.poll(now);
    }
  }
  handleRole(out, now);
}

void PairController::Impl::watchPaths(uint64_t now) noexcept {
  static constexpr const char* kNames[sync::kPathCount] = {"sync", "front"};
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    if (i == static_cast<size_t>(sync::Path::kFront) && !front) continue;
    const bool alive = roles.pathAlive(static_cast<sync::Path>(i), now);
    if (alive == path_was_alive[i]) continue;
    path_was_alive[i] = alive;
    if (alive) {
      logf(LogLevel::kInfo, "pair: heartbeats on the %s path", kNames[i]);
    } else if (roles.peerSeen()) {
      ++path_losses[i];
      logf(LogLevel::kWarn, "pair: heartbeats lost on the %s path (peer %s)", kNames[i],
           roles.peerAlive(now) ? "still heard on the other path" : "silent on both paths");
    }
  }
}

void PairController::Impl::timingMetrics(PromText& m) const {
  static constexpr const char* kNames[sync::kPathCount] = {"sync", "front"};
  // One family with a sample per path (micros: the values are ns, shown in us).
  auto perPath = [&](const char* name, const char* type, const char* help,
                     const std::array<uint64_t, sync::kPathCount>& values, bool micros) {
    m.family(name, type, help);
    for (size_t i = 0; i < sync::kPathCount; ++i) {
      m.sample(name, micros ? values[i] / 1000 : values[i], "path", kNames[i]);
    }
  };
  perPath("tandem_pair_heartbeat_rx_gap_max_microseconds", "gauge",
          "Largest interval between two peer heartbeats received on a path (gaps over 10 s, a "
          "peer restart, excluded).",
          timing.hb_rx_gap_max_ns, true);
  perPath("tandem_pair_heartbeat_rx_late_total", "counter",
          "Peer heartbeats received more than two intervals after the previous one on the same "
          "path.",
          timing.hb_rx_late, false);
  perPath("tandem_pair_heartbeat_rx_kernel_delay_max_microseconds", "gauge",
          "Largest time from the peer's send (its clock, in the heartbeat) to our kernel's "
          "receive timestamp (SO_TIMESTAMPNS), per path: the network path, softirq included. "
          "Exact only when both nodes share a clock.",
          timing.hb_kernel_delay_max_ns, true);
  perPath("tandem_pair_heartbeat_rx_loop_delay_max_microseconds", "gauge",
          "Largest time from our kernel's receive timestamp of a peer heartbeat to its handling "
          "by the role machine.",
          timing.hb_loop_delay_max_ns, true);
  m.family("tandem_pair_heartbeat_rx_delayed_total", "counter",
           "Peer heartbeats delayed by more than one interval, by where: kernel (send to our "
           "kernel's timestamp) or loop (timestamp to handling).");
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    m.sample("tandem_pair_heartbeat_rx_delayed_total",
             {{"path", kNames[i]}, {"where", "kernel"}}, timing.hb_kernel_delay_over[i]);
    m.sample("tandem_pair_heartbeat_rx_delayed_total", {{"path", kNames[i]}, {"where", "loop"}},
             timing.hb_loop_delay_over[i]);
  }
  m.single("tandem_pair_heartbeat_tx_gap_max_microseconds", "gauge",
           "Largest interval between two heartbeats this node sent.",
           (hb_thread ? hb_thread->stats().tx_gap_max_ns : timing.hb_tx_gap_max_ns) / 1000);
  m.single("tandem_pair_loop_lateness_max_microseconds", "gauge",
           "How late the role timer ran at worst (the event loop was busy, or the process was "
           "not scheduled).",
           timing.role_tick_late_max_ns / 1000);
  m.family("tandem_pair_callback_max_microseconds", "gauge",
           "Longest run of the pair's loop callbacks.");
  m.sample("tandem_pair_callback_max_microseconds", timing.data_tick_max_ns / 1000, "callback",
           "data_tick");
  m.sample("tandem_pair_callback_max_microseconds", timing.read_max_ns / 1000, "callback",
           "sync_read");
  m.sample("tandem_pair_callback_max_microseconds", timing.pump_max_ns / 1000, "callback",
           "pump");
  m.family("tandem_pair_rx_barriers_total", "counter",
           "Receive-path barriers before a takeover, by outcome: started, saved (the peer was "
           "heard before it completed: no takeover), timeout (takeover without it completing).");
  m.sample("tandem_pair_rx_barriers_total", barrier.counters().started, "outcome", "started");
  m.sample("tandem_pair_rx_barriers_total", barrier.counters().completed, "outcome",
           "completed");
  m.sample("tandem_pair_rx_barriers_total", roles.barrierSaves(), "outcome", "saved");
  m.sample("tandem_pair_rx_barriers_total", roles.barrierTimeouts(), "outcome", "timeout");
  m.single("tandem_pair_own_stalls_total", "counter",
           "Role ticks more than a heartbeat interval late: this node was not running, so the "
           "peer's silence across the gap was not counted against it (a standby then watches a "
           "whole dead interval from the late tick).",
           roles.selfStalls());
  m.single("tandem_pair_rx_barrier_wait_max_microseconds", "gauge",
           "Longest time until a receive-path barrier's probes all came back.",
           barrier_wait_max_ns / 1000);
  m.single("tandem_pair_verdict_reads_total", "counter",
           "Extra reads of the sync socket before the peer could be declared dead (its frames "
           "were still waiting).",
           timing.verdict_reads);
}

}  // namespace tandem
