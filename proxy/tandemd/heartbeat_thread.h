#pragma once
/// @file The heartbeat thread (sync.heartbeat_thread = on): sends this node's heartbeat frames
/// on the sync and front paths from a thread of its own, at absolute deadlines of its own timer
/// (timerfd, CLOCK_MONOTONIC), so that the data path's work on the event loop cannot delay them.
///
/// The loop stays the owner of everything else (receiving, the role machine, checkpoints): it
/// publishes the heartbeat's content as an immutable snapshot (sync::SnapshotBox), stamps
/// `loopTurned()` from its callbacks, and asks for an immediate heartbeat where the role machine
/// says "send now" (`sendNow()`, e.g. the handover heartbeat). The thread sends only while the
/// loop's stamp is younger than the stall limit (sync::loopTurnedRecently); otherwise it
/// withholds the heartbeat (counted, logged rate-limited), so a wedged loop lets the peer take
/// over. It never takes a lock the loop holds during data-path work: the snapshot and the stamp
/// are atomics (only its rate-limited log lines take stdio's lock, as the loop's do).
///
/// Authentication: its own KeyRing (its own EVP_MAC contexts) and Sealers that share the loop's
/// counters (sync::Sealer's sharing constructor), so each path's counter stays unique per
/// sender; the receiver's replay window (1024 counters) absorbs the reordering between a
/// heartbeat and the loop's frames sealed at the same moment. The sockets are the loop's
/// (sendto on a shared UDP socket from two threads is safe).
///
/// Scheduling: SCHED_FIFO one priority above the thread that starts it if that one is
/// SCHED_FIFO (daemon.realtime_priority), so the heartbeat preempts the loop on a shared CPU;
/// otherwise the thread keeps the normal policy it inherits.

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "sync/auth.h"
#include "sync/heartbeat_feed.h"

namespace tandem {

struct HeartbeatThreadConfig {
  uint32_t node_id = 0;
  uint64_t interval_ns = 0;
  uint64_t stall_limit_ns = 0;  ///< sync::heartbeatStallLimitNs()
  uint16_t key_id = 0;
  std::vector<uint8_t> key;
  int sync_fd = -1;
  sockaddr_storage sync_peer{};
  socklen_t sync_peer_len = 0;
  sync::Sealer* sync_counter = nullptr;  ///< the loop's sync-path sealer (counter shared)
  int front_fd = -1;                     ///< -1: no front path
  sockaddr_storage front_peer{};
  socklen_t front_peer_len = 0;
  sync::Sealer* front_counter = nullptr;
};

class HeartbeatThread {
 public:
  struct Stats {
    uint64_t sent = 0;            ///< heartbeat rounds sent (one frame per path)
    uint64_t immediate = 0;       ///< of them, asked for by the loop (sendNow)
    uint64_t withheld = 0;        ///< rounds not sent: the loop had stalled past the limit
    uint64_t send_errors = 0;     ///< sendto failures (any path)
    uint64_t seal_failures = 0;
    uint64_t tx_gap_max_ns = 0;   ///< largest interval between two rounds sent
    uint64_t wake_late_max_ns = 0;  ///< how late the thread's timer woke it at worst
    uint64_t loop_age_max_ns = 0;   ///< oldest loop stamp seen at a deadline
    int priority = 0;             ///< SCHED_FIFO priority, 0: normal policy
  };

  /// Keys its MAC and creates its timer and wake-up descriptors. Throws std::system_error or
  /// std::runtime_error (startup only). The thread starts with start().
  explicit HeartbeatThread(HeartbeatThreadConfig config);
  ~HeartbeatThread();
  HeartbeatThread(const HeartbeatThread&) = delete;
  HeartbeatThread& operator=(const HeartbeatThread&) = delete;

  /// Starts the thread (call from the loop's thread: the scheduling policy is taken from it).
  void start();
  /// Stops and joins the thread: no heartbeat leaves after it returns.
  void stop() noexcept;

  // Loop side.
  void publish(const sync::HeartbeatSnapshot& s) noexcept { box_.publish(s); }
  /// Sends the latest snapshot at once (and the next one an interval later).
  void sendNow() noexcept;
  /// The loop turned at `now_ns` (monotonic).
  void loopTurned(uint64_t now_ns) noexcept {
    last_turn_ns_.store(now_ns, std::memory_order_release);
  }
  Stats stats() const noexcept;

 private:
  void run() noexcept;
  void round(uint64_t now, bool immediate) noexcept;
  bool sendFrame(int fd, const sockaddr_storage& to, socklen_t to_len, sync::Sealer& sealer,
                 const sync::HeartbeatSnapshot& s, bool with_base) noexcept;
  void armTimer(uint64_t deadline_ns) noexcept;
  static void raiseMax(std::atomic<uint64_t>& m, uint64_t v) noexcept {
    uint64_t cur = m.load(std::memory_order_relaxed);
    while (v > cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }

  HeartbeatThreadConfig config_;
  sync::KeyRing keys_;
  std::unique_ptr<sync::Sealer> sync_sealer_;
  std::unique_ptr<sync::Sealer> front_sealer_;
  sync::SnapshotBox<sync::HeartbeatSnapshot> box_;
  sync::HeartbeatSnapshot last_{};   ///< thread-only: the last snapshot read
  bool have_last_ = false;
  std::vector<uint8_t> tx_;
  int timer_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> last_turn_ns_{0};
  std::atomic<uint64_t> sent_{0}, immediate_{0}, withheld_{0}, send_errors_{0},
      seal_failures_{0}, tx_gap_max_ns_{0}, wake_late_max_ns_{0}, loop_age_max_ns_{0};
  std::atomic<int> priority_{0};
  uint64_t prev_sent_ns_ = 0;        ///< thread-only
  uint64_t withheld_logged_ = 0;     ///< thread-only: withheld count at the last log line
  uint64_t withheld_log_ns_ = 0;     ///< thread-only: when it was logged
  std::thread thread_;
};

}  // namespace tandem
