#pragma once
/// @file Bounds-checked views over an IPv4 packet carrying TCP.
///
/// A view never owns memory and never reads or writes outside the range it was built from:
/// parseTcpPacket() validates every length once, and the accessors rely on that. Setters write the
/// raw field only; checksum policy belongs to the caller (see proxy/core/translator.h).

#include <cstddef>
#include <cstdint>

#include "common/bytes.h"
#include "common/ip_addr.h"

namespace tandem {

enum class ParseError : uint8_t {
  kNone,
  kTooShort,         ///< shorter than a minimal IPv4 header
  kNotIpv4,          ///< version field is not 4 (IPv6 path not wired yet)
  kBadIhl,           ///< IHL below 5 or beyond the packet
  kBadTotalLength,   ///< total length beyond the buffer or below the header
  kFragment,         ///< fragmented datagram (MF set or offset non-zero)
  kNotTcp,           ///< protocol is not TCP
  kTcpTooShort,      ///< fewer than 20 bytes of TCP header
  kBadDataOffset,    ///< TCP data offset below 5 or beyond the segment
};

const char* parseErrorName(ParseError e) noexcept;

namespace tcpflag {
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
inline constexpr uint8_t kUrg = 0x20;
inline constexpr uint8_t kEce = 0x40;
inline constexpr uint8_t kCwr = 0x80;
}  // namespace tcpflag

/// A parsed IPv4+TCP packet. Built only by parseTcpPacket().
class TcpPacket {
 public:
  TcpPacket() = default;

  // IPv4 header.
  uint8_t* ip() const noexcept { return data_; }
  size_t ipHeaderLen() const noexcept { return ihl_; }
  /// Bytes covered by the IPv4 total length (may be below the buffer length).
  size_t totalLen() const noexcept { return total_len_; }
  uint32_t saddr() const noexcept { return load32(data_ + 12); }
  uint32_t daddr() const noexcept { return load32(data_ + 16); }
  void setSaddrRaw(uint32_t v) noexcept { store32(data_ + 12, v); }
  void setDaddrRaw(uint32_t v) noexcept { store32(data_ + 16, v); }
  uint16_t ipCheck() const noexcept { return load16(data_ + 10); }
  void setIpCheck(uint16_t v) noexcept { store16(data_ + 10, v); }
  uint8_t ttl() const noexcept { return data_[8]; }
  uint8_t tos() const noexcept { return data_[1]; }

  // TCP header.
  uint8_t* tcp() const noexcept { return data_ + ihl_; }
  size_t tcpLen() const noexcept { return total_len_ - ihl_; }  ///< header + payload
  size_t tcpHeaderLen() const noexcept { return doff_; }
  size_t payloadLen() const noexcept { return total_len_ - ihl_ - doff_; }
  uint16_t sport() const noexcept { return load16(tcp()); }
  uint16_t dport() const noexcept { return load16(tcp() + 2); }
  uint32_t seq() const noexcept { return load32(tcp() + 4); }
  uint32_t ack() const noexcept { return load32(tcp() + 8); }
  uint8_t flags() const noexcept { return tcp()[13]; }
  bool has(uint8_t flag) const noexcept { return (flags() & flag) != 0; }
  uint16_t window() const noexcept { return load16(tcp() + 14); }
  uint16_t tcpCheck() const noexcept { return load16(tcp() + 16); }
  void setSportRaw(uint16_t v) noexcept { store16(tcp(), v); }
  void setDportRaw(uint16_t v) noexcept { store16(tcp() + 2, v); }
  void setSeqRaw(uint32_t v) noexcept { store32(tcp() + 4, v); }
  void setAckRaw(uint32_t v) noexcept { store32(tcp() + 8, v); }
  void setWindowRaw(uint16_t v) noexcept { store16(tcp() + 14, v); }
  void setTcpCheck(uint16_t v) noexcept { store16(tcp() + 16, v); }
  uint8_t* options() const noexcept { return tcp() + 20; }
  size_t optionsLen() const noexcept { return doff_ - 20; }

  /// Sequence space the segment occupies: payload plus one for SYN and one for FIN.
  uint32_t seqLen() const noexcept {
    return static_cast<uint32_t>(payloadLen()) + (has(tcpflag::kSyn) ? 1u : 0u) +
           (has(tcpflag::kFin) ? 1u : 0u);
  }

  Endpoint src() const noexcept { return {IpAddr::fromV4(saddr()), sport()}; }
  Endpoint dst() const noexcept { return {IpAddr::fromV4(daddr()), dport()}; }

 private:
  friend ParseError parseTcpPacket(uint8_t* data, size_t len, TcpPacket& out) noexcept;
  uint8_t* data_ = nullptr;
  size_t total_len_ = 0;
  uint16_t ihl_ = 0;
  uint16_t doff_ = 0;
};

/// Validates and views `len` bytes at `data` as IPv4+TCP. A total-length field of zero is taken
/// as "the whole buffer" (GSO super-packets above 64 KiB, BIG TCP). Never reads past data+len.
ParseError parseTcpPacket(uint8_t* data, size_t len, TcpPacket& out) noexcept;

}  // namespace tandem
