// Backend states and re-splicing: new flows go only to UP backends; the flows of a backend that
// leaves (down, draining, disabled) move to another backend when they are quiescent, and are
// reset on both legs when they cannot move.
//
// A move reuses the splice handshake: the flow is taken out of the index under its old backend
// leg, created again with an UP backend (and a new SNAT port), marked splice_pending and given
// the SYN of the new leg through the outbox. The new backend's SYN-ACK then goes through the
// ordinary splicePending path, which sets the backend direction's offsets from proxy_isn and
// proxy_tsval, answers the backend with the ACK, and releases the client data held meanwhile.
// Here proxy_isn and proxy_tsval are not a cookie's but the points where the client's view of
// its server continues (planResplice).
#include "proxy/core/resplice.h"

#include <algorithm>

#include "common/packet.h"
#include "common/seq.h"
#include "common/tcp_options.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/tcp_tracker.h"
#include "proxy/core/translator.h"

namespace tandem {

const char* backendStateName(BackendState s) noexcept {
  switch (s) {
    case BackendState::kUp: return "up";
    case BackendState::kDown: return "down";
    case BackendState::kDraining: return "draining";
    case BackendState::kDisabled: return "disabled";
  }
  return "?";
}

bool flowQuiescent(const Flow& f) noexcept {
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  const TcpWindow& b = f.win[dirIndex(Direction::kFromBackend)];
  return f.state == TcpState::kEstablished && !f.splice_pending && c.seen && b.seen &&
         c.ack_seen && b.ack_seen && !c.fin_seen && !b.fin_seen && c.td_end == b.last_ack &&
         b.td_end == c.last_ack && !f.client_spoke_last;
}

bool flowReplayable(const Flow& f) noexcept {
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  const TcpWindow& b = f.win[dirIndex(Direction::kFromBackend)];
  return f.quiet_seen && f.state == TcpState::kEstablished && !f.splice_pending && c.seen &&
         b.seen && c.ack_seen && b.ack_seen && !c.fin_seen && !b.fin_seen &&
         f.client_spoke_last && c.last_ack == b.td_end && b.last_ack == f.quiet_client;
}

namespace {

/// A client sequence number from the backend leg's space (the inverse of adj[client], which
/// is zero for splice flows: their backend legs continue the client's ISN).
uint32_t clientSeq(const Flow& f, uint32_t backend_space) noexcept {
  const SeqAdj& adj = f.adj[dirIndex(Direction::kFromClient)];
  return backend_space - static_cast<uint32_t>(adj.offset_after);
}

/// A backend sequence number as the client sees it.
uint32_t clientView(const Flow& f, uint32_t backend_seq) noexcept {
  return seqForward(f.adj[dirIndex(Direction::kFromBackend)], backend_seq);
}

}  // namespace

ResplicePlan planResplice(const Flow& f) noexcept {
  const TcpWindow& b = f.win[dirIndex(Direction::kFromBackend)];
  ResplicePlan p;
  p.syn_seq = clientSeq(f, b.last_ack) - 1;  // == the client's td_end when quiescent
  p.proxy_isn = clientView(f, b.td_end) - 1;
  p.proxy_tsval = f.proxy_tsval + 1;
  if (p.proxy_tsval == 0) p.proxy_tsval = 1;  // zero means "no timestamps" to the splice path
  return p;
}

SeqAdj spliceBackendAdj(uint32_t proxy_isn, uint32_t backend_isn) noexcept {
  const int32_t off = static_cast<int32_t>(proxy_isn - backend_isn);
  return {backend_isn, off, off};
}

size_t buildFlowResets(const Flow& f, SegmentSpec out[4]) noexcept {
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  const TcpWindow& b = f.win[dirIndex(Direction::kFromBackend)];
  size_t n = 0;
  auto add = [&](bool to_client, uint32_t seq, uint32_t ack) {
    SegmentSpec s;
    if (to_client) {
      s.saddr = f.vip_addr.v4();
      s.daddr = f.client_addr.v4();
      s.sport = f.vip_port;
      s.dport = f.client_port;
    } else {
      s.saddr = f.source_addr.v4();
      s.daddr = f.backend_addr.v4();
      s.sport = f.source_port;
      s.dport = f.backend_port;
    }
    s.seq = seq;
    s.ack = ack;
    s.flags = tcpflag::kRst | tcpflag::kAck;
    out[n++] = s;
  };
  // To the client, in its view of the server's sequence space.
  const uint32_t client_ack = clientSeq(f, c.td_end);
  const uint32_t all_sent =
      b.seen ? clientView(f, b.td_end) : f.proxy_isn + 1;  // splice: nothing sent yet
  add(true, all_sent, client_ack);
  if (b.seen && c.ack_seen && c.last_ack != b.td_end) {
    add(true, clientView(f, c.last_ack), client_ack);
  }
  // To the backend, in its own leg's space.
  add(false, c.td_end, b.td_end);
  if (b.ack_seen && b.last_ack != c.td_end) add(false, b.last_ack, b.td_end);
  return n;
}

namespace {

/// The new backend leg's SYN: the client's options as the flow kept them (cf. splice.cc).
SegmentSpec resplicedSyn(const Flow& f, const Flow& old, uint32_t isn, uint8_t* optbuf) noexcept {
  const TcpWindow& c = old.win[dirIndex(Direction::kFromClient)];
  TcpOptions syn;
  syn.has_mss = true;
  syn.mss = old.syn_mss;
  syn.has_wscale = c.wscale_offered;
  syn.wscale = c.td_scale;
  syn.sack_permitted = old.syn_sack;
  syn.has_timestamp = old.client_tsval != 0;
  syn.ts_val = old.client_tsval;
  SegmentSpec spec;
  spec.saddr = f.source_addr.v4();
  spec.daddr = f.backend_addr.v4();
  spec.sport = f.source_port;
  spec.dport = f.backend_port;
  spec.seq = isn;
  spec.flags = static_cast<uint8_t>(tcpflag::kSyn |
                                    (old.syn_ecn ? tcpflag::kEce | tcpflag::kCwr : 0));
  const uint64_t win = uint64_t{old.client_window} << (c.wscale_offered ? c.td_scale : 0);
  spec.window = static_cast<uint16_t>(std::min<uint64_t>(win, 0xffff));  // SYN: unscaled
  spec.options = optbuf;
  spec.options_len = buildSynOptions(syn, optbuf, 40);
  return spec;
}

}  // namespace

bool Engine::Impl::emitOut(const SegmentSpec& spec) noexcept {
  uint8_t buf[Outbox::kMaxPacket];
  const size_t n = writeTcpSegment(spec, buf, sizeof buf);
  if (n != 0 && outbox.push(buf, n)) return true;
  ++counters.outbox_dropped;
  return false;
}

void Engine::Impl::noteToClient(Flow& f, const TcpOptions& opts) noexcept {
  if (!f.has_ts_adj || !opts.has_timestamp) return;
  const uint32_t v = opts.ts_val + f.ts_offset;
  if (seqAfter(v, f.proxy_tsval)) f.proxy_tsval = v;
}

void Engine::Impl::resetFlow(uint32_t index, uint64_t& reason_counter) noexcept {
  Flow& f = table.at(index);
  SegmentSpec rst[4];
  const size_t n = buildFlowResets(f, rst);
  for (size_t i = 0; i < n; ++i) emitOut(rst[i]);
  ++reason_counter;
  ++backends[f.service][f.backend].flows_reset;
  f.state = TcpState::kClose;  // counted as closed, logged for the standby
  retire(index);
}

uint32_t Engine::Impl::moveFlow(uint32_t index, uint64_t now_ns) noexcept {
  fastPathErase(index);  // re-bound: the kernel's entries name the old leg
  const Flow old = table.at(index);  // copied: the slot is freed and taken again below
  const bool gone = backendGone(backends[old.service][old.backend].state);
  const auto& pool = backends[old.service];
  const bool any_up = std::any_of(pool.begin(), pool.end(), [](const BackendStats& b) {
    return b.state == BackendState::kUp;
  });
  if (!any_up) {
    if (!gone) return index;  // draining with nowhere to go: stay
    resetFlow(index, counters.flows_reset_no_backend);
    return FlowTable::kNone;
  }
  const ResplicePlan plan = planResplice(old);

  table.remove(index);  // both legs leave the index; the client leg comes back below
  FlowTable::Hit hit;
  avoid_backend = old.backend;  // another UP backend if there is one (the old one just closed)
  const DropReason created = createFlow(old.service, FlowTable::clientKey(old), hit);
  avoid_backend = -1;
  if (created != DropReason::kNone) {
    // No SNAT port or a tuple clash on every UP backend: the flow cannot move.
    const uint32_t back = table.allocate();  // the slot just freed: cannot fail
    table.at(back) = old;
    table.insert(back);
    if (!gone) return back;
    resetFlow(back, counters.flows_reset_no_backend);
    return FlowTable::kNone;
  }
  --counters.flows_created;  // the same flow, moved

  // The old leg gets a RST at the last byte it acknowledged, which is its RCV.NXT: a draining
  // backend frees its connection at once; a dead one ignores it.
  SegmentSpec rst;
  rst.saddr = old.source_addr.v4();
  rst.daddr = old.backend_addr.v4();
  rst.sport = old.source_port;
  rst.dport = old.backend_port;
  rst.seq = old.win[dirIndex(Direction::kFromBackend)].last_ack;  // its RCV.NXT
  rst.ack = old.win[dirIndex(Direction::kFromBackend)].td_end;
  rst.flags = tcpflag::kRst | tcpflag::kAck;
  emitOut(rst);

  Flow& f = table.at(hit.index);
  f.splice = true;
  f.splice_pending = true;
  f.moving = true;
  f.proxy_isn = plan.proxy_isn;
  f.proxy_tsval = old.client_tsval != 0 ? plan.proxy_tsval : 0;
  f.client_tsval = old.client_tsval;
  f.client_window = old.client_window;
  f.client_view_wscale = old.client_view_wscale;
  f.syn_mss = old.syn_mss;
  f.syn_sack = old.syn_sack;
  f.syn_ecn = old.syn_ecn;

  uint8_t optbuf[40];
  const SegmentSpec syn = resplicedSyn(f, old, plan.syn_seq, optbuf);
  uint8_t buf[Outbox::kMaxPacket];
  const size_t n = writeTcpSegment(syn, buf, sizeof buf);
  TcpPacket pkt;
  TcpOptions opts;
  // The tracker learns the new leg from its SYN, as for a first splice (state SYN_SENT).
  if (n != 0 && parseTcpPacket(buf, n, pkt) == ParseError::kNone &&
      parseTcpOptions(pkt.options(), pkt.optionsLen(), opts) == OptionError::kNone) {
    trackSegment(f, Direction::kFromClient, pkt, opts, now_ns, counters);
  }
  // A SYN lost here (outbox full) is sent again when the client retransmits (splicePending).
  if (n == 0 || !outbox.push(buf, n)) ++counters.outbox_dropped;
  f.last_seen_ns = now_ns;
  touch(hit.index);  // the new binding goes to the standby
  ++counters.resplices_started;
  ++backends[old.service][old.backend].flows_moved;
  return hit.index;
}

bool Engine::Impl::canMoveNow(const Flow& f, uint64_t now_ns) const noexcept {
  if (!f.splice || f.splice_pending || !config.services[f.service].resplice) return false;
  const BackendStats& b = backends[f.service][f.backend];
  const bool gone = backendGone(b.state);
  if (gone && flowReplayable(f)) return true;
  if (!flowQuiescent(f)) return false;
  // A dead backend: idle since it was last seen alive, so the response was complete while it
  // lived. A live one (draining, or closing the flow): idle long enough to be between requests.
  if (gone) return f.last_seen_ns <= b.last_alive_ns;
  return now_ns - f.last_seen_ns >= config.splice.resplice_min_idle_ns;
}

uint32_t Engine::Impl::beforeClientSegment(uint32_t index, uint64_t now_ns) noexcept {
  const Flow& f = table.at(index);
  if (f.state == TcpState::kTimeWait || f.state == TcpState::kClose) return index;
  const bool can_move = f.splice && config.services[f.service].resplice;
  const bool gone = backendGone(backends[f.service][f.backend].state);
  if (canMoveNow(f, now_ns)) return moveFlow(index, now_ns);
  if (!gone) return index;  // draining: carry on until idle
  resetFlow(index, can_move ? counters.flows_reset_in_flight : counters.flows_reset_resplice_off);
  return FlowTable::kNone;
}

int Engine::Impl::absorbBackendClose(uint32_t index, bool payload, uint64_t now_ns) noexcept {
  const Flow& f = table.at(index);
  if (payload || !f.splice || f.splice_pending || !config.services[f.service].resplice ||
      !flowQuiescent(f) || now_ns - f.last_seen_ns < config.splice.resplice_min_idle_ns)
    return 0;  // possibly the end of a response: the client must see it
  const uint32_t moved = moveFlow(index, now_ns);
  if (moved == FlowTable::kNone) return -1;  // reset: its backend is gone, nowhere to go
  return table.at(moved).moving ? 1 : 0;     // 0: draining with nowhere to go, stays
}

void Engine::Impl::afterSegment(uint32_t index, Direction dir, bool payload,
                                uint64_t now_ns) noexcept {
  Flow& f = table.at(index);
  const auto now_t = static_cast<uint16_t>(now_ns >> 22);  // Flow::wait_since's units
  const bool all_acked = f.win[dirIndex(Direction::kFromClient)].td_end ==
                         f.win[dirIndex(Direction::kFromBackend)].last_ack;
  if (dir == Direction::kFromBackend) {
    f.client_waiting = !all_acked;
    f.wait_since = now_t;  // alive: a wait, if any, counts from here
    f.stall_noted = false;
  } else if (payload && !f.client_waiting) {
    f.client_waiting = true;  // the client's bytes are due to be acknowledged from now
    f.wait_since = now_t;
  } else if (payload && !f.stall_noted && !all_acked && config.services[f.service].resplice &&
             static_cast<uint16_t>(now_t - f.wait_since) >=
                 (config.splice.resplice_min_idle_ns * 3 / 4 >> 22)) {
    // The client sends again (its retransmission timer, at least 200 ms on Linux) and the
    // backend has acknowledged nothing since: a host that no longer answers, seen from the data
    // path before the next health check.
    f.stall_noted = true;
    ++backends[f.service][f.backend].stalls;
  }
  if (payload) f.client_spoke_last = dir == Direction::kFromClient;
  noteQuiescence(f);
}

void Engine::setBackendState(size_t service, size_t backend, BackendState state,
                             uint64_t now_ns) noexcept {
  if (service >= impl_->backends.size() || backend >= impl_->backends[service].size()) return;
  impl_->backends[service][backend].state = state;
  bool leaving = false;
  for (const auto& svc : impl_->backends)
    for (const BackendStats& b : svc) leaving = leaving || b.state != BackendState::kUp;
  impl_->any_leaving = leaving;
  if (state == BackendState::kUp || impl_->standby) return;  // a standby follows checkpoints
  FlowTable& table = impl_->table;
  const uint32_t high = table.highWater();
  for (uint32_t i = 0; i < high; ++i) {
    const Flow& f = table.at(i);
    if (!f.in_use || f.service != service || f.backend != backend || f.splice_pending) continue;
    const bool fast = f.fast_path;
    if (fast) {  // off the fast path, with the kernel's edges for the RSTs a reset sends
      impl_->fastPathRefresh(i, now_ns, false);
      impl_->fastPathErase(i);
    }
    // Moves, resets, or leaves a busy draining flow.
    const uint32_t kept = impl_->beforeClientSegment(i, now_ns);
    if (fast && kept != FlowTable::kNone) relearnWindows(impl_->table.at(kept));
  }
}

void Engine::noteBackendAlive(size_t service, size_t backend, uint64_t now_ns) noexcept {
  if (service >= impl_->backends.size() || backend >= impl_->backends[service].size()) return;
  impl_->backends[service][backend].last_alive_ns = now_ns;
}

BackendStats Engine::backendStats(size_t service, size_t backend) const noexcept {
  if (service >= impl_->backends.size() || backend >= impl_->backends[service].size()) return {};
  return impl_->backends[service][backend];
}

size_t Engine::drainOutbox(const std::function<void(const uint8_t*, size_t)>& fn) {
  return impl_->outbox.drain(fn);
}

}  // namespace tandem
