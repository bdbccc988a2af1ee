#pragma once
/// @file The daemon's side of the kernel SYN answerer (docs/fastpath.md "SYN cookies in the
/// kernel"): SynAnswerPort over KernelSynCookie. Writes the splice services and the engine's
/// cookie parameters into the program's maps, keeps the keys of the current and the next cookie
/// period there (derived ahead of the rotation), follows the engine's role (a standby never
/// answers) and exports the program's statistics. Thin: the cookie itself is the engine's.

#include <cstdint>
#include <string>
#include <vector>

#include "proxy/core/engine.h"
#include "proxy/core/syn_answer_port.h"
#include "proxy/fastpath/kernel_syncookie.h"

namespace tandem {

class SynAnswerAdapter final : public SynAnswerPort {
 public:
  /// Loads the program, writes the services, the config (not active yet) and the keys at
  /// now_ns, and attaches it at tc ingress of `interfaces` (first in the chain). Throws
  /// std::runtime_error naming what failed; nothing stays attached then.
  /// `fp_flows_fd`: KernelFastPath::flowsMapFd() (SYNs on fast flows stay the engine's).
  SynAnswerAdapter(const Engine& engine, const std::vector<std::string>& interfaces,
                   int fp_flows_fd, uint64_t now_ns);

  void setActive(bool active) noexcept override;
  /// From the daemon's timer (at least once a second): the cookie clock offset (the engine's,
  /// which follows the wall clock) and the keys of the current and next periods; older keys go.
  void tick(uint64_t now_ns) noexcept;

  /// Prometheus text of the tandem_fastpath_syn_* families.
  std::string metricsText() const;

 private:
  bool writeConfig() noexcept;

  const Engine& engine_;
  KernelSynCookie kernel_;
  bool active_ = false;
  uint64_t have_[2] = {UINT64_MAX, UINT64_MAX};  // periods whose keys were written
  uint64_t key_failed_ = 0;
  uint64_t config_failed_ = 0;
};

/// Prometheus text for a daemon without it: tandem_fastpath_syn_enabled 0.
std::string synAnswerDisabledMetricsText();

}  // namespace tandem
