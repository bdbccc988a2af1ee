#include "proxy/io/raw_sender.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "proxy/io/log.h"

namespace tandem {

RawSender::~RawSender() {
  if (fd_ >= 0) ::close(fd_);
}

void RawSender::open() {
  fd_ = ::socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "raw socket (IPPROTO_RAW)");
}

void RawSender::send(const uint8_t* packet, size_t len) noexcept {
  if (fd_ < 0 || len < 20) {
    ++counters_.errors;
    return;
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  std::memcpy(&to.sin_addr.s_addr, packet + 16, 4);  // already network order
  const ssize_t n =
      ::sendto(fd_, packet, len, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  if (n != static_cast<ssize_t>(len)) {
    ++counters_.errors;
    if (warn_limit_.allow(monotonicNs())) {
      logf(LogLevel::kWarn, "raw send failed: %s", n < 0 ? std::strerror(errno) : "short write");
    }
    return;
  }
  ++counters_.sent;
}

}  // namespace tandem
