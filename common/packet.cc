#include "common/packet.h"

namespace tandem {

const char* parseErrorName(ParseError e) noexcept {
  switch (e) {
    case ParseError::kNone: return "none";
    case ParseError::kTooShort: return "ip_too_short";
    case ParseError::kNotIpv4: return "not_ipv4";
    case ParseError::kBadIhl: return "bad_ihl";
    case ParseError::kBadTotalLength: return "bad_total_length";
    case ParseError::kFragment: return "fragment";
    case ParseError::kNotTcp: return "not_tcp";
    case ParseError::kTcpTooShort: return "tcp_too_short";
    case ParseError::kBadDataOffset: return "bad_data_offset";
  }
  return "unknown";
}

ParseError parseTcpPacket(uint8_t* data, size_t len, TcpPacket& out) noexcept {
  if (data == nullptr || len < 20) return ParseError::kTooShort;
  if ((data[0] >> 4) != 4) return ParseError::kNotIpv4;
  const size_t ihl = size_t{data[0] & 0x0fu} * 4;
  if (ihl < 20 || ihl > len) return ParseError::kBadIhl;
  size_t total = load16(data + 2);
  if (total == 0) total = len;  // GSO super-packet beyond 64 KiB
  if (total > len || total < ihl) return ParseError::kBadTotalLength;
  const uint16_t frag = load16(data + 6);
  if ((frag & 0x3fff) != 0) return ParseError::kFragment;  // MF or a fragment offset
  if (data[9] != 6) return ParseError::kNotTcp;
  if (total - ihl < 20) return ParseError::kTcpTooShort;
  const size_t doff = (size_t{data[ihl + 12]} >> 4) * 4;
  if (doff < 20 || doff > total - ihl) return ParseError::kBadDataOffset;
  out.data_ = data;
  out.total_len_ = total;
  out.ihl_ = static_cast<uint16_t>(ihl);
  out.doff_ = static_cast<uint16_t>(doff);
  return ParseError::kNone;
}

}  // namespace tandem
