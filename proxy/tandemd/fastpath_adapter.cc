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
    : kernel_(config.max_entries), interfaces_(attachAll(kernel_, config)) {}

FastPathAdapter::~FastPathAdapter() {
  if (event_ != nullptr) event_free(event_);
}

bool FastPathAdapter::put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  if (kernel_.update(key, value)) return true;
  ++put_failed_;
  return false;
}

bool FastPathAdapter::get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept {
  return kernel_.lookup(key, value);
}

bool FastPathAdapter::erase(const tandem_fp_key& key) noexcept { return kernel_.erase(key); }

void FastPathAdapter::clear() noexcept {
  const size_t n = kernel_.clear();
  if (n > 0) logf(LogLevel::kInfo, "fast path: %zu map entries cleared", n);
}

void FastPathAdapter::watch(event_base* base, Engine& engine, std::function<void()> after) {
  engine_ = &engine;
  after_ = std::move(after);
  event_ = event_new(base, kernel_.eventFd(), EV_READ | EV_PERSIST, &FastPathAdapter::onEvents,
                     this);
  if (event_ == nullptr || event_add(event_, nullptr) != 0) {
    throw std::runtime_error("fast path: cannot watch the close-event ring");
  }
}

size_t FastPathAdapter::drain(uint64_t now_ns) noexcept {
  if (engine_ == nullptr) return 0;
  return kernel_.drainEvents(
      [this, now_ns](const tandem_fp_event& ev) { engine_->fastPathClose(ev, now_ns); });
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
           "Closes left to NFQUEUE because the event ring was full.",
           stat(TANDEM_FP_ST_EVENTS_FULL));
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
