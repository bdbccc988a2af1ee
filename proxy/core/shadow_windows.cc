// Engine::observeShadow: a vmac standby keeps its flows' window edges warm from the frames it
// shadows (issue 6, item 2). Read-only towards forwarding: it only moves window edges.
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/engine_impl.h"
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

}  // namespace tandem
