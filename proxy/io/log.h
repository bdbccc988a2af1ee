#pragma once
/// @file Timestamped logging to stderr with one process-wide level, a monotonic clock, and a
/// rate limiter for warnings on paths that can fire per packet (a warning storm must not become
/// the bottleneck or fill the journal; counters carry the numbers).

#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem {

enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };

const char* logLevelName(LogLevel level) noexcept;
std::optional<LogLevel> parseLogLevel(std::string_view text) noexcept;

void setLogLevel(LogLevel level) noexcept;
bool logEnabled(LogLevel level) noexcept;

/// Writes "2026-01-31T12:00:00.123Z tandemd warn: <message>" as one write(2) to stderr.
/// Formatting is skipped when the level is disabled.
void logf(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

/// Sets the program name printed in every line (default "tandem").
void setLogProgram(const char* name) noexcept;

/// CLOCK_MONOTONIC in nanoseconds: the only clock the engine is given.
uint64_t monotonicNs() noexcept;

/// Allows `burst` events per `interval_ns`; counts the rest so the next allowed message can say
/// how many were suppressed.
class RateLimit {
 public:
  constexpr RateLimit(uint64_t interval_ns, uint32_t burst) noexcept
      : interval_ns_(interval_ns), burst_(burst) {}

  /// True if the caller may log now.
  bool allow(uint64_t now_ns) noexcept;
  /// Events refused since the last call; resets the count.
  uint64_t takeSuppressed() noexcept {
    uint64_t s = suppressed_;
    suppressed_ = 0;
    return s;
  }

 private:
  uint64_t interval_ns_;
  uint32_t burst_;
  uint64_t window_start_ns_ = 0;
  uint32_t used_ = 0;
  bool started_ = false;
  uint64_t suppressed_ = 0;
};

}  // namespace tandem
