#pragma once
/// @file The packet core: classify, track, translate. Pure: no sockets, no event loop, no clock
/// of its own. The I/O adapter (proxy/io/nfqueue) hands it each queued packet with its metadata
/// and the current monotonic time, and applies the returned verdict.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/ip_addr.h"
#include "proxy/core/backend_state.h"
#include "proxy/core/counters.h"
#include "proxy/core/engine_config.h"
#include "proxy/core/flow.h"
#include "proxy/fastpath/fastpath_abi.h"
#include "proxy/fastpath/syncookie_abi.h"

namespace tandem {

class TcpPacket;
class FastPathPort;
class SynAnswerPort;
class ShadowRing;
struct ReplayPlanStats;

/// What NFQUEUE told us about the packet (NFQA_SKB_INFO).
struct PacketMeta {
  bool csum_not_ready = false;  ///< NFQA_SKB_CSUMNOTREADY: TCP checksum field holds only the
                                ///< pseudo-header sum (CHECKSUM_PARTIAL)
  bool gso = false;             ///< NFQA_SKB_GSO: a super-packet the kernel will segment
  /// The caller can hold the packet and offer it again later (Verdict::kHold): splice mode
  /// then keeps client data that arrives while the backend leg opens instead of dropping it.
  bool can_hold = false;
};

/// kHold: not forwarded yet, not dropped either; process the same packet again once
/// Engine::spliceGeneration() has moved (or drop it after a while).
enum class Verdict : uint8_t { kAccept, kDrop, kHold };

struct Decision {
  Verdict verdict = Verdict::kDrop;
  DropReason reason = DropReason::kNone;  ///< set when verdict == kDrop
  bool modified = false;                  ///< packet bytes changed: re-inject with payload
  size_t len = 0;                         ///< length of the packet to re-inject (splice mode
                                          ///< may turn a segment into a longer or shorter one)
};


/// A read-only snapshot of one flow, for status pages and tests.
struct FlowInfo {
  std::string service;
  Endpoint client;    ///< client address as seen on the front leg
  Endpoint vip;
  Endpoint backend;
  Endpoint source;    ///< source the backend sees: the client (transparent) or the SNAT address
  TcpState state = TcpState::kNone;
  uint64_t idle_ns = 0;
  bool quiescent = false;  ///< no byte unacknowledged either way, no FIN (resplice.h)
  bool fast_path = false;  ///< on the kernel fast path (idle_ns is then the engine's, stale)
};

/// One packet of a batch handed to Engine::processBatch().
struct PacketSlot {
  uint8_t* data = nullptr;
  size_t len = 0;
  size_t cap = 0;     ///< bytes writable at data (>= len); splice replies need up to 60
  PacketMeta meta;
  Decision decision;  ///< filled in by processBatch()
};

/// A splice service as the kernel's SYN answerer needs it (Engine::spliceVips).
struct SpliceVip {
  Endpoint vip;
  bool zero_window = false;  ///< ServiceConfig::zero_window_handshake
  /// The kernel may bind its cookie ACKs (daemon.fastpath_bind): transparent, bind = ack, the
  /// zero-window handshake, no resplice, round-robin, IPv4, at most 16 backends.
  bool kbind_ok = false;
  size_t service = 0;  ///< index in the configuration (the kernel's round-robin slot)
  struct Backend {
    Endpoint ep;
    bool up = false;
  };
  std::vector<Backend> backends;  ///< in the service's order, with the engine's state
};

class Engine {
 public:
  /// Throws std::invalid_argument on a configuration the core cannot run (startup only).
  explicit Engine(EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Classifies, tracks and rewrites in place the IPv4 packet in data[0, len). Never throws,
  /// never reads or writes outside data[0, cap). Passthrough keeps the length; splice mode turns
  /// a client SYN into the SYN-ACK, the cookie ACK into the backend SYN and the backend's
  /// SYN-ACK into its ACK, whose lengths differ (Decision::len).
  Decision process(uint8_t* data, size_t len, size_t cap, const PacketMeta& meta,
                   uint64_t now_ns) noexcept;
  /// The same with no room beyond the packet (cap = len).
  Decision process(uint8_t* data, size_t len, const PacketMeta& meta, uint64_t now_ns) noexcept {
    return process(data, len, len, meta, now_ns);
  }

  /// process() on each slot in order, with the flow lookups of the batch overlapped (their
  /// buckets and flows prefetched first), so that a table far larger than the caches costs
  /// little more per packet than a small one. Results are identical to calling process().
  /// Stops after a packet that moved spliceGeneration() (a splice completed: packets held for
  /// it must go before the slots after this one, which may belong to the same flow) or
  /// fastPathKeptInstalls() (its flow went on the fast path with an entry the port may keep
  /// until this packet's verdict is sent: sent at once, the entry follows it closely) and
  /// returns how many slots it processed; n when none did.
  size_t processBatch(PacketSlot* slots, size_t n, uint64_t now_ns) noexcept;

  /// Expires idle flows incrementally (a slice of the table per call); call every ~100 ms.
  /// Also drives splice mode's timers (backend SYNs sent again), which fill the outbox.
  void expire(uint64_t now_ns) noexcept;

  /// Packets the engine originates itself rather than by rewriting a queued one (splice mode:
  /// a backend SYN while the client's data is held, SYNs resent by the timer; re-splice SYNs
  /// and the RSTs that end a flow whose backend died): complete IPv4
  /// packets with valid checksums, to be sent as they are (a raw socket). Call after
  /// processBatch() and expire(); hands each to `send` once and returns how many.
  size_t drainOutbox(const std::function<void(const uint8_t*, size_t)>& send);

  // Checkpointing (the proxy pair). The active proxy's engine records which flows changed hard
  // state (created, TCP state, splice binding) and which were removed; the daemon drains them to
  // the sync channel, once per event and never per packet. The standby's engine installs them.

  /// Starts recording changes (off by default: a single proxy pays nothing).
  void enableChangeTracking();
  /// Hands every removed flow's client-leg key to `removed`, then every changed live flow once to
  /// `changed`, and forgets them. Returns false if changes were lost since the last call because
  /// the removal log was full (the standby then needs a bulk resync).
  bool drainChanges(const std::function<void(const FlowKey&)>& removed,
                    const std::function<void(const Flow&)>& changed);
  /// Calls `fn` on every live flow (bulk resync), at most `limit` of them from slot `cursor` on;
  /// returns the cursor to continue from, 0 when the table has been walked.
  uint32_t forEachLiveFlow(uint32_t cursor, uint32_t limit,
                           const std::function<void(const Flow&)>& fn) const;
  /// Standby: installs (or replaces, by client-leg key) a flow from its checkpoint. Window edges
  /// are re-learnt from the first packets each way (liberal until seen). kNone on success.
  DropReason installFlow(const Flow& state, uint64_t now_ns) noexcept;
  /// Standby in vmac mode: a frame the shadow capture saw on its way to the active (an IPv4/TCP
  /// packet, never written) moves its flow's window edges as the active's tracker moved them, so
  /// that after a takeover nothing has to be re-learnt; nothing else changes (no verdict, no
  /// state, no outbox, no counter). installFlow keeps these edges over a checkpoint's. True if
  /// the frame's flow learnt from it (proxy/core/shadow_windows.cc). Splice and other
  /// seq-adjusted flows are left alone: their tracker works on translated client segments.
  bool observeShadow(const uint8_t* data, size_t len) noexcept;
  /// Standby in vmac mode, at takeover: planReplay() (proxy/core/shadow_ring.h) over `ring`
  /// with this table as the classifier, splice flows' offsets on both legs included
  /// (replayFlowRef), and what it left out counted in Counters::replay_pruned and
  /// replay_offset_unknown. Allocates (takeover time). proxy/core/shadow_windows.cc.
  void planShadowReplay(const ShadowRing& ring, uint64_t from_ns, uint64_t until_ns,
                        uint64_t min_id, std::vector<uint32_t>& out, ReplayPlanStats& stats);
  /// Standby: removes the flow with this client-leg key; false if there was none.
  bool removeFlow(const FlowKey& client_key) noexcept;
  /// A standby's flows live by the active's checkpoints, not by packets (an established flow
  /// sends no update however busy it is): while `standby`, nothing expires. Leaving standby
  /// restarts every flow's idle timer at now_ns, since each was alive when the peer died, and
  /// the SYN timer of every splice still opening (its backend SYN is resent from here).
  void setStandby(bool standby, uint64_t now_ns) noexcept;
  /// A standby holds none of the pair's addresses, so the kernel routes a packet it accepts
  /// untranslated to a VIP on to the node holding the VIP. With `pass` set, a standby accepts a
  /// client packet to a VIP that matches no flow that way instead of creating a flow (or
  /// dropping it): a connection opened while the clients' ARP caches still point here (right
  /// after a planned switchover) is then created, and checkpointed, by the active. Requires the
  /// VIP to be on-link on the standby's front interface. Off by default (a single proxy).
  /// Whatever the setting, a standby never opens a splice's backend leg (only the active's
  /// completion is checkpointed): with `pass` it passes the client segments of a splice still
  /// opening the same way, without it drops them; it drops the backend's (standby_pending).
  void setPassUnknownToActive(bool pass) noexcept;
  /// Packets accepted untranslated for the active (see setPassUnknownToActive).
  uint64_t passedToActive() const noexcept;

  /// Deferral (the pair, with a ready standby): while on, every new flow starts unsynced and its
  /// backend's SYN-ACK, the packet that makes it visible to the client, is held (Verdict::kHold,
  /// counted in sync_deferred) until markSynced(). Turning it off releases every held SYN-ACK.
  void setSyncDeferral(bool on) noexcept;
  /// The standby acknowledged the flow with this client-leg key (or the wait timed out): its
  /// held SYN-ACK may go. False if there is no such flow or it was not waiting.
  bool markSynced(const FlowKey& client_key) noexcept;
  /// SYN cookies are made and checked at now_ns + offset_ns: the caller passes a monotonic
  /// now_ns (timers) and keeps this at (wall clock - monotonic clock), so that cookies follow the
  /// wall clock and a standby with the same secret and an NTP-synchronised clock validates the
  /// active's cookies (their key rotates with the wall-clock period).
  void setCookieClockOffset(int64_t offset_ns) noexcept;
  // Backend health (resplice.cc). The health layer sets each backend's state; the engine then
  // sends new flows only to UP backends and moves or resets the flows of the others.

  /// Sets backend `backend` of service `service` (indexes into the configuration). Leaving UP:
  /// quiescent splice flows of a resplice service move to an UP backend now; with kDown or
  /// kDisabled the others are reset (both sides get a RST they accept). Out-of-range: ignored.
  void setBackendState(size_t service, size_t backend, BackendState state,
                       uint64_t now_ns) noexcept;
  /// The health layer saw the backend alive (a passed check) at now_ns. When the backend then goes
  /// down, a quiescent flow moves only if it has been idle since then: one active later may have
  /// lost the end of a response, and is reset instead.
  void noteBackendAlive(size_t service, size_t backend, uint64_t now_ns) noexcept;
  /// The state and the passive signals (RSTs, unanswered SYNs) of one backend.
  BackendStats backendStats(size_t service, size_t backend) const noexcept;

  // Kernel fast path (proxy/core/fastpath.cc; the contract is in proxy/core/fastpath_port.h).

  /// Hands established flows to a kernel fast path through `port` (not owned; nullptr, the
  /// default, turns it off). A flow goes on it lazily, at the first ordinary segment the engine
  /// forwards once it qualifies, and leaves it whenever the engine must see its packets again.
  /// `close_fast`: the entries carry TANDEM_FP_CLOSE_FAST (the kernel translates FIN and RST
  /// too and reports them through fastPathClose()). Call between packets. Flows on a previous
  /// port leave the fast path as after setStandby(true), but that port is not touched (its
  /// owner clears or destroys it). Allocates 4 bytes per flow slot once (install generations).
  void setFastPath(FastPathPort* port, bool close_fast) noexcept;
  /// With a fast path: whether a zero-window splice's entries are written armed with its backend
  /// SYN, so that the kernel answers the backend's SYN-ACK (fastPathSpliced()). Off by default.
  void setFastPathSplice(bool on) noexcept;
  /// A close event from the kernel: a FIN or RST it translated and forwarded. The flow's
  /// tracker takes it as the header-only segment it describes (its state and checkpoint change
  /// as if the engine had forwarded it); no verdict, no outbox packet. Events for no live fast
  /// flow of that generation are counted (Counters::fastpath_events_stale) and ignored.
  void fastPathClose(const tandem_fp_event& ev, uint64_t now_ns) noexcept;
  /// A splice the kernel completed (an armed flow's backend SYN-ACK, fastpath_abi.h): the flow
  /// takes the SYN-ACK in the event exactly as if it had come through NFQUEUE (offsets,
  /// tracker, state, checkpoint), without sending anything: the kernel sent the ACK to the
  /// backend and the one that opens the client's window, and the flow is on the fast path if its
  /// entries are still armed. Moves spliceGeneration() (held client data may go). Events for a
  /// flow no longer waiting for that SYN-ACK are counted (fastpath_splice_events_stale).
  void fastPathSpliced(const tandem_fp_splice_event& ev, uint64_t now_ns) noexcept;
  /// A cookie ACK the kernel checked and already turned into the backend SYN, with the flow's
  /// entries armed (daemon.fastpath_bind): the flow is created from it as from NFQUEUE, at the
  /// kernel's instant and on its backend, and what the engine writes is not sent. A flow the
  /// engine cannot take is undone (its entries erased, both legs reset unless the engine has a
  /// flow of that tuple).
  void fastPathBound(const tandem_fp_bind_event& ev, uint64_t now_ns) noexcept;
  /// An entry the port accepted from install() but could not write into the kernel later (a
  /// port that defers those writes, FastPathAdapter: the map was full by then). `flow_id` and
  /// `generation` are the entry's. If that install is still the flow's, the flow leaves the fast
  /// path (both entries erased, counted as fastpath_install_failed) and installs pause as after a
  /// refused put(); otherwise nothing happens.
  void fastPathInstallLost(uint32_t flow_id, uint32_t generation, uint64_t now_ns) noexcept;

  // Kernel SYN answerer (proxy/core/syn_answer.cc; docs/fastpath.md "SYN cookies in the kernel").

  /// Tells `port` (not owned; nullptr: none) whether this node may answer SYNs in the kernel:
  /// now, and on every setStandby(). A standby never answers.
  void setSynAnswer(SynAnswerPort* port) noexcept;
  /// What the kernel needs to answer a SYN exactly as the engine would (cookie period, MSS
  /// table, SYN-ACK parameters, the cookie clock offset, active). False without a splice service.
  bool synKernelConfig(tandem_syn_config& out) const noexcept;
  /// The SipHash key of cookie period `count` (SynCookie::periodKeyBytes).
  bool synKernelKey(uint64_t count, tandem_syn_key& out) const noexcept;
  /// The cookie period count at monotonic now_ns (with the cookie clock offset); 0 without one.
  uint64_t cookieCount(uint64_t now_ns) const noexcept;
  /// The VIP:port of every splice service, and whether its SYN-ACK offers a zero window.
  std::vector<SpliceVip> spliceVips() const;

  const Counters& counters() const noexcept { return counters_; }
  /// Moves whenever a flow leaves the splice handshake (completed, refused, reset, timed out)
  /// or a deferred flow is released (markSynced, setSyncDeferral(false)): the moment to offer
  /// held packets (Verdict::kHold) again.
  uint64_t spliceGeneration() const noexcept;
  /// How many flows went on the fast path with their trigger's entry through
  /// FastPathPort::install (kept by the port until the verdict of the packet that caused it is
  /// sent, and written right after it); processBatch() stops after each. A zero-window splice's
  /// two installs at its completion are not counted: they may wait for the batch's end.
  uint64_t fastPathKeptInstalls() const noexcept;
  size_t activeFlows() const noexcept;
  /// Read-only: the flow a tuple belongs to (its slot, stable while the flow lives), the side the
  /// tuple comes from, and whether the flow's sequence space differs between its legs (splice).
  /// False if no flow has the tuple. Used to group shadowed frames by flow (vmac_takeover).
  bool classify(const FlowKey& key, uint32_t& flow_id, Direction& dir,
                bool& seq_adjusted) const noexcept;
  size_t maxFlows() const noexcept;
  const EngineConfig& config() const noexcept { return config_; }
  void forEachFlow(const std::function<void(const FlowInfo&)>& fn, uint64_t now_ns) const;

 private:
  /// process() after the parse and the lookup hash (processBatch() computes both once).
  Decision processParsed(uint8_t* data, size_t len, size_t cap, const PacketMeta& meta,
                         uint64_t now_ns, TcpPacket& pkt, const FlowKey& key,
                         uint64_t hash) noexcept;

  struct Impl;
  EngineConfig config_;
  Counters counters_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
