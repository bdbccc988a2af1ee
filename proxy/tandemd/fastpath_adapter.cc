#include "proxy/tandemd/fastpath_adapter.h"

#include <event2/event.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

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
  if (config.redirect && !kernel_.setRedirect(true))
    throw std::runtime_error("fast path: cannot set fastpath_redirect in the program's config map");
  for (Kept* k : {&installs_, &arms_}) {
    k->keys.reserve(kPendingReserve);
    k->values.reserve(kPendingReserve);
  }
  lost_.reserve(kPendingReserve);
}

FastPathAdapter::~FastPathAdapter() {
  if (event_ != nullptr) event_free(event_);
  if (poll_ != nullptr) event_free(poll_);
}

size_t FastPathAdapter::Kept::find(const tandem_fp_key& key) const noexcept {
  // A batch installs a few flows at most: a linear search is the cheapest (no allocation).
  for (size_t i = 0; i < keys.size(); ++i)
    if (std::memcmp(&keys[i], &key, sizeof key) == 0) return i;
  return keys.size();
}

void FastPathAdapter::Kept::remove(size_t i) noexcept {
  keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(i));
  values.erase(values.begin() + static_cast<std::ptrdiff_t>(i));
}

void FastPathAdapter::Kept::clear() noexcept {
  keys.clear();
  values.clear();
}

const tandem_fp_rewrite* FastPathAdapter::findKept(const tandem_fp_key& key) const noexcept {
  for (const Kept* k : {&arms_, &installs_})
    if (const size_t i = k->find(key); i != k->keys.size()) return &k->values[i];
  return nullptr;
}

tandem_fp_rewrite* FastPathAdapter::findKept(const tandem_fp_key& key) noexcept {
  return const_cast<tandem_fp_rewrite*>(std::as_const(*this).findKept(key));
}

template <typename Refused>
void FastPathAdapter::writeKept(Kept& kept, Refused refused) noexcept {
  const size_t n = kept.keys.size();
  size_t done = 0;
  while (done < n) {
    done += kernel_.updateBatch(kept.keys.data() + done, kept.values.data() + done, n - done);
    if (done == n) break;
    const int err = errno;
    ++put_failed_;
    refused(done, err);
    ++done;
  }
  kept.clear();
}

void FastPathAdapter::keep(Kept& list, const tandem_fp_key& key,
                           const tandem_fp_rewrite& value) noexcept {
  if (tandem_fp_rewrite* kept = findKept(key)) {
    *kept = value;
  } else {
    list.keys.push_back(key);  // capacity reserved for a batch's entries
    list.values.push_back(value);
  }
}

bool FastPathAdapter::install(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  keep(installs_, key, value);
  return true;
}

bool FastPathAdapter::put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  if (tandem_fp_rewrite* kept = findKept(key)) {  // not in the kernel yet: written with it
    *kept = value;
    return true;
  }
  if (kernel_.update(key, value)) return true;
  ++put_failed_;
  return false;
}

bool FastPathAdapter::putPair(const tandem_fp_key* keys,
                              const tandem_fp_rewrite* values) noexcept {
  for (size_t i = 0; i < 2; ++i) keep(arms_, keys[i], values[i]);
  return true;
}

void FastPathAdapter::flushArms() noexcept {
  // A refused entry's splice completes through NFQUEUE (the engine erases the other entry then).
  writeKept(arms_, [](size_t, int) {});
}

bool FastPathAdapter::get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept {
  const tandem_fp_rewrite* kept = findKept(key);
  if (kept == nullptr) return kernel_.lookup(key, value);
  value = *kept;  // the kernel has not seen a packet of it yet: last_ns 0
  return true;
}

bool FastPathAdapter::erase(const tandem_fp_key& key) noexcept {
  for (Kept* k : {&arms_, &installs_}) {
    if (const size_t i = k->find(key); i != k->keys.size()) {
      k->remove(i);
      kernel_.erase(key);  // an older entry of the same key may be in the kernel
      return true;
    }
  }
  return kernel_.erase(key);
}

bool FastPathAdapter::take(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept {
  const tandem_fp_rewrite* kept = findKept(key);
  if (kept == nullptr) return kernel_.lookupAndErase(key, value);
  value = *kept;
  return erase(key);
}

void FastPathAdapter::clear() noexcept {
  installs_.clear();
  arms_.clear();
  const size_t n = kernel_.clear();
  if (n > 0) logf(LogLevel::kInfo, "fast path: %zu map entries cleared", n);
}

void FastPathAdapter::commit() noexcept {
  writeKept(installs_, [this](size_t i, int err) {
    // Its flow stays on NFQUEUE.
    if (put_failed_ == 1 || err != E2BIG) {
      logf(LogLevel::kWarn, "fast path: map write refused: %s (flow stays on NFQUEUE)",
           std::strerror(err));
    }
    // After the loop: the engine erases the flow's entries, which may be among the rest.
    lost_.push_back({installs_.values[i].flow_id, installs_.values[i].generation});
  });
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
      [this, now_ns](const tandem_fp_splice_event& ev) { engine_->fastPathSpliced(ev, now_ns); },
      [this, now_ns](const tandem_fp_bind_event& ev) { engine_->fastPathBound(ev, now_ns); });
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
  m.single("tandem_fastpath_redirected_total", "counter",
           "Translated packets sent straight out of the routed interface "
           "(daemon.fastpath_redirect).",
           stat(TANDEM_FP_ST_REDIRECTED));
  m.single("tandem_fastpath_routed_by_stack_total", "counter",
           "Translated packets daemon.fastpath_redirect left to the kernel to forward (no "
           "forwarding route, TTL 1, neighbour unresolved, larger than the MTU).",
           stat(TANDEM_FP_ST_ROUTED_STACK));
  m.single("tandem_fastpath_redirect_dropped_total", "counter",
           "Translated packets dropped because a write of daemon.fastpath_redirect failed.",
           stat(TANDEM_FP_ST_DROPPED_REDIRECT));
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
