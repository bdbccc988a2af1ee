// PairController: planned switchover (POST /switchover), the control watch, GET /pair.
#include <event2/event.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "proxy/io/log.h"
#include "proxy/tandemd/pair_impl.h"

namespace tandem {

using namespace pair_detail;  // NOLINT: pair_impl.h's constants and helpers

// ---- Planned switchover and control ---------------------------------------------------------
//
// The active holds its data path (stops reading the NFQUEUE: packets wait in the kernel's queue,
// none is dropped, so no sender waits out a retransmission timeout), drains every flow change
// made so far into the reliable sender and sends it at once, and polls every kSwitchoverStepNs
// until the standby has acknowledged all of it. Then it hands over (the role machine announces
// `handover`), withdraws the address group and resumes its data path: packets still reaching it
// (sent before the endpoints saw the new active's gratuitous ARP) are translated with the table
// the standby now holds, so nothing waits for the takeover itself. The standby, already holding
// every flow, brings the group up, sends its gratuitous ARP and forwards. The old active is a
// ready standby at once: every change was acknowledged before the handover, so it keeps its
// table and follows the new active's update stream from its first message (no bulk resync).
// The control request completes once the peer is heard active.

namespace {
constexpr uint64_t kSwitchoverStepNs = 200'000;
/// The data path is never held longer: without every acknowledgement by then, stay active.
constexpr uint64_t kSwitchoverFlushTimeoutNs = 500'000'000;
/// After the handover, how long the control request waits to hear the peer active.
constexpr uint64_t kSwitchoverTakeoverTimeoutNs = 2'000'000'000;

std::string millis(uint64_t ns) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", static_cast<double>(ns) / 1e6);
  return buf;
}

/// "withdrawn 0.110 held 0.112 flush_sent 0.130 ..." (ms after the command was taken; steps not
/// reached are left out).
template <typename Switchover>
std::string stepsText(const Switchover& s) {
  const std::pair<const char*, uint64_t> steps[] = {
      {"withdrawn", s.withdrawn_ns},         {"held", s.hold_started_ns},
      {"flush_sent", s.flush_sent_ns},       {"acked", s.acked_ns},
      {"role_changed", s.role_changed_ns},   {"resumed", s.resumed_ns},
      {"handover_sent", s.handover_sent_ns}, {"peer_active", s.peer_active_ns}};
  std::string out;
  for (const auto& [name, ns] : steps) {
    if (ns == 0 || ns < s.started_ns) continue;
    if (!out.empty()) out += ' ';
    out += name;
    out += ' ';
    out += millis(ns - s.started_ns);
  }
  return out.empty() ? "none" : out;
}
}  // namespace

void PairController::Impl::startSwitchover(PairController::SwitchoverDone done) {
  const uint64_t now = monotonicNs();
  const char* refusal = nullptr;
  if (switchover.phase != Switchover::Phase::kIdle) {
    refusal = "switchover refused: one is already in progress";
  } else if (!hold_data_path) {
    refusal = "switchover refused: this daemon cannot hold its data path";
  } else {
    refusal = roles.switchoverRefusal(now);
  }
  if (refusal == nullptr && !switchover_ev) {
    switchover_ev.reset(event_new(
        base, -1, EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->switchoverStep(); },
        this));
    if (!switchover_ev) refusal = "switchover refused: cannot add a timer to the event loop";
  }
  if (refusal != nullptr) {
    ++switchover.refused;
    switchover.last_result = refusal;
    logf(LogLevel::kWarn, "pair: %s", refusal);
    done(SwitchoverResult{409, refusal});
    return;
  }
  switchover.started_ns = now;
  switchover.withdrawn_ns = switchover.hold_started_ns = switchover.flush_sent_ns = 0;
  switchover.acked_ns = switchover.handover_sent_ns = 0;
  switchover.resumed_ns = switchover.peer_active_ns = switchover.role_changed_ns = 0;
  try {
    switchover.started_unix_ns = realtimeNs();
  } catch (const std::system_error&) {
    switchover.started_unix_ns = 0;
  }
  switchover.done = std::move(done);
  logf(LogLevel::kInfo,
       "pair: planned switchover to node %u: withdrawing the group, then holding the data path "
       "and flushing the last changes",
       roles.peerNodeId());
  // The group goes first, while this node still forwards: the data path translates in raw
  // PREROUTING, before routing, and needs no local address; only ARP does, and the neighbours'
  // caches keep pointing here until the peer's gratuitous ARP. The rtnetlink calls run on a
  // thread of their own: they take the kernel's rtnl lock, which other namespaces' changes can
  // hold for many milliseconds (a 15 ms withdrawal was measured on a shared host), and this
  // loop keeps forwarding meanwhile. With vmac takeover, release() takes the macvlans (this
  // node's data links) down: that stays inside the hold.
  switchover.withdrawn_early = !vmac;
  if (switchover.withdrawn_early) {
    garp_schedule.stop();
    bulk_sender.cancel();
    switchover.phase = Switchover::Phase::kWithdrawing;
    if (withdraw_netlink && withdraw_ev) {
      try {
        withdraw_thread = std::jthread([this] {
          withdraw_result = withdraw_netlink->withdraw(config.addresses);
          const uint64_t one = 1;
          while (write(withdraw_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
          }
        });
        return;  // onWithdrawn() goes on
      } catch (const std::system_error& e) {
        logf(LogLevel::kWarn, "pair: switchover: no thread for the withdrawal (%s): on the loop",
             e.what());
      }
    }
    releaseAddresses();
    switchover.withdrawn_ns = monotonicNs();
  }
  beginHold();
}

