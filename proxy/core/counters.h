#pragma once
/// @file Drop reasons and counters of the packet core. Every dropped packet has exactly one
/// named reason (as OpenBSD pf's REASON_SET); counters are the primary signal of the daemon.

#include <array>
#include <cstddef>
#include <cstdint>

namespace tandem {

#define TANDEM_DROP_REASONS(X)                                                              \
  X(kMalformedIp, "malformed_ip")           /* IPv4 header failed validation */             \
  X(kMalformedTcp, "malformed_tcp")         /* TCP header failed validation */              \
  X(kFragment, "fragment")                  /* IP fragment: ports unknown, cannot map */    \
  X(kBadOptions, "bad_options")             /* truncated or malformed TCP options */        \
  X(kNotTcp, "not_tcp")                     /* non-TCP packet reached the queue */          \
  X(kNoService, "no_service")               /* matches no VIP and no backend leg */         \
  X(kNoFlow, "no_flow")                     /* non-SYN segment of an unknown flow */        \
  X(kTableFull, "table_full")               /* flow cap reached: new flow refused */        \
  X(kNoBackend, "no_backend")               /* service has no usable backend */             \
  X(kNoSnatPort, "no_snat_port")            /* SNAT port range exhausted for the backend */ \
  X(kBadFlags, "bad_flags")                 /* impossible flag combination (e.g. SYN+RST) */\
  X(kInvalidTransition, "invalid_transition") /* state table refuses this segment */      \
  X(kRstOutOfWindow, "rst_out_of_window")   /* RFC 5961 3.2: RST outside the window */      \
  X(kSynAckMismatch, "synack_mismatch")     /* SYN-ACK whose ack does not match the SYN */  \
  X(kTupleClash, "tuple_clash")             /* backend-leg tuple already used by a flow */ \
  X(kBadCookie, "bad_cookie")               /* splice: ACK whose SYN cookie does not check */ \
  X(kSplicePending, "splice_pending")       /* splice: client data before the backend leg is \
                                               up; the client retransmits it */              \
  X(kNoRoom, "no_room")                     /* splice: buffer too small for the reply */    \
  X(kSpliceBindWait, "splice_bind_wait")    /* splice, bind = data: a segment without data   \
                                               before the first data chose the backend (the \
                                               cookie ACK itself, then bare ACKs) */    \
  X(kBackendDown, "backend_down")           /* flow reset: its backend left with bytes in \
                                               flight, or re-splice is off */               \
  X(kBackendClosed, "backend_closed")       /* re-splice: a backend closed an idle flow; \
                                               the flow moved instead of closing */         \
  X(kStandbyPending, "standby_pending")     /* a standby's splice still opening: a backend \
                                               packet for it, left to reach the active (the \
                                               client's are passed to it, Engine::         \
                                               setPassUnknownToActive, or dropped here) */ \
  X(kRstAfterClose, "rst_after_close")      /* RFC 5961 3.2: RST outside the window of a flow \
                                               already closed (TIME_WAIT, CLOSE): a closed   \
                                               end answering a stale duplicate (seq = its    \
                                               ACK, RFC 9293 3.10.7.1); the peer discards it \
                                               too. rst_out_of_window: on a live flow */ \
  X(kAckOvertaken, "ack_overtaken")         /* a bare ACK older than one its sender's side  \
                                               already sent through the kernel fast path,   \
                                               which overtook it: its receiver ignores it,  \
                                               or answers with a RST once closed */

/// Why a shadowed frame of the outage window was left out of a vmac takeover's replay
/// (planReplay, proxy/core/shadow_ring.h). Counted per leg: Counters::replay_pruned.
#define TANDEM_REPLAY_PRUNE_REASONS(X)                                                       \
  X(kClosedSyn, "closed_syn")        /* opening SYN of a connection closed (RST/FIN) since */ \
  X(kDelivered, "delivered")         /* its end acknowledged by the other end in the ring   \
                                        (splice: translated through the flow's offsets) */   \
  X(kSupersededAck, "superseded_ack") /* pure ACK followed by a newer frame of its sender */  \
  X(kReplayedCopy, "replayed_copy")  /* a retransmission of bytes a kept frame replays */

enum class ReplayPrune : uint8_t {
#define TANDEM_X(id, name) id,
  TANDEM_REPLAY_PRUNE_REASONS(TANDEM_X)
#undef TANDEM_X
  kCount
};
inline constexpr size_t kReplayPruneCount = static_cast<size_t>(ReplayPrune::kCount);
const char* replayPruneName(ReplayPrune r) noexcept;

enum class DropReason : uint8_t {
  kNone = 0,
#define TANDEM_X(id, name) id,
  TANDEM_DROP_REASONS(TANDEM_X)
#undef TANDEM_X
  kCount
};

inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::kCount);

const char* dropReasonName(DropReason r) noexcept;

/// Side of the proxy a packet arrived from.
enum class Direction : uint8_t { kFromClient = 0, kFromBackend = 1 };

