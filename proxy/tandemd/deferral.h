#pragma once
/// @file Deferral bookkeeping of the active proxy (issue 4, "what is checkpointed"): the new
/// flows whose backend SYN-ACK the engine holds (Engine::setSyncDeferral) until the standby has
/// acknowledged the flow's checkpoint. Each entry waits for the reliable sender's seq of its
/// upsert to be delivered, at most `timeout_ns`; then the caller releases it (markSynced).
/// Pure: time and the delivery test are arguments.

#include <cstddef>
#include <cstdint>
#include <deque>

#include "proxy/core/flow.h"

namespace tandem {

class DeferredFlows {
 public:
  struct Counters {
    uint64_t tracked = 0;    ///< flows that started waiting
    uint64_t acked = 0;      ///< released because the standby acknowledged them
    uint64_t timed_out = 0;  ///< released because the wait ran out
    uint64_t abandoned = 0;  ///< released unacknowledged because deferral stopped (role, peer)
  };

  explicit DeferredFlows(uint64_t timeout_ns) noexcept : timeout_ns_(timeout_ns) {}

  /// Starts the wait of the flow with client-leg `key`, carried by reliable message `seq`.
  void add(const FlowKey& key, uint64_t seq, uint64_t now_ns) {
    entries_.push_back(Entry{key, seq, now_ns + timeout_ns_});
    ++counters_.tracked;
  }

  /// Releases (calls `release(key)`) every entry whose message `delivered(seq)`, or whose wait
  /// ran out at `now_ns`. Returns how many were released.
  template <typename Delivered, typename Release>
  size_t poll(uint64_t now_ns, Delivered&& delivered, Release&& release) {
    size_t n = 0;
    for (size_t i = 0; i < entries_.size();) {
      const Entry& e = entries_[i];
      const bool acked = delivered(e.seq);
      if (!acked && now_ns < e.deadline_ns) {
        ++i;
        continue;
      }
      ++(acked ? counters_.acked : counters_.timed_out);
      release(e.key);
      entries_[i] = entries_.back();
      entries_.pop_back();
      ++n;
    }
    return n;
  }

  /// Releases every entry at once (deferral turned off: no ready standby, or not active).
  template <typename Release>
  size_t releaseAll(Release&& release) {
    const size_t n = entries_.size();
    for (const Entry& e : entries_) release(e.key);
    counters_.abandoned += n;
    entries_.clear();
    return n;
  }

  size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  const Counters& counters() const noexcept { return counters_; }

 private:
  struct Entry {
    FlowKey key;
    uint64_t seq;
    uint64_t deadline_ns;
  };
  uint64_t timeout_ns_;
  std::deque<Entry> entries_;
  Counters counters_;
};

}  // namespace tandem
