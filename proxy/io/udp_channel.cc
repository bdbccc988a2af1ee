#include "proxy/io/udp_channel.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <system_error>
#include <utility>

namespace tandem {
namespace {

[[noreturn]] void throwErrno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "udp_channel: " + what);
}

}  // namespace

socklen_t endpointToSockaddr(const Endpoint& ep, sockaddr_storage& out) noexcept {
  out = sockaddr_storage{};
  if (ep.addr.isV4()) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(ep.port);
    sin.sin_addr.s_addr = htonl(ep.addr.v4());
    std::memcpy(&out, &sin, sizeof(sin));
    return sizeof(sin);
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(ep.port);
  std::memcpy(sin6.sin6_addr.s6_addr, ep.addr.bytes().data(), 16);
  std::memcpy(&out, &sin6, sizeof(sin6));
  return sizeof(sin6);
}

std::optional<Endpoint> sockaddrToEndpoint(const sockaddr_storage& sa, socklen_t len) noexcept {
  if (sa.ss_family == AF_INET && len >= sizeof(sockaddr_in)) {
    sockaddr_in sin{};
    std::memcpy(&sin, &sa, sizeof(sin));
    return Endpoint{IpAddr::fromV4(ntohl(sin.sin_addr.s_addr)), ntohs(sin.sin_port)};
  }
  if (sa.ss_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, &sa, sizeof(sin6));
    return Endpoint{IpAddr::fromV6(sin6.sin6_addr.s6_addr), ntohs(sin6.sin6_port)};
  }
  return std::nullopt;
}

UdpChannel::UdpChannel(UdpChannelOptions options) : options_(std::move(options)) {}

UdpChannel::~UdpChannel() {
  if (fd_ >= 0) close(fd_);
}

void UdpChannel::setBuffer(int force_option, int option, uint32_t size, const char* name) {
  if (size == 0) return;
  const int value = static_cast<int>(size);
  // The FORCE variant ignores net.core.[rw]mem_max but needs CAP_NET_ADMIN.
  if (setsockopt(fd_, SOL_SOCKET, force_option, &value, sizeof(value)) == 0) return;
  if (errno != EPERM) throwErrno(errno, std::string(name) + "FORCE");
  if (setsockopt(fd_, SOL_SOCKET, option, &value, sizeof(value)) < 0) throwErrno(errno, name);
}

void UdpChannel::open() {
  const bool v4 = options_.bind.addr.isV4();
  if (v4 != options_.peer.addr.isV4()) {
    throwErrno(EAFNOSUPPORT, "bind " + options_.bind.toString() + " and peer " +
                                 options_.peer.toString() + " are of different families");
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  fd_ = socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throwErrno(errno, "socket");

  const int one = 1;
  if (!v4 && setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) {
    throwErrno(errno, "IPV6_V6ONLY");
  }
  setBuffer(SO_RCVBUFFORCE, SO_RCVBUF, options_.rcvbuf, "SO_RCVBUF");
  setBuffer(SO_SNDBUFFORCE, SO_SNDBUF, options_.sndbuf, "SO_SNDBUF");

  const int tos = options_.tos;
  if (setsockopt(fd_, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_TOS : IPV6_TCLASS, &tos,
                 sizeof(tos)) < 0) {
    throwErrno(errno, v4 ? "IP_TOS" : "IPV6_TCLASS");
  }
  if (options_.priority >= 0 &&
      setsockopt(fd_, SOL_SOCKET, SO_PRIORITY, &options_.priority, sizeof(options_.priority)) < 0) {
    throwErrno(errno, "SO_PRIORITY " + std::to_string(options_.priority));
  }
  if (options_.rx_timestamps &&
      setsockopt(fd_, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0) {
    throwErrno(errno, "SO_TIMESTAMPNS");
  }
  if (!options_.device.empty() &&
      setsockopt(fd_, SOL_SOCKET, SO_BINDTODEVICE, options_.device.c_str(),
                 static_cast<socklen_t>(options_.device.size())) < 0) {
    throwErrno(errno, "SO_BINDTODEVICE " + options_.device);
  }

  sockaddr_storage local{};
  const socklen_t local_len = endpointToSockaddr(options_.bind, local);
  if (bind(fd_, reinterpret_cast<const sockaddr*>(&local), local_len) < 0) {
    throwErrno(errno, "bind " + options_.bind.toString());
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &bound_len) < 0) {
    throwErrno(errno, "getsockname");
  }
  local_ = sockaddrToEndpoint(bound, bound_len).value_or(options_.bind);
  peer_len_ = endpointToSockaddr(options_.peer, peer_sa_);

  socklen_t len = sizeof(effective_rcvbuf_);
  if (getsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &effective_rcvbuf_, &len) < 0) {
    throwErrno(errno, "getsockopt SO_RCVBUF");
  }
  len = sizeof(effective_sndbuf_);
  if (getsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &effective_sndbuf_, &len) < 0) {
    throwErrno(errno, "getsockopt SO_SNDBUF");
  }
}

