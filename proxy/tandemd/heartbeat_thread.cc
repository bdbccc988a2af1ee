#include "proxy/tandemd/heartbeat_thread.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "proxy/io/log.h"

namespace tandem {

namespace {

uint64_t realtimeNow() noexcept {
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

timespec toTimespec(uint64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000ull);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000ull);
  return ts;
}

}  // namespace

HeartbeatThread::HeartbeatThread(HeartbeatThreadConfig config) : config_(std::move(config)) {
  if (config_.sync_counter == nullptr || config_.interval_ns == 0) {
    throw std::invalid_argument("heartbeat thread: no sync sealer or no interval");
  }
  keys_.add(config_.key_id, config_.key);
  keys_.setSendKey(config_.key_id);
  std::fill(config_.key.begin(), config_.key.end(), uint8_t{0});  // keyed: not needed any more
  sync_sealer_ = std::make_unique<sync::Sealer>(keys_, *config_.sync_counter);
  if (config_.front_fd >= 0 && config_.front_counter != nullptr) {
    front_sealer_ = std::make_unique<sync::Sealer>(keys_, *config_.front_counter);
  }
  tx_.reserve(sync::kDefaultMaxFrame);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (timer_fd_ < 0) throw std::system_error(errno, std::generic_category(), "timerfd_create");
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const int err = errno;
    close(timer_fd_);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
}

HeartbeatThread::~HeartbeatThread() {
  stop();
  if (timer_fd_ >= 0) close(timer_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void HeartbeatThread::start() {
  // The loop's policy: SCHED_FIFO p (daemon.realtime_priority) gives the thread p + 1.
  int policy = SCHED_OTHER;
  sched_param sp{};
  if (pthread_getschedparam(pthread_self(), &policy, &sp) != 0) policy = SCHED_OTHER;
  int prio = 0;
  if (policy == SCHED_FIFO || policy == SCHED_RR) {
    prio = std::min(sp.sched_priority + 1, sched_get_priority_max(SCHED_FIFO));
  }
  thread_ = std::thread([this, prio] {
    if (prio > 0) {
      sched_param p{};
      p.sched_priority = prio;
      const int err = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
      if (err != 0) {
        logf(LogLevel::kWarn, "pair: heartbeat thread: SCHED_FIFO %d refused (%s); it runs at "
             "the loop's priority", prio, std::strerror(err));
      } else {
        priority_.store(prio, std::memory_order_relaxed);
      }
    }
    pthread_setname_np(pthread_self(), "tandemd-hb");
    run();
  });
  logf(LogLevel::kInfo, "pair: heartbeat thread started (every %.3f ms, SCHED_FIFO %d, stall "
       "limit %.1f ms)", static_cast<double>(config_.interval_ns) / 1e6, prio,
       static_cast<double>(config_.stall_limit_ns) / 1e6);
}

void HeartbeatThread::stop() noexcept {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof one);
  thread_.join();
}

void HeartbeatThread::sendNow() noexcept {
  const uint64_t one = 1;
  // EAGAIN only if the counter would overflow: a wake-up is pending anyway.
  (void)!write(wake_fd_, &one, sizeof one);
}

void HeartbeatThread::armTimer(uint64_t deadline_ns) noexcept {
  itimerspec its{};
  its.it_value = toTimespec(deadline_ns);
  if (timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr) != 0) {
    logf(LogLevel::kError, "pair: heartbeat thread: timerfd_settime: %s", std::strerror(errno));
  }
}

