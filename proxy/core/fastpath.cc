// The engine's side of the kernel fast path (the contract is in fastpath_port.h): which flows go
// on it and when they leave, what the engine takes back from what the kernel saw, and the close
// events the kernel reports.
//
// Going on: lazily, after the engine forwarded an ordinary segment (no SYN/FIN/RST) of a flow
// that qualifies, or when a zero-window splice completes (fastPathMaybeInstall, splice.cc
// spliceOpenWindow). Two port calls, one per direction; a refused second write erases the
// first, so the kernel never holds half a flow. After a refusal (the map is full)
// the next kInstallRetryAfter qualifying segments, of any flow, try nothing: a full map costs
// one failed syscall per that many segments rather than one per segment.
//
// While on it, the engine's window edges go stale. Whenever it reads the entries back (a packet
// of the flow still came through NFQUEUE, a RST event, a FIN event after which the flow leaves,
// idle expiry, the backend leaving) it takes the kernel's last_ns as the flow's idle time, its
// seq_end/ack as td_end/last_ack (unless a little behind: newer()) and an ack of a FIN as that
// FIN acknowledged; then, for anything but a RST or a close event after which the flow leaves,
// window tracking restarts liberal (as after a checkpoint install). A RST (and a flow leaving
// at TIME_WAIT or CLOSE) is judged against the refreshed edges instead: liberal edges would
// only ever draw a challenge (tcp_tracker.cc checkRst), and a flow the endpoint reset would
// linger for the established timeout.
//
// Leaving: retired (expiry, reset, reopen), re-bound or moved, backend no longer UP, node
// standby, a RST through NFQUEUE (a FIN too without close-fast), or a close event or packet
// that leaves it in TIME_WAIT or CLOSE (a closed flow must not hold map entries for its
// TIME_WAIT linger: at 10^5 connections/s that would be millions). With close-fast the kernel
// reports each FIN and the first packet acknowledging each FIN (fastpath_abi.h), so a close
// reaches TIME_WAIT without a packet through NFQUEUE; a FIN that did come through NFQUEUE is
// passed on to the kernel (fastPathAfterFin) so that its acknowledgement is reported too.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "common/segment_writer.h"
#include "common/seq.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/fastpath_entry.h"
#include "proxy/core/tcp_tracker.h"
#include "proxy/core/translator.h"

