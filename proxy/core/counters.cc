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

}  // namespace tandem
