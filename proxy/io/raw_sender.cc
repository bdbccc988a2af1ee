#include "proxy/io/raw_sender.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tandem {

RawSender::RawSender() {
  fd_ = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_RAW);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "raw socket");
}

RawSender::~RawSender() {
  if (fd_ >= 0) close(fd_);
}

bool RawSender::send(const uint8_t* packet, size_t len) noexcept {
  if (len < 20 || (packet[0] >> 4) != 4) {
    ++counters_.errors;
    return false;
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  std::memcpy(&to.sin_addr.s_addr, packet + 16, 4);  // already network order
  ssize_t n;
  do {
    n = sendto(fd_, packet, len, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(len)) {
    ++counters_.errors;
    if (warn_.allow(monotonicNs()))
      logf(LogLevel::kWarn, "raw send failed: %s", n < 0 ? std::strerror(errno) : "short write");
    return false;
  }
  ++counters_.sent;
  return true;
}

}  // namespace tandem
