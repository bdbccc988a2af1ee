#include "proxy/tandemd/pair.h"

#include <event2/event.h>
#include <time.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>

#include "proxy/io/garp.h"
#include "proxy/tandemd/deferral.h"
#include "proxy/tandemd/flow_record.h"
#include "proxy/io/log.h"
#include "proxy/io/udp_channel.h"
#include "proxy/tandemd/vmac_takeover.h"
#include "sync/auth.h"
#include "sync/bulk.h"
#include "sync/reliable.h"
#include "sync/roles.h"
#include "sync/wire.h"

namespace tandem {
namespace {

/// Checkpoint cadence on the active, ACK cadence on the standby, and the role timer's resolution.
constexpr uint64_t kTickNs = 2'000'000;
/// Updates taken from the reliable sender per poll() call.
constexpr size_t kPollBatch = 256;
/// Bulk transfers are paced by time, not by count, so that a large table never stalls the
/// packets waiting behind the tick: flows are queued and sent in chunks of kBulkChunk until
/// kBulkBudgetNs of the tick are used (at 2 ms ticks, at most half of the loop's time).
constexpr size_t kBulkChunk = 256;
constexpr uint64_t kBulkBudgetNs = 1'000'000;
/// Sending the incremental stream is bounded the same way (one round of kPollBatch at least).
constexpr uint64_t kSendBudgetNs = 1'000'000;
/// Frames one read callback takes at most (the socket stays readable: the loop comes back).
constexpr int kReadBatch = 256;
/// Loop priorities (event_base_priority_init(base, 2) in main.cc): heartbeats, the role timer
/// and the sync sockets run before the data path's callbacks whenever both are ready.
constexpr int kPriorityHeartbeat = 0;
/// Items one received frame can carry at most: 1400 bytes / 16-byte heartbeats.
constexpr size_t kMaxRxItems = 128;

uint64_t realtimeNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
    throw std::system_error(errno, std::generic_category(), "clock_gettime(CLOCK_REALTIME)");
  }
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

/// Collects one frame's items; the frame is applied only after Verifier::open() accepted it all.
struct RxFrame : sync::SectionHandler {
  std::vector<sync::Heartbeat> heartbeats;
  std::vector<sync::Ack> acks;
  std::vector<sync::BulkRequest> bulk_requests;
  std::vector<sync::Update> updates;
  sync::SeqBase base;
  bool has_base = false;
  uint64_t overflow = 0;

  RxFrame() {
    heartbeats.reserve(kMaxRxItems);
    acks.reserve(kMaxRxItems);
    bulk_requests.reserve(kMaxRxItems);
    updates.reserve(kMaxRxItems);
  }
  void clear() noexcept {
    heartbeats.clear();
    acks.clear();
    bulk_requests.clear();
    updates.clear();
    has_base = false;
  }
  template <typename T>
  void put(std::vector<T>& v, const T& item) noexcept {
    // Reserved up front: no allocation on the receive path.
    if (v.size() < v.capacity()) {
      v.push_back(item);
    } else {
      ++overflow;
    }
  }
  void onHeartbeat(const sync::Heartbeat& h) noexcept override { put(heartbeats, h); }
  void onSeqBase(const sync::SeqBase& b) noexcept override {
    base = b;
    has_base = true;
  }
  void onFlowUpsert(const sync::FlowUpsert& u) noexcept override {
    sync::Update up;
    up.kind = sync::UpdateKind::kUpsert;
    up.seq = u.seq;
    up.flow = u.flow;
    put(updates, up);
  }
  void onFlowDelete(const sync::FlowDelete& d) noexcept override {
    sync::Update up;
    up.kind = sync::UpdateKind::kDelete;
    up.seq = d.seq;
    up.flow.key = d.key;
    put(updates, up);
  }
  void onBulkRequest(const sync::BulkRequest& r) noexcept override { put(bulk_requests, r); }
  void onBulkEnd(const sync::BulkEnd& e) noexcept override {
    sync::Update up;
    up.kind = sync::UpdateKind::kBulkEnd;
    up.seq = e.seq;
    up.request_id = e.request_id;
    up.bulk_flows = e.flows;
    put(updates, up);
  }
  void onAck(const sync::Ack& a) noexcept override { put(acks, a); }
};

}  // namespace

