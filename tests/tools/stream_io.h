#pragma once
/// @file Non-blocking socket I/O of pattern streams, shared by the tcpcheck client and server:
/// send pattern bytes until the socket would block, receive and check every byte, and pace a
/// stream at a given rate.

#include <cstddef>
#include <cstdint>
#include <string>

#include "pattern.h"

namespace tandem::tools {

struct IoStatus {
  uint64_t bytes = 0;        ///< bytes moved by this call
  bool would_block = false;  ///< stopped at EAGAIN
  int error = 0;             ///< errno of a hard error, else 0
};

/// Sends pattern bytes [offset, end) on a non-blocking socket until done or EAGAIN; advances
/// offset by what the kernel took.
IoStatus sendPattern(int fd, const Pattern& pattern, uint64_t& offset, uint64_t end) noexcept;

/// Sends raw bytes data[*done, len) until done or EAGAIN; advances done.
IoStatus sendRaw(int fd, const uint8_t* data, size_t len, size_t& done) noexcept;

/// Verifies received bytes against an expected pattern and keeps the running offset.
class PatternChecker {
 public:
  PatternChecker() = default;
  explicit PatternChecker(const Pattern& pattern) : pattern_(pattern) {}

  /// Checks data[0, n) as the next bytes of the stream. On the first mismatch records a
  /// description ("offset O: expected 0xEE got 0xGG") and returns false; later calls fail too.
  bool consume(const uint8_t* data, size_t n);

  uint64_t offset() const noexcept { return offset_; }
  bool failed() const noexcept { return !error_.empty(); }
  const std::string& error() const noexcept { return error_; }

 private:
  Pattern pattern_;
  uint64_t offset_ = 0;
  std::string error_;
};

/// Token bucket: how many bytes a sender paced at `rate` bytes/s may have sent by now. A sender
/// that fell behind (a blocked socket, a failover) catches up by at most kMaxDebtNs worth (or two
/// chunks, if more).
class Pacer {
 public:
  static constexpr uint64_t kMaxDebtNs = 100'000'000;  // 100 ms

  Pacer() = default;
  Pacer(uint64_t rate, uint64_t start_ns) : rate_(rate), start_ns_(start_ns) {}

  bool unlimited() const noexcept { return rate_ == 0; }
  /// The offset (bytes sent) the sender may reach at now_ns, given it has sent `sent` bytes.
  uint64_t limit(uint64_t now_ns, uint64_t sent) noexcept;
  /// Bytes worth sending in one go: about 10 ms of the rate (1 byte to 64 KiB).
  uint64_t chunk() const noexcept;

 private:
  uint64_t rate_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t base_bytes_ = 0;  ///< bytes forgiven when the debt was capped
};

}  // namespace tandem::tools
