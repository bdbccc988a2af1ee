#pragma once
/// @file Engine internals shared by engine.cc (classification, passthrough) and splice.cc.

#include <memory>
#include <unordered_map>
#include <vector>

#include "common/packet.h"
#include "common/segment_writer.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/fastpath_port.h"
#include "proxy/core/syn_answer_port.h"
#include "proxy/core/flow_table.h"
#include "proxy/core/outbox.h"
#include "proxy/core/syn_cookie.h"

namespace tandem {

bool isOpeningSyn(uint8_t flags) noexcept;

struct Engine::Impl {
  Impl(const EngineConfig& c, Counters& k)
      : config(c),
        counters(k),
        table(c.max_flows, c.hash_seed),
        rr(c.services.size(), 0),
        snat_cursor(c.services.size(), 0) {
    syn_timers.reserve(kMaxSynTimers);
  }

  int findService(const IpAddr& daddr, uint16_t dport) const noexcept;
  // Splice mode (splice.cc).
  Decision spliceOpen(size_t svc, const FlowKey& key, TcpPacket& pkt, const TcpOptions& opts,
                      uint8_t* data, size_t cap, const PacketMeta& meta,
                      uint64_t now_ns) noexcept;
  Decision splicePending(uint32_t index, Direction dir, TcpPacket& pkt, TcpOptions& opts,
                         uint8_t* data, size_t cap, const PacketMeta& meta,
                         uint64_t now_ns) noexcept;
  Decision spliceBindOnData(uint32_t index, TcpPacket& pkt, const TcpOptions& opts,
                            uint8_t* data, size_t cap, const PacketMeta& meta,
                            uint64_t now_ns) noexcept;
  /// A pending splice ends without its backend leg (the client's RST, the backend's, a connect
  /// timeout): client data held for it may go (to be refused), and the kernel must not complete
  /// it (armed entries taken back).
  void spliceAbort(uint32_t index) noexcept;
  /// The backend never answered the leg's SYN: the splice ends (spliceAbort), the flow closes,
  /// and the backend's passive health signal counts it. The caller resets the client.
  void spliceConnectTimedOut(uint32_t index, uint64_t now_ns) noexcept;
  /// Zero-window handshake: the backend leg is up; puts the flow on the fast path (unless client
  /// segments wait for it) and sends the client the ACK that opens its window.
  void spliceOpenWindow(uint32_t index, uint32_t client_ack, uint16_t synack_window) noexcept;
  /// Moves a flow to another backend of its service (bind = data); returns its new index.
  uint32_t spliceRebind(uint32_t index, uint16_t backend) noexcept;
  /// Timer work of splice mode, from expire(): backend SYNs sent again on their own clock.
  void spliceTick(uint64_t now_ns) noexcept;
  Decision dropped(DropReason r) noexcept {
    counters.drop(r);
    return Decision{Verdict::kDrop, r, false, 0};
  }
  bool isBackendLeg(const FlowKey& key) const noexcept;
  /// `backend` >= 0 forces that backend of the pool instead of the scheduler's choice.
  DropReason createFlow(size_t svc, const FlowKey& key, FlowTable::Hit& hit,
                        int backend = -1) noexcept;
  // Backend health and re-splicing (resplice.cc).
  /// An UP backend of the service for a new flow by its scheduler; -1 when none is UP.
  int pickBackend(size_t svc, const FlowKey& key) noexcept;
  /// The flow may move to another backend now (resplice.h: quiescent and settled, or replayable).
  bool canMoveNow(const Flow& f, uint64_t now_ns) const noexcept;
  bool leaving(const Flow& f) const noexcept {
    return any_leaving && backends[f.service][f.backend].state != BackendState::kUp;
  }
  /// A client segment arrived for a flow whose backend is not UP: moves the flow if it is
  /// quiescent, resets it if its backend is gone. Returns the flow's index afterwards
  /// (it may change), or FlowTable::kNone if the flow was reset.
  uint32_t beforeClientSegment(uint32_t index, uint64_t now_ns) noexcept;
  /// After a forwarded segment of a splice flow: who spoke last, the quiescent point.
  void afterSegment(uint32_t index, Direction dir, bool payload, uint64_t now_ns) noexcept;
  /// A payload-less FIN or RST from the backend of an idle flow of a resplice service (a backend
  /// that died or closed an idle keep-alive connection): moves the flow instead. 1: moved,
  /// 0: untouched (process the segment), -1: the flow was reset instead.
  int absorbBackendClose(uint32_t index, bool payload, uint64_t now_ns) noexcept;
  /// Records the TSval a backend segment carried to the client (the client's clock).
  void noteToClient(Flow& f, const TcpOptions& opts) noexcept;
  uint32_t moveFlow(uint32_t index, uint64_t now_ns) noexcept;
  void resetFlow(uint32_t index, uint64_t& reason_counter) noexcept;
  /// Writes a packet the engine originates (splice SYNs and timers, re-splice SYNs, resets) into
  /// the outbox (Engine::drainOutbox); false, and counted, when it does not fit.
  bool emitOut(const struct SegmentSpec& spec) noexcept;
  void retire(uint32_t index) noexcept;
  /// Records that a flow's hard state changed (change tracking on).
  void touch(uint32_t index) noexcept {
    if (!tracking) return;
    Flow& f = table.at(index);
    if (f.dirty) return;
    f.dirty = true;
    dirty_list.push_back(index);  // capacity reserved for every flow: never reallocates
  }