struct PairController::Impl : sync::UpdateSink, sync::FlowSource {
  Impl(event_base* b, Engine& e, const SyncConfig& c)
      : base(b),
        engine(e),
        config(c),
        sealer(keys, realtimeNs()),
        verifier(keys),
        channel(UdpChannelOptions{c.bind, c.peer, {}, 4u << 20, 1u << 20, 0xc0, 6}),
        sender(sync::ReliableConfig{}, realtimeNs()),
        receiver(*this),
        roles(sync::RolesConfig{c.node_id, c.priority, c.preempt, c.heartbeat_interval_ns,
                                c.miss_count},
              monotonicNs()),
        garp_schedule(GarpScheduleConfig{c.garp_count, 20'000'000, c.garp_refresh_ns}),
        deferred(c.defer_timeout_ns) {}

  // sync::UpdateSink: the standby applies what the reliable receiver delivers, in order.
  void apply(const sync::Update& u) noexcept override;
  // sync::FlowSource: the active's table for bulk transfers.
  bool next(uint64_t& cursor, sync::FlowRecord& out) noexcept override;

  void open();
  void onTick() noexcept;
  /// The role timer (high priority): heartbeats in, heartbeats out, takeover decisions.
  void onRoleTick() noexcept;
  /// Reads at most `max_frames` frames; true once the socket is empty.
  bool onReadable(int max_frames = kReadBatch) noexcept;
  void stopSyncingToDeadPeer(uint64_t now) noexcept;
  void bulkStep() noexcept;
  void timingMetrics(std::string& out) const;
  void handleRole(const sync::RoleOutput& out, uint64_t now) noexcept;
  void takeAddresses(uint64_t now) noexcept;
  void releaseAddresses() noexcept;
  void sendHeartbeat() noexcept;
  void sendUpdates(uint64_t now, uint64_t budget_ns = kSendBudgetNs) noexcept;
  void sendAck() noexcept;
  void sendBulkRequest(const sync::BulkRequest& r) noexcept;
  bool seal(sync::FrameWriter& w) noexcept;
  void garpRound() noexcept;
  void garpTick(uint64_t now) noexcept;
  // The active's view of its standby (bulk resync visibility).
  enum class StandbyState : uint8_t { kAbsent, kSyncing, kReady };
  StandbyState standbyState(uint64_t now) const noexcept;
  void watchStandby(uint64_t now) noexcept;
  void startBulk(uint64_t now) noexcept;
  // Deferral (deferral.h): which new flows wait for the standby's acknowledgement.
  void queueChange(const Flow& f, uint64_t now) noexcept;
  void updateDeferral(uint64_t now) noexcept;
  void pollDeferred(uint64_t now) noexcept;
  bool wantDeferral(uint64_t now) const noexcept;
  void releaseHeld(uint64_t now) noexcept;
  void drainToSender(uint64_t now) noexcept;
  void flushNewFlows(uint64_t now) noexcept;
  // Heartbeats on the front network (sync.front_bind / front_peer): a second path to the peer.
  void openFront();
  void registerFront();
  void sendFrontHeartbeat(const sync::Heartbeat& hb) noexcept;
  void onFrontReadable() noexcept;
  void onPeerHeartbeat(sync::Path path, uint32_t node_id, const sync::Heartbeat& hb,
                       uint64_t now) noexcept;
  void watchPaths(uint64_t now) noexcept;
  void pathMetrics(std::string& out) const;
  /// /status members of deferral, paths and the standby (",\"name\":value..." form).
  std::string statusExtras() const;
  uint64_t garpFrames(bool errors) const noexcept {
    uint64_t n = 0;
    for (const auto& g : garps) n += errors ? g->counters().send_errors : g->counters().sent;
    return n;
  }

