#pragma once
/// @file TCP option parsing and building (RFC 9293 section 3.2, RFC 7323, RFC 2018).
///
/// Parsing refuses partial or malformed options rather than guessing (as Linux's
/// nf_synproxy_core.c does) and records where each known option sits, so a translator can rewrite
/// timestamps and SACK edges in place and leave every other option byte intact.

#include <array>
#include <cstddef>
#include <cstdint>

namespace tandem {

namespace tcpopt {
inline constexpr uint8_t kEol = 0;
inline constexpr uint8_t kNop = 1;
inline constexpr uint8_t kMss = 2;
inline constexpr uint8_t kWindowScale = 3;
inline constexpr uint8_t kSackPermitted = 4;
inline constexpr uint8_t kSack = 5;
inline constexpr uint8_t kTimestamp = 8;
/// RFC 7323 section 2.3: a shift above 14 is treated as 14.
inline constexpr uint8_t kMaxWindowScale = 14;
inline constexpr size_t kMaxSackBlocks = 4;
}  // namespace tcpopt

enum class OptionError : uint8_t {
  kNone,
  kTruncated,  ///< an option's kind or length byte, or its body, runs past the options area
  kBadLength,  ///< a known option with a length its RFC does not allow
};

const char* optionErrorName(OptionError e) noexcept;

struct SackBlock {
  uint32_t left = 0;
  uint32_t right = 0;
  friend bool operator==(const SackBlock&, const SackBlock&) noexcept = default;
};

struct TcpOptions {
  bool has_mss = false;
  uint16_t mss = 0;
  bool has_wscale = false;
  uint8_t wscale = 0;          ///< already clamped to kMaxWindowScale
  bool wscale_clamped = false; ///< the peer sent a shift above 14
  bool sack_permitted = false;
  bool has_timestamp = false;
  uint32_t ts_val = 0;
  uint32_t ts_ecr = 0;
  uint8_t sack_count = 0;
  std::array<SackBlock, tcpopt::kMaxSackBlocks> sack{};
  uint8_t unknown_count = 0;   ///< options of other kinds, skipped and left intact

  // Byte offsets inside the options area (not the TCP header) for in-place rewriting.
  uint16_t mss_offset = 0;     ///< of the 2-byte MSS value
  uint16_t ts_offset = 0;      ///< of TSval; TSecr follows at +4
  uint16_t sack_offset = 0;    ///< of the first block's left edge
};

/// Parses `len` bytes of options. On error `out` is unspecified and must not be used.
OptionError parseTcpOptions(const uint8_t* opts, size_t len, TcpOptions& out) noexcept;

/// Writes MSS, SACK-permitted, timestamps and window scale (the SYN set, in Linux's order and
/// NOP padding) to `out`. Returns the length written, a multiple of 4, or 0 if `cap` is too small.
size_t buildSynOptions(const TcpOptions& in, uint8_t* out, size_t cap) noexcept;

}  // namespace tandem