struct Counters {
  std::array<uint64_t, kDropReasonCount> drops{};
  std::array<uint64_t, 2> packets{};  ///< accepted (translated) packets, by Direction
  std::array<uint64_t, 2> bytes{};    ///< IP bytes of accepted packets, by Direction
  uint64_t gso_packets = 0;           ///< super-packets seen (NFQA_SKB_GSO)
  uint64_t full_checksums = 0;        ///< partial-checksum packets given a full checksum
  uint64_t flows_created = 0;
  uint64_t flows_closed = 0;          ///< removed after FIN/RST teardown and its linger time
  uint64_t flows_expired = 0;         ///< removed by an idle timeout in an open state
  uint64_t rst_accepted = 0;          ///< RSTs that tore a flow down (exact RFC 5961 match)
  uint64_t rst_challenged = 0;        ///< in-window RSTs passed on without state change
  uint64_t syn_in_established = 0;    ///< SYNs on a live flow, passed on for a challenge ACK
  uint64_t window_scale_clamped = 0;  ///< peers announcing a shift above 14
  uint64_t seq_out_of_window = 0;     ///< segments outside the tracked window (passed on: the
                                      ///< endpoint answers them with an ACK, RFC 9293 3.10.7.4)
  uint64_t flows_reopened = 0;        ///< a new SYN replaced a flow in TIME_WAIT or CLOSE
  uint64_t syncookies_sent = 0;       ///< splice: SYN-ACKs answered with a SYN cookie
  uint64_t splices_completed = 0;     ///< splice: backend handshakes completed by the proxy
  uint64_t snat_ports_reused = 0;     ///< SNAT ports taken over from flows in TIME_WAIT/CLOSE
  uint64_t splice_connect_timeouts = 0;  ///< splice: clients reset, their backend never answered
  uint64_t splice_syn_retransmits = 0;   ///< splice: backend SYNs sent again (lost SYN or SYN-ACK)
  uint64_t splice_held = 0;           ///< splice: client segments held while the backend leg
                                      ///< opened (each time one was offered and held again)
  uint64_t sync_deferred = 0;         ///< pair: backend SYN-ACKs held until the standby knew
                                      ///< the flow (each time one was offered and held again)
  uint64_t splice_windows_opened = 0;  ///< splice, zero-window handshake: ACKs that opened the
                                       ///< client's window once the backend leg was up
  uint64_t splice_opened_by_probe = 0;  ///< splice: flows opened by a zero-window probe (its
                                        ///< cookie ACK never reached this node)
  uint64_t splice_routed = 0;         ///< splice, bind = data: backends chosen by a route rule
  uint64_t splice_route_misses = 0;   ///< splice, bind = data: no rule matched, scheduler chose
  // Backend health and re-splicing (resplice.cc).
  uint64_t resplices_started = 0;     ///< quiescent flows given a new backend leg
  uint64_t resplices_completed = 0;   ///< ... whose new backend handshake completed
  uint64_t flows_reset_in_flight = 0; ///< reset: backend gone with bytes in flight
  uint64_t flows_reset_resplice_off = 0;  ///< reset: backend gone, re-splice off (or passthrough)
  uint64_t flows_reset_no_backend = 0;    ///< reset: backend gone, no UP backend to move to
  uint64_t outbox_dropped = 0;        ///< originated packets refused by a full outbox
  // vmac takeover replay (Engine::planShadowReplay), by Direction of the frame's sender (leg).
  std::array<std::array<uint64_t, 2>, kReplayPruneCount> replay_pruned{};  ///< [reason][leg]
  /// Kept unjudged: a splice flow whose backend-leg offset neither the checkpoint nor a
  /// SYN-ACK in the ring gave (the checkpoint predates the backend's SYN-ACK).
  std::array<uint64_t, 2> replay_offset_unknown{};
  // Kernel fast path (Engine::setFastPath, proxy/core/fastpath.cc).
  uint64_t fastpath_installs = 0;        ///< flows put on the fast path (both entries written)
  uint64_t fastpath_removals = 0;        ///< flows taken off it (entries erased)
  uint64_t fastpath_install_failed = 0;  ///< installs the port refused (map full): none kept
  uint64_t fastpath_events = 0;          ///< close events received from the kernel
  uint64_t fastpath_events_stale = 0;    ///< ... for no live fast flow of that generation
  uint64_t fastpath_slow_packets = 0;    ///< packets of a fast flow that came through NFQUEUE
  uint64_t fastpath_splices_armed = 0;   ///< splices whose backend SYN-ACK the kernel may answer
  uint64_t fastpath_splices_disarmed = 0;  ///< ... taken back (SYN-ACK, RST or data via NFQUEUE)
  uint64_t fastpath_bound = 0;        ///< flows the kernel bound, taken by the engine
  uint64_t fastpath_bind_undone = 0;  ///< flows the kernel bound that the engine refused
  uint64_t fastpath_bind_stale = 0;   ///< bind events it could not read
  uint64_t fastpath_kernel_splices = 0;  ///< splices the kernel completed, applied to the flow
  uint64_t fastpath_splice_events_stale = 0;  ///< ... for a flow no longer waiting for them
  void pruned(ReplayPrune r, size_t leg) noexcept { ++replay_pruned[static_cast<size_t>(r)][leg]; }

  void drop(DropReason r) noexcept { ++drops[static_cast<size_t>(r)]; }
  uint64_t dropped(DropReason r) const noexcept { return drops[static_cast<size_t>(r)]; }
  uint64_t totalDrops() const noexcept {
    uint64_t t = 0;
    for (auto d : drops) t += d;
    return t;
  }
};

}  // namespace tandem