void PairController::Impl::onWithdrawn() noexcept {
  uint64_t n = 0;
  while (read(withdraw_fd, &n, sizeof(n)) < 0 && errno == EINTR) {
  }
  if (withdraw_thread.joinable()) withdraw_thread.join();  // done: its result is visible now
  if (switchover.phase != Switchover::Phase::kWithdrawing) return;
  const uint64_t now = monotonicNs();
  switchover.withdrawn_ns = now;
  const GroupResult& r = withdraw_result;
  addresses_held = false;
  if (!r.ok()) {
    ++counters.addr_failures;
    try {
      abortSwitchover("switchover aborted: cannot remove " +
                      config.addresses.members[r.failed_member].address.toString() + " from " +
                      config.addresses.members[r.failed_member].interface + ": " +
                      std::strerror(r.error) + "; this node stays active");
    } catch (const std::exception&) {
      abortSwitchover({});
    }
    return;
  }
  logf(LogLevel::kInfo, "pair: address group withdrawn (%zu changed) in %llu us", r.changed,
       static_cast<unsigned long long>((now - switchover.started_ns) / 1000));
  if (roles.role() != sync::Role::kActive) {
    abortSwitchover("switchover aborted: this node left the active role meanwhile");
    return;
  }
  beginHold();
}

void PairController::Impl::beginHold() noexcept {
  switchover.phase = Switchover::Phase::kFlushing;
  switchover.queued_at_start = sender.counters().queued;
  switchover.holding = true;
  switchover.hold_started_ns = monotonicNs();
  hold_data_path(true);
  onTick();  // drains every change made so far into the sender and sends it now
  switchover.flush_sent_ns = monotonicNs();
  const timeval step{0, static_cast<suseconds_t>(kSwitchoverStepNs / 1000)};
  if (event_add(switchover_ev.get(), &step) != 0) {
    abortSwitchover("switchover aborted: cannot add a timer to the event loop");
    return;
  }
  switchoverStep();
}

void PairController::Impl::resumeDataPath() noexcept {
  if (!switchover.holding) return;
  switchover.holding = false;
  switchover.resumed_ns = monotonicNs();
  switchover.hold_ns = switchover.resumed_ns - switchover.hold_started_ns;
  switchover.last_hold_ns = switchover.hold_ns;
  switchover.max_hold_ns = std::max(switchover.max_hold_ns, switchover.hold_ns);
  hold_data_path(false);
}

void PairController::Impl::abortSwitchover(std::string message) noexcept {
  // Still active: the group withdrawn at the start comes back (with its gratuitous ARP) before
  // the data path resumes.
  if (switchover.withdrawn_early && roles.role() == sync::Role::kActive && !addresses_held) {
    takeAddresses(monotonicNs());
  }
  resumeDataPath();
  finishSwitchover(409, std::move(message));
}

