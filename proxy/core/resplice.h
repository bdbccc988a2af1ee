#pragma once
/// @file Moving a live splice flow to another backend (re-splicing) and ending the flows that
/// cannot move. The engine side is in resplice.cc; these pure helpers are its arithmetic.
///
/// A re-splice opens a new backend leg on the client's behalf, as the first splice did: a SYN
/// with the client's options whose ISN continues the client's own sequence space (the client's
/// bytes need no offset on any leg), and once the new backend answers, the backend direction's
/// adjustment maps the new backend's ISN onto the last byte the client has received, and its
/// timestamp clock onto a value above every TSval the client has seen. Only a quiescent flow
/// can move: every client byte acknowledged by the old backend and every backend byte by the
/// client, no FIN either way, so no byte is owed on the old leg.

#include <cstddef>
#include <cstdint>

#include "common/segment_writer.h"
#include "proxy/core/flow.h"

namespace tandem {

/// Quiescent: established, no FIN seen either way, the backend has acknowledged every client
/// byte (win[client].td_end == win[backend].last_ack) and the client every backend byte
/// (win[backend].td_end == win[client].last_ack), and the last payload was not the client's: a
/// request the backend has taken (acknowledged) but not answered yet is not "between
/// requests". The tracker keeps both windows in the backend leg's sequence space, so the
/// comparisons need no translation.
bool flowQuiescent(const Flow& f) noexcept;

/// Replayable: the backend is gone, the client has every byte the backend sent, and since the
/// flow was last quiescent the client sent data that the backend neither acknowledged nor
/// answered. The client's unacknowledged bytes (a request the dead backend never saw) are then
/// resent by the client's own retransmission to a new leg that starts at the last quiescent
/// point.
bool flowReplayable(const Flow& f) noexcept;

/// Records the flow's last quiescent point (call on every segment of a splice flow).
inline void noteQuiescence(Flow& f) noexcept {
  if (!flowQuiescent(f)) return;
  f.quiet_seen = true;
  f.quiet_client = f.win[0].td_end;
}

/// Where the new backend leg of a quiescent (or replayable) flow starts.
struct ResplicePlan {
  uint32_t syn_seq = 0;      ///< the new leg's SYN: the first client byte the old backend did
                             ///< not acknowledge - 1 (quiescent: the client's next byte - 1)
  uint32_t proxy_isn = 0;    ///< the new backend's ISN maps onto this (the client's view):
                             ///< the next byte the client expects from its server - 1
  uint32_t proxy_tsval = 0;  ///< the new backend's SYN-ACK TSval maps onto this: one above the
                             ///< newest TSval the client has seen
};
ResplicePlan planResplice(const Flow& f) noexcept;

/// The backend direction's adjustment once a backend answered with ISN `backend_isn` (what the
/// splice handshake sets): backend_isn + 1 becomes proxy_isn + 1, for every later byte.
SeqAdj spliceBackendAdj(uint32_t proxy_isn, uint32_t backend_isn) noexcept;

/// The RSTs that end `f` on both legs (RFC 5961 3.2: a RST is taken only if its sequence number
/// is exactly the receiver's RCV.NXT). The client's RCV.NXT is the last backend byte forwarded
/// if that arrived, or the last byte the client acknowledged if not: when the two differ both are
/// sent (the other one is in the window and only draws a challenge ACK). The same for the
/// backend. Writes up to 4 segments to out; returns how many. Client ones come first.
size_t buildFlowResets(const Flow& f, SegmentSpec out[4]) noexcept;

}  // namespace tandem
