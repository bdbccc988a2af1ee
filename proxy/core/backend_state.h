#pragma once
/// @file Backend states of a service and what the engine observes of each backend passively.
/// The health layer (proxy/tandemd/health) decides the state; the engine only obeys it:
/// schedulers pick UP backends, flows leave the others (see resplice.h).

#include <cstdint>

namespace tandem {

enum class BackendState : uint8_t {
  kUp,        ///< takes new flows
  kDown,      ///< failed its health checks: no new flows; quiescent flows move, others reset
  kDraining,  ///< by command: no new flows; flows move away as they become quiescent
  kDisabled,  ///< by command: as kDown, whatever the health checks say
};

const char* backendStateName(BackendState s) noexcept;

/// The backend is gone for its current flows (not merely draining).
inline bool backendGone(BackendState s) noexcept {
  return s == BackendState::kDown || s == BackendState::kDisabled;
}

/// Passive signals, counted by the engine per backend (monotonic; the health layer compares).
struct BackendStats {
  BackendState state = BackendState::kUp;
  uint64_t rsts = 0;              ///< RSTs from the backend that tore a flow down
  uint64_t connect_timeouts = 0;  ///< backend legs whose SYN was never answered
  uint64_t stalls = 0;  ///< client data resent (or sent on) while the backend acked nothing for
                        ///< 3/4 of resplice_min_idle (a live kernel acks within its delayed-ACK
                        ///< time): counted once per wait, on resplice services
  uint64_t flows_moved = 0;       ///< re-splices started away from this backend
  uint64_t flows_reset = 0;       ///< flows reset because this backend left (non-recoverable)
  uint64_t last_alive_ns = 0;     ///< last known alive (Engine::noteBackendAlive)
};

}  // namespace tandem
