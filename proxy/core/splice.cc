// Splice mode: the proxy answers the client's handshake with a SYN cookie, keeps no state until
// the cookie comes back, then opens the backend leg on the client's behalf and splices the two.
//
// Every packet the proxy originates is made by rewriting the packet that caused it, in place:
// the client's SYN becomes the SYN-ACK (routed back to the client), the cookie ACK becomes the
// backend SYN, the backend's SYN-ACK becomes its ACK. The kernel forwards each one. Only the
// packets with no packet to rewrite (a backend SYN while the client's data segment that caused it
// is held, the resend timer's SYNs, the client's RST after a connect timeout) go to the outbox,
// which the I/O layer sends through a raw socket.
//
// Deliberate choices (docs/splice.md): TCP Fast Open is not offered (the SYN-ACK acknowledges no
// SYN data and carries no TFO cookie, so the client resends its data after the handshake);
// TCP-MD5 / TCP-AO options are neither rewritten nor re-signed, since the proxy changes the
// sequence space and holds no keys: such services belong in passthrough mode.
#include <algorithm>
#include <cstring>

#include "common/bytes.h"
#include "common/segment_writer.h"
#include "common/seq.h"
#include "proxy/core/bind_rules.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/tcp_tracker.h"
#include "proxy/core/translator.h"

