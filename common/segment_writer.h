#pragma once
/// @file Writes a complete IPv4/TCP segment without payload (the packets a splicing proxy
/// originates: SYN-ACK to the client, SYN and ACK to the backend), with valid checksums.

#include <cstddef>
#include <cstdint>

namespace tandem {

struct SegmentSpec {
  uint32_t saddr = 0;  ///< host order
  uint32_t daddr = 0;
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  uint8_t ttl = 64;
  const uint8_t* options = nullptr;  ///< already padded to a multiple of 4, at most 40 bytes
  size_t options_len = 0;
};

/// Writes a 20-byte IPv4 header carrying TCP to ip[0, 20): DF, ID 0, TOS 0, the header
/// checksum; addresses in host order.
void writeIpv4Header(uint8_t* ip, uint32_t saddr, uint32_t daddr, uint16_t total_len,
                     uint8_t ttl) noexcept;

/// Writes the segment to out[0, cap): IPv4 with DF and ID 0 (an atomic datagram, RFC 6864 4.1),
/// TOS 0, TCP with the options. Returns its length, or 0 if cap is too small or the options are
/// not a multiple of 4 up to 40 bytes.
size_t writeTcpSegment(const SegmentSpec& spec, uint8_t* out, size_t cap) noexcept;

}  // namespace tandem
