#pragma once
/// @file The I/O adapter of the kernel fast path: loads proxy/fastpath/fastpath.bpf.c (built into
/// tandemd), attaches it at tc ingress (tcx links, so it detaches when the process dies) and
/// gives the daemon the flow map, the statistics and the close-event ring. Thin: no policy here;
/// which flows go on the fast path is the engine's decision (proxy/core).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/fastpath/fastpath_abi.h"

namespace tandem {

class KernelFastPath {
 public:
  /// Loads the program and creates its maps (`max_entries` directions; two per flow).
  /// Throws std::runtime_error naming what failed (no BPF, verifier log excerpt, ...).
  explicit KernelFastPath(uint32_t max_entries);
  ~KernelFastPath();  ///< detaches everywhere, closes the maps
  KernelFastPath(const KernelFastPath&) = delete;
  KernelFastPath& operator=(const KernelFastPath&) = delete;

  /// Attaches at tc ingress of the interface (by name, in the caller's network namespace).
  /// Throws std::runtime_error naming the interface on failure.
  void attach(const std::string& ifname);
  std::vector<std::string> attached() const;

  /// Map operations; noexcept, false on failure (errno kept).
  bool update(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept;
  /// Writes `n` entries in order with one system call (BPF_MAP_UPDATE_BATCH); returns how many
  /// were written before the first that failed (errno kept), n when all were.
  size_t updateBatch(const tandem_fp_key* keys, const tandem_fp_rewrite* values,
                     size_t n) noexcept;
  bool lookup(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept;
  bool erase(const tandem_fp_key& key) noexcept;
  /// Reads and erases one entry with one system call (BPF_MAP_LOOKUP_AND_DELETE_ELEM).
  bool lookupAndErase(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept;
  /// Removes every entry (a node that stops being active).
  size_t clear() noexcept;

  /// The fd of TANDEM_FP_FLOWS_MAP, for another program to share it (the SYN answerer).
  int flowsMapFd() const noexcept;
  /// The event ring's map fd, for the SYN program to share it (it reports the cookie ACKs it
  /// binds there: daemon.fastpath_bind).
  int eventsMapFd() const noexcept;

  /// Sum over CPUs of TANDEM_FP_STATS_MAP.
  std::vector<uint64_t> stats() const noexcept;

  /// Readable when events are waiting (for the event loop).
  int eventFd() const noexcept;
  /// Hands every waiting close event to `close`, every splice the program completed to `splice`
  /// and every cookie ACK the SYN program bound to `bind` (each dropped when empty); returns how
  /// many events were read.
  size_t drainEvents(
      const std::function<void(const tandem_fp_event&)>& close,
      const std::function<void(const tandem_fp_splice_event&)>& splice,
      const std::function<void(const tandem_fp_bind_event&)>& bind = nullptr) noexcept;
  /// The close events only (the others are read and dropped).
  size_t drainEvents(const std::function<void(const tandem_fp_event&)>& fn) noexcept;

  /// daemon.fastpath_redirect: TANDEM_FP_CFG_REDIRECT (translated packets leave by the routed
  /// interface at once, off the IP stack).
  bool setRedirect(bool on) noexcept;
  /// Tests only: TANDEM_FP_CFG_TEST_NO_ROUTE (the ACK that opens a client's window leaves by
  /// the SYN-ACK's interface, to its source MAC).
  bool setTestNoRoute(bool on) noexcept;

  /// Runs the loaded program once on `pkt` (an IPv4 packet; an Ethernet header is prepended)
  /// with BPF_PROG_TEST_RUN and copies the result back without it; returns the tc action, or -1.
  /// For tests: this is how the unit tests compare the kernel's translation with the engine's.
  /// `mark_out`, when given, is in and out: the skb->mark the packet arrives with, then the one
  /// it leaves with. `eth_out`, when given, receives the Ethernet header it leaves with
  /// (ETH_HLEN bytes). `gso_size` other than 0 makes it a GSO packet of segments that size. The
  /// packet arrives on the calling thread's network namespace's loopback.
  int testRun(std::vector<uint8_t>& pkt, uint32_t* mark_out = nullptr,
              uint8_t* eth_out = nullptr, uint32_t gso_size = 0) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
