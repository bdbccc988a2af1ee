#include "proxy/tandemd/flow_record.h"

#include "proxy/core/engine_config.h"

namespace tandem {
namespace {

// The wire codes are the core's enum values today; a new state or mode must be mapped here.
static_assert(static_cast<uint8_t>(TcpState::kCount) == sync::kTcpStateCount,
              "TcpState changed: update the sync wire codes and flowToRecord()");
static_assert(static_cast<uint8_t>(Mode::kSplice) + 1 == sync::kModeCount,
              "Mode changed: update the sync wire codes and flowToRecord()");

uint8_t windowFlags(const TcpWindow& w) noexcept {
  uint8_t f = 0;
  if (w.seen) f |= sync::kWinSeen;
  if (w.wscale_offered) f |= sync::kWinScaleOffered;
  if (w.ack_seen) f |= sync::kWinAckSeen;
  if (w.fin_seen) f |= sync::kWinFinSeen;
  if (w.fin_acked) f |= sync::kWinFinAcked;
  return f;
}

uint8_t spliceFlags(const Flow& f) noexcept {
  uint8_t b = 0;
  if (f.splice_pending) b |= sync::kSplicePending;
  if (f.has_ts_adj) b |= sync::kSpliceTsAdj;
  if (f.rescale_window) b |= sync::kSpliceRescale;
  if (f.syn_sack) b |= sync::kSpliceSynSack;
  if (f.syn_ecn) b |= sync::kSpliceSynEcn;
  if (f.moving) b |= sync::kSpliceMoving;
  if (f.client_spoke_last) b |= sync::kSpliceClientLast;
  if (f.splice_await_data) b |= sync::kSpliceAwaitData;
  return b;
}

}  // namespace

sync::FlowKey toSyncKey(const FlowKey& k) noexcept {
  return sync::FlowKey{k.saddr, k.daddr, k.sport, k.dport};
}

FlowKey toCoreKey(const sync::FlowKey& k) noexcept {
  return FlowKey{k.client_addr, k.vip_addr, k.client_port, k.vip_port};
}

sync::FlowRecord flowToRecord(const Flow& f, uint64_t now_ns) noexcept {
  sync::FlowRecord r;
  r.key = sync::FlowKey{f.client_addr, f.vip_addr, f.client_port, f.vip_port};
  r.backend_addr = f.backend_addr;
  r.source_addr = f.source_addr;
  r.backend_port = f.backend_port;
  r.source_port = f.source_port;
  r.service = f.service;
  r.backend = f.backend;
  r.mode = static_cast<uint8_t>(f.splice ? Mode::kSplice : Mode::kPassthrough);
  r.tcp_state = static_cast<uint8_t>(f.state);
  r.flags = f.has_seqadj ? sync::kFlowHasSeqAdj : 0;
  const uint64_t idle_ms = now_ns > f.last_seen_ns ? (now_ns - f.last_seen_ns) / 1'000'000 : 0;
  r.idle_ms = idle_ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(idle_ms);
  for (size_t d = 0; d < 2; ++d) {
    const TcpWindow& w = f.win[d];
    r.win[d] = sync::WindowRecord{w.td_end, w.td_maxend, w.td_maxwin, w.last_ack,
                                  w.fin_end,  w.td_scale,  windowFlags(w)};
    r.adj[d] = sync::SeqAdjRecord{f.adj[d].correction_pos, f.adj[d].offset_before,
                                  f.adj[d].offset_after};
  }
  r.splice_fields = true;
  if (f.splice) {
    r.splice = sync::SpliceRecord{spliceFlags(f),  f.backend_wscale, f.client_view_wscale,
                                  f.syn_retries,   f.ts_offset,      f.proxy_isn,
                                  f.client_tsval,  f.proxy_tsval,    f.client_window,
                                  f.syn_mss};
  }
  return r;
}

bool recordToFlow(const sync::FlowRecord& r, Flow& f) noexcept {
  if (r.mode >= sync::kModeCount || r.tcp_state >= sync::kTcpStateCount) return false;
  const bool splice = r.mode == static_cast<uint8_t>(Mode::kSplice);
  if (splice && !r.splice_fields) return false;  // a revision-1.0 sender: cannot translate it
  f = Flow{};
  f.client_addr = r.key.client_addr;
  f.vip_addr = r.key.vip_addr;
  f.client_port = r.key.client_port;
  f.vip_port = r.key.vip_port;
  f.backend_addr = r.backend_addr;
  f.source_addr = r.source_addr;
  f.backend_port = r.backend_port;
  f.source_port = r.source_port;
  f.service = r.service;
  f.backend = r.backend;
  f.state = static_cast<TcpState>(r.tcp_state);
  f.has_seqadj = (r.flags & sync::kFlowHasSeqAdj) != 0;
  for (size_t d = 0; d < 2; ++d) {
    const sync::WindowRecord& w = r.win[d];
    TcpWindow& t = f.win[d];
    t.td_end = w.td_end;
    t.td_maxend = w.td_maxend;
    t.td_maxwin = w.td_maxwin;
    t.last_ack = w.last_ack;
    t.fin_end = w.fin_end;
    t.td_scale = w.scale;
    t.seen = (w.flags & sync::kWinSeen) != 0;
    t.wscale_offered = (w.flags & sync::kWinScaleOffered) != 0;
    t.ack_seen = (w.flags & sync::kWinAckSeen) != 0;
    t.fin_seen = (w.flags & sync::kWinFinSeen) != 0;
    t.fin_acked = (w.flags & sync::kWinFinAcked) != 0;
    f.adj[d] = SeqAdj{r.adj[d].correction_pos, r.adj[d].offset_before, r.adj[d].offset_after};
  }
  if (splice) {
    const sync::SpliceRecord& s = r.splice;
    f.splice = true;
    f.splice_pending = (s.flags & sync::kSplicePending) != 0;
    f.has_ts_adj = (s.flags & sync::kSpliceTsAdj) != 0;
    f.rescale_window = (s.flags & sync::kSpliceRescale) != 0;
    f.syn_sack = (s.flags & sync::kSpliceSynSack) != 0;
    f.syn_ecn = (s.flags & sync::kSpliceSynEcn) != 0;
    f.moving = (s.flags & sync::kSpliceMoving) != 0;
    f.client_spoke_last = (s.flags & sync::kSpliceClientLast) != 0;
    f.splice_await_data = (s.flags & sync::kSpliceAwaitData) != 0;
    f.backend_wscale = s.backend_wscale;
    f.client_view_wscale = s.client_view_wscale;
    f.syn_retries = s.syn_retries;
    f.ts_offset = s.ts_offset;
    f.proxy_isn = s.proxy_isn;
    f.client_tsval = s.client_tsval;
    f.proxy_tsval = s.proxy_tsval;
    f.client_window = s.client_window;
    f.syn_mss = s.syn_mss;
  }
  return true;
}

}  // namespace tandem
