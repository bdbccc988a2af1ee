// PairController: the heartbeat thread (sync.heartbeat_thread): what the loop publishes for it,
// starting it, and its metrics. The thread itself is heartbeat_thread.cc.
#include <limits>
#include <string>

#include "proxy/io/log.h"
#include "proxy/tandemd/pair_impl.h"

namespace tandem {

using namespace pair_detail;  // NOLINT: pair_impl.h's constants and helpers

sync::HeartbeatSnapshot PairController::Impl::heartbeatSnapshot() const noexcept {
  sync::HeartbeatSnapshot s;
  const size_t flows = engine.activeFlows();
  s.heartbeat = roles.heartbeat(flows > std::numeric_limits<uint32_t>::max()
                                    ? std::numeric_limits<uint32_t>::max()
                                    : static_cast<uint32_t>(flows));
  s.epoch = roles.epoch();
  // As sendHeartbeat(): the active's sync-path heartbeats carry its update session.
  s.with_base = roles.role() == sync::Role::kActive;
  if (s.with_base) s.base = sender.base();
  return s;
}

void PairController::Impl::startHeartbeatThread() {
  HeartbeatThreadConfig c;
  c.node_id = config.node_id;
  c.interval_ns = config.heartbeat_interval_ns;
  c.stall_limit_ns = sync::heartbeatStallLimitNs(config.heartbeat_interval_ns, config.miss_count);
  c.key_id = config.key_id;
  c.key = config.key;
  c.sync_fd = channel.fd();
  c.sync_peer_len = endpointToSockaddr(config.peer, c.sync_peer);
  c.sync_counter = &sealer;
  if (front) {
    c.front_fd = front->fd();
    c.front_peer_len = endpointToSockaddr(*config.front_peer, c.front_peer);
    c.front_counter = &*front_sealer;
  }
  if (c.sync_peer_len == 0 || (front && c.front_peer_len == 0)) {
    throw std::runtime_error("pair: heartbeat thread: cannot convert the peer addresses");
  }
  hb_thread = std::make_unique<HeartbeatThread>(std::move(c));
  // Nothing leaves before the loop published a snapshot and turned once (the first role tick).
  hb_thread->start();
}

void PairController::Impl::heartbeatThreadMetrics(std::string& out) const {
  const auto us = [](uint64_t ns) { return std::to_string(ns / 1000); };
  const HeartbeatThread::Stats s = hb_thread ? hb_thread->stats() : HeartbeatThread::Stats{};
  out +=
      "# HELP tandem_pair_heartbeat_thread 1 while heartbeats leave from their own thread "
      "(sync.heartbeat_thread).\n"
      "# TYPE tandem_pair_heartbeat_thread gauge\n"
      "tandem_pair_heartbeat_thread " + std::string(hb_thread ? "1" : "0") + "\n"
      "# HELP tandem_pair_heartbeat_thread_priority The thread's SCHED_FIFO priority (0: "
      "normal policy).\n"
      "# TYPE tandem_pair_heartbeat_thread_priority gauge\n"
      "tandem_pair_heartbeat_thread_priority " + std::to_string(s.priority) + "\n"
      "# HELP tandem_pair_heartbeats_sent_total Heartbeat rounds the thread sent (one frame per "
      "path), by cause.\n"
      "# TYPE tandem_pair_heartbeats_sent_total counter\n"
      "tandem_pair_heartbeats_sent_total{cause=\"timer\"} " + std::to_string(s.sent - s.immediate) +
      "\n"
      "tandem_pair_heartbeats_sent_total{cause=\"loop\"} " + std::to_string(s.immediate) + "\n"
      "# HELP tandem_pair_heartbeats_withheld_total Heartbeat rounds withheld because the event "
      "loop had not turned within the stall limit (a wedged loop lets the peer take over).\n"
      "# TYPE tandem_pair_heartbeats_withheld_total counter\n"
      "tandem_pair_heartbeats_withheld_total " + std::to_string(s.withheld) + "\n"
      "# HELP tandem_pair_heartbeat_thread_send_errors_total Heartbeat sends that failed "
      "(sendto or seal) on the thread.\n"
      "# TYPE tandem_pair_heartbeat_thread_send_errors_total counter\n"
      "tandem_pair_heartbeat_thread_send_errors_total " +
      std::to_string(s.send_errors + s.seal_failures) + "\n"
      "# HELP tandem_pair_heartbeat_thread_wake_late_max_microseconds How late the thread's "
      "timer woke it at worst.\n"
      "# TYPE tandem_pair_heartbeat_thread_wake_late_max_microseconds gauge\n"
      "tandem_pair_heartbeat_thread_wake_late_max_microseconds " + us(s.wake_late_max_ns) + "\n"
      "# HELP tandem_pair_heartbeat_thread_loop_age_max_microseconds The oldest loop stamp the "
      "thread saw at a send (how long the loop went without turning).\n"
      "# TYPE tandem_pair_heartbeat_thread_loop_age_max_microseconds gauge\n"
      "tandem_pair_heartbeat_thread_loop_age_max_microseconds " + us(s.loop_age_max_ns) + "\n";
}

}  // namespace tandem
