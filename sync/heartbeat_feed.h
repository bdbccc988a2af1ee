#pragma once
/// @file What a heartbeat sender on its own thread needs from the event loop, as pure parts:
/// the heartbeat's content published as an immutable snapshot (SnapshotBox, a seqlock), and the
/// rule that keeps such a thread honest about the loop's liveness (loopTurnedRecently).
///
/// Why a thread at all (docs/pair_sync.md, "Heartbeat thread"): under load the active's one
/// event loop is held for tens of ms by its data path (NFQUEUE callbacks whose verdict syscalls
/// run the forwarded packets' softirq work), and a heartbeat timer on that loop fires late.
/// A thread with its own timer sends on time, but only while the loop keeps turning: a loop
/// wedged for about the dead interval must let the peer take over, as a crash would.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sync/wire.h"

namespace tandem::sync {

/// One writer publishes a trivially copyable T; readers on other threads copy the latest whole
/// value, never a torn one, without a lock (a seqlock: H. Boehm, "Can seqlocks get along with
/// programming language memory models?", 2012, with the words as relaxed atomics, so that there
/// is no data race). The writer never waits. A reader retries while a publish is in progress;
/// tryRead() gives up after a bounded number of tries, so that a reader of higher priority on
/// the writer's CPU cannot spin forever behind a preempted writer.
template <typename T>
class SnapshotBox {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  /// Writer side (one thread only).
  void publish(const T& value) noexcept {
    uint64_t w[kWords] = {};
    std::memcpy(w, &value, sizeof(T));
    const uint64_t s = seq_.load(std::memory_order_relaxed);
    seq_.store(s + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (size_t i = 0; i < kWords; ++i) words_[i].store(w[i], std::memory_order_relaxed);
    seq_.store(s + 2, std::memory_order_release);
  }
  /// Copies the latest value into `out`. False (out unchanged) if nothing was published yet or
  /// every one of `tries` attempts overlapped a publish.
  bool tryRead(T& out, int tries = 4) const noexcept {
    for (int t = 0; t < tries; ++t) {
      const uint64_t s1 = seq_.load(std::memory_order_acquire);
      if (s1 == 0) return false;
      if ((s1 & 1) != 0) continue;
      uint64_t w[kWords];
      for (size_t i = 0; i < kWords; ++i) w[i] = words_[i].load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (seq_.load(std::memory_order_relaxed) != s1) continue;
      std::memcpy(&out, w, sizeof(T));
      return true;
    }
    return false;
  }
  /// Values published so far.
  uint64_t published() const noexcept { return seq_.load(std::memory_order_acquire) / 2; }

 private:
  static constexpr size_t kWords = (sizeof(T) + 7) / 8;
  std::atomic<uint64_t> seq_{0};
  std::atomic<uint64_t> words_[kWords] = {};
};

/// The content of this node's next heartbeat frame, as the event loop last published it.
struct HeartbeatSnapshot {
  Heartbeat heartbeat;     ///< sent_ns is set by the sender at send time
  SeqBase base;            ///< the active's update session (with_base)
  uint32_t epoch = 0;      ///< the frame header's epoch (RoleMachine::epoch())
  bool with_base = false;  ///< active: the sync path's frame carries `base` too
};

/// The liveness rule of a heartbeat thread: it may speak for the loop at `now_ns` only if the
/// loop last turned (stamped `last_turn_ns`, same clock) at most `limit_ns` ago. A loop that
/// never turned yet (0) is not vouched for. A stamp from the future (another CPU's clock read
/// after ours) counts as fresh.
constexpr bool loopTurnedRecently(uint64_t now_ns, uint64_t last_turn_ns,
                                  uint64_t limit_ns) noexcept {
  if (last_turn_ns == 0) return false;
  return now_ns <= last_turn_ns || now_ns - last_turn_ns <= limit_ns;
}

/// The stall limit for a heartbeat interval and miss count: the dead interval. A loop that
/// stops turning at time T sends its last heartbeat before T + dead interval and is taken over
/// by T + 2 dead intervals: a loop wedged for a dead interval is treated as crashed at that
/// moment. Shorter limits (the dead interval less one interval was tried first) withheld
/// heartbeats for the 12-20 ms stalls a realtime loop shows when connections start under load,
/// and so caused the very takeovers the thread is there to prevent (bench/RESULTS.md).
constexpr uint64_t heartbeatStallLimitNs(uint64_t interval_ns, uint32_t miss_count) noexcept {
  return interval_ns * miss_count;
}

}  // namespace tandem::sync
