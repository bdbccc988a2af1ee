#include "proxy/io/log.h"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace tandem {
namespace {

LogLevel g_level = LogLevel::kInfo;
const char* g_program = "tandem";

}  // namespace

const char* logLevelName(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "unknown";
}

std::optional<LogLevel> parseLogLevel(std::string_view text) noexcept {
  for (auto level : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (text == logLevelName(level)) return level;
  }
  return std::nullopt;
}

void setLogLevel(LogLevel level) noexcept { g_level = level; }
bool logEnabled(LogLevel level) noexcept { return level >= g_level; }
void setLogProgram(const char* name) noexcept { g_program = name; }

void logf(LogLevel level, const char* fmt, ...) noexcept {
  if (!logEnabled(level)) return;
  const int saved_errno = errno;  // callers often log right before reading errno again

  char line[1024];
  timespec ts{};
  tm utc{};
  size_t n = 0;
  if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && gmtime_r(&ts.tv_sec, &utc) != nullptr) {
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &utc);
  }
  int w = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s: ", ts.tv_nsec / 1'000'000, g_program,
                   logLevelName(level));
  if (w > 0) n += static_cast<size_t>(w);
  if (n < sizeof(line)) {
    va_list ap;
    va_start(ap, fmt);
    w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (w > 0) n += static_cast<size_t>(w);
  }
  // Truncated lines still end in a newline.
  if (n >= sizeof(line)) n = sizeof(line) - 1;
  line[n++] = '\n';
  // One write keeps lines whole when several processes share stderr. A failed write to stderr
  // has nowhere to be reported.
  ssize_t ignored = write(STDERR_FILENO, line, n);
  (void)ignored;
  errno = saved_errno;
}

uint64_t monotonicNs() noexcept {
  timespec ts{};
  // CLOCK_MONOTONIC cannot fail with a valid pointer; keep the result defined anyway.
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

bool RateLimit::allow(uint64_t now_ns) noexcept {
  if (!started_ || now_ns - window_start_ns_ >= interval_ns_) {
    started_ = true;
    window_start_ns_ = now_ns;
    used_ = 0;
  }
  if (used_ < burst_) {
    ++used_;
    return true;
  }
  ++suppressed_;
  return false;
}

}  // namespace tandem
