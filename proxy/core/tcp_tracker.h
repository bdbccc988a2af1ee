#pragma once
/// @file TCP connection tracking for a flow seen from the middle: a state table with a reason for
/// every cell (after Linux nf_conntrack_proto_tcp.c), window tracking (td_end / td_maxend /
/// td_maxwin, the same four bounds), RST and SYN validation as RFC 5961 asks of an endpoint.
///
/// The tracker never drops a segment merely for lying outside the window (the endpoint answers
/// those with an ACK, and a middlebox that drops them stalls real connections); it counts them.
/// It drops what would corrupt state: RSTs outside the window, impossible flag combinations,
/// segments the state table refuses.

#include <cstdint>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/counters.h"
#include "proxy/core/engine_config.h"
#include "proxy/core/flow.h"

namespace tandem {

enum class TcpEvent : uint8_t { kSyn, kSynAck, kFin, kAck, kRst, kNone, kCount };

/// Event of a segment with valid flags (see validTcpFlags).
TcpEvent tcpEventOf(uint8_t flags) noexcept;

/// The flag combinations a TCP segment may carry (PSH, ECE and CWR ignored), as conntrack's
/// tcp_valid_flags: SYN, SYN|ACK, RST, RST|ACK, FIN|ACK, ACK, each optionally with URG.
bool validTcpFlags(uint8_t flags) noexcept;

/// One cell of the transition table.
struct Transition {
  enum class Kind : uint8_t { kMove, kIgnore, kInvalid, kDerive };
  Kind kind;
  TcpState next;     ///< with kMove
  const char* why;   ///< the reason for this cell, for tests and debugging
};

/// table[direction][event][state].
const Transition& tcpTransition(Direction dir, TcpEvent ev, TcpState state) noexcept;

uint64_t stateTimeout(const Timeouts& t, TcpState s) noexcept;

/// A flow expires when it has been idle for its state's timeout (no deadline is stored: one
/// field less per flow, and any segment that refreshes last_seen extends it).
inline bool flowExpired(const Flow& f, const Timeouts& t, uint64_t now_ns) noexcept {
  return now_ns - f.last_seen_ns >= stateTimeout(t, f.state);
}

/// Tracks one segment of `flow` travelling in `dir`. Returns DropReason::kNone to pass it.
/// Updates state, windows and last_seen. `opts` are the segment's parsed options.
DropReason trackSegment(Flow& flow, Direction dir, const TcpPacket& pkt, const TcpOptions& opts,
                        uint64_t now_ns, Counters& counters) noexcept;

}  // namespace tandem

namespace tandem {

/// Standby in vmac mode: learns a flow's window edges (td_end, td_maxend, td_maxwin, last_ack)
/// from a segment the shadow capture saw on its way to the active, as trackSegment would, and
/// changes nothing the checkpoint owns: no state, no last_seen, no FIN flags, no counters.
/// Learns only on established and closing flows, from in-window ACK/FIN segments; an opening SYN
/// of a new incarnation (flow in TIME_WAIT or CLOSE) voids what was learnt. True if it learnt.
bool learnWindowEdges(Flow& flow, Direction dir, const TcpPacket& pkt,
                      const TcpOptions& opts) noexcept;

/// installFlow on a standby: the edges of `warm` (the flow the checkpoint replaces, kept warm by
/// learnWindowEdges) are newer than the checkpoint's, which moved on while it travelled. Copies
/// them into `into` (the checkpoint's window of direction `d`) if `warm` is the same connection
/// (both legs' tuples) and had seen that direction; false otherwise.
bool adoptWarmEdges(TcpWindow& into, const Flow& warm, const Flow& checkpoint,
                    size_t d) noexcept;

/// Window tracking of `flow` restarts liberal, as after installFlow: each direction's edges are
/// re-learnt from its next segment (the kernel fast path moved them on unseen).
inline void relearnWindows(Flow& flow) noexcept {
  for (TcpWindow& w : flow.win) {
    w.seen = false;
    w.ack_seen = false;
  }
}

/// Kernel fast path: a segment of `dir` acknowledging `ack` (in the tracker's sequence space)
/// went through unseen by the tracker. In a closing state, if it acknowledges the other
/// direction's FIN, the FIN is acked and the state derived as trackSegment derives it. Returns
/// whether the state changed.
bool noteForwardedAck(Flow& flow, Direction dir, uint32_t ack) noexcept;

}  // namespace tandem
