#include "net_util.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace tandem::tools {

uint64_t nowNs() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

std::optional<uint64_t> parseU64(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

std::optional<double> parseSeconds(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || !(v >= 0)) return std::nullopt;
  return v;
}

std::optional<sockaddr_in> parseEndpoint(std::string_view text, bool port_optional) {
  std::string host(text);
  uint64_t port = 0;
  const size_t colon = text.rfind(':');
  if (colon != std::string_view::npos) {
    host.assign(text.substr(0, colon));
    auto p = parseU64(text.substr(colon + 1));
    if (!p || *p > 65535) return std::nullopt;
    port = *p;
  } else if (!port_optional) {
    return std::nullopt;
  }
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return std::nullopt;
  return sa;
}

std::string endpointString(const sockaddr_in& sa) {
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(sa.sin_port));
}

std::string socketPair(int fd) {
  sockaddr_in local{};
  sockaddr_in peer{};
  socklen_t len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return "?";
  len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
    return endpointString(local) + " -> ?";
  }
  return endpointString(local) + " -> " + endpointString(peer);
}

void Fd::reset() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool setLingerZero(int fd) noexcept {
  linger lg{};
  lg.l_onoff = 1;
  lg.l_linger = 0;
  return setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0;
}

void dieErrno(const char* prog, const std::string& what) {
  std::fprintf(stderr, "%s: %s: %s\n", prog, what.c_str(), std::strerror(errno));
  std::exit(2);
}

}  // namespace tandem::tools