namespace tandem {
namespace {

/// Backend SYN retransmission, driven by the client's own retransmissions: at most this often
/// (RFC 6298's initial RTO) and this many times, then the client is reset after the connect
/// timeout.
constexpr uint64_t kSynRetransmitNs = 1'000'000'000;
constexpr uint8_t kMaxSynRetries = 3;
/// The timer's own schedule (spliceTick): 250 ms, then doubling, kMaxSynRetries times; the
/// connect timeout runs from the last one.
constexpr uint64_t kSynTimerNs = 250'000'000;
/// bind = data: a client that has sent no data this long after its handshake waits for the
/// server to speak first (SMTP, SSH, ...): the scheduler's backend is bound without data.
constexpr uint64_t kBindDataWaitNs = 1'000'000'000;

/// Writes `spec` into data[0, cap) and returns the re-injection decision for it.
Decision emit(const SegmentSpec& spec, uint8_t* data, size_t cap, Counters& counters) noexcept {
  uint8_t tmp[60];
  const size_t n = writeTcpSegment(spec, tmp, sizeof tmp);
  if (n == 0 || n > cap) {
    counters.drop(DropReason::kNoRoom);
    return {Verdict::kDrop, DropReason::kNoRoom, false, 0};
  }
  std::memcpy(data, tmp, n);
  return {Verdict::kAccept, DropReason::kNone, true, n};
}

/// Re-parses a segment the proxy just wrote (always valid) for the tracker.
bool view(uint8_t* data, size_t len, TcpPacket& pkt, TcpOptions& opts) noexcept {
  return parseTcpPacket(data, len, pkt) == ParseError::kNone &&
         parseTcpOptions(pkt.options(), pkt.optionsLen(), opts) == OptionError::kNone;
}

/// The backend leg's SYN, on the client's behalf: the client's ISN (the client leg keeps its
/// sequence space) and the client's own options as the cookie kept them, so that the backend and
/// the client agree on MSS, scaling, SACK and timestamps.
SegmentSpec backendSyn(const Flow& f, uint32_t client_isn, bool wscale_ok, uint8_t wscale,
                       bool ts_ok, uint32_t tsval, uint16_t window, uint8_t* optbuf) noexcept {
  TcpOptions syn;
  syn.has_mss = true;
  syn.mss = f.syn_mss;
  syn.has_wscale = wscale_ok;
  syn.wscale = wscale;
  syn.sack_permitted = f.syn_sack;
  syn.has_timestamp = ts_ok;
  syn.ts_val = tsval;
  SegmentSpec spec;
  spec.saddr = f.source_addr.v4();
  spec.daddr = f.backend_addr.v4();
  spec.sport = f.source_port;
  spec.dport = f.backend_port;
  spec.seq = client_isn;
  spec.flags = static_cast<uint8_t>(
      tcpflag::kSyn | (f.syn_ecn ? tcpflag::kEce | tcpflag::kCwr : 0));  // RFC 3168 6.1.1
  spec.window = window;  // SYN: unscaled
  spec.options = optbuf;
  spec.options_len = buildSynOptions(syn, optbuf, 40);
  return spec;
}

/// The backend SYN again, from what the flow kept (the tracked client SYN's ISN, shift and
/// timestamp, the cookie's MSS, SACK and ECN).
SegmentSpec backendSynAgain(const Flow& f, bool has_ts, uint32_t tsval,
                            uint8_t* optbuf) noexcept {
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  return backendSyn(f, c.td_end - 1, c.wscale_offered, c.td_scale, f.client_tsval != 0,
                    has_ts ? tsval : f.client_tsval, f.client_window, optbuf);
}

/// A segment from the proxy's side of the client leg before any byte of the backend's reached
/// the client: seq the proxy's next sequence number.
SegmentSpec toClient(const Flow& f, uint32_t ack, uint8_t flags) noexcept {
  SegmentSpec spec;
  spec.saddr = f.vip_addr.v4();
  spec.daddr = f.client_addr.v4();
  spec.sport = f.vip_port;
  spec.dport = f.client_port;
  spec.seq = f.proxy_isn + 1;
  spec.ack = ack;
  spec.flags = flags;
  return spec;
}

/// The RST that tells the client its connection failed: seq exactly the proxy's next sequence
/// number, which is what the client expects from its server (RFC 5961 3.2).
SegmentSpec clientRst(const Flow& f, uint32_t ack) noexcept {
  return toClient(f, ack, tcpflag::kRst | tcpflag::kAck);
}

}  // namespace

void Engine::setCookieClockOffset(int64_t offset_ns) noexcept {
  impl_->cookie_clock_offset_ns = offset_ns;
}

Decision Engine::Impl::spliceOpen(size_t svc, const FlowKey& key, TcpPacket& pkt,
                                  const TcpOptions& opts, uint8_t* data, size_t cap,
                                  const PacketMeta& meta, uint64_t now_ns) noexcept {
  const uint8_t flags = pkt.flags();
  if (!validTcpFlags(flags)) return dropped(DropReason::kBadFlags);
  const SpliceConfig& sc = config.splice;

  if (isOpeningSyn(flags)) {
    // RFC 4987 3.6: answer with a cookie, remember nothing.
    const CookieIssue issue =
        cookie->make(cookieInputFromSyn(pkt, opts), now_ns + cookie_clock_offset_ns);
    uint8_t tmp[kMaxSynAckLen];
    const uint16_t window = config.services[svc].zero_window_handshake ? 0 : sc.window;
    const size_t n = buildSynAck(pkt, opts, issue, {sc.mss, sc.wscale, window, 64}, tmp,
                                 sizeof tmp);
    if (n == 0) return dropped(DropReason::kBadCookie);
    if (n > cap) return dropped(DropReason::kNoRoom);
    std::memcpy(data, tmp, n);
    ++counters.syncookies_sent;
    ++counters.packets[0];
    counters.bytes[0] += pkt.totalLen();
    return {Verdict::kAccept, DropReason::kNone, true, n};
  }

  // Anything else without a flow must be the ACK that returns a cookie, possibly with data: the
  // client's first request can reach the queue before its bare ACK (the two leave the client
  // from different CPUs), and then opens the splice itself. A caller that can hold it keeps it
  // for the backend leg and the SYN goes out on its own; otherwise the segment becomes the SYN
  // and the client, whose data nobody acknowledged, sends it again.
  if ((flags & (tcpflag::kSyn | tcpflag::kRst | tcpflag::kFin)) != 0 || !(flags & tcpflag::kAck))
    return dropped(DropReason::kNoFlow);
  const ServiceConfig& s = config.services[svc];
  CookieInput input = cookieInputFromAck(pkt);
  CookieCheck check = cookie->check(input, pkt.ack() - 1, opts.ts_ecr, opts.has_timestamp,
                                    now_ns + cookie_clock_offset_ns);
  const bool probe = !check.ok && s.zero_window_handshake && pkt.payloadLen() == 0;
  if (probe) {
    // A zero-window probe (RFC 9293 3.8.6.1: sequence number SND.UNA - 1, the client's ISN): the
    // client still waits for the window the SYN-ACK withheld, and its cookie ACK never opened a
    // flow here (lost, or taken by a peer that died since). The probe opens the splice instead.
    input.client_isn = pkt.seq();
    check = cookie->check(input, pkt.ack() - 1, opts.ts_ecr, opts.has_timestamp,
                          now_ns + cookie_clock_offset_ns);
  }
  if (!check.ok) return dropped(DropReason::kBadCookie);

  // bind = data: a cookie ACK that already carries data picks the backend now; a bare one waits
  // for the data.
  const bool await_data = s.bind == BindOn::kData && pkt.payloadLen() == 0;
  int route = -1;
  if (s.bind == BindOn::kData && !await_data) {
    route = chooseRoute(s.routes, pkt.tcp() + pkt.tcpHeaderLen(), pkt.payloadLen());
    ++(route >= 0 ? counters.splice_routed : counters.splice_route_misses);
  }
  FlowTable::Hit hit;
  if (const DropReason r = createFlow(svc, key, hit, kbind_flow_id != 0 ? kbind_backend : route);
      r != DropReason::kNone)
    return dropped(r);
  Flow& f = table.at(hit.index);
  const CookieOptions& o = check.options;
  f.splice = true;
  f.splice_pending = true;
  f.proxy_isn = pkt.ack() - 1;
  f.proxy_tsval = opts.ts_ecr;
  f.client_tsval = opts.ts_val;
  f.client_window = pkt.window();
  f.client_view_wscale = o.wscale_ok ? std::min<uint8_t>(sc.wscale, tcpopt::kMaxWindowScale) : 0;

  // The backend may send what the client can take and what the proxy's own path carries: the
  // smaller of the client's MSS (as the cookie kept it) and the proxy's configured MSS, which
  // tandemd lowers to its interfaces' MTU - 40.
  f.syn_mss = std::min(o.mss, sc.mss);
  f.syn_sack = o.sack_ok;
  f.syn_ecn = o.ecn_ok;
  uint8_t optbuf[40];
  const uint64_t win = uint64_t{pkt.window()} << (o.wscale_ok ? o.wscale : 0);
  const SegmentSpec spec = backendSyn(f, input.client_isn, o.wscale_ok, o.wscale, o.ts_ok,
                                      opts.ts_val, static_cast<uint16_t>(std::min<uint64_t>(win, 0xffff)),
                                      optbuf);
  // The SYN is not this segment when the leg opens on the first data segment (await_data: sent
  // then) or when this segment is data the caller holds (hold: sent now, through the outbox).
  // Either way it is tracked now, so the client leg's window and options are in place.
  const bool hold = !await_data && pkt.payloadLen() > 0 && meta.can_hold;
  if (await_data || hold) {
    uint8_t syn[60];
    const size_t n = writeTcpSegment(spec, syn, sizeof syn);
    TcpPacket out;
    TcpOptions out_opts;
    const bool tracked = n != 0 && view(syn, n, out, out_opts) &&
                         trackSegment(f, Direction::kFromClient, out, out_opts, now_ns,
                                      counters) == DropReason::kNone;
    const bool sent = tracked && (!hold || outbox.push(syn, n));
    if (tracked && !sent) ++counters.outbox_dropped;
    if (!sent) {
      table.remove(hit.index);
      --counters.flows_created;
      return dropped(DropReason::kNoRoom);
    }
    armSynTimer(hit.index);  // await_data: a client that never speaks first is bound by it
    if (await_data) {
      f.splice_await_data = true;
      return dropped(DropReason::kSpliceBindWait);  // the ACK completed the client's handshake
    }
    ++counters.packets[0];
    counters.bytes[0] += pkt.totalLen();
    ++counters.splice_held;
    f.client_held = true;
    return {Verdict::kHold, DropReason::kNone, false, 0};
  }
  const Decision d = emit(spec, data, cap, counters);
  TcpPacket out;
  TcpOptions out_opts;
  if (d.verdict != Verdict::kAccept || !view(data, d.len, out, out_opts) ||
      trackSegment(f, Direction::kFromClient, out, out_opts, now_ns,
                   counters) != DropReason::kNone) {
    table.remove(hit.index);
    --counters.flows_created;
    return d.verdict == Verdict::kAccept ? dropped(DropReason::kNoRoom) : d;
  }
  armSynTimer(hit.index);
  ++counters.packets[0];
  counters.bytes[0] += pkt.totalLen();
  if (probe) ++counters.splice_opened_by_probe;  // bare: neither held nor awaiting data
  fastPathArm(hit.index);  // before this verdict sends the SYN: the kernel may answer its SYN-ACK
  return d;
}

uint32_t Engine::Impl::spliceRebind(uint32_t index, uint16_t backend) noexcept {
  // The index holds both legs' tuples and the backend leg's depends on the backend (and, with
  // SNAT, on a port free towards it): take the flow out and create it again on the new backend.
  const Flow saved = table.at(index);
  const FlowKey key = FlowTable::clientKey(saved);
  table.remove(index);
  --counters.flows_created;
  FlowTable::Hit hit;
  if (createFlow(saved.service, key, hit, backend) != DropReason::kNone) {
    // Its tuple clashes or no SNAT port is free towards it: keep the flow as it was.
    const uint32_t back = table.allocate();  // the slot just freed
    if (back == FlowTable::kNone) return FlowTable::kNone;
    table.at(back) = saved;
    table.insert(back);
    ++counters.flows_created;
    touch(back);
    return back;
  }
  Flow& f = table.at(hit.index);
  const Flow fresh = f;
  f = saved;
  f.backend = fresh.backend;
  f.backend_addr = fresh.backend_addr;
  f.backend_port = fresh.backend_port;
  f.source_addr = fresh.source_addr;
  f.source_port = fresh.source_port;
  f.in_use = true;
  f.dirty = fresh.dirty;
  return hit.index;
}

Decision Engine::Impl::spliceBindOnData(uint32_t index, TcpPacket& pkt, const TcpOptions& opts,
                                        uint8_t* data, size_t cap, const PacketMeta& meta,
                                        uint64_t now_ns) noexcept {
  if (pkt.payloadLen() == 0 && !pkt.has(tcpflag::kFin))
    return dropped(DropReason::kSpliceBindWait);  // nothing to choose by yet
  Flow* f = &table.at(index);
  const ServiceConfig& s = config.services[f->service];
  const int route = chooseRoute(s.routes, pkt.tcp() + pkt.tcpHeaderLen(), pkt.payloadLen());
  ++(route >= 0 ? counters.splice_routed : counters.splice_route_misses);
  if (route >= 0 && route != f->backend) {
    index = spliceRebind(index, static_cast<uint16_t>(route));
    if (index == FlowTable::kNone) return dropped(DropReason::kTableFull);
    f = &table.at(index);
  }
  f->splice_await_data = false;
  f->last_seen_ns = now_ns;  // the SYN's resend clock starts now
  touch(index);
  uint8_t optbuf[40];
  const SegmentSpec spec = backendSynAgain(*f, opts.has_timestamp, opts.ts_val, optbuf);
  if (meta.can_hold && emitOut(spec)) {
    // The segment waits (held by the caller) for the backend leg it chose.
    armSynTimer(index);
    ++counters.splice_held;
    f->client_held = true;
    return {Verdict::kHold, DropReason::kNone, false, 0};
  }
  // Nobody can hold it: it becomes the SYN, and the client sends its data again (unacknowledged).
  armSynTimer(index);
  return emit(spec, data, cap, counters);
}

void Engine::Impl::spliceTick(uint64_t now_ns) noexcept {
  if (cookie != nullptr) cookie->advance(now_ns + cookie_clock_offset_ns);  // keys ahead of use
  size_t keep = 0;
  for (size_t i = 0; i < syn_timers.size(); ++i) {
    const uint32_t index = syn_timers[i];
    if (index >= table.highWater()) continue;
    Flow& f = table.at(index);
    if (!f.in_use || !f.splice || !f.splice_pending) continue;
    syn_timers[keep++] = index;
    if (f.splice_await_data) {
      if (now_ns - f.last_seen_ns < kBindDataWaitNs) continue;
      // No data yet: the server speaks first. Open the leg to the scheduler's backend.
      uint8_t optbuf[40];
      if (!emitOut(backendSynAgain(f, false, 0, optbuf))) continue;
      f.splice_await_data = false;
      f.last_seen_ns = now_ns;
      touch(index);
      ++counters.splice_route_misses;
      continue;
    }
    if (f.syn_retries < kMaxSynRetries) {
      if (now_ns - f.last_seen_ns < (kSynTimerNs << f.syn_retries)) continue;
      uint8_t optbuf[40];
      if (!emitOut(backendSynAgain(f, false, 0, optbuf))) continue;
      ++f.syn_retries;
      f.last_seen_ns = now_ns;
      ++counters.splice_syn_retransmits;
    } else if (now_ns - f.last_seen_ns > config.splice.connect_timeout_ns) {
      // The backend never answered: reset the client now rather than at its next segment.
      if (!emitOut(clientRst(f, f.win[dirIndex(Direction::kFromClient)].td_end))) continue;
      spliceConnectTimedOut(index, now_ns);
      --keep;
    }
  }
  syn_timers.resize(keep);
}

Decision Engine::Impl::splicePending(uint32_t index, Direction dir, TcpPacket& pkt,
                                     TcpOptions& opts, uint8_t* data, size_t cap,
                                     const PacketMeta& meta, uint64_t now_ns) noexcept {
  if (standby) {
    // Only the active opens a backend leg: completing it here (a SYN-ACK that reached this node
    // before the backend's ARP cache moved, or one held for deferral and released after the
    // handover) would never be checkpointed, and the active, still holding the flow as
    // pending, would drop every later segment of the backend's (docs/pair-operations.md).
    // Nor does a standby resend SYNs or reset the client. The client's segments go to the
    // active untranslated (as for flows unknown here); the backend's are dropped: its SYN-ACK
    // comes again, to the active, on its own retransmission or the active's SYN timer.
    if (dir == Direction::kFromClient && pass_unknown) {
      ++passed_to_active;
      return {Verdict::kAccept, DropReason::kNone, false, pkt.totalLen()};
    }
    return dropped(DropReason::kStandbyPending);
  }
  Flow& f = table.at(index);
  const uint8_t flags = pkt.flags();
  const bool rst = (flags & tcpflag::kRst) != 0;
  if (dir == Direction::kFromClient) {
    // Until the backend answers, client data has nowhere to go. A caller that can hold it gets
    // it back once the splice completes (no retransmission timeout for the client's first
    // request); otherwise it is dropped, and the client, which saw no ACK for it, resends it.
    // A RST aborts the half-open backend leg.
    if (!rst) {
      if (f.splice_await_data)
        return spliceBindOnData(index, pkt, opts, data, cap, meta, now_ns);
      if (now_ns - f.last_seen_ns > kSynRetransmitNs && f.syn_retries < kMaxSynRetries) {
        // No SYN-ACK yet and the client is retransmitting: the backend SYN (or its answer) may
        // be lost. This segment becomes the SYN again (its data is not acknowledged, so the
        // client sends it once more), as the client's own SYN would be retransmitted without a
        // proxy in the path.
        uint8_t optbuf[40];
        const SegmentSpec spec = backendSynAgain(f, opts.has_timestamp, opts.ts_val, optbuf);
        ++f.syn_retries;
        f.last_seen_ns = now_ns;
        ++counters.splice_syn_retransmits;
        return emit(spec, data, cap, counters);
      }
      if (f.syn_retries >= kMaxSynRetries &&
          now_ns - f.last_seen_ns > config.splice.connect_timeout_ns) {
        // The backend never answered (the client's segments do not refresh last_seen while
        // the leg opens): reset the client with the sequence number it expects (RFC 5961 3.2)
        // rather than leave it hanging until its own timeout.
        const SegmentSpec spec = clientRst(f, pkt.seq());
        spliceConnectTimedOut(index, now_ns);
        return emit(spec, data, cap, counters);
      }
      if (meta.can_hold) {
        ++counters.splice_held;
        // A bare ACK (a zero-window probe) may be overtaken by what follows it through the
        // kernel; data and a FIN may not.
        if (pkt.payloadLen() > 0 || pkt.has(tcpflag::kFin)) {
          f.client_held = true;
          fastPathDisarm(index);  // the kernel must not let later segments overtake this one
        }
        return {Verdict::kHold, DropReason::kNone, false, 0};
      }
      return dropped(DropReason::kSplicePending);
    }
    const DropReason r = trackSegment(f, dir, pkt, opts, now_ns, counters);
    if (r != DropReason::kNone) return dropped(r);
    if (f.state == TcpState::kClose) spliceAbort(index);  // the client gave up
    translateSegment(f, dir, pkt, opts, meta, counters);  // meta: the checksum may be partial
    ++counters.packets[0];
    return {Verdict::kAccept, DropReason::kNone, true, pkt.totalLen()};
  }

  const bool synack = (flags & (tcpflag::kSyn | tcpflag::kAck)) == (tcpflag::kSyn | tcpflag::kAck);
  if (!synack && !rst) return dropped(DropReason::kSplicePending);
  // A SYN-ACK or RST through NFQUEUE: the engine's from here, the kernel's armed entries go
  // (fastPathSpliced() replays one the kernel completed: its entries stay).
  if (!fp_kernel_splice) {
    fastPathDisarm(index);
    if (holdForSync(f, dir, flags, meta)) return {Verdict::kHold, DropReason::kNone, false, 0};
  }
  const DropReason r = trackSegment(f, dir, pkt, opts, now_ns, counters);
  if (r != DropReason::kNone) return dropped(r);
  ++counters.packets[1];
  counters.bytes[1] += pkt.totalLen();

  if (rst) {
    // The backend refused: tell the client with a RST it will accept.
    spliceAbort(index);
    touch(index);
    return emit(clientRst(f, f.win[0].td_end), data, cap, counters);
  }

  // Splice the legs: backend bytes shift into the cookie's sequence space, backend timestamps
  // into the clock the client saw, backend windows into the scale the proxy offered.
  const uint32_t backend_isn = pkt.seq();
  const uint16_t synack_window = pkt.window();  // unscaled in a SYN-ACK (RFC 7323 2.2)
  const int32_t off = static_cast<int32_t>(f.proxy_isn - backend_isn);
  f.adj[dirIndex(Direction::kFromBackend)] = {backend_isn, off, off};
  f.has_seqadj = true;
  f.backend_wscale = f.win[1].td_scale;  // zero unless both legs negotiated scaling
  f.rescale_window = f.backend_wscale != f.client_view_wscale;
  const bool ts = opts.has_timestamp && f.win[0].td_end != 0 && f.proxy_tsval != 0;
  if (ts) {
    f.ts_offset = f.proxy_tsval - opts.ts_val;
    f.has_ts_adj = true;
  }

  // Complete the backend's handshake in the client's name.
  uint8_t optbuf[12] = {tcpopt::kNop, tcpopt::kNop, tcpopt::kTimestamp, 10};
  store32(optbuf + 4, f.client_tsval);
  store32(optbuf + 8, opts.ts_val);
  SegmentSpec spec;
  spec.saddr = pkt.daddr();
  spec.daddr = pkt.saddr();
  spec.sport = pkt.dport();
  spec.dport = pkt.sport();
  spec.seq = pkt.ack();
  spec.ack = backend_isn + 1;
  spec.flags = tcpflag::kAck;
  spec.window = f.client_window;  // the client's field, in the client's scale as the backend uses
  spec.options = ts ? optbuf : nullptr;
  spec.options_len = ts ? sizeof optbuf : 0;
  const Decision d = emit(spec, data, cap, counters);
  TcpPacket out;
  TcpOptions out_opts;
  if (d.verdict == Verdict::kAccept && view(data, d.len, out, out_opts))
    trackSegment(f, Direction::kFromClient, out, out_opts, now_ns, counters);
  f.splice_pending = false;
  ++splice_generation;
  ++counters.splices_completed;
  if (f.moving) {  // a re-splice (resplice.cc) completed
    f.moving = false;
    ++counters.resplices_completed;
  } else if (d.verdict == Verdict::kAccept && config.services[f.service].zero_window_handshake) {
    spliceOpenWindow(index, spec.seq, synack_window);
  }
  touch(index);  // the binding (offsets, scales) is hard state
  return d;
}

void Engine::Impl::spliceAbort(uint32_t index) noexcept {
  table.at(index).splice_pending = false;
  ++splice_generation;
  fastPathDisarm(index);
}

void Engine::Impl::spliceConnectTimedOut(uint32_t index, uint64_t now_ns) noexcept {
  spliceAbort(index);
  Flow& f = table.at(index);
  f.state = TcpState::kClose;
  f.last_seen_ns = now_ns;
  touch(index);
  ++counters.splice_connect_timeouts;
  // The passive health signal, whichever found the timeout (the SYN timer or the client's next
  // segment); a flow retired in SYN_SENT counts it instead (retire).
  ++backends[f.service][f.backend].connect_timeouts;
}

void Engine::Impl::spliceOpenWindow(uint32_t index, uint32_t client_ack,
                                    uint16_t synack_window) noexcept {
  Flow& f = table.at(index);
  if (fp_kernel_splice) {
    // The kernel sent the ACK below and holds both entries, translating already, unless the
    // engine took them back after it completed (fastPathDisarm): then the flow is off.
    if (f.fast_path_armed) {
      f.fast_path_armed = false;
      fastPathOn(f);
    }
    ++counters.splice_windows_opened;
    return;
  }
  // The flow goes on the fast path first, both directions written once this batch's verdicts
  // are sent (FastPathPort::install), before the outbox: the client's first data answers the
  // ACK below and, with nothing of it held here, nothing of it can be overtaken; the backend
  // sends nothing before the ACK this segment becomes reaches it.
  if (fp != nullptr && !f.client_held)
    fastPathMaybeInstall(index, Direction::kFromBackend, InstallOrder::kBothAfter);
  // The backend's window in the scale the client applies to the proxy's windows; never more
  // than the backend offered, and not zero unless the backend's is.
  uint32_t window = synack_window >> f.client_view_wscale;
  if (window == 0 && synack_window != 0) window = 1;
  uint8_t optbuf[12] = {tcpopt::kNop, tcpopt::kNop, tcpopt::kTimestamp, 10};
  store32(optbuf + 4, f.proxy_tsval);  // the backend's SYN-ACK TSval, in the client's clock
  store32(optbuf + 8, f.client_tsval);
  const bool ts = f.proxy_tsval != 0;  // the client leg negotiated timestamps
  // ack: what the backend acknowledged, the client's SYN and nothing more.
  SegmentSpec spec = toClient(f, client_ack, tcpflag::kAck);
  spec.window = static_cast<uint16_t>(std::min<uint32_t>(window, 0xffff));
  spec.options = ts ? optbuf : nullptr;
  spec.options_len = ts ? sizeof optbuf : 0;
  if (emitOut(spec)) ++counters.splice_windows_opened;
}

}  // namespace tandem
