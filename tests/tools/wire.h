#pragma once
/// @file The header a tcpcheck client sends first on each connection. It tells the server which
/// exchange to run and the seed of both patterns; everything after it is pattern bytes.
///
///   0       4    5    6         8                16               24               32
///   +-------+----+----+---------+----------------+----------------+----------------+
///   | magic |ver |mode| flags   | seed           | bytes          | rate           |
///   +-------+----+----+---------+----------------+----------------+----------------+
///   magic "TCK1"; all integers big-endian.
///   bytes: verify = bytes each way; rr = request (and response) size; stream = 0.
///   rate:  stream = server-to-client bytes per second (0 = as fast as possible).

#include <cstddef>
#include <cstdint>
#include <optional>

namespace tandem::tools {

inline constexpr uint32_t kWireMagic = 0x54434b31;  // "TCK1"
inline constexpr uint8_t kWireVersion = 1;
inline constexpr size_t kHeaderSize = 32;

enum class ExchangeMode : uint8_t { kVerify = 1, kStream = 2, kRequestResponse = 3 };

/// The server sends all of its bytes at once instead of holding the second half back until the
/// client's FIN (set when the client holds the connection open or aborts it with a RST).
inline constexpr uint16_t kFlagSendAll = 0x0001;
/// The client will end the connection with a RST once both directions are verified.
inline constexpr uint16_t kFlagClientRst = 0x0002;

struct WireHeader {
  ExchangeMode mode = ExchangeMode::kVerify;
  uint16_t flags = 0;
  uint64_t seed = 0;
  uint64_t bytes = 0;
  uint64_t rate = 0;
};

inline void encodeHeader(const WireHeader& h, uint8_t* out) noexcept {
  auto put = [&out](uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) *out++ = static_cast<uint8_t>(v >> (8 * i));
  };
  put(kWireMagic, 4);
  put(kWireVersion, 1);
  put(static_cast<uint8_t>(h.mode), 1);
  put(h.flags, 2);
  put(h.seed, 8);
  put(h.bytes, 8);
  put(h.rate, 8);
}

/// Decodes kHeaderSize bytes; nullopt on a wrong magic, version or mode.
inline std::optional<WireHeader> decodeHeader(const uint8_t* in) noexcept {
  auto get = [&in](int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | *in++;
    return v;
  };
  if (get(4) != kWireMagic || get(1) != kWireVersion) return std::nullopt;
  WireHeader h;
  const uint64_t mode = get(1);
  if (mode < 1 || mode > 3) return std::nullopt;
  h.mode = static_cast<ExchangeMode>(mode);
  h.flags = static_cast<uint16_t>(get(2));
  h.seed = get(8);
  h.bytes = get(8);
  h.rate = get(8);
  if (h.mode == ExchangeMode::kRequestResponse && h.bytes == 0) return std::nullopt;
  return h;
}

}  // namespace tandem::tools
