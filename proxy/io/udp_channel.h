#pragma once
/// @file The sync transport: one non-blocking UDP socket bound to the node's sync address, sending
/// to the peer's. It moves datagrams and counts what went wrong; frames, authentication and
/// reliability are sync/'s business (wire.h, auth.h, reliable.h). Register fd() for reading with
/// the event loop and call recv() until it returns EAGAIN.
///
/// The socket is not connect()ed: a connected UDP socket drops datagrams from any other source
/// silently and turns ICMP errors into ECONNREFUSED on the next call, whereas here every sender is
/// seen (and counted as `foreign` if it is not the peer) and authenticity is decided by the MAC,
/// not by the source address, which an attacker on the link can forge anyway.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/ip_addr.h"
#include "proxy/io/log.h"

namespace tandem {

struct UdpChannelOptions {
  Endpoint bind;       ///< local sync address (port 0: the kernel picks one, see localEndpoint)
  Endpoint peer;       ///< the other node's sync address; same family as `bind`
  std::string device;  ///< SO_BINDTODEVICE when not empty (needs CAP_NET_RAW)
  /// SO_RCVBUF(FORCE): a bulk resync arrives faster than one loop iteration drains it.
  uint32_t rcvbuf = 4u << 20;
  uint32_t sndbuf = 1u << 20;  ///< SO_SNDBUF(FORCE); 0 leaves the kernel default
  /// IP_TOS / IPV6_TCLASS: DSCP CS6, network control (RFC 4594 section 3.1), so heartbeats and
  /// sync traffic are not queued behind data where the network honours DSCP.
  uint8_t tos = 0xc0;
  /// SO_PRIORITY (TC_PRIO_INTERACTIVE = 6, the highest allowed without CAP_NET_ADMIN): the
  /// local qdisc's band. Set after IP_TOS, which older kernels let overwrite it. -1 leaves it.
  int priority = 6;
  /// SO_TIMESTAMPNS: each datagram carries the kernel's receive time (Datagram::kernel_rx_ns),
  /// so the pair can tell a delay on the way in (softirq, the network) from its own loop's.
  bool rx_timestamps = true;
};

struct UdpChannelCounters {
  uint64_t sent = 0;  ///< datagrams the kernel accepted
  uint64_t bytes_sent = 0;
  uint64_t send_would_block = 0;  ///< EAGAIN: socket buffer full (the sender resends later)
  uint64_t send_errors = 0;       ///< other send failures (ENETUNREACH, EPERM, ENOBUFS...)
  uint64_t received = 0;          ///< datagrams delivered to the caller
  uint64_t bytes_received = 0;
  uint64_t recv_truncated = 0;  ///< larger than the caller's buffer: dropped
  uint64_t recv_errors = 0;     ///< receive failures other than EAGAIN / EINTR
  uint64_t foreign = 0;         ///< delivered datagrams whose source is not the peer
  int last_send_errno = 0;
  int last_recv_errno = 0;
};

/// One received datagram's metadata; the bytes are in the caller's buffer.
struct Datagram {
  size_t len = 0;
  Endpoint from;
  bool from_peer = false;
  /// CLOCK_REALTIME at which the kernel took the datagram in (SO_TIMESTAMPNS: when the last hop
  /// queued it for the receive softirq), ns; 0 when timestamps are off or none came.
  uint64_t kernel_rx_ns = 0;
};

/// Pure. Fills `out` from an endpoint; returns its length (sockaddr_in or sockaddr_in6).
socklen_t endpointToSockaddr(const Endpoint& ep, sockaddr_storage& out) noexcept;
/// Pure. The endpoint of an AF_INET / AF_INET6 address; nullopt for other families.
std::optional<Endpoint> sockaddrToEndpoint(const sockaddr_storage& sa, socklen_t len) noexcept;

class UdpChannel {
 public:
  explicit UdpChannel(UdpChannelOptions options);
  ~UdpChannel();
  UdpChannel(const UdpChannel&) = delete;
  UdpChannel& operator=(const UdpChannel&) = delete;

  /// Creates, configures and binds the socket. Throws std::system_error naming the step (startup
  /// only): a sync channel without its priority or device binding is a configuration error.
  void open();

  int fd() const noexcept { return fd_; }

  /// Sends one datagram to the peer. Returns 0 or the errno (EAGAIN: buffer full), counted.
  int send(std::span<const uint8_t> datagram) noexcept;
  /// Sends one datagram to `to` (e.g. an answer to a foreign sender, or a test peer).
  int sendTo(std::span<const uint8_t> datagram, const Endpoint& to) noexcept;

  /// Receives one datagram into `buf`. Returns 0 and fills `out`; EAGAIN when nothing is queued;
  /// EMSGSIZE when the datagram was larger than `buf` (dropped, counted); another errno on
  /// failure (counted).
  int recv(std::span<uint8_t> buf, Datagram& out) noexcept;

  /// The bound address (with the kernel's port if options.bind had port 0).
  const Endpoint& localEndpoint() const noexcept { return local_; }
  const UdpChannelOptions& options() const noexcept { return options_; }
  const UdpChannelCounters& counters() const noexcept { return counters_; }
  /// Socket buffer sizes the kernel granted (it doubles the requested value).
  int effectiveRcvbuf() const noexcept { return effective_rcvbuf_; }
  int effectiveSndbuf() const noexcept { return effective_sndbuf_; }

 private:
  int sendRaw(std::span<const uint8_t> datagram, const sockaddr_storage& to,
              socklen_t to_len) noexcept;
  void setBuffer(int force_option, int option, uint32_t size, const char* name);
  void warnLimited(const char* what, int err) noexcept;

  UdpChannelOptions options_;
  int fd_ = -1;
  sockaddr_storage peer_sa_{};
  socklen_t peer_len_ = 0;
  Endpoint local_;
  int effective_rcvbuf_ = 0;
  int effective_sndbuf_ = 0;
  UdpChannelCounters counters_;
  RateLimit warn_limit_{10'000'000'000ull, 5};
};

}  // namespace tandem
