#include "sync/bulk.h"

#include <algorithm>

namespace tandem::sync {

void BulkSender::onRequest(const BulkRequest& request) noexcept {
  // Requests are resent until the standby sees BULK_END; a repeat of the transfer in progress
  // (or just finished, its BULK_END still in flight) must not restart it.
  if (has_request_ && request.request_id == request_id_) {
    ++counters_.duplicates;
    return;
  }
  has_request_ = true;
  request_id_ = request.request_id;
  active_ = true;
  cursor_ = 0;
  sent_ = 0;
  ++counters_.requests;
}

size_t BulkSender::step(FlowSource& source, ReliableSender& sender, size_t max_flows) noexcept {
  if (!active_) return 0;
  size_t n = 0;
  FlowRecord flow;
  // Keep one slot beyond the reserve for the BULK_END; in the window, keep a share for live
  // updates (an eighth at most, so a small window still moves the bulk).
  const size_t window_reserve = std::min(reserve_, sender.window() / 8);
  // Not for every few slots an ack frees: full frames, fewer of them (as Nagle's rule).
  const size_t min_burst = std::min(kBulkMinBurst, sender.window() / 4);
  if (sender.windowSpace() < window_reserve + min_burst) return 0;
  while (n < max_flows && sender.space() > reserve_ + 1 &&
         sender.windowSpace() > window_reserve) {
    if (!source.next(cursor_, flow)) {
      if (sender.bulkEnd(request_id_, sent_)) {
        active_ = false;
        ++counters_.completed;
      }
      return n;
    }
    if (!sender.upsert(flow)) break;  // cannot happen with the space check; retry next step
    ++sent_;
    ++n;
    ++counters_.flows;
  }
  return n;
}

void BulkReceiver::start(uint32_t request_id, uint64_t now_ns) noexcept {
  request_id_ = request_id;
  waiting_ = true;
  ready_ = false;
  next_request_ns_ = now_ns;
}

std::optional<BulkRequest> BulkReceiver::poll(uint64_t now_ns) noexcept {
  if (!waiting_ || now_ns < next_request_ns_) return std::nullopt;
  next_request_ns_ = now_ns + retry_ns_;
  return BulkRequest{request_id_};
}

bool BulkReceiver::onBulkEnd(uint32_t request_id, uint32_t flows) noexcept {
  if (!waiting_ || request_id != request_id_) return false;  // an older transfer's end
  waiting_ = false;
  ready_ = true;
  last_flows_ = flows;
  return true;
}

}  // namespace tandem::sync