void PairController::Impl::finishSwitchover(int status, std::string message) noexcept {
  if (switchover_ev) event_del(switchover_ev.get());
  switchover.phase = Switchover::Phase::kIdle;
  if (status == 200) {
    ++switchover.completed;
    logf(LogLevel::kInfo, "pair: %s", message.c_str());
  } else {
    ++switchover.failed;
    logf(LogLevel::kWarn, "pair: %s", message.c_str());
  }
  PairController::SwitchoverDone done = std::move(switchover.done);
  switchover.done = nullptr;
  try {
    switchover.last_result = message;
    if (done) done(SwitchoverResult{status, std::move(message)});
  } catch (const std::exception& e) {
    logf(LogLevel::kWarn, "pair: switchover reply: %s", e.what());
  }
}

void PairController::Impl::switchoverStep() noexcept {
  try {
    switchoverPhase();
  } catch (const std::exception& e) {  // building a message ran out of memory
    if (switchover.withdrawn_early && roles.role() == sync::Role::kActive && !addresses_held) {
      takeAddresses(monotonicNs());
    }
    resumeDataPath();
    if (switchover_ev) event_del(switchover_ev.get());
    switchover.phase = Switchover::Phase::kIdle;
    switchover.done = nullptr;  // the control request is left to its client's timeout
    logf(LogLevel::kError, "pair: switchover abandoned: %s", e.what());
  }
}

void PairController::Impl::switchoverPhase() {
  const uint64_t now = monotonicNs();
  switch (switchover.phase) {
    case Switchover::Phase::kIdle:
    case Switchover::Phase::kWithdrawing:  // onWithdrawn() goes on
      return;
    case Switchover::Phase::kFlushing: {
      if (roles.role() != sync::Role::kActive) {
        abortSwitchover("switchover aborted: this node left the active role meanwhile");
        return;
      }
      // Changes made since the hold began go too, and are acknowledged, before the handover:
      // the standby's acknowledgement releases the SYN-ACKs held for deferral, whose splices
      // then complete here (and the loop's timers still run). Handed over undrained, such a
      // change was lost: the new active held the flow as still opening while this node, now a
      // standby, had completed it (docs/pair-operations.md).
      drainToSender(now);
      if (!sender.idle()) {
        sendUpdates(now);
        if (now - switchover.hold_started_ns >= kSwitchoverFlushTimeoutNs) {
          const size_t left = sender.pending();
          abortSwitchover("switchover aborted: the standby did not acknowledge " +
                                    std::to_string(left) + " updates within " +
                                    millis(kSwitchoverFlushTimeoutNs) +
                                    " ms; this node stays active");
        }
        return;
      }
      switchover.acked_ns = now;
      const sync::RoleOutput out = roles.requestSwitchover(now);
      if (!out.changed) {
        abortSwitchover(std::string(out.reason != nullptr ? out.reason : "refused") +
                                  " (at handover time); this node stays active");
        return;
      }
      switchover.flushed = sender.counters().queued - switchover.queued_at_start;
      // The role change first, without its heartbeat and address withdrawal (done below).
      sync::RoleOutput quiet = out;
      quiet.release_addresses = false;
      quiet.send_heartbeat = false;
      handleRole(quiet, now);
      // Every change was flushed and acknowledged with the data path held, so this node's
      // table is the peer's: it stays ready and follows the new active's update stream from
      // its first message, instead of a bulk resync that would stall the new active's loop.
      bulk_receiver.markComplete();
      roles.setReady(true);
      receiver.followNextSession();
      switchover.role_changed_ns = monotonicNs();
      // (vmac) The group goes before the data path resumes: a packet this node, as a standby,
      // passes on untranslated (a new connection's SYN) must be routed to the VIP's new
      // holder, not delivered to the VIP while it is still local here.
      if (out.release_addresses && !switchover.withdrawn_early) {
        releaseAddresses();
        switchover.withdrawn_ns = monotonicNs();
      }
      // The data path resumes before the handover heartbeat leaves: sending it runs the
      // peer's receive path on this CPU (veth) and can take longer than the packets held here
      // need, while the peer's takeover does not hold any packet (until the neighbours see its
      // gratuitous ARP, they keep sending here, where the same table translates them).
      resumeDataPath();
      sendHeartbeat();
      switchover.handover_sent_ns = monotonicNs();
      switchover.phase = Switchover::Phase::kHandedOver;
      switchover.handed_over_ns = now;
      logf(LogLevel::kInfo,
           "pair: switchover: %llu updates flushed and acknowledged, data path held %s ms; "
           "handed over to node %u",
           static_cast<unsigned long long>(switchover.flushed),
           millis(switchover.hold_ns).c_str(), roles.peerNodeId());
      return;
    }
    case Switchover::Phase::kHandedOver: {
      const std::string held = "data path held " + millis(switchover.hold_ns) + " ms, " +
                               std::to_string(switchover.flushed) + " updates flushed";
      if (roles.role() == sync::Role::kActive) {
        finishSwitchover(409, "switchover failed: the peer did not take over, this node took "
                              "the group back (" + held + ")");
      } else if (!roles.handingOver() && roles.peer().role == sync::Role::kActive) {
        switchover.peer_active_ns = now;
        logf(LogLevel::kInfo, "pair: switchover steps (ms after the command): %s",
             stepsText(switchover).c_str());
        finishSwitchover(200, "switchover complete: node " + std::to_string(roles.peerNodeId()) +
                                  " is active (epoch " + std::to_string(roles.peer().epoch) +
                                  "), this node is standby and follows its updates (" + held + ")");
      } else if (now - switchover.handed_over_ns >= kSwitchoverTakeoverTimeoutNs) {
        finishSwitchover(504, "switchover: handed over, but node " +
                                  std::to_string(roles.peerNodeId()) + " was not heard active "
                                  "within " + millis(kSwitchoverTakeoverTimeoutNs) + " ms (" +
                                  held + ")");
      }
      return;
    }
  }
}