namespace tandem {
namespace {

/// Qualifying segments let by after a refused install before the next attempt.
constexpr uint32_t kInstallRetryAfter = 256;

/// A sequence number of direction `d` as it arrived, in the tracker's space (the backend leg's:
/// client segments are translated before they are tracked, backend ones after).
uint32_t trackerSeq(const Flow& f, Direction d, uint32_t seq) noexcept {
  return d == Direction::kFromClient && f.has_seqadj
             ? seqForward(f.adj[dirIndex(Direction::kFromClient)], seq)
             : seq;
}
uint32_t trackerAck(const Flow& f, Direction d, uint32_t ack) noexcept {
  return d == Direction::kFromClient && f.has_seqadj
             ? ackBackward(f.adj[dirIndex(Direction::kFromBackend)], ack)
             : ack;
}

constexpr Direction kDirs[2] = {Direction::kFromClient, Direction::kFromBackend};

/// The newer of an edge the engine knows (kept while tracking was liberal) and the kernel's
/// (from its last packet that way): the kernel's, unless it lies a little behind (that packet
/// was a retransmission). "A little" is under 2^30: a flow that carried gigabytes in the kernel
/// since is not judged by a wrapped comparison.
uint32_t newer(uint32_t engine, uint32_t kernel) noexcept {
  const uint32_t behind = engine - kernel;
  return behind != 0 && behind < (1u << 30) ? engine : kernel;
}

bool qualifies(const Flow& f) noexcept {
  return f.state == TcpState::kEstablished && f.win[0].seen && f.win[1].seen &&
         !f.splice_pending && !f.sync_pending && !f.moving && !f.splice_await_data;
}

}  // namespace

void Engine::setFastPath(FastPathPort* port, bool close_fast) noexcept {
  impl_->fastPathForgetAll();
  impl_->fp = nullptr;
  impl_->fp_close_fast = close_fast;
  impl_->fp_retry_wait = 0;
  if (port == nullptr) return;
  if (impl_->fp_generation.size() < impl_->table.capacity()) {
    try {
      impl_->fp_generation.resize(impl_->table.capacity(), 0);
    } catch (...) {
      return;  // no memory for the generations: the fast path stays off
    }
  }
  impl_->fp = port;
}

void Engine::setFastPathSplice(bool on) noexcept { impl_->fp_splice = on; }

void Engine::Impl::fastPathForgetAll() noexcept {
  const uint32_t high = table.highWater();
  for (uint32_t i = 0; i < high; ++i) {
    Flow& f = table.at(i);
    f.fast_path_armed = false;  // the splice completes through NFQUEUE, or not here
    if (!f.in_use || !f.fast_path) continue;
    f.fast_path = false;
    f.fast_path_ever = false;  // a standby follows the active's checkpoints, not its old reports
    relearnWindows(f);  // the kernel moved them on
    ++counters.fastpath_removals;
  }
}

bool Engine::Impl::fastPathNewEntries(uint32_t index, tandem_fp_key* key,
                                      tandem_fp_rewrite* value) noexcept {
  if (fp_retry_wait > 0) {
    --fp_retry_wait;
    return false;
  }
  const Flow& f = table.at(index);
  for (size_t d = 0; d < 2; ++d)
    if (!fastPathEntry(f, kDirs[d], key[d], value[d])) return false;  // not a constant translation
  const uint32_t generation = ++fp_generation[index];
  for (size_t d = 0; d < 2; ++d) {
    value[d].flow_id = index;
    value[d].generation = generation;
    if (fp_close_fast) value[d].flags |= TANDEM_FP_CLOSE_FAST;
  }
  return true;
}

bool Engine::Impl::fastPathMayTake(const Flow& f) const noexcept {
  return !standby && !f.fast_path && !(f.splice && config.services[f.service].resplice) &&
         backends[f.service][f.backend].state == BackendState::kUp;
}

void Engine::Impl::fastPathRefused() noexcept {
  ++counters.fastpath_install_failed;
  fp_retry_wait = kInstallRetryAfter;
}

void Engine::Impl::fastPathOn(Flow& f) noexcept {
  f.fast_path = true;
  f.fast_path_ever = true;
  ++counters.fastpath_installs;
}

void Engine::Impl::fastPathMaybeInstall(uint32_t index, Direction trigger,
                                         InstallOrder order) noexcept {
  Flow& f = table.at(index);
  if (!fastPathMayTake(f) || !qualifies(f)) return;
  tandem_fp_key key[2];
  tandem_fp_rewrite value[2];
  if (!fastPathNewEntries(index, key, value)) return;
  // A segment with data (a splice flow's request, released after the backend's SYN-ACK): its
  // direction's entry only after it (install: the port may keep it until that segment's
  // verdict is sent), or the request's next segments, through the kernel, would overtake it.
  // The other direction at once: its next segments answer what this batch forwards, and may
  // reach the kernel before the batch's last verdict is sent. A bare ACK (a passthrough flow's
  // handshake ACK) may be overtaken: the segments after it carry its ack too; keeping its
  // direction's entry back would only queue the data the client sends right after it behind
  // the batch, to be overtaken in turn once the entry is written. Both after (a zero-window
  // splice's completion): nothing of the flow reaches the kernel before the ACK the engine
  // sends after this batch, and one batched write costs one system call instead of two; the
  // batch need not stop for it (fp_kept_installs counts the installs that must be written
  // right after their segment's verdict).
  const size_t t = dirIndex(trigger);
  const bool trigger_after = order != InstallOrder::kNow;
  const bool other_after = order == InstallOrder::kBothAfter;
  if (order == InstallOrder::kTriggerAfter) ++fp_kept_installs;
  if (!(trigger_after ? fp->install(key[t], value[t]) : fp->put(key[t], value[t]))) {
    fastPathRefused();
    return;
  }
  if (!(other_after ? fp->install(key[1 - t], value[1 - t]) : fp->put(key[1 - t], value[1 - t]))) {
    fp->erase(key[t]);  // never half a flow in the kernel
    fastPathRefused();
    return;
  }
  fastPathOn(f);
}

bool Engine::Impl::fastPathIsInstall(uint32_t index, uint32_t generation) const noexcept {
  return fp != nullptr && index < table.highWater() && index < fp_generation.size() &&
         table.at(index).in_use && fp_generation[index] == generation;
}

bool Engine::Impl::fastPathOvertakenAck(const Flow& f, Direction dir,
                                        const TcpPacket& pkt) const noexcept {
  if (!f.fast_path_ever || pkt.payloadLen() != 0 || !pkt.has(tcpflag::kAck) ||
      pkt.has(tcpflag::kSyn | tcpflag::kFin | tcpflag::kRst))
    return false;
  // last_ack holds since the install (both sides were seen then), refreshed from the kernel
  // just before (fastPathSlowPacket) while the flow is on the fast path: ack_seen may be false
  // after a liberal restart, the value is still the newest known.
  return seqBefore(trackerAck(f, dir, pkt.ack()), f.win[dirIndex(dir)].last_ack);
}

void Engine::Impl::fastPathErase(uint32_t index) noexcept {
  Flow& f = table.at(index);
  fastPathDisarm(index);
  if (!f.fast_path) return;
  f.fast_path = false;
  ++counters.fastpath_removals;
  if (fp == nullptr) return;
  for (Direction d : kDirs) fp->erase(fastPathKey(f, d));
}

void Engine::Impl::fastPathApplyAcks(uint32_t index, const FastSeen& seen) noexcept {
  Flow& f = table.at(index);
  bool changed = false;
  for (size_t d = 0; d < 2; ++d) {
    const tandem_fp_rewrite& r = seen.dir[d];
    if (!seen.found[d] || (r.tcp_flags & tcpflag::kAck) == 0) continue;
    changed = noteForwardedAck(f, kDirs[d], trackerAck(f, kDirs[d], r.ack)) || changed;
  }
  if (changed) touch(index);
}

void Engine::Impl::fastPathRefresh(uint32_t index, uint64_t now_ns, bool liberal,
                                   bool leave) noexcept {
  Flow& f = table.at(index);
  FastSeen seen;
  bool any = false;
  for (size_t d = 0; d < 2; ++d) {
    TcpWindow& w = f.win[d];
    if (!liberal) {
      // To be judged on (a RST, the RSTs of a reset): the best edges known. Both directions
      // were seen when the flow went on the fast path, and a liberal restart since (an earlier
      // packet here) kept their values, which no packet of that direction has moved since
      // unless the kernel has (below).
      w.seen = true;
      w.ack_seen = true;
    }
    tandem_fp_rewrite& r = seen.dir[d];
    const tandem_fp_key key = fastPathKey(f, kDirs[d]);
    seen.found[d] = fp != nullptr && (leave ? fp->take(key, r) : fp->get(key, r)) &&
                    r.last_ns != 0;
    if (!seen.found[d]) continue;
    any = true;
    // The kernel's clock may run ahead of the caller's now (read once per batch).
    f.last_seen_ns = std::max(f.last_seen_ns, std::min<uint64_t>(r.last_ns, now_ns));
    w.td_end = newer(w.td_end, trackerSeq(f, kDirs[d], r.seq_end));
    if (seqAfter(w.td_end, w.td_maxend)) w.td_maxend = w.td_end;
    w.seen = true;
    if ((r.tcp_flags & tcpflag::kAck) != 0) {
      w.last_ack = newer(w.last_ack, trackerAck(f, kDirs[d], r.ack));
      w.ack_seen = true;
    }
  }
  // The right edge of what each side may send is what the other side last advertised
  // (RCV.NXT + RCV.WND, RFC 9293 3.3.2): a RST up to there draws a challenge at its receiver
  // (RFC 5961 3.2), so it is not out of window here either. The engine's own td_maxend is as
  // old as the flow's install (maybe more than 2^31 behind: replaced, not compared).
  for (size_t d = 0; d < 2 && !liberal; ++d) {
    const size_t o = 1 - d;
    if (!seen.found[o] || (seen.dir[o].tcp_flags & tcpflag::kAck) == 0) continue;
    TcpWindow& sender = f.win[d];
    TcpWindow& receiver = f.win[o];
    const uint32_t wnd = uint32_t{seen.dir[o].window} << receiver.td_scale;
    if (receiver.td_maxwin < wnd) receiver.td_maxwin = wnd;
    const uint32_t right = receiver.last_ack + wnd;
    sender.td_maxend = seqAfter(right, sender.td_end) ? right : sender.td_end;
  }
  if (leave && f.fast_path) {  // erased above
    f.fast_path = false;
    ++counters.fastpath_removals;
  }
  if (any) {
    fastPathApplyAcks(index, seen);
    if (liberal) relearnWindows(f);
  }
}

void Engine::Impl::fastPathSlowPacket(uint32_t index, uint8_t flags, uint64_t now_ns) noexcept {
  ++counters.fastpath_slow_packets;
  fastPathRefresh(index, now_ns, (flags & tcpflag::kRst) == 0);
  // A RST is the engine's from here on (the kernel never takes one), and so is a FIN without
  // TANDEM_FP_CLOSE_FAST. With it, a FIN through here (one held while the backend leg opened,
  // typically: a short request and its FIN arrive together) leaves the flow on: the rest of the
  // close runs in the kernel, which learns of this FIN in fastPathAfterFin().
  if ((flags & tcpflag::kRst) != 0 || ((flags & tcpflag::kFin) != 0 && !fp_close_fast))
    fastPathErase(index);
}

void Engine::Impl::fastPathAfterFin(uint32_t index, Direction dir) noexcept {
  Flow& f = table.at(index);
  const TcpWindow& w = f.win[dirIndex(dir)];
  if (!f.fast_path || fp == nullptr || !w.fin_seen || w.fin_acked) return;
  tandem_fp_key key[2];
  tandem_fp_rewrite value[2];
  for (size_t d = 0; d < 2; ++d)
    if (!fastPathEntry(f, kDirs[d], key[d], value[d])) return;
  // The FIN's end in the tracker's space (the backend leg's), then in the space the other
  // direction's acks name: the backend acks client bytes in its own space, the client acks
  // backend bytes after the backend direction's adjustment.
  const size_t peer = dirIndex(other(dir));
  tandem_fp_rewrite& v = value[peer];
  v.flow_id = index;
  v.generation = fp_generation[index];
  v.flags |= TANDEM_FP_CLOSE_FAST;
  v.fin_state = TANDEM_FP_PEER_FIN;
  v.peer_fin_ack = dir == Direction::kFromClient
                       ? w.fin_end
                       : w.fin_end + ((value[dirIndex(dir)].flags & TANDEM_FP_SEQ) != 0
                                          ? value[dirIndex(dir)].seq_add
                                          : 0u);
  if (!fp->put(key[peer], v)) fastPathErase(index);  // cannot tell the kernel: the close is ours
}

void Engine::Impl::fastPathAfterClose(uint32_t index) noexcept {
  const Flow& f = table.at(index);
  if (f.fast_path && (f.state == TcpState::kTimeWait || f.state == TcpState::kClose))
    fastPathErase(index);
}

bool Engine::Impl::fastPathIdle(uint32_t index, uint64_t now_ns) noexcept {
  if (!table.at(index).fast_path) return true;
  fastPathRefresh(index, now_ns, false);
  return flowExpired(table.at(index), config.timeouts, now_ns);
}

void Engine::Impl::fastPathArm(uint32_t index) noexcept {
  Flow& f = table.at(index);
  const ServiceConfig& s = config.services[f.service];
  if (kbind_flow_id != 0) {
    // The kernel wrote both entries, armed, under its own id (Engine::fastPathBound), and chose
    // the backend from its copy of the states: the flow is taken as the kernel opened it, if it
    // is a first splice's handshake nothing holds.
    if (fp == nullptr || standby || !f.splice || !f.splice_pending || f.moving ||
        f.sync_pending || f.splice_await_data || f.client_held || f.fast_path_armed ||
        f.fast_path || !s.zero_window_handshake || s.resplice)
      return;
    try {
      if (kbind_of_slot.size() < table.capacity()) kbind_of_slot.resize(table.capacity(), 0);
      const uint64_t id = uint64_t{kbind_flow_id} << 32 | kbind_generation;
      if (kbind_of_slot[index] != 0) kbind_slots.erase(kbind_of_slot[index]);
      kbind_slots[id] = index;
      kbind_of_slot[index] = id;
    } catch (...) {
      return;  // not taken: the replay undoes the kernel's flow
    }
    fp_generation[index] = kbind_generation;
    f.fast_path_armed = true;
    ++counters.fastpath_splices_armed;
    kbind_taken = true;
    return;
  }
  // Only a first splice's handshake as spliceOpen() starts it, for a flow that could go on the
  // fast path at its completion (spliceOpenWindow): not while deferral holds the SYN-ACK for
  // the standby's acknowledgement, nor for a service that re-splices.
  if (fp == nullptr || !fp_splice || !f.splice || !fastPathMayTake(f) || f.fast_path_armed ||
      !f.splice_pending || f.moving || f.sync_pending || f.splice_await_data || f.client_held ||
      !s.zero_window_handshake)
    return;
  tandem_fp_key key[2];
  tandem_fp_rewrite value[2];
  if (!fastPathNewEntries(index, key, value)) return;
  for (size_t d = 0; d < 2; ++d) {  // nothing translated until the kernel completes the splice
    value[d].flags =
        static_cast<uint8_t>(TANDEM_FP_SYNACK | (value[d].flags & TANDEM_FP_CLOSE_FAST));
  }
  // What fastPathEntry() writes once the splice has its offsets and the kernel cannot know: the
  // client leg's own adjustment (zero for a first splice). The kernel fills in the rest from the
  // SYN-ACK, as splicePending() does.
  const int32_t client_off = f.adj[dirIndex(Direction::kFromClient)].offset_after;
  value[0].seq_add = static_cast<uint32_t>(client_off);
  value[1].ack_add = -static_cast<uint32_t>(client_off);
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  tandem_fp_rewrite& a = value[1];
  a.arm_state = TANDEM_FP_ARM_WAITING;
  a.arm_ack = c.td_end;  // the backend SYN's seq + 1, as the tracker expects it acknowledged
  a.arm_proxy_isn = f.proxy_isn;
  a.arm_proxy_tsval = f.proxy_tsval;
  a.arm_client_tsval = f.client_tsval;
  a.arm_client_window = f.client_window;
  a.arm_client_wscale = f.client_view_wscale;
  a.arm_flags = static_cast<uint8_t>(
      (c.td_end != 0 && f.proxy_tsval != 0 ? TANDEM_FP_ARM_F_TS : 0u) |
      (c.wscale_offered ? TANDEM_FP_ARM_F_WSCALE : 0u));
  if (!fp->putPair(key, value)) {
    fastPathRefused();
    return;
  }
  f.fast_path_armed = true;
  ++counters.fastpath_splices_armed;
}

void Engine::Impl::fastPathDisarm(uint32_t index) noexcept {
  Flow& f = table.at(index);
  if (!f.fast_path_armed) return;
  f.fast_path_armed = false;
  ++counters.fastpath_splices_disarmed;
  // Erased whether the kernel completed the splice meanwhile or not: if it did, its event is in
  // the ring and still applies (fastPathSpliced), with the flow off the fast path.
  if (fp != nullptr)
    for (Direction d : kDirs) fp->erase(fastPathKey(f, d));
}

void Engine::fastPathSpliced(const tandem_fp_splice_event& ev, uint64_t now_ns) noexcept {
  Impl& m = *impl_;
  const uint32_t index = m.kbindSlot(ev.head.flow_id, ev.head.generation);
  const uint32_t thl = ev.head.payload_len;
  // The event of the install this flow still has, for a splice still waiting for its SYN-ACK.
  // (A splice the engine completed itself from a duplicate SYN-ACK went on the fast path at a
  // newer generation, or not at all and is no longer pending: either way this event is old.)
  if (m.standby || ev.head.dir != 1 || !m.fastPathIsInstall(index, ev.head.generation) ||
      thl < 20 || thl > 60 || thl % 4 != 0) {
    ++counters_.fastpath_splice_events_stale;
    return;
  }
  Flow& f = m.table.at(index);
  if (!f.splice || !f.splice_pending || f.moving || f.splice_await_data || !f.source_addr.isV4() ||
      !f.backend_addr.isV4()) {
    ++counters_.fastpath_splice_events_stale;
    return;
  }
  // The SYN-ACK as it arrived: the backend leg's addresses, the header the kernel copied.
  uint8_t buf[128] = {};
  writeIpv4Header(buf, f.backend_addr.v4(), f.source_addr.v4(), static_cast<uint16_t>(20 + thl),
                  64);
  std::copy(ev.tcp_hdr, ev.tcp_hdr + thl, buf + 20);
  TcpPacket pkt;
  TcpOptions opts;
  if (parseTcpPacket(buf, 20 + thl, pkt) != ParseError::kNone ||
      parseTcpOptions(pkt.options(), pkt.optionsLen(), opts) != OptionError::kNone) {
    ++counters_.fastpath_splice_events_stale;  // the program parsed it: cannot happen
    return;
  }
  m.fp_kernel_splice = true;
  const Decision d = m.splicePending(index, Direction::kFromBackend, pkt, opts, buf, sizeof buf,
                                     PacketMeta{}, now_ns);
  m.fp_kernel_splice = false;
  if (d.verdict == Verdict::kAccept && !f.splice_pending) {
    ++counters_.fastpath_kernel_splices;
  } else {
    // The tracker refused what the kernel accepted (the program checks the same ack, so this
    // is not expected): the kernel's entries go and the flow stays pending, as a flow whose
    // SYN-ACK the tracker refused through NFQUEUE would (its SYN timer and connect timeout end
    // it).
    ++counters_.fastpath_splice_events_stale;
    m.fastPathErase(index);
  }
}

void Engine::fastPathBound(const tandem_fp_bind_event& ev, uint64_t now_ns) noexcept {
  Impl& m = *impl_;
  const uint32_t thl = ev.head.payload_len;
  if (thl < 20 || thl > 60 || thl % 4 != 0 || (ev.head.flow_id & 0x80000000u) == 0) {
    ++counters_.fastpath_bind_stale;  // the program wrote it: cannot happen
    return;
  }
  // The cookie ACK as it arrived; the engine takes it as from NFQUEUE, on the kernel's backend,
  // and what it writes (the backend SYN) is not sent: the kernel sent it.
  uint8_t buf[128] = {};
  writeIpv4Header(buf, ntohl(ev.saddr), ntohl(ev.daddr), static_cast<uint16_t>(20 + thl), 64);
  std::copy(ev.tcp_hdr, ev.tcp_hdr + thl, buf + 20);
  m.kbind_flow_id = ev.head.flow_id;
  m.kbind_generation = ev.head.generation;
  m.kbind_backend = static_cast<int>(ev.backend);
  m.kbind_taken = false;
  const bool standby = m.standby;
  // At the kernel's instant (the same monotonic clock): the cookie is judged as the kernel
  // judged it, even if a period turned since.
  const uint64_t at = ev.head.ns != 0 && ev.head.ns <= now_ns ? ev.head.ns : now_ns;
  const Decision d = standby ? Decision{} : process(buf, 20 + thl, sizeof buf, PacketMeta{}, at);
  const bool taken = m.kbind_taken && d.verdict == Verdict::kAccept;
  m.kbind_flow_id = 0;
  m.kbind_backend = -1;
  m.kbind_taken = false;
  if (taken) {
    ++counters_.fastpath_bound;
    return;
  }
  m.kbindUndo(ev);
}

void Engine::Impl::kbindUndo(const tandem_fp_bind_event& ev) noexcept {
  ++counters.fastpath_bind_undone;
  // The kernel's entries, if they are still its own (a flow the engine has of that tuple may
  // have written its own since).
  tandem_fp_key keys[2];
  keys[0] = {ev.saddr, ev.daddr, 0, 0};
  std::memcpy(&keys[0].sport, &ev.tcp_hdr[0], 2);
  std::memcpy(&keys[0].dport, &ev.tcp_hdr[2], 2);
  bool kernels = false;
  if (fp != nullptr) {
    tandem_fp_rewrite v{};
    if (fp->get(keys[0], v) && v.flow_id == ev.head.flow_id &&
        v.generation == ev.head.generation) {
      kernels = true;
      keys[1] = {v.daddr, v.saddr, v.dport, v.sport};
      (void)fp->erase(keys[0]);
      tandem_fp_rewrite w{};
      if (fp->get(keys[1], w) && w.flow_id == ev.head.flow_id &&
          w.generation == ev.head.generation)
        (void)fp->erase(keys[1]);
    }
  }
  // A flow of that tuple the engine has (the ACK was one of its segments): its connection is
  // the one the backend knows; nothing is reset.
  FlowKey key;
  key.saddr = IpAddr::fromV4(ntohl(ev.saddr));
  key.daddr = IpAddr::fromV4(ntohl(ev.daddr));
  key.sport = static_cast<uint16_t>(ev.tcp_hdr[0] << 8 | ev.tcp_hdr[1]);
  key.dport = static_cast<uint16_t>(ev.tcp_hdr[2] << 8 | ev.tcp_hdr[3]);
  if (table.find(key) || !kernels) return;
  // Otherwise the kernel opened a connection nobody tracks: reset both legs, as a backend that
  // refused would have them (the backend's with the SYN's seq + 1, the client's with the
  // cookie + 1, both exactly what each expects next).
  const uint32_t client_isn_1 = ev.head.seq;
  const uint32_t cookie_1 = ev.head.ack;
  SegmentSpec be;
  be.saddr = ntohl(ev.saddr);
  be.daddr = ntohl(keys[1].saddr);
  be.sport = key.sport;
  be.dport = static_cast<uint16_t>(ntohs(keys[1].sport));
  be.seq = client_isn_1;
  be.flags = tcpflag::kRst;
  SegmentSpec cl;
  cl.saddr = ntohl(ev.daddr);
  cl.daddr = ntohl(ev.saddr);
  cl.sport = key.dport;
  cl.dport = key.sport;
  cl.seq = cookie_1;
  cl.ack = client_isn_1;
  cl.flags = tcpflag::kRst | tcpflag::kAck;
  for (const SegmentSpec* spec : {&be, &cl}) {
    uint8_t seg[60];
    const size_t n = writeTcpSegment(*spec, seg, sizeof seg);
    if (n == 0 || !outbox.push(seg, n)) ++counters.outbox_dropped;
  }
}

void Engine::fastPathInstallLost(uint32_t flow_id, uint32_t generation,
                                 uint64_t now_ns) noexcept {
  Impl& m = *impl_;
  if (!m.fastPathIsInstall(flow_id, generation) || !m.table.at(flow_id).fast_path)
    return;  // that install is gone already (erased, or the slot reused since)
  // The other direction may have been written and used meanwhile: what it saw counts, read as
  // the entries are erased.
  m.fastPathRefresh(flow_id, now_ns, true, /*leave=*/true);
  m.fastPathRefused();
}

void Engine::fastPathClose(const tandem_fp_event& ev, uint64_t now_ns) noexcept {
  Impl& m = *impl_;
  ++counters_.fastpath_events;
  const uint32_t index = m.kbindSlot(ev.flow_id, ev.generation);
  if (ev.dir > 1 || !m.fastPathIsInstall(index, ev.generation) ||
      !m.table.at(index).fast_path_ever) {
    // Not this incarnation's: the slot was freed (and maybe reused, or reinstalled at a newer
    // generation) since. An event of a flow that merely left the fast path (a RST or a FIN
    // through NFQUEUE took it off while the kernel's report was in the ring) still counts:
    // the kernel did forward that packet.
    ++counters_.fastpath_events_stale;
    return;
  }
  Flow& f = m.table.at(index);
  const Direction dir = kDirs[ev.dir];
  const bool rst = (ev.tcp_flags & tcpflag::kRst) != 0;
  // A RST is judged on the kernel's edges. A FIN needs none of them: tracking restarts liberal
  // and learns from it; the entries are read only if the flow then leaves (below), so a
  // half-close costs no syscall.
  if (!f.fast_path) {
    // Off the fast path since: the engine has seen every packet after it, its edges are current.
  } else if (rst) {
    m.fastPathRefresh(index, now_ns, false);
  } else {
    relearnWindows(f);
  }

  // The segment the event describes, header only, as the tracker would have seen it. Its
  // payload is not here: the sequence number moves past it instead, which leaves seq + length
  // (the FIN's end) exactly as it was. A RST's payload (RFC 9293 3.5.3 diagnostics) takes no
  // sequence space and its seq is what RFC 5961 judges: it stays.
  SegmentSpec spec;
  spec.saddr = dir == Direction::kFromClient ? f.client_addr.v4() : f.backend_addr.v4();
  spec.daddr = dir == Direction::kFromClient ? f.vip_addr.v4() : f.source_addr.v4();
  spec.sport = dir == Direction::kFromClient ? f.client_port : f.backend_port;
  spec.dport = dir == Direction::kFromClient ? f.vip_port : f.source_port;
  spec.seq = trackerSeq(f, dir, ev.seq) + (rst ? 0u : ev.payload_len);
  spec.ack = (ev.tcp_flags & tcpflag::kAck) != 0 ? trackerAck(f, dir, ev.ack) : 0;
  spec.flags = ev.tcp_flags;
  spec.window = ev.window;
  uint8_t buf[64];
  TcpPacket pkt;
  TcpOptions opts;
  const size_t n = writeTcpSegment(spec, buf, sizeof buf);
  if (n == 0 || parseTcpPacket(buf, n, pkt) != ParseError::kNone) return;  // cannot happen

  const TcpState before = f.state;
  // Refused (an impossible flag combination, a RST outside the window): the kernel forwarded
  // it anyway, and the tracker changes nothing, as for the same packet through the engine.
  trackSegment(f, dir, pkt, opts, now_ns, counters_);
  if (dir == Direction::kFromBackend && rst && f.state == TcpState::kClose &&
      before != TcpState::kClose && before != TcpState::kTimeWait)
    ++m.backends[f.service][f.backend].rsts;  // passive health signal, as processParsed counts
  if (f.state != before) m.touch(index);
  if (rst && f.state != TcpState::kClose && f.fast_path) relearnWindows(f);
  if (f.state == TcpState::kTimeWait || f.state == TcpState::kClose) {
    // Leaving: what the kernel saw, the last ACK included if it forwarded it before this event
    // was read (the usual case: the ring is drained after the burst), then off. Its edges are
    // taken as exact (both sides' FINs are known), not restarted liberal: a RST after the close
    // is judged as without the fast path (exact: CLOSE; a closed socket's answer to a late
    // duplicate: dropped as rst_after_close), not passed as a challenge.
    if (!rst && f.fast_path) m.fastPathRefresh(index, now_ns, false, /*leave=*/true);
    m.fastPathErase(index);  // after a RST (or off already): nothing left to read
  }
}

}  // namespace tandem