void HeartbeatThread::run() noexcept {
  uint64_t deadline = monotonicNs() + config_.interval_ns;
  armTimer(deadline);
  pollfd fds[2] = {{timer_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (!stop_.load(std::memory_order_acquire)) {
    const int n = poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      logf(LogLevel::kError, "pair: heartbeat thread: poll: %s", std::strerror(errno));
      return;
    }
    if (stop_.load(std::memory_order_acquire)) return;
    uint64_t v = 0;
    bool immediate = false;
    if ((fds[1].revents & POLLIN) != 0 && read(wake_fd_, &v, sizeof v) == sizeof v) {
      immediate = true;
    }
    bool due = false;
    if ((fds[0].revents & POLLIN) != 0 && read(timer_fd_, &v, sizeof v) == sizeof v) due = true;
    if (!immediate && !due) continue;
    const uint64_t now = monotonicNs();
    if (due && !immediate) raiseMax(wake_late_max_ns_, now > deadline ? now - deadline : 0);
    round(now, immediate);
    // Absolute deadlines: the next one an interval after this round's (or after now, if the
    // round was asked for, or the thread itself woke more than an interval late).
    deadline = immediate ? now + config_.interval_ns : deadline + config_.interval_ns;
    if (deadline <= now) deadline = now + config_.interval_ns;
    armTimer(deadline);
  }
}

void HeartbeatThread::round(uint64_t now, bool immediate) noexcept {
  const uint64_t turn = last_turn_ns_.load(std::memory_order_acquire);
  if (turn != 0 && now > turn) raiseMax(loop_age_max_ns_, now - turn);
  sync::HeartbeatSnapshot s;
  if (box_.tryRead(s)) {
    last_ = s;
    have_last_ = true;
  }
  if (!have_last_ || turn == 0) return;  // the loop has not started yet: nothing to say
  if (!sync::loopTurnedRecently(now, turn, config_.stall_limit_ns)) {
    const uint64_t w = withheld_.fetch_add(1, std::memory_order_relaxed) + 1;
    // Rate-limited: one line per second at most, with the count since the last one.
    if (withheld_log_ns_ == 0 || now - withheld_log_ns_ >= 1'000'000'000ull) {
      logf(LogLevel::kWarn,
           "pair: heartbeat withheld: the event loop has not turned for %.1f ms (limit %.1f ms; "
           "%llu withheld since the last report)",
           static_cast<double>(now - turn) / 1e6,
           static_cast<double>(config_.stall_limit_ns) / 1e6,
           static_cast<unsigned long long>(w - withheld_logged_));
      withheld_logged_ = w;
      withheld_log_ns_ = now;
    }
    return;
  }
  last_.heartbeat.sent_ns = realtimeNow();  // diagnostics only (wire.h, sent_ns)
  (void)sendFrame(config_.sync_fd, config_.sync_peer, config_.sync_peer_len, *sync_sealer_,
                  last_, last_.with_base);
  if (front_sealer_) {
    (void)sendFrame(config_.front_fd, config_.front_peer, config_.front_peer_len, *front_sealer_,
                    last_, false);
  }
  sent_.fetch_add(1, std::memory_order_relaxed);
  if (immediate) immediate_.fetch_add(1, std::memory_order_relaxed);
  if (prev_sent_ns_ != 0) raiseMax(tx_gap_max_ns_, now - prev_sent_ns_);
  prev_sent_ns_ = now;
}

bool HeartbeatThread::sendFrame(int fd, const sockaddr_storage& to, socklen_t to_len,
                                sync::Sealer& sealer, const sync::HeartbeatSnapshot& s,
                                bool with_base) noexcept {
  try {
    sync::FrameWriter w(tx_);
    bool ok = w.add(s.heartbeat);
    // The active's heartbeats carry its update session (pair.cc, sendHeartbeat()).
    if (ok && with_base) ok = w.add(s.base);
    if (!ok) return false;
    sync::FrameHeader h;
    h.node_id = config_.node_id;
    h.epoch = s.epoch;
    if (!sealer.seal(w, h)) {
      seal_failures_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    const std::span<uint8_t> f = w.frame();
    if (sendto(fd, f.data(), f.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&to),
               to_len) < 0) {
      send_errors_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  } catch (const std::bad_alloc&) {
    return false;  // tx_ is reserved to the largest frame: cannot happen
  }
}

HeartbeatThread::Stats HeartbeatThread::stats() const noexcept {
  Stats s;
  s.sent = sent_.load(std::memory_order_relaxed);
  s.immediate = immediate_.load(std::memory_order_relaxed);
  s.withheld = withheld_.load(std::memory_order_relaxed);
  s.send_errors = send_errors_.load(std::memory_order_relaxed);
  s.seal_failures = seal_failures_.load(std::memory_order_relaxed);
  s.tx_gap_max_ns = tx_gap_max_ns_.load(std::memory_order_relaxed);
  s.wake_late_max_ns = wake_late_max_ns_.load(std::memory_order_relaxed);
  s.loop_age_max_ns = loop_age_max_ns_.load(std::memory_order_relaxed);
  s.priority = priority_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace tandem
