#include "common/checksum.h"

#include "common/bytes.h"

namespace tandem {

uint32_t csumAdd(uint32_t sum, const uint8_t* data, size_t len) noexcept {
  // 64-bit accumulator over 32-bit loads: carries are folded at the end.
  uint64_t acc = sum;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) acc += load32(data + i);
  if (i + 2 <= len) {
    acc += load16(data + i);
    i += 2;
  }
  if (i < len) acc += uint32_t{data[i]} << 8;
  while (acc >> 32) acc = (acc & 0xffffffffu) + (acc >> 32);
  // Reduce to a value that still fits 32 bits with room for later additions.
  uint32_t r = static_cast<uint32_t>((acc & 0xffff) + ((acc >> 16) & 0xffff));
  return r;
}

uint16_t ipv4HeaderChecksum(const uint8_t* ip, size_t ihl_bytes) noexcept {
  // Skip the checksum field (bytes 10-11) without reading past a short range.
  uint32_t sum = csumAdd(0, ip, ihl_bytes < 10 ? ihl_bytes : 10);
  if (ihl_bytes > 12) sum = csumAdd(sum, ip + 12, ihl_bytes - 12);
  return static_cast<uint16_t>(~csumFold(sum));
}

uint16_t tcpChecksumV4(uint32_t saddr, uint32_t daddr, const uint8_t* tcp, size_t tcp_len) noexcept {
  uint32_t sum = (saddr >> 16) + (saddr & 0xffff) + (daddr >> 16) + (daddr & 0xffff);
  sum += 6;  // IPPROTO_TCP
  sum += static_cast<uint32_t>(tcp_len & 0xffff) + static_cast<uint32_t>(tcp_len >> 16);
  sum = csumAdd(sum, tcp, tcp_len < 16 ? tcp_len : 16);  // up to the checksum field
  if (tcp_len > 18) sum = csumAdd(sum, tcp + 18, tcp_len - 18);
  return static_cast<uint16_t>(~csumFold(sum));
}

}  // namespace tandem
