#include "stream_io.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>

namespace tandem::tools {

IoStatus sendPattern(int fd, const Pattern& pattern, uint64_t& offset, uint64_t end) noexcept {
  IoStatus st;
  uint8_t buf[65536];
  while (offset < end) {
    const size_t len = static_cast<size_t>(std::min<uint64_t>(end - offset, sizeof buf));
    pattern.fill(offset, buf, len);
    const ssize_t n = ::send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        st.would_block = true;
      } else {
        st.error = errno;
      }
      return st;
    }
    offset += static_cast<uint64_t>(n);
    st.bytes += static_cast<uint64_t>(n);
  }
  return st;
}

IoStatus sendRaw(int fd, const uint8_t* data, size_t len, size_t& done) noexcept {
  IoStatus st;
  while (done < len) {
    const ssize_t n = ::send(fd, data + done, len - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        st.would_block = true;
      } else {
        st.error = errno;
      }
      return st;
    }
    done += static_cast<size_t>(n);
    st.bytes += static_cast<uint64_t>(n);
  }
  return st;
}

bool PatternChecker::consume(const uint8_t* data, size_t n) {
  if (failed()) return false;
  const size_t bad = pattern_.firstMismatch(offset_, data, n);
  if (bad < n) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "offset %llu: expected 0x%02x got 0x%02x",
                  static_cast<unsigned long long>(offset_ + bad), pattern_.at(offset_ + bad),
                  data[bad]);
    error_ = msg;
    offset_ += bad;
    return false;
  }
  offset_ += n;
  return true;
}

uint64_t Pacer::limit(uint64_t now_ns, uint64_t sent) noexcept {
  if (rate_ == 0) return std::numeric_limits<uint64_t>::max();
  const double rate = static_cast<double>(rate_);
  const double elapsed = static_cast<double>(now_ns - start_ns_) / 1e9;
  // At least two chunks, or a slow stream could never earn a whole chunk.
  const double max_ahead = std::max(rate * static_cast<double>(kMaxDebtNs) / 1e9,
                                    2.0 * static_cast<double>(chunk()));
  const double done = static_cast<double>(sent);
  double allowed = rate * elapsed - static_cast<double>(base_bytes_);
  if (allowed - done > max_ahead) {
    base_bytes_ += static_cast<uint64_t>(allowed - done - max_ahead);
    allowed = done + max_ahead;
  }
  return allowed <= done ? sent : static_cast<uint64_t>(allowed);
}

uint64_t Pacer::chunk() const noexcept {
  return std::clamp<uint64_t>(rate_ / 100, 1, 65536);
}

}  // namespace tandem::tools
