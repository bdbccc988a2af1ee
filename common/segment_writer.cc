#include "common/segment_writer.h"

#include <algorithm>

#include "common/bytes.h"
#include "common/checksum.h"

namespace tandem {

void writeIpv4Header(uint8_t* ip, uint32_t saddr, uint32_t daddr, uint16_t total_len,
                     uint8_t ttl) noexcept {
  std::fill(ip, ip + 20, uint8_t{0});
  ip[0] = 0x45;
  store16(ip + 2, total_len);
  store16(ip + 6, 0x4000);
  ip[8] = ttl;
  ip[9] = 6;
  store32(ip + 12, saddr);
  store32(ip + 16, daddr);
  store16(ip + 10, ipv4HeaderChecksum(ip, 20));
}

size_t writeTcpSegment(const SegmentSpec& s, uint8_t* out, size_t cap) noexcept {
  if (out == nullptr || s.options_len > 40 || s.options_len % 4 != 0) return 0;
  const size_t tcp_len = 20 + s.options_len;
  const size_t total = 20 + tcp_len;
  if (total > cap) return 0;
  std::fill(out, out + total, uint8_t{0});
  writeIpv4Header(out, s.saddr, s.daddr, static_cast<uint16_t>(total), s.ttl);
  uint8_t* tcp = out + 20;
  store16(tcp, s.sport);
  store16(tcp + 2, s.dport);
  store32(tcp + 4, s.seq);
  store32(tcp + 8, s.ack);
  tcp[12] = static_cast<uint8_t>((tcp_len / 4) << 4);
  tcp[13] = s.flags;
  store16(tcp + 14, s.window);
  if (s.options_len > 0) std::copy(s.options, s.options + s.options_len, tcp + 20);
  store16(tcp + 16, tcpChecksumV4(s.saddr, s.daddr, tcp, tcp_len));
  return total;
}

}  // namespace tandem
