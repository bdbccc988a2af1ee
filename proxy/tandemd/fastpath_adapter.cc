#include "proxy/tandemd/fastpath_adapter.h"

#include <event2/event.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/io/log.h"
#include "proxy/tandemd/prom_text.h"

namespace tandem {
namespace {

// Entries one NFQUEUE batch writes, usually: two per flow that goes on the fast path.
constexpr size_t kPendingReserve = 512;

// How often the close-event ring is read when no NFQUEUE batch does it: a close reported by the
// kernel reaches the engine at most this late.
constexpr suseconds_t kEventPollUs = 2000;

constexpr const char* kEnabledHelp =
    "1: the kernel fast path is loaded and attached (daemon.fastpath = on).";

/// The program's statistics as they appear in /metrics: passed{reason=...} and the rest.
struct PassReason {
  tandem_fp_stat stat;
  const char* reason;
};
constexpr PassReason kPassReasons[] = {
    {TANDEM_FP_ST_PASS_NO_FLOW, "no_flow"},   {TANDEM_FP_ST_PASS_SYN, "syn"},
    {TANDEM_FP_ST_PASS_CLOSE, "close"},       {TANDEM_FP_ST_PASS_RST, "rst"},
    {TANDEM_FP_ST_PASS_UNPARSED, "unparsed"}, {TANDEM_FP_ST_PASS_FAILED, "failed"},
    {TANDEM_FP_ST_PASS_NO_PEER, "no_peer"},   {TANDEM_FP_ST_PASS_ARMED, "armed"},
};

std::vector<std::string> attachAll(KernelFastPath& kernel, const FastPathConfig& config) {
  std::vector<std::string> names =
      config.interfaces.empty() ? upNonLoopbackInterfaces() : config.interfaces;
  if (names.empty()) {
    throw std::runtime_error("fast path: no interface to attach to (none is up but loopback)");
  }
  for (const std::string& name : names) kernel.attach(name);  // throws naming the interface
  return names;
}

}  // namespace

std::vector<std::string> upNonLoopbackInterfaces() {
  struct if_nameindex* list = if_nameindex();
  if (list == nullptr) {
    throw std::runtime_error(std::string("fast path: cannot list interfaces: ") +
                             std::strerror(errno));
  }
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if_freenameindex(list);
    throw std::runtime_error(std::string("fast path: socket: ") + std::strerror(err));
  }
  std::vector<std::string> out;
  for (const struct if_nameindex* i = list; i->if_index != 0 && i->if_name != nullptr; ++i) {
    ifreq req{};
    std::strncpy(req.ifr_name, i->if_name, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &req) != 0) continue;  // gone meanwhile
    if ((req.ifr_flags & IFF_UP) != 0 && (req.ifr_flags & IFF_LOOPBACK) == 0) {
      out.emplace_back(i->if_name);
    }
  }
  close(fd);
  if_freenameindex(list);
  return out;
}

FastPathAdapter::FastPathAdapter(const FastPathConfig& config)
    : kernel_(config.max_entries), interfaces_(attachAll(kernel_, config)) {
  pending_keys_.reserve(kPendingReserve);
  pending_values_.reserve(kPendingReserve);
  arm_keys_.reserve(kPendingReserve);
  arm_values_.reserve(kPendingReserve);
  lost_.reserve(kPendingReserve);
}

FastPathAdapter::~FastPathAdapter() {
  if (event_ != nullptr) event_free(event_);
  if (poll_ != nullptr) event_free(poll_);
}

bool FastPathAdapter::install(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  if (!replaceKept(key, value)) {
    pending_keys_.push_back(key);
    pending_values_.push_back(value);
  }
  return true;
}

bool FastPathAdapter::put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  if (replaceKept(key, value)) return true;  // not in the kernel yet: written with its install
  if (kernel_.update(key, value)) return true;
  ++put_failed_;
  return false;
}

size_t FastPathAdapter::keptIndex(const tandem_fp_key& key) const noexcept {
  // A batch installs a few flows at most: a linear search is the cheapest (no allocation).
  for (size_t i = 0; i < pending_keys_.size(); ++i)
    if (std::memcmp(&pending_keys_[i], &key, sizeof key) == 0) return i;
  return pending_keys_.size();
}