  event_base* base;
  Engine& engine;
  SyncConfig config;
  sync::KeyRing keys;
  sync::Sealer sealer;
  sync::Verifier verifier;
  UdpChannel channel;
  sync::ReliableSender sender;
  sync::ReliableReceiver receiver;
  sync::RoleMachine roles;
  sync::BulkSender bulk_sender;
  sync::BulkReceiver bulk_receiver;
  AddrNetlink netlink;
  std::vector<std::unique_ptr<GarpSender>> garps;  ///< one per interface of the group
  std::vector<size_t> garp_of_member;              ///< member index -> garps index
  GarpSchedule garp_schedule;
  bool addresses_held = false;
  uint64_t now_for_source = 0;
  std::unique_ptr<VmacTakeover> vmac;  ///< sync.takeover = vmac: replaces addresses and GARP

  event* timer_ev = nullptr;
  event* role_ev = nullptr;
  event* read_ev = nullptr;
  // Loop timing as the heartbeats see it (tandem_pair_loop_* and tandem_pair_heartbeat_*).
  struct Timing {
    uint64_t role_tick_prev_ns = 0;
    uint64_t role_tick_late_max_ns = 0;  ///< role timer run this late (the loop was busy)
    uint64_t hb_sent_prev_ns = 0;
    uint64_t hb_tx_gap_max_ns = 0;       ///< largest interval between two heartbeats sent
    std::array<uint64_t, sync::kPathCount> hb_rx_prev_ns{};
    std::array<uint64_t, sync::kPathCount> hb_rx_gap_max_ns{};  ///< peer heartbeats received
    std::array<uint64_t, sync::kPathCount> hb_rx_late{};  ///< gaps over twice the interval
    uint64_t data_tick_max_ns = 0;  ///< longest data tick (checkpoints, bulk, resends)
    uint64_t read_max_ns = 0;       ///< longest sync read callback
    uint64_t verdict_reads = 0;     ///< extra reads before declaring the peer dead
  } timing;
  RateLimit late_warn{10'000'000'000ull, 3};
  bool peer_dropped = false;  ///< the active stopped syncing to a silent peer
  uint64_t dead_peer_drops = 0;
  std::vector<uint8_t> tx;
  std::vector<uint8_t> rx = std::vector<uint8_t>(65536);
  std::vector<sync::Update> polled;
  RxFrame frame;
  PairCounters counters;
  uint64_t own_node_frames = 0;
  uint64_t updates_while_active = 0;
  uint64_t records_refused = 0;  ///< checkpoints this node cannot translate
  // The front path has its own sealer and verifier: its own counter space and replay window,
  // since frames of the two paths overtake each other by any amount (a bulk on the sync link).
  std::optional<UdpChannel> front;
  std::optional<sync::Sealer> front_sealer;
  std::optional<sync::Verifier> front_verifier;
  event* front_ev = nullptr;
  RxFrame front_frame;
  uint64_t front_ignored_items = 0;  ///< authentic front frames' items other than heartbeats
  std::array<uint64_t, sync::kPathCount> heartbeats_rx{};
  std::array<uint64_t, sync::kPathCount> path_losses{};
  std::array<bool, sync::kPathCount> path_was_alive{};
  uint64_t active_conflicts = 0;  ///< heartbeats of another active seen while active
  StandbyState standby_seen = StandbyState::kReady;  ///< last state watchStandby() logged
  uint64_t standby_warnings = 0;
  RateLimit standby_warn{10'000'000'000ull, 1};
  uint64_t garp_rounds = 0;           ///< rounds of gratuitous ARP (one frame per address)
  uint64_t garp_refresh_rounds = 0;   ///< of them, periodic refreshes (sync.garp_refresh_ms)
  DeferredFlows deferred;
  bool deferring = false;
  uint64_t flows_created_seen = 0;  ///< Counters::flows_created at the last flushNewFlows()
  uint64_t early_flushes = 0;       ///< drains run right after a packet batch (deferral)
  std::function<void(uint64_t)> held_releaser;
  RateLimit reject_warn{10'000'000'000ull, 5};
  RateLimit drain_warn{10'000'000'000ull, 1};

  // Planned switchover and control: see the last block of this file.
  struct Switchover {
    enum class Phase : uint8_t { kIdle, kFlushing, kHandedOver };
    Phase phase = Phase::kIdle;
    bool holding = false;          ///< the data path is held
    uint64_t started_ns = 0;       ///< data path held since
    uint64_t handed_over_ns = 0;
    uint64_t queued_at_start = 0;  ///< sender's queued counter when the hold began
    uint64_t flushed = 0;          ///< updates flushed and acknowledged during the hold
    uint64_t hold_ns = 0;          ///< how long the data path was held
    PairController::SwitchoverDone done;
    uint64_t completed = 0;
    uint64_t refused = 0;
    uint64_t failed = 0;
    uint64_t last_hold_ns = 0;
    uint64_t max_hold_ns = 0;
    std::string last_result = "none";
  } switchover;
  std::function<void(bool)> hold_data_path;
  std::unique_ptr<event, void (*)(event*)> switchover_ev{nullptr, &event_free};
  std::unique_ptr<event, void (*)(event*)> watch_ev{nullptr, &event_free};
  uint64_t watch_bulk_requests = 0;  ///< bulk transfers requested, as last seen by the watch
  bool watch_warned = false;         ///< warned that the standby is not ready
  RateLimit watch_warn{10'000'000'000ull, 1};
  void watch() noexcept;
  void startSwitchover(PairController::SwitchoverDone done);
  void switchoverStep() noexcept;
  void switchoverPhase();
  void resumeDataPath() noexcept;
  void finishSwitchover(int status, std::string message) noexcept;
};

void PairController::Impl::open() {
  keys.add(config.key_id, config.key);
  keys.setSendKey(config.key_id);
  channel.open();
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
  // Tracking from the start: the standby discards its own changes each tick, the active drains
  // them to the peer; a node that takes over needs no switch-on step.
  engine.enableChangeTracking();
  engine.setStandby(true, monotonicNs());  // every node starts as a standby
  startBulk(monotonicNs());
}

void PairController::Impl::startBulk(uint64_t now) noexcept {
  roles.setReady(false);
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

void PairController::Impl::sendHeartbeat() noexcept {
  const uint64_t now = monotonicNs();
  if (timing.hb_sent_prev_ns != 0) {
    timing.hb_tx_gap_max_ns = std::max(timing.hb_tx_gap_max_ns, now - timing.hb_sent_prev_ns);
  }
  timing.hb_sent_prev_ns = now;
  sync::FrameWriter w(tx);
  const size_t flows = engine.activeFlows();
  const sync::Heartbeat hb =
      roles.heartbeat(flows > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(flows));
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
    if (round > 0 && monotonicNs() >= deadline) return;  // the rest goes at the next tick
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
  const GroupResult r = netlink.apply(config.addresses);
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
  logf(LogLevel::kInfo, "pair: address group up (%zu addresses, %zu changed), gratuitous ARP",
       config.addresses.members.size(), r.changed);
}

void PairController::Impl::releaseAddresses() noexcept {
  garp_schedule.stop();
  bulk_sender.cancel();
  if (vmac) {
    vmac->release();
    addresses_held = false;
    return;
  }
  const GroupResult r = netlink.withdraw(config.addresses);
  addresses_held = false;
  if (!r.ok()) {
    ++counters.addr_failures;
    logf(LogLevel::kError, "pair: cannot remove %s from %s: %s",
         config.addresses.members[r.failed_member].address.toString().c_str(),
         config.addresses.members[r.failed_member].interface.c_str(), std::strerror(r.error));
  } else {
    logf(LogLevel::kInfo, "pair: address group withdrawn (%zu changed)", r.changed);
  }
}

void PairController::Impl::handleRole(const sync::RoleOutput& out, uint64_t now) noexcept {
  if (out.changed) {
    ++counters.role_changes;
    logf(LogLevel::kInfo, "pair: role %s -> %s (epoch %u): %s", sync::roleName(out.from),
         sync::roleName(out.to), roles.epoch(), out.reason != nullptr ? out.reason : "");
    // Flows expire by their own packets only where the packets arrive.
    engine.setStandby(out.to != sync::Role::kActive, now);
    if (out.to == sync::Role::kActive) {
      ++counters.takeovers;
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
  if (out.send_heartbeat) sendHeartbeat();
}

void PairController::Impl::onRoleTick() noexcept {
  uint64_t now = monotonicNs();
  if (timing.role_tick_prev_ns != 0 && now - timing.role_tick_prev_ns > kTickNs) {
    timing.role_tick_late_max_ns =
        std::max(timing.role_tick_late_max_ns, now - timing.role_tick_prev_ns - kTickNs);
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
  handleRole(roles.tick(now), now);
  watchPaths(now);
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
  if (!bulk_sender.active()) return;
  const uint64_t start = monotonicNs();
  now_for_source = start;
  uint64_t now = start;
  while (bulk_sender.active() && now - start < kBulkBudgetNs) {
    const size_t n = bulk_sender.step(*this, sender, kBulkChunk);
    sendUpdates(now, 0);  // one round: what was just queued (and due resends)
    if (n < kBulkChunk) break;  // the queue is full (waiting for acks) or the table ended
    now = monotonicNs();
  }
}

void PairController::Impl::onTick() noexcept {
  const uint64_t start = monotonicNs();
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
      onPeerHeartbeat(sync::Path::kFront, r.header.node_id, hb, now);
    }
  }
}

void PairController::Impl::onPeerHeartbeat(sync::Path path, uint32_t node_id,
                                            const sync::Heartbeat& hb, uint64_t now) noexcept {
  const size_t pi = static_cast<size_t>(path);
  ++heartbeats_rx[pi];
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
             "ms; our role timer late by up to %.1f ms, longest sync read %.1f ms, data tick "
             "%.1f ms)",
             path == sync::Path::kSync ? "sync" : "front", static_cast<double>(gap) / 1e6,
             static_cast<double>(config.heartbeat_interval_ns) / 1e6,
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
      onPeerHeartbeat(sync::Path::kSync, r.header.node_id, hb, now);
    }
  }
  // Acknowledge what arrived at once, not at the next tick: the active may be holding a
  // SYN-ACK for it (deferral).
  if (roles.role() != sync::Role::kActive && receiver.ackDue()) sendAck();
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
  const timeval tick{0, static_cast<suseconds_t>(kTickNs / 1000)};
  // Heartbeats and the sync socket first: with the base's priorities set up (main.cc), a busy
  // data path (NFQUEUE batches, checkpoints, bulk steps) cannot delay them by more than the one
  // callback already running. Without priorities (a base set up elsewhere), this is a no-op.
  if (self->timer_ev == nullptr || self->read_ev == nullptr || self->role_ev == nullptr ||
      (event_base_get_npriorities(base) > 1 &&
       (event_priority_set(self->role_ev, kPriorityHeartbeat) != 0 ||
        event_priority_set(self->read_ev, kPriorityHeartbeat) != 0)) ||
      event_add(self->timer_ev, &tick) != 0 || event_add(self->role_ev, &tick) != 0 ||
      event_add(self->read_ev, nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the sync events to the loop");
  }
  self->registerFront();
  logf(LogLevel::kInfo,
       "pair: node %u priority %u%s, sync %s -> %s, heartbeat %.3f s x %u, %zu addresses",
       config.node_id, config.priority, config.preempt ? " preempt" : "",
       impl_->channel.localEndpoint().toString().c_str(), config.peer.toString().c_str(),
       static_cast<double>(config.heartbeat_interval_ns) / 1e9, config.miss_count,
       config.addresses.members.size());
}

PairController::~PairController() {
  if (impl_->timer_ev != nullptr) event_free(impl_->timer_ev);
  if (impl_->role_ev != nullptr) event_free(impl_->role_ev);
  if (impl_->read_ev != nullptr) event_free(impl_->read_ev);
  if (impl_->front_ev != nullptr) event_free(impl_->front_ev);
}

void PairController::afterPackets() noexcept {
  if (impl_->roles.role() == sync::Role::kActive) impl_->flushNewFlows(monotonicNs());
}

void PairController::setHeldReleaser(std::function<void(uint64_t)> fn) {
  impl_->held_releaser = std::move(fn);
}

void PairController::shutdown() noexcept {
  if (impl_->addresses_held) impl_->releaseAddresses();
  if (impl_->vmac) impl_->vmac->shutdown();
}

const char* PairController::roleName() const noexcept {
  return sync::roleName(impl_->roles.role());
}

bool PairController::ready() const noexcept { return impl_->roles.ready(); }

void PairController::Impl::pathMetrics(std::string& out) const {
  const Impl& p = *this;
  static constexpr const char* kNames[sync::kPathCount] = {"sync", "front"};
  const uint64_t now = monotonicNs();
  out += "# HELP tandem_pair_path_alive 1 while the peer's heartbeats arrive on this path.\n"
         "# TYPE tandem_pair_path_alive gauge\n";
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    out += std::string("tandem_pair_path_alive{path=\"") + kNames[i] + "\"} " +
           (p.roles.pathAlive(static_cast<sync::Path>(i), now) ? "1" : "0") + "\n";
  }
  out += "# HELP tandem_pair_heartbeats_received_total Authentic peer heartbeats, by path.\n"
         "# TYPE tandem_pair_heartbeats_received_total counter\n";
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    out += std::string("tandem_pair_heartbeats_received_total{path=\"") + kNames[i] + "\"} " +
           std::to_string(p.heartbeats_rx[i]) + "\n";
  }
  out += "# HELP tandem_pair_path_losses_total Times the peer's heartbeats stopped on a path.\n"
         "# TYPE tandem_pair_path_losses_total counter\n";
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    out += std::string("tandem_pair_path_losses_total{path=\"") + kNames[i] + "\"} " +
           std::to_string(p.path_losses[i]) + "\n";
  }
  out += "# HELP tandem_front_rejected_total Received front heartbeat frames dropped, by reason.\n"
         "# TYPE tandem_front_rejected_total counter\n";
  for (size_t i = 1; i < static_cast<size_t>(sync::Reject::kCount); ++i) {
    out += std::string("tandem_front_rejected_total{reason=\"") +
           sync::rejectName(static_cast<sync::Reject>(i)) + "\"} " +
           std::to_string(p.front_verifier ? p.front_verifier->counters()[i] : 0) + "\n";
  }
}

std::string PairController::metricsText() const {
  const Impl& p = *impl_;
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto sample = [&](const std::string& series, uint64_t v) {
    out += series + " " + std::to_string(v) + "\n";
  };
  family("tandem_pair_role", "gauge", "1 for the role this node is in.");
  for (sync::Role r : {sync::Role::kStandby, sync::Role::kActive, sync::Role::kFault}) {
    sample(std::string("tandem_pair_role{role=\"") + sync::roleName(r) + "\"}",
           p.roles.role() == r ? 1 : 0);
  }
  family("tandem_pair_ready", "gauge", "1 when this node holds the whole flow table.");
  sample("tandem_pair_ready", p.roles.ready() ? 1 : 0);
  family("tandem_pair_epoch", "gauge", "Takeover epoch.");
  sample("tandem_pair_epoch", p.roles.epoch());
  family("tandem_pair_addresses_held", "gauge", "1 while this node holds the address group.");
  sample("tandem_pair_addresses_held", p.addresses_held ? 1 : 0);
  p.pathMetrics(out);
  family("tandem_pair_standby_ready", "gauge",
         "On the active: 1 while a ready standby is heard (0: absent or still bulk-resyncing).");
  sample("tandem_pair_standby_ready",
         p.roles.role() == sync::Role::kActive &&
                 p.standbyState(monotonicNs()) == Impl::StandbyState::kReady
             ? 1
             : 0);
  family("tandem_pair_standby_warnings_total", "counter",
         "Warnings logged by the active: standby absent or not ready.");
  sample("tandem_pair_standby_warnings_total", p.standby_warnings);
  family("tandem_pair_deferral", "gauge", "1 while new flows wait for the standby's ack.");
  sample("tandem_pair_deferral", p.deferring ? 1 : 0);
  family("tandem_pair_deferred_waiting", "gauge", "New flows waiting for the standby's ack.");
  sample("tandem_pair_deferred_waiting", p.deferred.size());
  family("tandem_sync_rejected_total", "counter", "Received sync frames dropped, by reason.");
  for (size_t i = 1; i < static_cast<size_t>(sync::Reject::kCount); ++i) {
    sample(std::string("tandem_sync_rejected_total{reason=\"") +
               sync::rejectName(static_cast<sync::Reject>(i)) + "\"}",
           p.verifier.counters()[i]);
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
  };
  for (const auto& [name, value] : counters) {
    family(name, "counter", "See proxy/tandemd/pair.h.");
    sample(name, value);
  }
  p.timingMetrics(out);
  if (p.vmac) out += p.vmac->metricsText();
  return out;
}

void PairController::Impl::timingMetrics(std::string& out) const {
  static constexpr const char* kNames[sync::kPathCount] = {"sync", "front"};
  auto us = [](uint64_t ns) { return std::to_string(ns / 1000); };
  out +=
      "# HELP tandem_pair_heartbeat_rx_gap_max_microseconds Largest interval between two peer "
      "heartbeats received on a path (gaps over 10 s, a peer restart, excluded).\n"
      "# TYPE tandem_pair_heartbeat_rx_gap_max_microseconds gauge\n";
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    out += std::string("tandem_pair_heartbeat_rx_gap_max_microseconds{path=\"") + kNames[i] +
           "\"} " + us(timing.hb_rx_gap_max_ns[i]) + "\n";
  }
  out +=
      "# HELP tandem_pair_heartbeat_rx_late_total Peer heartbeats received more than two "
      "intervals after the previous one on the same path.\n"
      "# TYPE tandem_pair_heartbeat_rx_late_total counter\n";
  for (size_t i = 0; i < sync::kPathCount; ++i) {
    out += std::string("tandem_pair_heartbeat_rx_late_total{path=\"") + kNames[i] + "\"} " +
           std::to_string(timing.hb_rx_late[i]) + "\n";
  }
  out +=
      "# HELP tandem_pair_heartbeat_tx_gap_max_microseconds Largest interval between two "
      "heartbeats this node sent.\n"
      "# TYPE tandem_pair_heartbeat_tx_gap_max_microseconds gauge\n"
      "tandem_pair_heartbeat_tx_gap_max_microseconds " + us(timing.hb_tx_gap_max_ns) + "\n";
  out +=
      "# HELP tandem_pair_loop_lateness_max_microseconds How late the role timer ran at worst "
      "(the event loop was busy, or the process was not scheduled).\n"
      "# TYPE tandem_pair_loop_lateness_max_microseconds gauge\n"
      "tandem_pair_loop_lateness_max_microseconds " + us(timing.role_tick_late_max_ns) + "\n";
  out +=
      "# HELP tandem_pair_callback_max_microseconds Longest run of the pair's loop callbacks.\n"
      "# TYPE tandem_pair_callback_max_microseconds gauge\n"
      "tandem_pair_callback_max_microseconds{callback=\"data_tick\"} " +
      us(timing.data_tick_max_ns) + "\n"
      "tandem_pair_callback_max_microseconds{callback=\"sync_read\"} " +
      us(timing.read_max_ns) + "\n";
  out +=
      "# HELP tandem_pair_verdict_reads_total Extra reads of the sync socket before the peer "
      "could be declared dead (its frames were still waiting).\n"
      "# TYPE tandem_pair_verdict_reads_total counter\n"
      "tandem_pair_verdict_reads_total " + std::to_string(timing.verdict_reads) + "\n";
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
// standby that bulk-resyncs from the new one. The control request completes once the peer is
// heard active.

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
  switchover.phase = Switchover::Phase::kFlushing;
  switchover.started_ns = now;
  switchover.queued_at_start = sender.counters().queued;
  switchover.done = std::move(done);
  logf(LogLevel::kInfo,
       "pair: planned switchover to node %u: holding the data path, flushing the last changes",
       roles.peerNodeId());
  switchover.holding = true;
  hold_data_path(true);
  onTick();  // drains every change made so far into the sender and sends it now
  const timeval step{0, static_cast<suseconds_t>(kSwitchoverStepNs / 1000)};
  if (event_add(switchover_ev.get(), &step) != 0) {
    resumeDataPath();
    finishSwitchover(409, "switchover aborted: cannot add a timer to the event loop");
    return;
  }
  switchoverStep();
}

void PairController::Impl::resumeDataPath() noexcept {
  if (!switchover.holding) return;
  switchover.holding = false;
  switchover.hold_ns = monotonicNs() - switchover.started_ns;
  switchover.last_hold_ns = switchover.hold_ns;
  switchover.max_hold_ns = std::max(switchover.max_hold_ns, switchover.hold_ns);
  hold_data_path(false);
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
      return;
    case Switchover::Phase::kFlushing: {
      if (roles.role() != sync::Role::kActive) {
        resumeDataPath();
        finishSwitchover(409, "switchover aborted: this node left the active role meanwhile");
        return;
      }
      if (!sender.idle()) {
        if (now - switchover.started_ns >= kSwitchoverFlushTimeoutNs) {
          const size_t left = sender.pending();
          resumeDataPath();
          finishSwitchover(409, "switchover aborted: the standby did not acknowledge " +
                                    std::to_string(left) + " updates within " +
                                    millis(kSwitchoverFlushTimeoutNs) +
                                    " ms; this node stays active");
        }
        return;
      }
      const sync::RoleOutput out = roles.requestSwitchover(now);
      if (!out.changed) {
        resumeDataPath();
        finishSwitchover(409, std::string(out.reason != nullptr ? out.reason : "refused") +
                                  " (at handover time); this node stays active");
        return;
      }
      switchover.flushed = sender.counters().queued - switchover.queued_at_start;
      // Withdraws the group and sends the handover heartbeat.
      handleRole(out, now);
      // Every change was flushed and acknowledged with the data path held, so this node's
      // table is the peer's: it stays ready and follows the new active's update stream from
      // its first message, instead of a bulk resync that would stall the new active's loop.
      bulk_receiver.markComplete();
      roles.setReady(true);
      receiver.followNextSession();
      resumeDataPath();
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
  static constexpr const char* kPhases[] = {"idle", "flushing", "handed_over"};
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
      "# HELP tandem_pair_passed_to_active_total Client packets without a flow that this node, "
      "as standby, passed on untranslated to the VIP's holder.\n"
      "# TYPE tandem_pair_passed_to_active_total counter\n";
  out += "tandem_pair_passed_to_active_total " +
         std::to_string(impl_->engine.passedToActive()) + "\n";
  return out;
}

}  // namespace tandem