  /// Deferral: hold the backend's SYN-ACK of a flow the standby does not know yet.
  bool holdForSync(const Flow& f, Direction dir, uint8_t flags,
                   const PacketMeta& meta) noexcept {
    constexpr uint8_t kMask = tcpflag::kSyn | tcpflag::kAck | tcpflag::kRst;
    if (!defer || !f.sync_pending || dir != Direction::kFromBackend || !meta.can_hold ||
        (flags & kMask) != (tcpflag::kSyn | tcpflag::kAck))
      return false;
    ++counters.sync_deferred;
    return true;
  }

  const EngineConfig& config;
  Counters& counters;
  FlowTable table;
  std::vector<uint32_t> rr;           // round-robin position per service
  std::vector<uint32_t> snat_cursor;  // next SNAT port candidate per service
  uint32_t gc_cursor = 0;
  std::unique_ptr<SynCookie> cookie;  // with any splice service
  int64_t cookie_clock_offset_ns = 0;  // Engine::setCookieClockOffset

  // Change tracking for checkpointing (Engine::enableChangeTracking).
  static constexpr size_t kMaxRemovedLog = 1u << 16;
  uint64_t splice_generation = 0;  // bumped whenever a pending splice resolves
  uint64_t fp_kept_installs = 0;   // installs whose trigger segment must be sent first
  bool standby = false;            // expiry paused (Engine::setStandby)
  bool tracking = false;
  bool defer = false;              // Engine::setSyncDeferral
  bool lost_changes = false;
  std::vector<uint32_t> dirty_list;
  std::vector<FlowKey> removed_log;

  // Flows whose backend SYN is out, for spliceTick(); stale or duplicate entries are skipped.
  static constexpr size_t kMaxSynTimers = 4096;
  std::vector<uint32_t> syn_timers;  // capacity reserved; when full, only the client's
                                     // retransmissions resend the SYN
  void armSynTimer(uint32_t index) noexcept {
    if (syn_timers.size() < kMaxSynTimers) syn_timers.push_back(index);
  }
  std::vector<std::vector<BackendStats>> backends;  // [service][backend]
  bool any_leaving = false;  // some backend is not UP: flows check on every segment
  int avoid_backend = -1;    // while a flow moves: its old backend, chosen only if alone UP
  Outbox outbox{16384};
  // A standby passing unknown client packets to the active (Engine::setPassUnknownToActive).
  bool pass_unknown = false;
  uint64_t passed_to_active = 0;

