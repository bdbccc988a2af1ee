#pragma once
/// @file Sends complete IPv4 packets the engine originated (Engine::drainOutbox: re-splice SYNs,
/// RSTs) through a raw socket (IPPROTO_RAW, so IP_HDRINCL: the engine's headers go out as
/// written, source address included). Locally sent packets skip PREROUTING, so the service rules
/// never queue them back to tandemd.

#include <cstddef>
#include <cstdint>

#include "proxy/io/log.h"

namespace tandem {

struct RawSenderCounters {
  uint64_t sent = 0;
  uint64_t errors = 0;  ///< sendto() failures (the TCP ends recover by their own timers)
};

class RawSender {
 public:
  RawSender() = default;
  ~RawSender();
  RawSender(const RawSender&) = delete;
  RawSender& operator=(const RawSender&) = delete;

  /// Opens the socket; throws std::system_error (needs CAP_NET_RAW). Startup only.
  void open();
  /// Sends one IPv4 packet to its destination address. Never throws.
  void send(const uint8_t* packet, size_t len) noexcept;

  const RawSenderCounters& counters() const noexcept { return counters_; }

 private:
  int fd_ = -1;
  RawSenderCounters counters_;
  RateLimit warn_limit_{10'000'000'000ull, 5};
};

}  // namespace tandem
