#pragma once
/// @file What the loaders of tandem's BPF programs share (kernel_fastpath.cc,
/// kernel_syncookie.cc, the test-only siphash_test_program.cc): load errors with the verifier's
/// last words, tc ingress attachment (a tcx link, or a cls_bpf filter on kernels without tcx),
/// per-CPU statistics and BPF_PROG_TEST_RUN.

#include <linux/bpf.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::bpfutil {

std::string errnoText(int err);

/// "<what>: loading the BPF program: <error>", then the end of the verifier log (its last lines
/// say why). Sets errno to the error, so that the caller can tell "no permission" from "refused".
std::string loadError(const std::string& what, int err, const std::string& log);

/// One program attached at tc ingress of one interface.
struct TcIngress {
  std::string ifname;
  int ifindex = 0;
  int link_fd = -1;          ///< tcx link (Linux 6.6+): detaches when closed, or when we die
  bool tc_filter = false;    ///< fallback: a cls_bpf filter that detach() must delete
  uint32_t tc_handle = 0;    ///< its handle and priority
};

/// Attaches `prog_fd` at tc ingress of `ifname`: a tcx link, first in the chain if `first`,
/// else last; without tcx, a clsact qdisc and a cls_bpf filter of handle and priority
/// `tc_handle` (a lower one runs earlier), replacing one left by a killed process. Throws
/// std::runtime_error starting with `what` and naming the interface.
TcIngress attachTcIngress(int prog_fd, const std::string& ifname, bool first, uint32_t tc_handle,
                          const std::string& what);
/// Undoes attachTcIngress (closes the link or deletes the filter); logs what it cannot undo.
void detachTcIngress(TcIngress& a, const std::string& what) noexcept;

/// The first `count` slots of a per-CPU array map of uint64_t, each summed over the CPUs (zeros
/// for a slot that cannot be read).
std::vector<uint64_t> sumPerCpu(int map_fd, uint32_t count) noexcept;

/// Runs the program once on `data` (BPF_PROG_TEST_RUN) and replaces it with what the program
/// left; `ctx`, when given, is the __sk_buff in and out. Returns the program's return value, or
/// -1 when the run failed.
int testRun(int prog_fd, std::vector<uint8_t>& data, __sk_buff* ctx = nullptr) noexcept;

}  // namespace tandem::bpfutil