bool FastPathAdapter::replaceKept(const tandem_fp_key& key,
                                  const tandem_fp_rewrite& value) noexcept {
  if (const size_t a = armIndex(key); a != arm_keys_.size()) {
    arm_values_[a] = value;
    return true;
  }
  const size_t i = keptIndex(key);
  if (i == pending_keys_.size()) return false;
  pending_values_[i] = value;
  return true;
}

bool FastPathAdapter::putPair(const tandem_fp_key* keys,
                              const tandem_fp_rewrite* values) noexcept {
  for (size_t i = 0; i < 2; ++i) {
    if (replaceKept(keys[i], values[i])) continue;
    arm_keys_.push_back(keys[i]);
    arm_values_.push_back(values[i]);
  }
  return true;
}

size_t FastPathAdapter::armIndex(const tandem_fp_key& key) const noexcept {
  for (size_t i = 0; i < arm_keys_.size(); ++i)
    if (std::memcmp(&arm_keys_[i], &key, sizeof key) == 0) return i;
  return arm_keys_.size();
}

void FastPathAdapter::flushArms() noexcept {
  const size_t n = arm_keys_.size();
  size_t done = 0;
  while (done < n) {
    done += kernel_.updateBatch(arm_keys_.data() + done, arm_values_.data() + done, n - done);
    if (done == n) break;
    // Entry `done` was refused: its splice completes through NFQUEUE (the engine erases the
    // other entry then); the rest still go in.
    ++put_failed_;
    ++done;
  }
  arm_keys_.clear();
  arm_values_.clear();
}

bool FastPathAdapter::get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept {
  if (const size_t a = armIndex(key); a != arm_keys_.size()) {
    value = arm_values_[a];
    return true;
  }
  const size_t i = keptIndex(key);
  if (i == pending_keys_.size()) return kernel_.lookup(key, value);
  value = pending_values_[i];  // the kernel has not seen a packet of it yet: last_ns 0
  return true;
}

bool FastPathAdapter::erase(const tandem_fp_key& key) noexcept {
  if (const size_t a = armIndex(key); a != arm_keys_.size()) {
    arm_keys_.erase(arm_keys_.begin() + static_cast<std::ptrdiff_t>(a));
    arm_values_.erase(arm_values_.begin() + static_cast<std::ptrdiff_t>(a));
    kernel_.erase(key);  // an older entry of the same key may be in the kernel
    return true;
  }
  const size_t i = keptIndex(key);
  if (i == pending_keys_.size()) return kernel_.erase(key);
  pending_keys_.erase(pending_keys_.begin() + static_cast<std::ptrdiff_t>(i));
  pending_values_.erase(pending_values_.begin() + static_cast<std::ptrdiff_t>(i));
  kernel_.erase(key);  // an older entry of the same key may be in the kernel
  return true;
}