/// The control watch: on the active, warns while the standby is not ready (it restarted and
/// bulk-resyncs, or its update stream broke), since a failover then would lose flows.
void PairController::Impl::watch() noexcept {
  const uint64_t now = monotonicNs();
  const uint64_t requests = bulk_sender.counters().requests;
  const bool new_request = requests != watch_bulk_requests;
  watch_bulk_requests = requests;
  if (roles.role() != sync::Role::kActive || !roles.peerSeen()) {
    watch_warned = false;
    return;
  }
  const bool not_ready = new_request || bulk_sender.active() ||
                         (roles.peerAlive(now) && !roles.peer().ready);
  if (not_ready) {
    if (new_request || watch_warn.allow(now)) {
      logf(LogLevel::kWarn,
           "pair: standby node %u is not ready (bulk resync %s): a failover now would lose "
           "flows",
           roles.peerNodeId(), bulk_sender.active() || new_request ? "in progress" : "pending");
    }
    watch_warned = true;
  } else if (watch_warned && roles.peer().ready) {
    logf(LogLevel::kInfo, "pair: standby node %u is ready again", roles.peerNodeId());
    watch_warned = false;
  }
}

void PairController::enableControl(std::function<void(bool hold)> hold_data_path) {
  Impl& p = *impl_;
  p.hold_data_path = std::move(hold_data_path);
  // After a switchover, connections opened toward this node before the clients' ARP caches
  // moved are created by the new active rather than here, where they would not be checkpointed.
  p.engine.setPassUnknownToActive(true);
  // Every node starts as a standby, and a standby holds none of the group: a run that was
  // killed while active (SIGKILL, a crash) left its addresses on the interfaces, and the kernel
  // would answer ARP for the VIP from here next to the real active.
  const GroupResult left = p.netlink.withdraw(p.config.addresses);
  if (!left.ok()) {
    throw std::runtime_error(
        "pair: cannot remove " + p.config.addresses.members[left.failed_member].address.toString() +
        " from " + p.config.addresses.members[left.failed_member].interface + ": " +
        std::strerror(left.error));
  }
  if (left.changed > 0) {
    logf(LogLevel::kWarn,
         "pair: removed %zu group address(es) left behind by an earlier run: a standby holds none",
         left.changed);
  }
  // The planned switchover's withdrawal runs on a thread with a netlink socket of its own
  // (startSwitchover); its end is signalled to this loop through an eventfd.
  p.withdraw_netlink = std::make_unique<AddrNetlink>();
  p.withdraw_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (p.withdraw_fd < 0) {
    throw std::system_error(errno, std::generic_category(), "pair: eventfd");
  }
  p.withdraw_ev.reset(event_new(
      p.base, p.withdraw_fd, EV_READ | EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onWithdrawn(); }, &p));
  if (!p.withdraw_ev || event_add(p.withdraw_ev.get(), nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the withdrawal event to the loop");
  }
  p.watch_ev.reset(event_new(
      p.base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->watch(); }, &p));
  const timeval every{0, 20'000};
  if (!p.watch_ev || event_add(p.watch_ev.get(), &every) != 0) {
    throw std::runtime_error("pair: cannot add the control watch to the event loop");
  }
}

