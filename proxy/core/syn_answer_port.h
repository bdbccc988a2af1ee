#pragma once
/// @file What the engine needs of a kernel SYN answerer (pure interface; the daemon implements
/// it over KernelSynCookie, docs/fastpath.md "SYN cookies in the kernel"). The kernel answers a
/// splice service's SYNs with the engine's own cookies (Engine::synKernelConfig/synKernelKey)
/// only while this node is active: the engine says when that changes (Engine::setStandby), so a
/// standby never answers.

namespace tandem {

class SynAnswerPort {
 public:
  virtual ~SynAnswerPort() = default;
  /// true: the node is active and the kernel may answer; false: it must not (a standby).
  virtual void setActive(bool active) noexcept = 0;
};

}  // namespace tandem
