#pragma once
/// @file The standby's capture of the frames sent to the virtual MAC, and the raw socket that
/// sends the replayed packets at takeover (zero-loss takeover, see proxy/io/vmac.h).
///
/// ShadowCapture: one AF_PACKET socket per parent interface with a TPACKET_V3 mmap ring (blocks
/// handed over when full or after a 4 ms retire timeout, so a busy link costs one wakeup per
/// block, not per frame), a classic BPF filter in the kernel (destination MAC = vMAC, EtherType
/// IPv4, protocol TCP: nothing else is copied to user space), promiscuous membership (the vMAC is
/// not the parent's address; on a veth it is not needed, on a real NIC it is). The ring's frames
/// go to a callback with their TP_STATUS_CSUMNOTREADY bit: frames received from a veth or a NIC
/// with TX checksum offload upstream carry only the pseudo-header sum in their TCP checksum.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "proxy/io/garp.h"

namespace tandem {

struct ShadowCaptureCounters {
  uint64_t frames = 0;      ///< frames read from the ring
  uint64_t truncated = 0;   ///< frames longer than the snapshot length, not handed on
  uint64_t malformed = 0;   ///< not a whole IPv4 packet after the Ethernet header
  uint64_t kernel_drops = 0;  ///< PACKET_STATISTICS tp_drops: the mmap ring was full
};

class ShadowCapture {
 public:
  /// A frame: the IPv4 packet (Ethernet header and padding removed), whether its TCP checksum is
  /// partial, and its capture time on the CLOCK_MONOTONIC scale.
  using Sink = std::function<void(std::span<const uint8_t> packet, bool csum_not_ready,
                                  uint64_t ts_ns)>;

  ShadowCapture(std::string interface, const MacAddress& vmac)
      : interface_(std::move(interface)), vmac_(vmac) {}
  ~ShadowCapture();
  ShadowCapture(const ShadowCapture&) = delete;
  ShadowCapture& operator=(const ShadowCapture&) = delete;

  /// Opens the socket, filter, ring and promiscuous membership. Throws std::system_error.
  void open();
  /// Closes it all (the active does not capture).
  void close() noexcept;
  bool isOpen() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }
  /// Hands every frame of every block the kernel has completed to `sink`, and returns them.
  void drain(const Sink& sink) noexcept;
  const ShadowCaptureCounters& counters() const noexcept { return counters_; }
  const std::string& interface() const noexcept { return interface_; }

 private:
  std::string interface_;
  MacAddress vmac_;
  int fd_ = -1;
  uint8_t* ring_ = nullptr;
  size_t ring_size_ = 0;
  size_t block_size_ = 0;
  size_t block_count_ = 0;
  size_t current_ = 0;
  ShadowCaptureCounters counters_;
};

}  // namespace tandem
