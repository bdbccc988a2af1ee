#pragma once
/// @file Internet checksum: full computation and RFC 1624 incremental updates.
///
/// Checksums are handled as host-order 16-bit values of the on-wire field (i.e. load16() of the
/// field). All functions are pure and never touch memory outside the given ranges.

#include <cstddef>
#include <cstdint>

namespace tandem {

/// One's-complement sum of a byte range (not folded, not complemented), added to `sum`.
uint32_t csumAdd(uint32_t sum, const uint8_t* data, size_t len) noexcept;

/// Fold a 32-bit accumulator to 16 bits.
constexpr uint16_t csumFold(uint32_t sum) noexcept {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit word changing from `from` to `to`.
constexpr uint16_t csumReplace16(uint16_t check, uint16_t from, uint16_t to) noexcept {
  uint32_t sum = static_cast<uint16_t>(~check);
  sum += static_cast<uint16_t>(~from);
  sum += to;
  return static_cast<uint16_t>(~csumFold(sum));
}

/// The same for a 32-bit word (two 16-bit words).
constexpr uint16_t csumReplace32(uint16_t check, uint32_t from, uint32_t to) noexcept {
  uint32_t sum = static_cast<uint16_t>(~check);
  sum += static_cast<uint16_t>(~(from >> 16));
  sum += static_cast<uint16_t>(~(from & 0xffff));
  sum += to >> 16;
  sum += to & 0xffff;
  return static_cast<uint16_t>(~csumFold(sum));
}

/// Update a *partial* (pseudo-header only, not complemented) checksum such as the one found in a
/// CHECKSUM_PARTIAL skb: the field holds the folded pseudo-header sum, so a pseudo-header word
/// change is added directly rather than through the complement.
constexpr uint16_t csumPartialReplace32(uint16_t partial, uint32_t from, uint32_t to) noexcept {
  uint32_t sum = partial;
  sum += static_cast<uint16_t>(~(from >> 16));
  sum += static_cast<uint16_t>(~(from & 0xffff));
  sum += to >> 16;
  sum += to & 0xffff;
  return csumFold(sum);
}

/// Full IPv4 header checksum over `ihl_bytes` bytes, with the checksum field taken as zero.
uint16_t ipv4HeaderChecksum(const uint8_t* ip, size_t ihl_bytes) noexcept;

/// Full TCP checksum over IPv4 pseudo-header plus `tcp_len` bytes of segment, with the checksum
/// field taken as zero. Addresses are host-order.
uint16_t tcpChecksumV4(uint32_t saddr, uint32_t daddr, const uint8_t* tcp, size_t tcp_len) noexcept;

}  // namespace tandem
