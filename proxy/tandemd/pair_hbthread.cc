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

void PairController::Impl::heartbeatThreadMetrics(PromText& m) const {
  const HeartbeatThread::Stats s = hb_thread ? hb_thread->stats() : HeartbeatThread::Stats{};
  m.single("tandem_pair_heartbeat_thread", "gauge",
           "1 while heartbeats leave from their own thread (sync.heartbeat_thread).",
           hb_thread ? 1 : 0);
  m.single("tandem_pair_heartbeat_thread_priority", "gauge",
           "The thread's SCHED_FIFO priority (0: normal policy).",
           static_cast<uint64_t>(s.priority));
  m.family("tandem_pair_heartbeats_sent_total", "counter",
           "Heartbeat rounds the thread sent (one frame per path), by cause.");
  m.sample("tandem_pair_heartbeats_sent_total", s.sent - s.immediate, "cause", "timer");
  m.sample("tandem_pair_heartbeats_sent_total", s.immediate, "cause", "loop");
  m.single("tandem_pair_heartbeats_withheld_total", "counter",
           "Heartbeat rounds withheld because the event loop had not turned within the stall "
           "limit (a wedged loop lets the peer take over).",
           s.withheld);
  m.single("tandem_pair_heartbeat_thread_send_errors_total", "counter",
           "Heartbeat sends that failed (sendto or seal) on the thread.",
           s.send_errors + s.seal_failures);
  m.single("tandem_pair_heartbeat_thread_wake_late_max_microseconds", "gauge",
           "How late the thread's timer woke it at worst.", s.wake_late_max_ns / 1000);
  m.single("tandem_pair_heartbeat_thread_loop_age_max_microseconds", "gauge",
           "The oldest loop stamp the thread saw at a send (how long the loop went without "
           "turning).",
           s.loop_age_max_ns / 1000);
}

}  // namespace tandem
