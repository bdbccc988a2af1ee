#pragma once
/// @file Sends the packets the engine originates itself (Engine::drainOutbox: splice-mode backend
/// SYNs while a client segment is held, the SYN resend timer, a client's RST after a connect
/// timeout) through a raw IPv4 socket. The packets are complete (IP header included, checksums
/// valid) and carry addresses that are not the host's own (the client's, transparent addressing):
/// IPPROTO_RAW implies IP_HDRINCL, so the kernel sends the header as written.
///
/// Such a packet leaves through OUTPUT and POSTROUTING, not PREROUTING, so tandem's own queue
/// rules never see it again.

#include <cstddef>
#include <cstdint>

#include "proxy/io/log.h"

namespace tandem {

struct RawSenderCounters {
  uint64_t sent = 0;
  uint64_t errors = 0;  ///< sendto() failures (the packet is lost; timers or TCP resend it)
};

class RawSender {
 public:
  /// Opens the socket (needs CAP_NET_RAW). Throws std::system_error on failure (startup only).
  RawSender();
  ~RawSender();
  RawSender(const RawSender&) = delete;
  RawSender& operator=(const RawSender&) = delete;

  /// Sends one IPv4 packet to its destination address. False (and counted) on failure; a
  /// packet too short to hold an IPv4 header is refused.
  bool send(const uint8_t* packet, size_t len) noexcept;

  const RawSenderCounters& counters() const noexcept { return counters_; }

 private:
  int fd_ = -1;
  RawSenderCounters counters_;
  RateLimit warn_{10'000'000'000ull, 1};
};

}  // namespace tandem
