#pragma once
/// @file PairController's implementation state, shared by pair.cc (sync, roles, addresses,
/// deferral, metrics), pair_paths.cc (heartbeat paths and loop timing) and pair_control.cc
/// (planned switchover and control). Private to tandemd: include only from those files.
#include <event2/event.h>
#include <time.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <array>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <unistd.h>

#include "proxy/io/garp.h"
#include "proxy/tandemd/pair.h"
#include "proxy/tandemd/deferral.h"
#include "proxy/tandemd/flow_record.h"
#include "proxy/tandemd/heartbeat_thread.h"
#include "proxy/tandemd/prom_text.h"
#include "proxy/io/log.h"
#include "proxy/io/rx_barrier.h"
#include "proxy/io/udp_channel.h"
#include "proxy/tandemd/vmac_takeover.h"
#include "sync/auth.h"
#include "sync/bulk.h"
#include "sync/reliable.h"
#include "sync/roles.h"
#include "sync/wire.h"

namespace tandem {
namespace pair_detail {

/// Checkpoint cadence on the active, ACK cadence on the standby, and the role timer's resolution.
constexpr uint64_t kTickNs = 2'000'000;
/// Updates taken from the reliable sender per poll() call.
constexpr size_t kPollBatch = 256;
/// Bulk transfers are paced by the standby's acknowledgements (the sender's window, sync.
/// send_window): flows are queued and sent in chunks of kBulkChunk while the window is open.
/// One pump callback takes at most kPumpMax messages (about 2 ms of work), then yields to the
/// loop and comes back at its next turn if the window is still open.
constexpr size_t kBulkChunk = 256;
constexpr size_t kPumpMax = 2048;
/// One sendUpdates() call at the tick stops after 1 ms (one round of kPollBatch at least); the
/// window bounds it too, and the pump takes over what is left.
constexpr uint64_t kSendBudgetNs = 1'000'000;
/// Frames one read callback takes at most (the socket stays readable: the loop comes back).
constexpr int kReadBatch = 256;
/// Loop priorities (event_base_priority_init(base, 2) in main.cc): heartbeats, the role timer
/// and the sync sockets run before the data path's callbacks whenever both are ready.
constexpr int kPriorityHeartbeat = 0;
/// Items one received frame can carry at most: 1400 bytes / 16-byte heartbeats.
constexpr size_t kMaxRxItems = 128;
/// The longest a standby waits for its receive-path barrier (rx_barrier.h) before taking over
/// anyway: at least this, or the dead interval if longer.
constexpr uint64_t kBarrierTimeoutNs = 250'000'000;

inline uint64_t realtimeNs() {
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

}  // namespace pair_detail

struct PairController::Impl : sync::UpdateSink, sync::FlowSource {
  Impl(event_base* b, Engine& e, const SyncConfig& c)
      : base(b),
        engine(e),
        config(c),
        sealer(keys, pair_detail::realtimeNs()),
        verifier(keys),
        channel(UdpChannelOptions{c.bind, c.peer, {}, 4u << 20, 1u << 20, 0xc0, 6}),
        sender(sync::ReliableConfig{sync::ReliableConfig{}.max_pending,
                                    sync::ReliableConfig{}.resend_after_ns, c.send_window},
               pair_detail::realtimeNs()),
        receiver(*this),
        roles(sync::RolesConfig{c.node_id, c.priority, c.preempt, c.heartbeat_interval_ns,
                                c.miss_count,
                                std::max(pair_detail::kBarrierTimeoutNs,
                                         c.heartbeat_interval_ns * c.miss_count),
                                /*own_stalls=*/true},
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
  bool onReadable(int max_frames = pair_detail::kReadBatch) noexcept;
  void stopSyncingToDeadPeer(uint64_t now) noexcept;
  /// Fills the send window: bulk flows and queued updates, at most kPumpMax messages.
  void bulkStep() noexcept;
  /// The ack-clocked sender (active): an ack opened the window, or the last pump left it open.
  /// Runs at the data path's priority, at the loop's next turn (a zero timeout, so the loop
  /// polls its sockets in between), never inside the heartbeat-priority read callback.
  void schedulePump() noexcept;
  void onPump() noexcept;
  void timingMetrics(PromText& m) const;
  /// `periodic`: the role timer's output; its heartbeat is the regular one (with the heartbeat
  /// thread, only published: the thread keeps its own cadence).
  void handleRole(const sync::RoleOutput& out, uint64_t now, bool periodic = false) noexcept;
  void takeAddresses(uint64_t now) noexcept;
  void releaseAddresses() noexcept;
  /// Sends a heartbeat now (with the heartbeat thread: publishes it and asks the thread to
  /// send it at once), or with `periodic` the regular one (with the thread: publishes only).
  void sendHeartbeat(bool periodic = false) noexcept;
  // The heartbeat thread (sync.heartbeat_thread, heartbeat_thread.h).
  void startHeartbeatThread();
  sync::HeartbeatSnapshot heartbeatSnapshot() const noexcept;
  /// The loop turned: stamps the heartbeat thread's liveness clock.
  void loopTurned(uint64_t now) noexcept {
    if (hb_thread) hb_thread->loopTurned(now);
  }
  void heartbeatThreadMetrics(PromText& m) const;
  void sendUpdates(uint64_t now, uint64_t budget_ns = pair_detail::kSendBudgetNs) noexcept;
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
                       uint64_t now, uint64_t kernel_rx_ns) noexcept;
  /// Where a received heartbeat's time went: sender -> kernel, kernel -> our loop.
  void heartbeatDelays(size_t path, const sync::Heartbeat& hb, uint64_t kernel_rx_ns) noexcept;
  void watchPaths(uint64_t now) noexcept;
  // The receive-path barrier before a takeover (rx_barrier.h, roles.h).
  void openBarrier();
  void registerBarrier();
  void startBarrier(uint64_t now) noexcept;
  void onBarrierReadable() noexcept;
  void pathMetrics(PromText& m) const;
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
  uint64_t role_tick_ns = pair_detail::kTickNs;  ///< the role timer's period
  event* read_ev = nullptr;
  event* pump_ev = nullptr;
  uint64_t pumps = 0;  ///< pump callbacks run (ack-clocked sends)
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
    uint64_t pump_max_ns = 0;       ///< longest ack-clocked pump callback (bulk, sends)
    uint64_t verdict_reads = 0;     ///< extra reads before declaring the peer dead
    // Per received heartbeat (CLOCK_REALTIME): the peer's send time (Heartbeat::sent_ns) to the
    // kernel's receive timestamp (SO_TIMESTAMPNS), and that timestamp to our handling of it.
    std::array<uint64_t, sync::kPathCount> hb_kernel_delay_max_ns{};
    std::array<uint64_t, sync::kPathCount> hb_loop_delay_max_ns{};
    std::array<uint64_t, sync::kPathCount> hb_kernel_delay_over{};  ///< over one interval
    std::array<uint64_t, sync::kPathCount> hb_loop_delay_over{};    ///< over one interval
    std::array<uint64_t, sync::kPathCount> peer_sent_prev_ns{};  ///< peer's previous sent_ns
    std::array<uint64_t, sync::kPathCount> hb_kernel_delay_last_ns{};
    std::array<uint64_t, sync::kPathCount> hb_loop_delay_last_ns{};
    std::array<uint64_t, sync::kPathCount> hb_sent_gap_last_ns{};  ///< sender's own spacing
  } timing;
  RateLimit late_warn{10'000'000'000ull, 3};
  bool peer_dropped = false;  ///< the active stopped syncing to a silent peer
  uint64_t dead_peer_drops = 0;
  std::vector<uint8_t> tx;
  std::vector<uint8_t> rx = std::vector<uint8_t>(65536);
  std::vector<sync::Update> polled;
  pair_detail::RxFrame frame;
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
  RxBarrier barrier;
  bool barrier_open = false;
  event* barrier_ev = nullptr;
  uint64_t barrier_started_ns = 0;
  uint64_t barrier_wait_max_ns = 0;   ///< longest until the probes came back
  uint64_t barrier_wait_last_ns = 0;
  pair_detail::RxFrame front_frame;
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
    enum class Phase : uint8_t { kIdle, kFlushing, kHandedOver, kWithdrawing };
    Phase phase = Phase::kIdle;
    bool holding = false;          ///< the data path is held
    uint64_t started_ns = 0;       ///< the command was taken
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
    // Where the last switchover's time went (monotonic ns; 0: not reached), for GET /pair and
    // bench/switchover_bench.sh: the hold lasts from hold_started_ns to resumed_ns, the peer is
    // heard active at peer_active_ns.
    bool withdrawn_early = false;  ///< the group went before the hold (not with vmac takeover)
    uint64_t started_unix_ns = 0;  ///< CLOCK_REALTIME at started_ns (to match client logs)
    uint64_t hold_started_ns = 0;  ///< the data path held since
    uint64_t flush_sent_ns = 0;    ///< the last changes drained and sent
    uint64_t acked_ns = 0;         ///< the standby acknowledged all of them
    uint64_t role_changed_ns = 0;  ///< this node a standby (ready, following the peer)
    uint64_t handover_sent_ns = 0; ///< the handover heartbeat sent
    uint64_t withdrawn_ns = 0;     ///< the address group withdrawn
    uint64_t resumed_ns = 0;       ///< the data path resumed (queued packets forwarded)
    uint64_t peer_active_ns = 0;   ///< the peer heard active
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
  /// The withdrawal thread is done (its eventfd is readable): hold, flush, hand over.
  void onWithdrawn() noexcept;
  void beginHold() noexcept;
  // The switchover's withdrawal thread (pair_control.cc): its own netlink socket, its result,
  // and an eventfd that wakes this loop. Declared last, so the thread is joined first.
  struct Fd {
    int fd = -1;
    ~Fd() {
      if (fd >= 0) close(fd);
    }
    operator int() const noexcept { return fd; }
    Fd& operator=(int f) noexcept {
      fd = f;
      return *this;
    }
  };
  Fd withdraw_fd;
  std::unique_ptr<AddrNetlink> withdraw_netlink;
  std::unique_ptr<event, void (*)(event*)> withdraw_ev{nullptr, &event_free};
  GroupResult withdraw_result;
  std::jthread withdraw_thread;
  /// The heartbeat thread; declared last so that it is joined before the sockets and sealers
  /// it uses go.
  std::unique_ptr<HeartbeatThread> hb_thread;
  /// Stays active: the group back if it was withdrawn, the data path resumed, the request
  /// answered 409.
  void abortSwitchover(std::string message) noexcept;
};

}  // namespace tandem
