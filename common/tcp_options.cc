#include "common/tcp_options.h"

#include "common/bytes.h"

namespace tandem {

const char* optionErrorName(OptionError e) noexcept {
  switch (e) {
    case OptionError::kNone: return "none";
    case OptionError::kTruncated: return "option_truncated";
    case OptionError::kBadLength: return "option_bad_length";
  }
  return "unknown";
}

OptionError parseTcpOptions(const uint8_t* opts, size_t len, TcpOptions& out) noexcept {
  out = TcpOptions{};
  size_t i = 0;
  while (i < len) {
    const uint8_t kind = opts[i];
    if (kind == tcpopt::kEol) break;
    if (kind == tcpopt::kNop) {
      ++i;
      continue;
    }
    if (i + 1 >= len) return OptionError::kTruncated;
    const size_t olen = opts[i + 1];
    if (olen < 2) return OptionError::kBadLength;
    if (i + olen > len) return OptionError::kTruncated;
    const uint8_t* body = opts + i + 2;
    switch (kind) {
      case tcpopt::kMss:
        if (olen != 4) return OptionError::kBadLength;
        out.has_mss = true;
        out.mss = load16(body);
        out.mss_offset = static_cast<uint16_t>(i + 2);
        break;
      case tcpopt::kWindowScale:
        if (olen != 3) return OptionError::kBadLength;
        out.has_wscale = true;
        out.wscale = body[0];
        // Per option: a repeated option (the last one wins) must not inherit an earlier clamp.
        out.wscale_clamped = out.wscale > tcpopt::kMaxWindowScale;
        if (out.wscale_clamped) out.wscale = tcpopt::kMaxWindowScale;
        break;
      case tcpopt::kSackPermitted:
        if (olen != 2) return OptionError::kBadLength;
        out.sack_permitted = true;
        break;
      case tcpopt::kTimestamp:
        if (olen != 10) return OptionError::kBadLength;
        out.has_timestamp = true;
        out.ts_val = load32(body);
        out.ts_ecr = load32(body + 4);
        out.ts_offset = static_cast<uint16_t>(i + 2);
        break;
      case tcpopt::kSack: {
        const size_t blocks = (olen - 2) / 8;
        if ((olen - 2) % 8 != 0 || blocks == 0 || blocks > tcpopt::kMaxSackBlocks)
          return OptionError::kBadLength;
        out.sack_count = static_cast<uint8_t>(blocks);
        out.sack_offset = static_cast<uint16_t>(i + 2);
        for (size_t b = 0; b < blocks; ++b)
          out.sack[b] = {load32(body + 8 * b), load32(body + 8 * b + 4)};
        break;
      }
      default:
        ++out.unknown_count;
        break;
    }
    i += olen;
  }
  return OptionError::kNone;
}

size_t buildSynOptions(const TcpOptions& in, uint8_t* out, size_t cap) noexcept {
  size_t need = (in.has_mss ? 4 : 0) + (in.has_timestamp || in.sack_permitted ? 12 : 0) +
                (in.has_wscale ? 4 : 0);
  if (!in.has_timestamp && in.sack_permitted) need -= 8;  // NOP NOP SACK_PERM
  if (need > cap) return 0;
  size_t i = 0;
  if (in.has_mss) {
    out[i++] = tcpopt::kMss;
    out[i++] = 4;
    store16(out + i, in.mss);
    i += 2;
  }
  if (in.has_timestamp) {
    if (in.sack_permitted) {
      out[i++] = tcpopt::kSackPermitted;
      out[i++] = 2;
    } else {
      out[i++] = tcpopt::kNop;
      out[i++] = tcpopt::kNop;
    }
    out[i++] = tcpopt::kTimestamp;
    out[i++] = 10;
    store32(out + i, in.ts_val);
    store32(out + i + 4, in.ts_ecr);
    i += 8;
  } else if (in.sack_permitted) {
    out[i++] = tcpopt::kNop;
    out[i++] = tcpopt::kNop;
    out[i++] = tcpopt::kSackPermitted;
    out[i++] = 2;
  }
  if (in.has_wscale) {
    out[i++] = tcpopt::kNop;
    out[i++] = tcpopt::kWindowScale;
    out[i++] = 3;
    out[i++] = in.wscale;
  }
  return i;
}

}  // namespace tandem
