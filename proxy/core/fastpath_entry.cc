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

}  // namespace

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

  key = tandem_fp_key{};
  value = tandem_fp_rewrite{};
  const bool from_client = dir == Direction::kFromClient;
  // Arriving tuple, then the one translateSegment() writes.
  const Endpoint in_src = from_client ? f.client() : f.backendEp();
  const Endpoint in_dst = from_client ? f.vip() : f.source();
  const Endpoint out_src = from_client ? f.source() : f.vip();
  const Endpoint out_dst = from_client ? f.backendEp() : f.client();
  key.saddr = wire32(in_src.addr.v4());
  key.daddr = wire32(in_dst.addr.v4());
  key.sport = wire16(in_src.port);
  key.dport = wire16(in_dst.port);
  value.saddr = wire32(out_src.addr.v4());
  value.daddr = wire32(out_dst.addr.v4());
  value.sport = wire16(out_src.port);
  value.dport = wire16(out_dst.port);

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
