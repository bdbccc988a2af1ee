#pragma once
/// @file Addresses and endpoints. IPv6-ready: every address is 16 bytes, IPv4 kept v4-mapped
/// (::ffff:a.b.c.d), so flow keys and tables need no change when the IPv6 path is added.

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace tandem {

class IpAddr {
 public:
  constexpr IpAddr() noexcept = default;
  static IpAddr fromV4(uint32_t host_order) noexcept {
    IpAddr a;
    a.bytes_[10] = 0xff;
    a.bytes_[11] = 0xff;
    a.bytes_[12] = static_cast<uint8_t>(host_order >> 24);
    a.bytes_[13] = static_cast<uint8_t>(host_order >> 16);
    a.bytes_[14] = static_cast<uint8_t>(host_order >> 8);
    a.bytes_[15] = static_cast<uint8_t>(host_order);
    return a;
  }
  static IpAddr fromV6(const uint8_t* bytes16) noexcept {
    IpAddr a;
    std::memcpy(a.bytes_.data(), bytes16, 16);
    return a;
  }
  /// Parses dotted-quad IPv4 or textual IPv6.
  static std::optional<IpAddr> parse(std::string_view text);

  bool isV4() const noexcept {
    static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(bytes_.data(), kPrefix, 12) == 0;
  }
  /// Host-order IPv4 value; only meaningful when isV4().
  uint32_t v4() const noexcept {
    return (uint32_t{bytes_[12]} << 24) | (uint32_t{bytes_[13]} << 16) |
           (uint32_t{bytes_[14]} << 8) | uint32_t{bytes_[15]};
  }
  bool isZero() const noexcept { return *this == IpAddr{}; }
  const std::array<uint8_t, 16>& bytes() const noexcept { return bytes_; }
  std::string toString() const;

  friend bool operator==(const IpAddr&, const IpAddr&) noexcept = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

struct Endpoint {
  IpAddr addr;
  uint16_t port = 0;

  /// Parses "a.b.c.d:port" or "[v6]:port".
  static std::optional<Endpoint> parse(std::string_view text);
  std::string toString() const;
  friend bool operator==(const Endpoint&, const Endpoint&) noexcept = default;
};

}  // namespace tandem
