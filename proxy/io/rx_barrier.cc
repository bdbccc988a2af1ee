#include "proxy/io/rx_barrier.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tandem {
namespace {

struct Probe {
  uint32_t token;
  uint32_t cpu;
};

sockaddr_in loopback(uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  return sa;
}

}  // namespace

RxBarrier::~RxBarrier() {
  if (fd_ >= 0) close(fd_);
}

void RxBarrier::open() {
  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "rx barrier: socket");
  sockaddr_in sa = loopback(0);
  if (bind(fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0) {
    throw std::system_error(errno, std::generic_category(), "rx barrier: bind 127.0.0.1");
  }
  socklen_t len = sizeof(sa);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    throw std::system_error(errno, std::generic_category(), "rx barrier: getsockname");
  }
  port_ = ntohs(sa.sin_port);
}

bool RxBarrier::start() noexcept {
  if (fd_ < 0) return false;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) {
    ++counters_.affinity_errors;
    return false;
  }
  const int n = CPU_COUNT(&allowed);
  ++token_;
  outstanding_ = 0;
  cpus_ = 0;
  const sockaddr_in self = loopback(port_);
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus_ < static_cast<uint32_t>(n); ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) continue;
    ++cpus_;
    if (n > 1) {
      // The send enqueues on the backlog of the CPU it runs on: run there for it.
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      if (sched_setaffinity(0, sizeof(one), &one) != 0) {
        ++counters_.affinity_errors;
        continue;
      }
    }
    const Probe p{token_, static_cast<uint32_t>(cpu)};
    if (sendto(fd_, &p, sizeof(p), 0, reinterpret_cast<const sockaddr*>(&self), sizeof(self)) ==
        static_cast<ssize_t>(sizeof(p))) {
      ++outstanding_;
    } else {
      ++counters_.send_errors;
    }
  }
  if (n > 1 && sched_setaffinity(0, sizeof(allowed), &allowed) != 0) ++counters_.affinity_errors;
  if (outstanding_ == 0) return false;
  ++counters_.started;
  return true;
}

bool RxBarrier::onReadable() noexcept {
  if (fd_ < 0) return false;
  bool completed = false;
  for (int i = 0; i < 64; ++i) {
    Probe p{};
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    const ssize_t r = recvfrom(fd_, &p, sizeof(p), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (r < 0) break;  // EAGAIN (drained) or an error: the next readable event retries
    // Only our own probes count (anyone on the host can send to a loopback port).
    if (r != static_cast<ssize_t>(sizeof(p)) || from.sin_port != htons(port_) ||
        from.sin_addr.s_addr != htonl(INADDR_LOOPBACK) || p.token != token_ ||
        outstanding_ == 0) {
      ++counters_.stray;
      continue;
    }
    if (--outstanding_ == 0) {
      ++counters_.completed;
      completed = true;
    }
  }
  return completed;
}

}  // namespace tandem