void PairController::requestSwitchover(SwitchoverDone done) {
  impl_->startSwitchover(std::move(done));
}

std::string PairController::pairText() const {
  const Impl& p = *impl_;
  const uint64_t now = monotonicNs();
  const sync::Heartbeat& peer = p.roles.peer();
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  auto path = [&](sync::Path which) { return p.roles.pathAlive(which, now) ? "up" : "down"; };
  static constexpr const char* kPhases[] = {"idle", "flushing", "handed_over", "withdrawing"};
  std::string out;
  auto line = [&](const char* key, const std::string& value) {
    out += key;
    out += ' ';
    out += value;
    out += '\n';
  };
  line("node", std::to_string(p.config.node_id));
  line("role", sync::roleName(p.roles.role()));
  line("ready", yes(p.roles.ready()));
  line("epoch", std::to_string(p.roles.epoch()));
  line("priority", std::to_string(p.config.priority));
  line("preempt", yes(p.config.preempt));
  line("addresses_held", yes(p.addresses_held));
  line("handing_over", yes(p.roles.handingOver()));
  line("flows", std::to_string(p.engine.activeFlows()));
  line("sync_pending_updates", std::to_string(p.sender.pending()));
  line("peer_seen", yes(p.roles.peerSeen()));
  if (p.roles.peerSeen()) {
    line("peer_node", std::to_string(p.roles.peerNodeId()));
    line("peer_alive", yes(p.roles.peerAlive(now)));
    line("peer_path_sync", path(sync::Path::kSync));
    line("peer_path_front", path(sync::Path::kFront));
    line("peer_role", sync::roleName(peer.role));
    line("peer_ready", yes(peer.ready));
    line("peer_epoch", std::to_string(peer.epoch));
    line("peer_priority", std::to_string(peer.priority));
    line("peer_flows", std::to_string(peer.flows));
    line("peer_heartbeat_ms", std::to_string(peer.interval_ms));
  }
  line("switchover_state", kPhases[static_cast<size_t>(p.switchover.phase)]);
  line("switchover_completed", std::to_string(p.switchover.completed));
  line("switchover_refused", std::to_string(p.switchover.refused));
  line("switchover_failed", std::to_string(p.switchover.failed));
  line("switchover_last_hold_ms", millis(p.switchover.last_hold_ns));
  line("switchover_max_hold_ms", millis(p.switchover.max_hold_ns));
  line("switchover_last_result", p.switchover.last_result);
  line("switchover_last_started_unix_ns", std::to_string(p.switchover.started_unix_ns));
  line("switchover_last_steps_ms", stepsText(p.switchover));
  return out;
}

std::string PairController::controlMetricsText() const {
  const Impl::Switchover& s = impl_->switchover;
  std::string out =
      "# HELP tandem_pair_switchovers_total Planned switchovers requested here, by outcome.\n"
      "# TYPE tandem_pair_switchovers_total counter\n";
  out += "tandem_pair_switchovers_total{result=\"completed\"} " + std::to_string(s.completed) +
         "\n";
  out += "tandem_pair_switchovers_total{result=\"refused\"} " + std::to_string(s.refused) + "\n";
  out += "tandem_pair_switchovers_total{result=\"failed\"} " + std::to_string(s.failed) + "\n";
  out +=
      "# HELP tandem_pair_switchover_hold_microseconds How long a planned switchover held the "
      "data path (flush and acknowledgement), last and worst.\n"
      "# TYPE tandem_pair_switchover_hold_microseconds gauge\n";
  out += "tandem_pair_switchover_hold_microseconds{stat=\"last\"} " +
         std::to_string(s.last_hold_ns / 1000) + "\n";
  out += "tandem_pair_switchover_hold_microseconds{stat=\"max\"} " +
         std::to_string(s.max_hold_ns / 1000) + "\n";
  out +=
      "# HELP tandem_pair_passed_to_active_total Client packets without a flow, or of a splice "
      "still opening, that this node, as standby, passed on untranslated to the VIP's holder.\n"
      "# TYPE tandem_pair_passed_to_active_total counter\n";
  out += "tandem_pair_passed_to_active_total " +
         std::to_string(impl_->engine.passedToActive()) + "\n";
  return out;
}

}  // namespace tandem
