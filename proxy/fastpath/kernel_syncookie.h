#pragma once
/// @file The I/O adapter of the kernel SYN answerer (proxy/fastpath/syncookie.bpf.c, contract in
/// syncookie_abi.h): loads it, attaches it at tc ingress first in the tcx chain (before the fast
/// path, which would end the chain on a SYN it has no entry for), and gives the daemon its maps.
/// Thin: the keys, the services and the active flag are the daemon's and the engine's.
/// Also loads the test-only SipHash program (SipHashTestProgram) for the unit tests.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/fastpath/syncookie_abi.h"

namespace tandem {

class KernelSynCookie {
 public:
  /// Loads the program and creates its maps (the config says "not active" until written).
  /// `fp_flows_fd`: the fast path's flow map (KernelFastPath::flowsMapFd()), shared so that a
  /// SYN on a fast flow's tuple goes to the engine; -1: none. `fp_events_fd`: the fast path's
  /// event ring, shared for the bind reports (fastpath_bind); -1: a private one. Throws
  /// std::runtime_error naming what failed.
  explicit KernelSynCookie(int fp_flows_fd = -1, int fp_events_fd = -1);
  ~KernelSynCookie();  ///< detaches everywhere, closes the maps
  KernelSynCookie(const KernelSynCookie&) = delete;
  KernelSynCookie& operator=(const KernelSynCookie&) = delete;

  /// Attaches at tc ingress of the interface, before every program already there (tcx
  /// BPF_F_BEFORE; without tcx, a cls_bpf filter one priority ahead of the fast path's).
  /// Throws std::runtime_error naming the interface on failure.
  void attach(const std::string& ifname);

  /// Map operations; noexcept, false on failure (errno kept).
  bool setConfig(const tandem_syn_config& config) noexcept;
  bool config(tandem_syn_config& out) const noexcept;
  bool putKey(uint64_t count, const tandem_syn_key& key) noexcept;
  bool eraseKey(uint64_t count) noexcept;
  /// The periods whose keys are in the map.
  std::vector<uint64_t> keyCounts() const;
  /// `flags`: TANDEM_SYN_SVC_ON, with TANDEM_SYN_SVC_ZERO_WINDOW for a zero-window handshake
  /// and TANDEM_SYN_SVC_KBIND for a kernel-bound service.
  bool putService(const tandem_syn_service& service,
                  uint8_t flags = TANDEM_SYN_SVC_ON) noexcept;
  bool eraseService(const tandem_syn_service& service) noexcept;
  /// A kernel-bound service's backends and their states (TANDEM_SYN_BINDS_MAP).
  bool putBind(const tandem_syn_service& service, const tandem_syn_bind& bind) noexcept;

  /// Sum over CPUs of TANDEM_SYN_STATS_MAP.
  std::vector<uint64_t> stats() const noexcept;

  /// Runs the program once on `frame` (an Ethernet frame; BPF_PROG_TEST_RUN on the loopback
  /// device, whose address is 00:00:00:00:00:00, so only frames to that MAC count as "to this
  /// host") and replaces it with what the program left; returns the tc action, or -1.
  int testRun(std::vector<uint8_t>& frame) noexcept;

 private:
  /// Opens and loads the object (`log`: the verifier's log buffer, or none); false if the
  /// kernel refused the program and there was no log to say why.
  bool load(int fp_flows_fd, int fp_events_fd, std::string* log);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The test-only program of siphash_test.bpf.c: the BPF SipHash-2-4 on one message.
class SipHashTestProgram {
 public:
  SipHashTestProgram();  ///< throws std::runtime_error when it cannot load
  ~SipHashTestProgram();
  SipHashTestProgram(const SipHashTestProgram&) = delete;
  SipHashTestProgram& operator=(const SipHashTestProgram&) = delete;
  /// SipHash-2-4 of msg[0, len) (len <= 64) under key; false if the run failed.
  bool hash(const uint8_t (&key)[16], const uint8_t* msg, size_t len, uint64_t& out) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
