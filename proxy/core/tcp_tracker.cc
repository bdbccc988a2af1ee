#include "proxy/core/tcp_tracker.h"

#include <algorithm>

#include "common/seq.h"

namespace tandem {
namespace {

using K = Transition::Kind;
using S = TcpState;

constexpr size_t kStates = static_cast<size_t>(TcpState::kCount);
constexpr size_t kEvents = static_cast<size_t>(TcpEvent::kCount);

constexpr Transition mv(S s, const char* why) { return {K::kMove, s, why}; }
constexpr Transition ig(const char* why) { return {K::kIgnore, S::kNone, why}; }
constexpr Transition iv(const char* why) { return {K::kInvalid, S::kNone, why}; }
constexpr Transition dv(const char* why) { return {K::kDerive, S::kNone, why}; }

// Columns: kNone, kSynSent, kSynRecv, kEstablished, kFinWait, kCloseWait, kLastAck, kTimeWait,
// kClose. kDerive: the state follows from which FINs were sent and acknowledged.
constexpr Transition kTable[2][kEvents][kStates] = {
    {
        // From the client (the side that opened the connection).
        {// SYN
         mv(S::kSynSent, "client opens a connection"),
         mv(S::kSynSent, "SYN retransmitted"),
         ig("SYN retransmitted after the SYN-ACK was lost"),
         ig("RFC 5961 4.2: SYN on a live connection; the server answers with a challenge ACK"),
         ig("RFC 5961 4.2: SYN while closing; the server answers with a challenge ACK"),
         ig("RFC 5961 4.2: SYN while closing; the server answers with a challenge ACK"),
         ig("RFC 5961 4.2: SYN while closing; the server answers with a challenge ACK"),
         mv(S::kSynSent, "new incarnation of the tuple after TIME_WAIT (RFC 9293 3.6.1)"),
         mv(S::kSynSent, "new incarnation of the tuple after a reset")},
        {// SYN-ACK
         iv("no connection: a client does not send SYN-ACK"),
         iv("simultaneous open through a VIP is not supported"),
         iv("a client does not send SYN-ACK"), iv("a client does not send SYN-ACK"),
         iv("a client does not send SYN-ACK"), iv("a client does not send SYN-ACK"),
         iv("a client does not send SYN-ACK"), iv("a client does not send SYN-ACK"),
         iv("a client does not send SYN-ACK")},
        {// FIN
         iv("no connection"), iv("FIN before the handshake completed"),
         dv("client closes right after the handshake's ACK"), dv("client half-closes"),
         dv("FIN exchange"), dv("FIN exchange"), dv("FIN exchange"),
         mv(S::kTimeWait, "FIN retransmitted in TIME_WAIT"),
         mv(S::kClose, "FIN after a reset")},
        {// ACK
         iv("no connection"), iv("ACK before any SYN-ACK"),
         mv(S::kEstablished, "client completes the three-way handshake"),
         mv(S::kEstablished, "data or ACK"), dv("ACK during the FIN exchange"),
         dv("ACK during the FIN exchange"), dv("ACK during the FIN exchange"),
         mv(S::kTimeWait, "last ACK retransmitted"), mv(S::kClose, "ACK after a reset")},
        {// RST (already validated against the window)
         iv("no connection"), mv(S::kClose, "client aborts its SYN"),
         mv(S::kClose, "client aborts the handshake"), mv(S::kClose, "client resets"),
         mv(S::kClose, "client resets"), mv(S::kClose, "client resets"),
         mv(S::kClose, "client resets"), mv(S::kClose, "client resets in TIME_WAIT"),
         mv(S::kClose, "reset retransmitted")},
        {// no SYN, ACK or RST
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK"),
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK"),
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK")},
    },
    {
        // From the backend.
        {// SYN
         iv("a backend does not open connections through the VIP"),
         iv("simultaneous open through a VIP is not supported"), iv("SYN from the backend"),
         iv("SYN from the backend"), iv("SYN from the backend"), iv("SYN from the backend"),
         iv("SYN from the backend"), iv("SYN from the backend"), iv("SYN from the backend")},
        {// SYN-ACK
         iv("no connection"), mv(S::kSynRecv, "backend accepts"),
         mv(S::kSynRecv, "SYN-ACK retransmitted"),
         ig("SYN-ACK retransmitted: the client's ACK was lost"),
         ig("stale SYN-ACK"), ig("stale SYN-ACK"), ig("stale SYN-ACK"), ig("stale SYN-ACK"),
         ig("stale SYN-ACK")},
        {// FIN
         iv("no connection"), iv("FIN before the handshake"),
         dv("backend closes right after accepting"), dv("backend half-closes"),
         dv("FIN exchange"), dv("FIN exchange"), dv("FIN exchange"),
         mv(S::kTimeWait, "FIN retransmitted in TIME_WAIT"),
         mv(S::kClose, "FIN after a reset")},
        {// ACK
         iv("no connection"), ig("backend ACK before its SYN-ACK (challenge ACK to a SYN)"),
         mv(S::kSynRecv, "backend ACK while the handshake completes"),
         mv(S::kEstablished, "data or ACK"), dv("ACK during the FIN exchange"),
         dv("ACK during the FIN exchange"), dv("ACK during the FIN exchange"),
         mv(S::kTimeWait, "last ACK retransmitted"), mv(S::kClose, "ACK after a reset")},
        {// RST
         iv("no connection"), mv(S::kClose, "backend refuses the connection"),
         mv(S::kClose, "backend aborts the handshake"), mv(S::kClose, "backend resets"),
         mv(S::kClose, "backend resets"), mv(S::kClose, "backend resets"),
         mv(S::kClose, "backend resets"), mv(S::kClose, "backend resets in TIME_WAIT"),
         mv(S::kClose, "reset retransmitted")},
        {// no SYN, ACK or RST
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK"),
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK"),
         iv("segment without ACK"), iv("segment without ACK"), iv("segment without ACK")},
    },
};

// RFC 9293 allows a receive window of up to 2^30 with scaling; conntrack's MAXACKWINCONST.
constexpr uint32_t kMaxAckWindowConst = 66000;

uint32_t scaledWindow(const TcpPacket& pkt, const TcpWindow& sender) noexcept {
  uint32_t win = pkt.window();
  if (!pkt.has(tcpflag::kSyn)) win <<= sender.td_scale;  // RFC 7323 2.2: SYNs are unscaled
  return win;
}

void learnSynOptions(TcpWindow& w, const TcpOptions& opts, Counters& counters) noexcept {
  w.wscale_offered = opts.has_wscale;
  w.td_scale = opts.has_wscale ? opts.wscale : 0;
  if (opts.wscale_clamped) ++counters.window_scale_clamped;
}

/// RFC 5961 3.2 from the middle. Returns kDrop for a RST outside the receiver's window, kExact
/// for one a compliant receiver will accept, kChallenge for an in-window inexact one.
enum class RstCheck { kDrop, kExact, kChallenge };

RstCheck checkRst(const Flow& f, Direction dir, const TcpPacket& pkt) noexcept {
  const TcpWindow& sender = f.win[dirIndex(dir)];
  const TcpWindow& receiver = f.win[dirIndex(other(dir))];
  const uint32_t seq = pkt.seq();
  if (f.state == TcpState::kSynSent && dir == Direction::kFromBackend) {
    // RFC 9293 3.10.7.3: a RST answering a SYN is acceptable if it acknowledges the SYN.
    return pkt.has(tcpflag::kAck) && pkt.ack() == receiver.td_end ? RstCheck::kExact
                                                                   : RstCheck::kDrop;
  }
  // Nothing learnt of the sender yet (a flow installed from a checkpoint): let the endpoint
  // judge it, it applies RFC 5961 itself.
  if (!sender.seen) return RstCheck::kChallenge;
  // The receiver's RCV.NXT is the highest ACK it sent; before any, the sender's next sequence.
  const uint32_t rcv_nxt = receiver.ack_seen ? receiver.last_ack : sender.td_end;
  if (seq == rcv_nxt || seq == sender.td_end) return RstCheck::kExact;
  // The sequence number of the sender's own FIN, once the receiver may have acknowledged it:
  // a closed socket answers a late segment with a RST carrying that segment's ack, which still
  // points at the FIN if the segment left before the FIN arrived. Receivers accept RCV.NXT - 1
  // after a FIN (RFC 5961 3.2 as Linux extends it, tcp_reset_check()); so must the middle.
  if (sender.fin_seen && seq == sender.fin_end - 1) return RstCheck::kExact;
  const uint32_t lo = seqMin(rcv_nxt, sender.td_end);
  const uint32_t hi = seqMax(sender.td_maxend, seqMax(rcv_nxt, sender.td_end));
  return seqBetween(seq, lo, hi) ? RstCheck::kChallenge : RstCheck::kDrop;
}

/// Window bookkeeping after nf_conntrack_proto_tcp.c tcp_in_window(): returns whether the
/// segment lay inside the four bounds, and always learns from it when it did.
bool updateWindows(Flow& f, Direction dir, const TcpPacket& pkt, const TcpOptions& opts) noexcept {
  TcpWindow& sender = f.win[dirIndex(dir)];
  TcpWindow& receiver = f.win[dirIndex(other(dir))];
  uint32_t seq = pkt.seq();
  uint32_t end = seq + pkt.seqLen();
  const uint32_t win = scaledWindow(pkt, sender);

  if (!sender.seen) {
    sender.seen = true;
    if (pkt.has(tcpflag::kSyn)) {
      sender.td_end = sender.td_maxend = end;
      sender.td_maxwin = win == 0 ? 1 : win;
    } else {
      // First segment in this direction without SYN (a flow picked up mid-stream): learn.
      sender.td_end = end;
      sender.td_maxwin = win == 0 ? 1 : win;
      sender.td_maxend = end + sender.td_maxwin;
    }
  }

  uint32_t ack = pkt.ack();
  uint32_t sack = ack;
  if (!pkt.has(tcpflag::kAck)) {
    ack = sack = receiver.td_end;
  } else {
    for (uint8_t i = 0; i < opts.sack_count; ++i)
      if (seqAfter(opts.sack[i].right, sack)) sack = opts.sack[i].right;
  }
  if (seq == end) seq = end = sender.td_end;  // no data: only the ACK is checked

  const uint32_t max_ack_win = std::max(sender.td_maxwin, kMaxAckWindowConst);
  const bool in_window =
      !receiver.seen ||  // nothing known of the receiver yet (client's first SYN)
      (seqBeforeEq(seq, sender.td_maxend) &&
       seqAfterEq(end, sender.td_end - receiver.td_maxwin) &&
       seqBeforeEq(sack, receiver.td_end) &&
       seqAfterEq(sack, receiver.td_end - max_ack_win));

  // Learn only from segments inside the window, so a forged one cannot move the edges.
  if (!in_window) return false;
  if (sender.td_maxwin < win) sender.td_maxwin = win;
  if (seqAfter(end, sender.td_end)) sender.td_end = end;
  if (pkt.has(tcpflag::kAck)) {
    if (!sender.ack_seen || seqAfter(ack, sender.last_ack)) sender.last_ack = ack;
    sender.ack_seen = true;
  }
  if (receiver.td_maxwin != 0 && seqAfter(end, sender.td_maxend))
    receiver.td_maxwin += end - sender.td_maxend;
  if (seqAfterEq(sack + win, receiver.td_maxend)) {
    receiver.td_maxend = sack + win;
    if (win == 0) ++receiver.td_maxend;
  }
  return true;
}

TcpState deriveClosingState(const Flow& f) noexcept {
  const TcpWindow& c = f.win[0];
  const TcpWindow& b = f.win[1];
  const int fins = (c.fin_seen ? 1 : 0) + (b.fin_seen ? 1 : 0);
  const int acked = (c.fin_acked ? 1 : 0) + (b.fin_acked ? 1 : 0);
  if (fins == 0) return f.state;
  if (fins == 1) return acked == 1 ? TcpState::kCloseWait : TcpState::kFinWait;
  return acked == 2 ? TcpState::kTimeWait : TcpState::kLastAck;
}

}  // namespace

bool validTcpFlags(uint8_t flags) noexcept {
  const uint8_t f = flags & static_cast<uint8_t>(~(tcpflag::kPsh | tcpflag::kEce |
                                                   tcpflag::kCwr | tcpflag::kUrg));
  using namespace tcpflag;
  return f == kSyn || f == (kSyn | kAck) || f == kRst || f == (kRst | kAck) ||
         f == (kFin | kAck) || f == kAck;
}

TcpEvent tcpEventOf(uint8_t flags) noexcept {
  using namespace tcpflag;
  if (flags & kRst) return TcpEvent::kRst;
  if (flags & kSyn) return (flags & kAck) ? TcpEvent::kSynAck : TcpEvent::kSyn;
  if (flags & kFin) return TcpEvent::kFin;
  if (flags & kAck) return TcpEvent::kAck;
  return TcpEvent::kNone;
}

const Transition& tcpTransition(Direction dir, TcpEvent ev, TcpState state) noexcept {
  return kTable[dirIndex(dir)][static_cast<size_t>(ev)][static_cast<size_t>(state)];
}

uint64_t stateTimeout(const Timeouts& t, TcpState s) noexcept {
  switch (s) {
    case TcpState::kNone:
    case TcpState::kSynSent: return t.syn_sent_ns;
    case TcpState::kSynRecv: return t.syn_recv_ns;
    case TcpState::kEstablished: return t.established_ns;
    case TcpState::kFinWait: return t.fin_wait_ns;
    case TcpState::kCloseWait: return t.close_wait_ns;
    case TcpState::kLastAck: return t.last_ack_ns;
    case TcpState::kTimeWait: return t.time_wait_ns;
    case TcpState::kClose:
    case TcpState::kCount: return t.close_ns;
  }
  return t.close_ns;
}

DropReason trackSegment(Flow& f, Direction dir, const TcpPacket& pkt, const TcpOptions& opts,
                        uint64_t now_ns, Counters& counters) noexcept {
  const uint8_t flags = pkt.flags();
  if (!validTcpFlags(flags)) return DropReason::kBadFlags;
  const TcpEvent ev = tcpEventOf(flags);
  TcpWindow& sender = f.win[dirIndex(dir)];
  TcpWindow& receiver = f.win[dirIndex(other(dir))];

  if (ev == TcpEvent::kRst) {
    switch (checkRst(f, dir, pkt)) {
      case RstCheck::kDrop:
        // Both FINs acknowledged (or a reset taken): typically the closed end's answer to a
        // stale duplicate, seq = its SEG.ACK (RFC 9293 3.10.7.1), which the peer discards too.
        // Named apart from a RST on a live flow (blind, or edges that lag).
        return f.state == TcpState::kTimeWait || f.state == TcpState::kClose
                   ? DropReason::kRstAfterClose
                   : DropReason::kRstOutOfWindow;
      case RstCheck::kChallenge:
        // The endpoint will answer with a challenge ACK (RFC 5961 3.2); keep the flow.
        ++counters.rst_challenged;
        f.last_seen_ns = now_ns;
        return DropReason::kNone;
      case RstCheck::kExact: break;
    }
  }
  if (ev == TcpEvent::kSynAck && f.state == TcpState::kSynSent &&
      pkt.ack() != receiver.td_end) {
    return DropReason::kSynAckMismatch;  // does not acknowledge the client's SYN
  }

  // A flow installed from a checkpoint (no window seen here yet) can lag one handshake step: the
  // backend's SYN-ACK went through the peer proxy around a switchover, and the client's ACK of
  // it is the first segment seen here. Take it as the end of the handshake, as from SYN_RECV.
  const bool lagging_checkpoint = ev == TcpEvent::kAck && dir == Direction::kFromClient &&
                                  f.state == TcpState::kSynSent && !sender.seen && !receiver.seen;
  const Transition& t =
      tcpTransition(dir, ev, lagging_checkpoint ? TcpState::kSynRecv : f.state);
  switch (t.kind) {
    case K::kInvalid: return DropReason::kInvalidTransition;
    case K::kIgnore:
      if (ev == TcpEvent::kSyn) ++counters.syn_in_established;
      f.last_seen_ns = now_ns;
      return DropReason::kNone;
    case K::kMove:
    case K::kDerive: break;
  }

  if (ev == TcpEvent::kSyn) {
    // A (new) opening SYN: start the client's side afresh.
    sender = TcpWindow{};
    receiver = TcpWindow{};
    learnSynOptions(sender, opts, counters);
  } else if (ev == TcpEvent::kSynAck) {
    sender = TcpWindow{};
    learnSynOptions(sender, opts, counters);
    // RFC 7323 2.2: scaling applies only if both sides offered it.
    if (!receiver.wscale_offered || !opts.has_wscale) sender.td_scale = receiver.td_scale = 0;
  }

  if (ev == TcpEvent::kRst) {
    ++counters.rst_accepted;
  } else if (!updateWindows(f, dir, pkt, opts)) {
    // Outside the window: the endpoint will discard it and answer with an ACK (RFC 9293
    // 3.10.7.4). Pass it on, but learn nothing from it and change no state.
    ++counters.seq_out_of_window;
    f.last_seen_ns = now_ns;
    return DropReason::kNone;
  }

  if (ev != TcpEvent::kRst && ev != TcpEvent::kSyn) {
    if (pkt.has(tcpflag::kFin) && !sender.fin_seen) {
      sender.fin_seen = true;
      sender.fin_end = pkt.seq() + pkt.seqLen();
    }
    if (pkt.has(tcpflag::kAck) && receiver.fin_seen && seqAfterEq(pkt.ack(), receiver.fin_end))
      receiver.fin_acked = true;
  }

  f.state = t.kind == K::kMove ? t.next : deriveClosingState(f);
  f.last_seen_ns = now_ns;
  return DropReason::kNone;
}

}  // namespace tandem

namespace tandem {
namespace {

bool learnsEdges(TcpState s) noexcept {
  switch (s) {
    case TcpState::kEstablished:
    case TcpState::kFinWait:
    case TcpState::kCloseWait:
    case TcpState::kLastAck:
    case TcpState::kTimeWait: return true;
    default: return false;  // the handshake's windows come with its SYN options
  }
}

}  // namespace

bool learnWindowEdges(Flow& f, Direction dir, const TcpPacket& pkt,
                      const TcpOptions& opts) noexcept {
  const uint8_t flags = pkt.flags();
  if (!validTcpFlags(flags)) return false;
  switch (tcpEventOf(flags)) {
    case TcpEvent::kAck:
    case TcpEvent::kFin: break;
    case TcpEvent::kSyn:
      if (dir == Direction::kFromClient &&
          (f.state == TcpState::kTimeWait || f.state == TcpState::kClose)) {
        for (TcpWindow& w : f.win) {
          w.seen = false;
          w.ack_seen = false;
        }
        return true;
      }
      return false;
    default: return false;  // RST, SYN-ACK: what they change, the checkpoint brings
  }
  if (!learnsEdges(f.state)) return false;
  return updateWindows(f, dir, pkt, opts);
}

bool noteForwardedAck(Flow& f, Direction dir, uint32_t ack) noexcept {
  if (f.state != TcpState::kFinWait && f.state != TcpState::kCloseWait &&
      f.state != TcpState::kLastAck)
    return false;
  TcpWindow& receiver = f.win[dirIndex(other(dir))];
  if (!receiver.fin_seen || receiver.fin_acked || !seqAfterEq(ack, receiver.fin_end)) return false;
  receiver.fin_acked = true;
  const TcpState before = f.state;
  f.state = deriveClosingState(f);
  return f.state != before;
}

bool adoptWarmEdges(TcpWindow& into, const Flow& warm, const Flow& checkpoint,
                    size_t d) noexcept {
  const TcpWindow& w = warm.win[d];
  if (!w.seen || !learnsEdges(checkpoint.state) || warm.client_addr != checkpoint.client_addr ||
      warm.client_port != checkpoint.client_port || warm.vip_addr != checkpoint.vip_addr ||
      warm.vip_port != checkpoint.vip_port || warm.backend_addr != checkpoint.backend_addr ||
      warm.backend_port != checkpoint.backend_port || warm.source_addr != checkpoint.source_addr ||
      warm.source_port != checkpoint.source_port) {
    return false;
  }
  into.td_end = w.td_end;
  into.td_maxend = w.td_maxend;
  into.td_maxwin = w.td_maxwin;
  into.last_ack = w.last_ack;
  into.ack_seen = w.ack_seen;
  into.seen = true;
  return true;
}

}  // namespace tandem
