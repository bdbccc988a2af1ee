#pragma once
/// @file Rewrites a segment from one leg's address and sequence space to the other's.
///
/// Addresses and ports: client leg <-> backend leg. Sequence space, after
/// nf_conntrack_seqadj.c: seq uses its own direction's adjustment, ack and SACK edges the other
/// direction's (they name the peer's bytes). Checksums: the IPv4 header by RFC 1624; the TCP
/// checksum by RFC 1624 when the field is complete, recomputed in full for a non-GSO packet whose
/// field holds only the pseudo-header sum (NFQA_SKB_CSUMNOTREADY: the verdict with payload turns
/// offload off), and kept as a pseudo-header sum for a GSO super-packet (the kernel reseeds it
/// when it segments).

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/counters.h"
#include "proxy/core/engine.h"
#include "proxy/core/flow.h"

namespace tandem {

/// Shift of a sequence number of direction `adj` (nf_conntrack_seqadj.c nf_ct_seq_offset).
inline int32_t seqOffset(const SeqAdj& adj, uint32_t seq) noexcept {
  return static_cast<int32_t>(seq - adj.correction_pos) > 0 ? adj.offset_after
                                                            : adj.offset_before;
}

/// The sequence number `seq` of direction `adj` as the far side sees it.
inline uint32_t seqForward(const SeqAdj& adj, uint32_t seq) noexcept {
  return seq + static_cast<uint32_t>(seqOffset(adj, seq));
}

/// An ack (or SACK edge) sent by the far side, naming bytes of direction `adj`, mapped back into
/// that direction's original space. Unlike nf_ct_seq_adjust, which compares ack - offset_before
/// with the position, the boundary is taken in the far side's space (position + offset_after):
/// exact for every ack when offset_after >= offset_before, and exact for acks of bytes after the
/// position (the ones in flight) when it is smaller.
inline uint32_t ackBackward(const SeqAdj& adj, uint32_t ack) noexcept {
  const uint32_t boundary = adj.correction_pos + static_cast<uint32_t>(adj.offset_after);
  const int32_t off =
      static_cast<int32_t>(ack - boundary) > 0 ? adj.offset_after : adj.offset_before;
  return ack - static_cast<uint32_t>(off);
}

/// Translates `pkt` travelling in `dir` through `flow`. `opts` (parsed from pkt) is kept in step:
/// its SACK edges are updated to the values written, so a caller tracking the translated
/// segment needs no second parse.
void translateSegment(const Flow& flow, Direction dir, TcpPacket& pkt, TcpOptions& opts,
                      const PacketMeta& meta, Counters& counters) noexcept;

}  // namespace tandem