void UdpChannel::warnLimited(const char* what, int err) noexcept {
  if (!warn_limit_.allow(monotonicNs())) return;
  const uint64_t suppressed = warn_limit_.takeSuppressed();
  logf(LogLevel::kWarn, "udp_channel %s: %s: %s (%llu similar warnings suppressed)",
       local_.toString().c_str(), what, std::strerror(err),
       static_cast<unsigned long long>(suppressed));
}

int UdpChannel::send(std::span<const uint8_t> datagram) noexcept {
  return sendRaw(datagram, peer_sa_, peer_len_);
}

int UdpChannel::sendTo(std::span<const uint8_t> datagram, const Endpoint& to) noexcept {
  sockaddr_storage sa{};
  const socklen_t len = endpointToSockaddr(to, sa);
  return sendRaw(datagram, sa, len);
}

int UdpChannel::sendRaw(std::span<const uint8_t> datagram, const sockaddr_storage& to,
                        socklen_t to_len) noexcept {
  if (fd_ < 0) return EBADF;
  for (;;) {
    const ssize_t n = sendto(fd_, datagram.data(), datagram.size(), 0,
                             reinterpret_cast<const sockaddr*>(&to), to_len);
    if (n >= 0) {
      // A datagram socket sends all or nothing; a short count would be a kernel bug.
      if (static_cast<size_t>(n) != datagram.size()) {
        ++counters_.send_errors;
        counters_.last_send_errno = EMSGSIZE;
        return EMSGSIZE;
      }
      ++counters_.sent;
      counters_.bytes_sent += datagram.size();
      return 0;
    }
    const int err = errno;
    if (err == EINTR) continue;
    counters_.last_send_errno = err;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      ++counters_.send_would_block;
    } else {
      ++counters_.send_errors;
      warnLimited("send", err);
    }
    return err;
  }
}

int UdpChannel::recv(std::span<uint8_t> buf, Datagram& out) noexcept {
  if (fd_ < 0) return EBADF;
  sockaddr_storage from{};
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_name = &from;
  msg.msg_namelen = sizeof(from);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  for (;;) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    // MSG_TRUNC: the return value is the datagram's real length, so an oversized one is
    // recognised (and dropped) rather than handed on cut.
    const ssize_t n = recvmsg(fd_, &msg, MSG_TRUNC);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return EAGAIN;
      ++counters_.recv_errors;
      counters_.last_recv_errno = err;
      warnLimited("recv", err);
      return err;
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0 || static_cast<size_t>(n) > buf.size()) {
      ++counters_.recv_truncated;
      counters_.last_recv_errno = EMSGSIZE;
      return EMSGSIZE;
    }
    out.len = static_cast<size_t>(n);
    out.kernel_rx_ns = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
          c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
        timespec ts{};
        std::memcpy(&ts, CMSG_DATA(c), sizeof(ts));
        out.kernel_rx_ns = static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull +
                           static_cast<uint64_t>(ts.tv_nsec);
      }
    }
    out.from = sockaddrToEndpoint(from, msg.msg_namelen).value_or(Endpoint{});
    out.from_peer = out.from == options_.peer;
    if (!out.from_peer) ++counters_.foreign;
    ++counters_.received;
    counters_.bytes_received += out.len;
    return 0;
  }
}

}  // namespace tandem