bool FastPathAdapter::take(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept {
  if (const size_t a = armIndex(key); a != arm_keys_.size()) {
    value = arm_values_[a];
    return erase(key);
  }
  const size_t i = keptIndex(key);
  if (i == pending_keys_.size()) return kernel_.lookupAndErase(key, value);
  value = pending_values_[i];
  return erase(key);
}

void FastPathAdapter::clear() noexcept {
  pending_keys_.clear();
  pending_values_.clear();
  arm_keys_.clear();
  arm_values_.clear();
  const size_t n = kernel_.clear();
  if (n > 0) logf(LogLevel::kInfo, "fast path: %zu map entries cleared", n);
}

void FastPathAdapter::commit() noexcept {
  const size_t n = pending_keys_.size();
  size_t done = 0;
  while (done < n) {
    done += kernel_.updateBatch(pending_keys_.data() + done, pending_values_.data() + done,
                                n - done);
    if (done == n) break;
    // Entry `done` was refused: its flow stays on NFQUEUE; the rest still go in.
    const int err = errno;
    ++put_failed_;
    const tandem_fp_rewrite lost = pending_values_[done];
    ++done;
    if (put_failed_ == 1 || err != E2BIG) {
      logf(LogLevel::kWarn, "fast path: map write refused: %s (flow stays on NFQUEUE)",
           std::strerror(err));
    }
    // After the loop: the engine erases the flow's entries, which may be among the rest.
    lost_.push_back({lost.flow_id, lost.generation});
  }
  pending_keys_.clear();
  pending_values_.clear();
  if (lost_.empty() || engine_ == nullptr) {
    lost_.clear();
    return;
  }
  const uint64_t now_ns = monotonicNs();
  for (const Lost& l : lost_) engine_->fastPathInstallLost(l.flow_id, l.generation, now_ns);
  lost_.clear();
}

void FastPathAdapter::watch(event_base* base, Engine& engine, std::function<void()> after) {
  engine_ = &engine;
  after_ = std::move(after);
  event_ = event_new(base, kernel_.eventFd(), EV_READ | EV_PERSIST, &FastPathAdapter::onEvents,
                     this);
  if (event_ == nullptr || event_add(event_, nullptr) != 0) {
    throw std::runtime_error("fast path: cannot watch the close-event ring");
  }
  // The program wakes the ring's reader only once it is a quarter full (fastpath.bpf.c): the
  // NFQUEUE loop reads it before every batch, and this timer when no packet comes.
  poll_ = event_new(base, -1, EV_PERSIST, &FastPathAdapter::onEvents, this);
  const timeval every{0, kEventPollUs};
  if (poll_ == nullptr || event_add(poll_, &every) != 0) {
    throw std::runtime_error("fast path: cannot start the close-event poll timer");
  }
}

size_t FastPathAdapter::drain(uint64_t now_ns) noexcept {
  if (engine_ == nullptr) return 0;
  const uint64_t generation = engine_->spliceGeneration();
  const size_t n = kernel_.drainEvents(
      [this, now_ns](const tandem_fp_event& ev) { engine_->fastPathClose(ev, now_ns); },
      [this, now_ns](const tandem_fp_splice_event& ev) { engine_->fastPathSpliced(ev, now_ns); });
  if (engine_->spliceGeneration() != generation && on_spliced_) on_spliced_(now_ns);
  return n;
}

void FastPathAdapter::onEvents(int, short, void* self) noexcept {
  auto* a = static_cast<FastPathAdapter*>(self);
  if (a->drain(monotonicNs()) > 0 && a->after_) a->after_();
}

std::string FastPathAdapter::metricsText(const Counters& c) const {
  const std::vector<uint64_t> st = kernel_.stats();
  auto stat = [&](tandem_fp_stat i) -> uint64_t { return i < st.size() ? st[i] : 0; };
  PromText m;
  m.single("tandem_fastpath_enabled", "gauge", kEnabledHelp, 1);
  m.single("tandem_fastpath_packets_total", "counter",
           "Packets translated and forwarded by the kernel fast path, off NFQUEUE.",
           stat(TANDEM_FP_ST_TRANSLATED));
  m.single("tandem_fastpath_bytes_total", "counter",
           "IP bytes of the packets the fast path translated (GSO packets whole).",
           stat(TANDEM_FP_ST_BYTES));
  m.family("tandem_fastpath_passed_total", "counter",
           "IPv4/TCP packets the fast path left to NFQUEUE untouched, by reason.");
  for (const PassReason& r : kPassReasons)
    m.sample("tandem_fastpath_passed_total", stat(r.stat), "reason", r.reason);
  // What the program submitted; what the engine received is tandem_fastpath_events_total.
  m.single("tandem_fastpath_events_submitted_total", "counter",
           "Close events the program submitted to the ring (FINs and the first ack of each FIN; "
           "fastpath_close = on).",
           stat(TANDEM_FP_ST_EVENTS));
  m.single("tandem_fastpath_events_full_total", "counter",
           "Closes and splice completions left to NFQUEUE because the event ring was full.",
           stat(TANDEM_FP_ST_EVENTS_FULL));
  m.single("tandem_fastpath_splices_answered_total", "counter",
           "Backend SYN-ACKs of zero-window splices answered in the kernel (both ACKs sent, the "
           "flow put on the fast path there).",
           stat(TANDEM_FP_ST_SPLICED));
  const uint64_t live =
      c.fastpath_installs >= c.fastpath_removals ? c.fastpath_installs - c.fastpath_removals : 0;
  m.single("tandem_fastpath_entries", "gauge",
           "Fast-path map entries (two per flow): installs minus removals, times two.", 2 * live);
  m.single("tandem_fastpath_map_put_failed_total", "counter",
           "Map writes the kernel refused (map full): those flows stay on NFQUEUE.", put_failed_);
  return m.take();
}

std::string fastPathDisabledMetricsText() {
  PromText m;
  m.single("tandem_fastpath_enabled", "gauge", kEnabledHelp, 0);
  return m.take();
}

}  // namespace tandem
