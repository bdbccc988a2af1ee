#include "proxy/core/translator.h"

#include "common/checksum.h"

namespace tandem {
namespace {

/// Accumulates RFC 1624 word changes so the TCP checksum is fixed once per packet.
struct Delta {
  uint32_t pseudo = 0;  // changes inside the pseudo-header (addresses)
  uint32_t header = 0;  // changes inside the TCP header itself
  static void add16(uint32_t& acc, uint16_t from, uint16_t to) noexcept {
    acc += static_cast<uint16_t>(~from);
    acc += to;
  }
  static void add32(uint32_t& acc, uint32_t from, uint32_t to) noexcept {
    add16(acc, static_cast<uint16_t>(from >> 16), static_cast<uint16_t>(to >> 16));
    add16(acc, static_cast<uint16_t>(from), static_cast<uint16_t>(to));
    acc = (acc & 0xffff) + (acc >> 16);  // keep room for further additions
  }
  /// A 32-bit field at an odd offset from the TCP header (options need no alignment: "NOP SACK"
  /// is legal): its bytes sit in the other lane of the 16-bit words the checksum sums, which is
  /// the same as summing the field with the bytes of each half swapped.
  static void add32At(uint32_t& acc, uint32_t from, uint32_t to, bool odd) noexcept {
    if (odd) {
      from = ((from & 0x00ff00ffu) << 8) | ((from >> 8) & 0x00ff00ffu);
      to = ((to & 0x00ff00ffu) << 8) | ((to >> 8) & 0x00ff00ffu);
    }
    add32(acc, from, to);
  }
};

uint16_t applyComplete(uint16_t check, uint32_t delta) noexcept {
  uint32_t sum = static_cast<uint16_t>(~check);
  sum += (delta & 0xffff) + (delta >> 16);
  return static_cast<uint16_t>(~csumFold(sum));
}

uint16_t applyPartial(uint16_t partial, uint32_t delta) noexcept {
  uint32_t sum = partial;
  sum += (delta & 0xffff) + (delta >> 16);
  return csumFold(sum);
}

}  // namespace

void translateSegment(const Flow& f, Direction dir, TcpPacket& pkt, TcpOptions& opts,
                      const PacketMeta& meta, Counters& counters) noexcept {
  uint32_t new_saddr, new_daddr;
  uint16_t new_sport, new_dport;
  if (dir == Direction::kFromClient) {
    new_saddr = f.source_addr.v4();
    new_sport = f.source_port;
    new_daddr = f.backend_addr.v4();
    new_dport = f.backend_port;
  } else {
    new_saddr = f.vip_addr.v4();
    new_sport = f.vip_port;
    new_daddr = f.client_addr.v4();
    new_dport = f.client_port;
  }

  Delta d;
  const uint32_t old_saddr = pkt.saddr(), old_daddr = pkt.daddr();
  Delta::add32(d.pseudo, old_saddr, new_saddr);
  Delta::add32(d.pseudo, old_daddr, new_daddr);
  // The IPv4 header checksum is never offloaded on receive: always incremental.
  uint32_t ipd = d.pseudo;
  pkt.setSaddrRaw(new_saddr);
  pkt.setDaddrRaw(new_daddr);
  pkt.setIpCheck(applyComplete(pkt.ipCheck(), ipd));

  Delta::add16(d.header, pkt.sport(), new_sport);
  Delta::add16(d.header, pkt.dport(), new_dport);
  pkt.setSportRaw(new_sport);
  pkt.setDportRaw(new_dport);

  if (f.has_seqadj) {
    const SeqAdj& mine = f.adj[dirIndex(dir)];
    const SeqAdj& theirs = f.adj[dirIndex(other(dir))];
    const uint32_t seq = pkt.seq();
    const uint32_t nseq = seqForward(mine, seq);
    Delta::add32(d.header, seq, nseq);
    pkt.setSeqRaw(nseq);
    if (pkt.has(tcpflag::kAck)) {
      const uint32_t ack = pkt.ack();
      const uint32_t nack = ackBackward(theirs, ack);
      Delta::add32(d.header, ack, nack);
      pkt.setAckRaw(nack);
    }
    // SACK edges name the peer's bytes, like the ack (RFC 2018 section 3).
    uint8_t* sack = pkt.options() + opts.sack_offset;
    const bool odd = (opts.sack_offset & 1) != 0;  // the options area starts at an even offset
    for (uint8_t i = 0; i < opts.sack_count; ++i) {
      for (int e = 0; e < 2; ++e) {
        uint8_t* p = sack + 8 * i + 4 * e;
        const uint32_t edge = load32(p);
        const uint32_t nedge = ackBackward(theirs, edge);
        Delta::add32At(d.header, edge, nedge, odd);
        store32(p, nedge);
        (e == 0 ? opts.sack[i].left : opts.sack[i].right) = nedge;
      }
    }
  }

  if (f.has_ts_adj && opts.has_timestamp) {
    // Splice: backend TSvals move into the clock the client saw in the SYN-ACK (so PAWS holds,
    // RFC 7323 section 5), client TSecrs back into the backend's clock.
    uint8_t* ts = pkt.options() + opts.ts_offset;
    const bool odd = (opts.ts_offset & 1) != 0;
    if (dir == Direction::kFromBackend) {
      const uint32_t v = load32(ts);
      Delta::add32At(d.header, v, v + f.ts_offset, odd);
      store32(ts, v + f.ts_offset);
    } else if (pkt.has(tcpflag::kAck)) {
      const uint32_t e = load32(ts + 4);
      Delta::add32At(d.header, e, e - f.ts_offset, odd);
      store32(ts + 4, e - f.ts_offset);
    }
  }
  if (f.rescale_window && dir == Direction::kFromBackend && !pkt.has(tcpflag::kSyn)) {
    // The backend scales its window by its own shift; the client applies the shift the proxy
    // offered in its SYN-ACK (RFC 7323 2.3). Re-express the same byte count, rounding down.
    const uint64_t bytes = uint64_t{pkt.window()} << f.backend_wscale;
    const uint64_t field = bytes >> f.client_view_wscale;
    const uint16_t nwin = static_cast<uint16_t>(field > 0xffff ? 0xffff : field);
    Delta::add16(d.header, pkt.window(), nwin);
    pkt.setWindowRaw(nwin);
  }

  if (!meta.csum_not_ready) {
    pkt.setTcpCheck(applyComplete(pkt.tcpCheck(), d.pseudo + d.header));
  } else if (meta.gso) {
    // Pseudo-header sum only; the kernel completes it per segment.
    pkt.setTcpCheck(applyPartial(pkt.tcpCheck(), d.pseudo));
  } else {
    // The re-injected packet loses CHECKSUM_PARTIAL: it must carry a complete checksum.
    pkt.setTcpCheck(tcpChecksumV4(new_saddr, new_daddr, pkt.tcp(), pkt.tcpLen()));
    ++counters.full_checksums;
  }
}

}  // namespace tandem