  // Kernel fast path (fastpath.cc; the contract is in fastpath_port.h).
  SynAnswerPort* syn_port = nullptr;   // Engine::setSynAnswer (syn_answer.cc)
  /// A valid cookie ACK from the client of a splice service (syn_answer.cc).
  bool isCookieAck(const FlowKey& key, const TcpPacket& pkt, const TcpOptions& opts,
                   uint64_t now_ns) noexcept;
  /// Whether a client segment's ack names nothing the live flow's server side sent lately
  /// (outside [SND.NXT - the client's largest window, SND.NXT] in the client's view; while the
  /// splice opens, anything but the cookie ISN + 1): a new incarnation's cookie ACK, maybe.
  bool ackForeignTo(const Flow& f, const TcpPacket& pkt) const noexcept;
  /// The kernel answered a SYN on a live flow's tuple and the client's cookie ACK came: the
  /// client started over. Resets the old backend connection (as the client's RST would have,
  /// after the challenge ACK the engine answers a SYN with) and retires the flow.
  void retireForNewIncarnation(uint32_t index) noexcept;
  FastPathPort* fp = nullptr;          // Engine::setFastPath; nullptr: off
  bool fp_close_fast = false;          // entries carry TANDEM_FP_CLOSE_FAST
  bool fp_splice = false;              // Engine::setFastPathSplice: arm zero-window splices
  uint32_t fp_retry_wait = 0;          // qualifying segments to let by after a refused install
  std::vector<uint32_t> fp_generation;  // per slot: installs so far (echoed in close events)
  /// What the kernel saw of a fast flow: its two entries as read back (found: with a packet).
  struct FastSeen {
    tandem_fp_rewrite dir[2]{};
    bool found[2] = {false, false};
  };
  /// A bare ACK (no data, SYN, FIN or RST) of a flow that has been on the fast path, older
  /// than the last ack its direction sent: a segment that waited in NFQUEUE while a newer one
  /// crossed the kernel. Forwarding it tells the receiver nothing (RFC 9293 3.10.7.4 ignores an
  /// ACK below SND.UNA), and a receiver that closed meanwhile answers it with a RST.
  bool fastPathOvertakenAck(const Flow& f, Direction dir, const TcpPacket& pkt) const noexcept;
  /// Slot `index` holds a live flow whose current install is `generation` (what an entry, a
  /// close event or a lost write names): not a freed or reused slot, not an older install.
  bool fastPathIsInstall(uint32_t index, uint32_t generation) const noexcept;
  /// Which of a new install's entries wait for the verdicts of the segments handled so far
  /// (FastPathPort::install) rather than being written at once (put).
  enum class InstallOrder : uint8_t {
    kNow,           ///< both at once
    kTriggerAfter,  ///< the trigger's direction after its segment (it carries data)
    kBothAfter,     ///< both after (nothing of the flow can reach the kernel before them)
  };
  /// Whether the flow may go on the fast path (installed or armed) as far as the node, its
  /// service and its backend go: not a standby, not on already, no re-splicing, backend UP.
  bool fastPathMayTake(const Flow& f) const noexcept;
  /// The port refused an install: counted, and installs pause (kInstallRetryAfter).
  void fastPathRefused() noexcept;
  /// The flow's entries are in the kernel, translating: the flow is on the fast path.
  void fastPathOn(Flow& f) noexcept;
  /// Both entries of a new install of the flow, with a new generation (and close-fast as
  /// configured); false while installs pause after a refusal (that wait counted down) or if
  /// the translation is not constant.
  bool fastPathNewEntries(uint32_t index, tandem_fp_key* key, tandem_fp_rewrite* value) noexcept;
  /// After a forwarded ordinary segment (or a zero-window splice's completion): puts the flow
  /// on the fast path if it qualifies. `trigger`: the segment's direction.
  void fastPathMaybeInstall(uint32_t index, Direction trigger, InstallOrder order) noexcept;
  /// Reads a fast flow's entries and takes what the kernel saw: idle time (clamped to now_ns),
  /// td_end / last_ack (the kernel's if newer), FINs acknowledged. With `liberal`, if the kernel
  /// translated anything, window tracking restarts liberal (the engine's edges are stale). With
  /// `leave`, the entries are erased as they are read (FastPathPort::take) and the flow is off.
  void fastPathRefresh(uint32_t index, uint64_t now_ns, bool liberal, bool leave = false) noexcept;
  /// A FIN acknowledged by a segment the kernel forwarded (closing states only); touches.
  void fastPathApplyAcks(uint32_t index, const FastSeen& seen) noexcept;
  /// Takes the flow off the fast path (entries erased, bit cleared); no-op for others.
  void fastPathErase(uint32_t index) noexcept;
  /// A packet of a fast flow came through the engine: refresh, and leave on a RST (and on a FIN
  /// without close-fast; with it, the flow stays and fastPathAfterFin() tells the kernel).
  void fastPathSlowPacket(uint32_t index, uint8_t flags, uint64_t now_ns) noexcept;
  /// Close-fast: a FIN of `dir` was tracked by the engine while the flow is on the fast path.
  /// Rewrites the other direction's entry so the kernel reports the packet acknowledging it.
  void fastPathAfterFin(uint32_t index, Direction dir) noexcept;
  /// After the engine tracked a segment or an event of a fast flow: off once TIME_WAIT or CLOSE.
  void fastPathAfterClose(uint32_t index) noexcept;
  /// Expiry of a fast flow: false if the kernel saw it recently enough to keep it.
  bool fastPathIdle(uint32_t index, uint64_t now_ns) noexcept;
  /// Every flow off the fast path, the port untouched (caller clears it if it should).
  void fastPathForgetAll() noexcept;
  /// A zero-window splice whose backend SYN is going out: writes its entries armed
  /// (TANDEM_FP_SYNACK) so that the kernel can answer the backend's SYN-ACK, when the flow and
  /// the node allow it (fastpath.cc).
  void fastPathArm(uint32_t index) noexcept;
  /// Takes an armed splice's entries back: the engine completes (or ends) the splice itself.
  /// No-op for a flow that is not armed.
  void fastPathDisarm(uint32_t index) noexcept;
  /// Set while Engine::fastPathSpliced() replays the kernel's SYN-ACK through splicePending():
  /// the kernel already sent both ACKs and wrote the entries.
  bool fp_kernel_splice = false;
  /// While a cookie ACK the kernel bound is replayed (Engine::fastPathBound): the kernel's id for
  /// the flow (flow_id in its entries and events, with bit 31 set; generation), the backend it
  /// sent the SYN to, and whether the engine took the flow as the kernel opened it.
  uint32_t kbind_flow_id = 0;
  uint32_t kbind_generation = 0;
  int kbind_backend = -1;
  bool kbind_taken = false;
  /// The kernel's ids of the flows it bound (flow_id << 32 | generation) to their slots; each
  /// slot's id, so that a slot's next bound flow drops its predecessor's.
  std::unordered_map<uint64_t, uint32_t> kbind_slots;
  std::vector<uint64_t> kbind_of_slot;
  /// The kernel bound a flow the engine did not take: its entries go, and unless the engine has
  /// a flow of that tuple, both legs are reset.
  void kbindUndo(const tandem_fp_bind_event& ev) noexcept;
  /// The slot a fast-path event names: the kernel's own ids (bit 31 of flow_id) through
  /// kbind_slots (UINT32_MAX: none), the engine's as they are.
  uint32_t kbindSlot(uint32_t flow_id, uint32_t generation) const noexcept {
    if ((flow_id & 0x80000000u) == 0) return flow_id;
    const auto it = kbind_slots.find(uint64_t{flow_id} << 32 | generation);
    return it == kbind_slots.end() ? UINT32_MAX : it->second;
  }
};

}  // namespace tandem
