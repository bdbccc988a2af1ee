#pragma once
/// @file Receive-path barrier: proof that the kernel has delivered to their sockets every
/// datagram it had taken in before a given moment.
///
/// Why: on a loaded host the kernel's per-CPU receive backlog (veth, loopback, RPS; processed
/// by the NET_RX softirq with a budget) can hold a datagram for tens or hundreds of
/// milliseconds after the kernel timestamped it and before it reaches the socket. A standby
/// that reads its sockets empty cannot tell such a held heartbeat from a dead peer. The barrier
/// sends one small datagram to itself over loopback from each CPU this thread may run on
/// (sched_setaffinity to that CPU, send, restore), so one probe waits at the tail of each CPU's
/// backlog; the backlogs are FIFO, so when every probe has come back, everything queued before
/// them has been processed, and a heartbeat it held is in our sockets.
/// Limits: a NIC's own receive ring (NAPI) is not a backlog and is not covered; on the
/// namespace topologies of the tests every hop is a veth, which is.

#include <cstdint>

namespace tandem {

struct RxBarrierCounters {
  uint64_t started = 0;      ///< barriers with at least one probe sent
  uint64_t completed = 0;    ///< barriers whose probes all came back
  uint64_t send_errors = 0;  ///< probes the kernel refused (loopback down...)
  uint64_t affinity_errors = 0;
  uint64_t stray = 0;        ///< probes of an older barrier, or not ours
};

class RxBarrier {
 public:
  RxBarrier() = default;
  ~RxBarrier();
  RxBarrier(const RxBarrier&) = delete;
  RxBarrier& operator=(const RxBarrier&) = delete;

  /// A UDP socket on 127.0.0.1, port chosen by the kernel. Throws std::system_error (startup).
  void open();
  int fd() const noexcept { return fd_; }
  /// Sends a new barrier's probes (one per allowed CPU). False if none could be sent.
  bool start() noexcept;
  /// Reads what arrived; true once the current barrier's probes have all come back.
  bool onReadable() noexcept;
  bool pending() const noexcept { return outstanding_ != 0; }
  /// CPUs the last barrier covered.
  uint32_t cpus() const noexcept { return cpus_; }
  const RxBarrierCounters& counters() const noexcept { return counters_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  uint32_t token_ = 0;
  uint32_t outstanding_ = 0;
  uint32_t cpus_ = 0;
  RxBarrierCounters counters_;
};

}  // namespace tandem
