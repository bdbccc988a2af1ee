// Engine::observeShadow: a vmac standby keeps its flows' window edges warm from the frames it
// shadows (issue 6, item 2). Read-only towards forwarding: it only moves window edges.
// Engine::planShadowReplay: the takeover's replay plan, classified by this table.
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/shadow_ring.h"
#include "proxy/core/tcp_tracker.h"

namespace tandem {

bool Engine::observeShadow(const uint8_t* data, size_t len) noexcept {
  TcpPacket pkt;
  // parseTcpPacket only views the bytes; nothing here writes them.
  if (parseTcpPacket(const_cast<uint8_t*>(data), len, pkt) != ParseError::kNone) return false;
  TcpOptions opts;
  if (parseTcpOptions(pkt.options(), pkt.optionsLen(), opts) != OptionError::kNone) return false;
  const FlowKey key{IpAddr::fromV4(pkt.saddr()), IpAddr::fromV4(pkt.daddr()), pkt.sport(),
                    pkt.dport()};
  const FlowTable::Hit hit = impl_->table.find(key);
  if (!hit) return false;
  Flow& f = impl_->table.at(hit.index);
  // The active tracks a seq-adjusted (splice) flow's client segments after translating them
  // (engine.cc): the wire's sequence space is not the tracker's. Those stay liberal until seen.
  if (f.splice || f.has_seqadj) return false;
  return learnWindowEdges(f, hit.dir, pkt, opts);
}

void Engine::planShadowReplay(const ShadowRing& ring, uint64_t from_ns, uint64_t until_ns,
                              uint64_t min_id, std::vector<uint32_t>& out,
                              ReplayPlanStats& stats) {
  ReplayPlanStats pass;
  planReplay(ring, from_ns, until_ns, min_id, out, pass,
             [&](uint32_t sa, uint32_t da, uint16_t sp, uint16_t dp, ReplayFlowRef& ref) {
               const FlowKey key{IpAddr::fromV4(sa), IpAddr::fromV4(da), sp, dp};
               const FlowTable::Hit hit = impl_->table.find(key);
               if (!hit) return false;
               ref = replayFlowRef(impl_->table.at(hit.index), hit.index, hit.dir);
               return true;
             });
  for (size_t r = 0; r < kReplayPruneCount; ++r) {
    for (size_t leg = 0; leg < 2; ++leg) counters_.replay_pruned[r][leg] += pass.pruned[r][leg];
  }
  for (size_t leg = 0; leg < 2; ++leg) {
    counters_.replay_offset_unknown[leg] += pass.offset_unknown[leg];
  }
  stats = pass;
}

}  // namespace tandem
