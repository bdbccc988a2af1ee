#include "proxy/core/fastpath_entry.h"

#include <cstring>

#include "common/bytes.h"

namespace tandem {
namespace {

/// The map holds addresses and ports as they are on the wire (network byte order in memory).
uint32_t wire32(uint32_t host) noexcept {
  uint8_t b[4];
  store32(b, host);
  uint32_t v;
  std::memcpy(&v, b, sizeof v);
  return v;
}
uint16_t wire16(uint16_t host) noexcept {
  uint8_t b[2];
  store16(b, host);
  uint16_t v;
  std::memcpy(&v, b, sizeof v);
  return v;
}

/// A tuple as the map holds it.
void setTuple(const Endpoint& src, const Endpoint& dst, uint32_t& saddr, uint32_t& daddr,
              uint16_t& sport, uint16_t& dport) noexcept {
  saddr = wire32(src.addr.v4());
  daddr = wire32(dst.addr.v4());
  sport = wire16(src.port);
  dport = wire16(dst.port);
}

}  // namespace

tandem_fp_key fastPathKey(const Flow& f, Direction dir) noexcept {
  const bool from_client = dir == Direction::kFromClient;
  tandem_fp_key key{};
  setTuple(from_client ? f.client() : f.backendEp(), from_client ? f.vip() : f.source(),
           key.saddr, key.daddr, key.sport, key.dport);
  return key;
}

bool fastPathEntry(const Flow& f, Direction dir, tandem_fp_key& key,
                   tandem_fp_rewrite& value) noexcept {
  if (!f.client_addr.isV4() || !f.vip_addr.isV4() || !f.backend_addr.isV4() ||
      !f.source_addr.isV4())
    return false;
  const SeqAdj& mine = f.adj[dirIndex(dir)];
  const SeqAdj& theirs = f.adj[dirIndex(other(dir))];
  if (f.has_seqadj &&
      (mine.offset_before != mine.offset_after || theirs.offset_before != theirs.offset_after))
    return false;

  const bool from_client = dir == Direction::kFromClient;
  // The arriving tuple, then the one translateSegment() writes.
  key = fastPathKey(f, dir);
  value = tandem_fp_rewrite{};
  setTuple(from_client ? f.source() : f.vip(), from_client ? f.backendEp() : f.client(),
           value.saddr, value.daddr, value.sport, value.dport);

  if (f.has_seqadj) {
    value.flags |= TANDEM_FP_SEQ;
    value.seq_add = static_cast<uint32_t>(mine.offset_after);   // seqForward
    value.ack_add = -static_cast<uint32_t>(theirs.offset_after);  // ackBackward
  }
  if (f.has_ts_adj) {
    // Backend TSvals forward into the client's clock; client TSecrs back (ACK set only).
    value.flags |= TANDEM_FP_TS;
    if (from_client)
      value.tsecr_add = -f.ts_offset;
    else
      value.tsval_add = f.ts_offset;
  }
  if (f.rescale_window && !from_client) {
    value.flags |= TANDEM_FP_WIN;
    value.win_shift_in = f.backend_wscale;
    value.win_shift_out = f.client_view_wscale;
  }
  value.dir = static_cast<uint8_t>(dir);
  return true;
}

}  // namespace tandem
