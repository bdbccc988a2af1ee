#pragma once
/// @file Deterministic byte patterns for tcpcheck. The byte at stream offset i of a pattern is a
/// pure function of (seed, salt, i), so each side can generate what it sends and check every byte
/// it receives without keeping a copy. Client and server use different salts, so a proxy that
/// reflected or crossed streams would be caught as surely as one that corrupted a byte.

#include <cstddef>
#include <cstdint>

namespace tandem::tools {

inline constexpr uint64_t kClientSalt = 0x636c69656e742d31ULL;  // "client-1"
inline constexpr uint64_t kServerSalt = 0x7365727665722d32ULL;  // "server-2"

/// splitmix64's finaliser: a bijective 64-bit mix.
constexpr uint64_t mix64(uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Pattern {
 public:
  Pattern() = default;
  Pattern(uint64_t seed, uint64_t salt) noexcept : key_(mix64(seed ^ salt)) {}

  /// Writes the pattern bytes at [offset, offset + n) to out.
  void fill(uint64_t offset, uint8_t* out, size_t n) const noexcept;

  /// Index of the first byte of data[0, n) that differs from the pattern at offset, or n.
  size_t firstMismatch(uint64_t offset, const uint8_t* data, size_t n) const noexcept;

  uint8_t at(uint64_t offset) const noexcept {
    return static_cast<uint8_t>(block(offset >> 3) >> (8 * (offset & 7)));
  }

 private:
  uint64_t block(uint64_t index) const noexcept {
    return mix64(key_ ^ (index * 0xd6e8feb86659fd93ULL));
  }
  uint64_t key_ = 0;
};

}  // namespace tandem::tools
