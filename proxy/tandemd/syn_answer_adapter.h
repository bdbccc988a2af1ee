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
                   int fp_flows_fd, uint64_t now_ns, int fp_events_fd = -1,
                   bool bind = false, bool close_fast = true);

  void setActive(bool active) noexcept override;
  /// From the daemon's timer (at least once a second): the cookie clock offset (the engine's,
  /// which follows the wall clock), the keys of the previous, current and next periods (older
  /// ones go), and, with fastpath_bind, the backends' states when they changed.
  void tick(uint64_t now_ns) noexcept;
  /// While a planned switchover holds the data path: no cookie ACK is bound in the kernel
  /// (fastpath_bind), so that every flow the kernel bound is read before the handover.
  void pauseBind(bool paused) noexcept;

  /// Prometheus text of the tandem_fastpath_syn_* families.
  std::string metricsText() const;

 private:
  bool writeConfig() noexcept;
  /// daemon.fastpath_bind: each eligible service's backends and their state, rewritten when the
  /// engine's view changed (checked every tick).
  void writeBinds() noexcept;

  const Engine& engine_;
  KernelSynCookie kernel_;
  bool active_ = false;
  uint64_t have_[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX};  // periods whose keys were written
  bool bind_ = false;
  bool bind_paused_ = false;
  bool close_fast_ = true;
  std::vector<std::vector<uint8_t>> bind_written_;  // per splice service: the last up flags
  uint64_t bind_failed_ = 0;
  uint64_t key_failed_ = 0;
  uint64_t config_failed_ = 0;
};

/// Prometheus text for a daemon without it: tandem_fastpath_syn_enabled 0.
std::string synAnswerDisabledMetricsText();

}  // namespace tandem
