#include "proxy/core/counters.h"

namespace tandem {

const char* dropReasonName(DropReason r) noexcept {
  switch (r) {
    case DropReason::kNone: return "none";
#define TANDEM_X(id, name) \
  case DropReason::id:     \
    return name;
    TANDEM_DROP_REASONS(TANDEM_X)
#undef TANDEM_X
    case DropReason::kCount: break;
  }
  return "unknown";
}

const char* replayPruneName(ReplayPrune r) noexcept {
  switch (r) {
#define TANDEM_X(id, name) \
  case ReplayPrune::id:    \
    return name;
    TANDEM_REPLAY_PRUNE_REASONS(TANDEM_X)
#undef TANDEM_X
    case ReplayPrune::kCount: break;
  }
  return "unknown";
}

}  // namespace tandem
