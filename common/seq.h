#pragma once
/// @file Wrap-safe 32-bit TCP sequence arithmetic (RFC 793 section 3.3, RFC 1982 style).

#include <cstdint>

namespace tandem {

/// a < b in sequence space.
constexpr bool seqBefore(uint32_t a, uint32_t b) noexcept {
  return static_cast<int32_t>(a - b) < 0;
}
/// a > b in sequence space.
constexpr bool seqAfter(uint32_t a, uint32_t b) noexcept { return seqBefore(b, a); }
constexpr bool seqBeforeEq(uint32_t a, uint32_t b) noexcept { return !seqAfter(a, b); }
constexpr bool seqAfterEq(uint32_t a, uint32_t b) noexcept { return !seqBefore(a, b); }
/// lo <= x <= hi in sequence space.
constexpr bool seqBetween(uint32_t x, uint32_t lo, uint32_t hi) noexcept {
  return hi - lo >= x - lo;
}
constexpr uint32_t seqMax(uint32_t a, uint32_t b) noexcept { return seqAfter(a, b) ? a : b; }
constexpr uint32_t seqMin(uint32_t a, uint32_t b) noexcept { return seqBefore(a, b) ? a : b; }

}  // namespace tandem
