#include "proxy/tandemd/pair.h"

#include <event2/event.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "proxy/io/garp.h"
#include "proxy/io/log.h"
#include "proxy/io/udp_channel.h"
#include "sync/auth.h"
#include "sync/bulk.h"
#include "sync/reliable.h"
#include "sync/roles.h"
#include "sync/wire.h"

namespace tandem {
namespace {

// The wire codes are the core's enum values today; a new state or mode must be mapped here.
static_assert(static_cast<uint8_t>(TcpState::kCount) == sync::kTcpStateCount,
              "TcpState changed: update the sync wire codes and flowToRecord()");
static_assert(static_cast<uint8_t>(Mode::kSplice) + 1 == sync::kModeCount,
              "Mode changed: update the sync wire codes and flowToRecord()");

/// Checkpoint cadence on the active, ACK cadence on the standby, and the role timer's resolution.
constexpr uint64_t kTickNs = 2'000'000;
/// Updates taken from the reliable sender per poll() call.
constexpr size_t kPollBatch = 256;
/// Flows the bulk transfer queues per tick.
constexpr size_t kBulkPerTick = 4096;
/// Items one received frame can carry at most: 1400 bytes / 16-byte heartbeats.
constexpr size_t kMaxRxItems = 128;

uint64_t realtimeNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
    throw std::system_error(errno, std::generic_category(), "clock_gettime(CLOCK_REALTIME)");
  }
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint8_t windowFlags(const TcpWindow& w) noexcept {
  uint8_t f = 0;
  if (w.seen) f |= sync::kWinSeen;
  if (w.wscale_offered) f |= sync::kWinScaleOffered;
  if (w.ack_seen) f |= sync::kWinAckSeen;
  if (w.fin_seen) f |= sync::kWinFinSeen;
  if (w.fin_acked) f |= sync::kWinFinAcked;
  return f;
}

sync::FlowKey toSyncKey(const FlowKey& k) noexcept {
  // The core's client-leg key is {client, vip}, source first (FlowTable::clientKey).
  return sync::FlowKey{k.saddr, k.daddr, k.sport, k.dport};
}

FlowKey toCoreKey(const sync::FlowKey& k) noexcept {
  return FlowKey{k.client_addr, k.vip_addr, k.client_port, k.vip_port};
}

/// The one place core flow state becomes wire state.
sync::FlowRecord flowToRecord(const Flow& f, uint64_t now_ns) noexcept {
  sync::FlowRecord r;
  r.key = sync::FlowKey{f.client_addr, f.vip_addr, f.client_port, f.vip_port};
  r.backend_addr = f.backend_addr;
  r.source_addr = f.source_addr;
  r.backend_port = f.backend_port;
  r.source_port = f.source_port;
  r.service = f.service;
  r.backend = f.backend;
  r.mode = static_cast<uint8_t>(f.splice ? Mode::kSplice : Mode::kPassthrough);
  r.tcp_state = static_cast<uint8_t>(f.state);
  r.flags = f.has_seqadj ? sync::kFlowHasSeqAdj : 0;
  const uint64_t idle_ms = now_ns > f.last_seen_ns ? (now_ns - f.last_seen_ns) / 1'000'000 : 0;
  r.idle_ms = idle_ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(idle_ms);
  for (size_t d = 0; d < 2; ++d) {
    const TcpWindow& w = f.win[d];
    r.win[d] = sync::WindowRecord{w.td_end, w.td_maxend, w.td_maxwin, w.last_ack,
                                  w.fin_end,  w.td_scale,  windowFlags(w)};
    r.adj[d] = sync::SeqAdjRecord{f.adj[d].correction_pos, f.adj[d].offset_before,
                                  f.adj[d].offset_after};
  }
  return r;
}

/// And back. False for state this version cannot carry (splice flows: their cookie, timestamp
/// and window-scale fields are not in FlowRecord yet).
bool recordToFlow(const sync::FlowRecord& r, Flow& f) noexcept {
  if (r.mode != static_cast<uint8_t>(Mode::kPassthrough) || r.tcp_state >= sync::kTcpStateCount) {
    return false;
  }
  f = Flow{};
  f.client_addr = r.key.client_addr;
  f.vip_addr = r.key.vip_addr;
  f.client_port = r.key.client_port;
  f.vip_port = r.key.vip_port;
  f.backend_addr = r.backend_addr;
  f.source_addr = r.source_addr;
  f.backend_port = r.backend_port;
  f.source_port = r.source_port;
  f.service = r.service;
  f.backend = r.backend;
  f.state = static_cast<TcpState>(r.tcp_state);
  f.has_seqadj = (r.flags & sync::kFlowHasSeqAdj) != 0;
  for (size_t d = 0; d < 2; ++d) {
    const sync::WindowRecord& w = r.win[d];
    TcpWindow& t = f.win[d];
    t.td_end = w.td_end;
    t.td_maxend = w.td_maxend;
    t.td_maxwin = w.td_maxwin;
    t.last_ack = w.last_ack;
    t.fin_end = w.fin_end;
    t.td_scale = w.scale;
    t.seen = (w.flags & sync::kWinSeen) != 0;
    t.wscale_offered = (w.flags & sync::kWinScaleOffered) != 0;
    t.ack_seen = (w.flags & sync::kWinAckSeen) != 0;
    t.fin_seen = (w.flags & sync::kWinFinSeen) != 0;
    t.fin_acked = (w.flags & sync::kWinFinAcked) != 0;
    f.adj[d] = SeqAdj{r.adj[d].correction_pos, r.adj[d].offset_before, r.adj[d].offset_after};
  }
  return true;
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
        garp_schedule(GarpScheduleConfig{c.garp_count, 20'000'000, 0}) {}

  // sync::UpdateSink: the standby applies what the reliable receiver delivers, in order.
  void apply(const sync::Update& u) noexcept override;
  // sync::FlowSource: the active's table for bulk transfers.
  bool next(uint64_t& cursor, sync::FlowRecord& out) noexcept override;

  void open();
  void onTick() noexcept;
  void onReadable() noexcept;
  void handleRole(const sync::RoleOutput& out, uint64_t now) noexcept;
  void takeAddresses(uint64_t now) noexcept;
  void releaseAddresses() noexcept;
  void sendHeartbeat() noexcept;
  void sendUpdates(uint64_t now) noexcept;
  void sendAck() noexcept;
  void sendBulkRequest(const sync::BulkRequest& r) noexcept;
  bool seal(sync::FrameWriter& w) noexcept;
  void garpRound() noexcept;
  void startBulk(uint64_t now) noexcept;

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

  event* timer_ev = nullptr;
  event* read_ev = nullptr;
  std::vector<uint8_t> tx;
  std::vector<uint8_t> rx = std::vector<uint8_t>(65536);
  std::vector<sync::Update> polled;
  RxFrame frame;
  PairCounters counters;
  uint64_t own_node_frames = 0;
  uint64_t updates_while_active = 0;
  uint64_t splice_refused = 0;
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
  tx.reserve(sync::kDefaultMaxFrame);
  polled.reserve(kPollBatch);
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
        ++splice_refused;
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
  (void)channel.send(std::span<const uint8_t>(f.data(), f.size()));
  ++counters.frames_sent;
  return true;
}

void PairController::Impl::sendHeartbeat() noexcept {
  sync::FrameWriter w(tx);
  const size_t flows = engine.activeFlows();
  const sync::Heartbeat hb =
      roles.heartbeat(flows > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(flows));
  if (w.add(hb)) seal(w);
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

void PairController::Impl::sendUpdates(uint64_t now) noexcept {
  for (int round = 0; round < 16; ++round) {
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

void PairController::Impl::garpRound() noexcept {
  for (size_t m = 0; m < config.addresses.members.size(); ++m) {
    (void)garps[garp_of_member[m]]->send(config.addresses.members[m].address.addr);
  }
}

void PairController::Impl::takeAddresses(uint64_t now) noexcept {
  // Every update received so far was installed when it arrived (apply() runs on receipt), so
  // the table is in place before the first address comes up.
  roles.setReady(true);
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

void PairController::Impl::onTick() noexcept {
  // Frames already queued are applied before the role timer can decide a takeover, so every
  // update that reached this node is in the table before the addresses come up.
  onReadable();
  const uint64_t now = monotonicNs();
  handleRole(roles.tick(now), now);
  if (roles.role() == sync::Role::kActive) {
    const bool complete = engine.drainChanges(
        [&](const FlowKey& k) { (void)sender.remove(toSyncKey(k)); },
        [&](const Flow& f) { (void)sender.upsert(flowToRecord(f, now)); });
    if (!complete) {
      ++counters.changes_lost;
      if (drain_warn.allow(now)) {
        logf(LogLevel::kWarn, "pair: flow removals were lost before reaching the sync queue");
      }
    }
    now_for_source = now;
    (void)bulk_sender.step(*this, sender, kBulkPerTick);
    sendUpdates(now);
    if (garp_schedule.poll(now)) garpRound();
  } else {
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
}

void PairController::Impl::onReadable() noexcept {
  for (int n = 0; n < 1024; ++n) {
    Datagram d;
    const int err = channel.recv(std::span<uint8_t>(rx.data(), rx.size()), d);
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    if (err != 0) {
      if (err == EMSGSIZE || err == EINTR) continue;
      return;  // counted by the channel
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
      handleRole(roles.onHeartbeat(sync::Path::kSync, r.header.node_id, hb, now), now);
    }
  }
}

PairController::PairController(event_base* base, Engine& engine, const SyncConfig& config)
    : impl_(std::make_unique<Impl>(base, engine, config)) {
  impl_->open();
  Impl* self = impl_.get();
  self->timer_ev = event_new(
      base, -1, EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onTick(); }, self);
  self->read_ev = event_new(
      base, self->channel.fd(), EV_READ | EV_PERSIST,
      [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onReadable(); }, self);
  const timeval tick{0, static_cast<suseconds_t>(kTickNs / 1000)};
  if (self->timer_ev == nullptr || self->read_ev == nullptr ||
      event_add(self->timer_ev, &tick) != 0 || event_add(self->read_ev, nullptr) != 0) {
    throw std::runtime_error("pair: cannot add the sync events to the loop");
  }
  logf(LogLevel::kInfo,
       "pair: node %u priority %u%s, sync %s -> %s, heartbeat %.3f s x %u, %zu addresses",
       config.node_id, config.priority, config.preempt ? " preempt" : "",
       impl_->channel.localEndpoint().toString().c_str(), config.peer.toString().c_str(),
       static_cast<double>(config.heartbeat_interval_ns) / 1e9, config.miss_count,
       config.addresses.members.size());
}

PairController::~PairController() {
  if (impl_->timer_ev != nullptr) event_free(impl_->timer_ev);
  if (impl_->read_ev != nullptr) event_free(impl_->read_ev);
}

void PairController::shutdown() noexcept {
  if (impl_->addresses_held) impl_->releaseAddresses();
}

const char* PairController::roleName() const noexcept {
  return sync::roleName(impl_->roles.role());
}

bool PairController::ready() const noexcept { return impl_->roles.ready(); }

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
      {"tandem_pair_install_failures_total", c.install_failures + p.splice_refused},
      {"tandem_pair_flows_removed_total", c.flows_removed},
      {"tandem_pair_changes_lost_total", c.changes_lost},
      {"tandem_pair_address_failures_total", c.addr_failures},
      {"tandem_pair_bulk_transfers_total", p.bulk_sender.counters().completed},
  };
  for (const auto& [name, value] : counters) {
    family(name, "counter", "See proxy/tandemd/pair.h.");
    sample(name, value);
  }
  return out;
}

std::string PairController::statusJson() const {
  const Impl& p = *impl_;
  return std::string("\"pair\":{\"role\":\"") + sync::roleName(p.roles.role()) +
         "\",\"ready\":" + (p.roles.ready() ? "true" : "false") +
         ",\"epoch\":" + std::to_string(p.roles.epoch()) +
         ",\"addresses_held\":" + (p.addresses_held ? "true" : "false") +
         ",\"peer_seen\":" + (p.roles.peerSeen() ? "true" : "false") + "}";
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
      // Withdraws the group, starts the bulk resync from the peer, sends the handover heartbeat.
      handleRole(out, now);
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
                                  "), this node is standby and resyncing (" + held + ")");
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
