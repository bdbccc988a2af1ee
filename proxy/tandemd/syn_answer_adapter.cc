#include "proxy/tandemd/syn_answer_adapter.h"

#include <openssl/crypto.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <stdexcept>

#include "proxy/io/log.h"
#include "proxy/tandemd/prom_text.h"

namespace tandem {
namespace {

constexpr const char* kEnabledHelp =
    "1: splice SYNs can be answered in the kernel (daemon.fastpath_syn = on).";

struct PassReason {
  tandem_syn_stat stat;
  const char* reason;
};
constexpr PassReason kPassReasons[] = {
    {TANDEM_SYN_ST_PASS_NO_SERVICE, "no_service"}, {TANDEM_SYN_ST_PASS_STANDBY, "standby"},
    {TANDEM_SYN_ST_PASS_NO_KEY, "no_key"},         {TANDEM_SYN_ST_PASS_ODD, "odd"},
    {TANDEM_SYN_ST_PASS_UNPARSED, "unparsed"},     {TANDEM_SYN_ST_PASS_FAST_FLOW, "fast_flow"},
    {TANDEM_SYN_ST_PASS_ROUTE, "route"},
};

/// A service's key in the program's maps: VIP and port as on the wire.
tandem_syn_service serviceKey(const SpliceVip& sv) noexcept {
  tandem_syn_service s{};
  const auto& b = sv.vip.addr.bytes();
  std::memcpy(&s.addr, &b[12], 4);
  s.port = htons(sv.vip.port);
  return s;
}

}  // namespace

SynAnswerAdapter::SynAnswerAdapter(const Engine& engine,
                                   const std::vector<std::string>& interfaces,
                                   int fp_flows_fd, uint64_t now_ns, int fp_events_fd, bool bind,
                                   bool close_fast)
    : engine_(engine), kernel_(fp_flows_fd, fp_events_fd), bind_(bind), close_fast_(close_fast) {
  for (const SpliceVip& sv : engine_.spliceVips()) {
    const tandem_syn_service s = serviceKey(sv);
    const bool kbind = bind_ && sv.kbind_ok;
    const uint8_t flags = TANDEM_SYN_SVC_ON | (sv.zero_window ? TANDEM_SYN_SVC_ZERO_WINDOW : 0) |
                          (kbind ? TANDEM_SYN_SVC_KBIND : 0);
    if (bind_ && !kbind) {
      logf(LogLevel::kWarn,
           "daemon.fastpath_bind: service at %s keeps its cookie ACKs on NFQUEUE (the kernel "
           "binds only transparent, bind = ack, zero-window, round-robin services without "
           "resplice, of at most 16 IPv4 backends)",
           sv.vip.toString().c_str());
    }
    if (!kernel_.putService(s, flags))
      throw std::runtime_error("syn cookies: writing the services map");
  }
  writeBinds();
  if (bind_failed_ > 0) throw std::runtime_error("syn cookies: writing the binds map");
  if (!writeConfig()) throw std::runtime_error("syn cookies: no splice service, or no config");
  tick(now_ns);
  if (have_[1] == UINT64_MAX) throw std::runtime_error("syn cookies: deriving the period keys");
  for (const std::string& name : interfaces) kernel_.attach(name);
}

void SynAnswerAdapter::writeBinds() noexcept {
  if (!bind_) return;
  try {
    const std::vector<SpliceVip> vips = engine_.spliceVips();
    bind_written_.resize(vips.size());
    for (size_t i = 0; i < vips.size(); ++i) {
      const SpliceVip& sv = vips[i];
      if (!sv.kbind_ok) continue;
      std::vector<uint8_t> up;
      for (const SpliceVip::Backend& b : sv.backends) up.push_back(b.up ? 1 : 0);
      if (up == bind_written_[i]) continue;
      tandem_syn_bind bd{};
      bd.n = static_cast<uint32_t>(sv.backends.size());
      bd.rr_slot = static_cast<uint32_t>(sv.service % 1024);
      bd.close_fast = close_fast_ ? 1 : 0;
      for (size_t b = 0; b < sv.backends.size(); ++b) {
        std::memcpy(&bd.b[b].addr, &sv.backends[b].ep.addr.bytes()[12], 4);
        bd.b[b].port = htons(sv.backends[b].ep.port);
        bd.b[b].up = up[b];
      }
      if (kernel_.putBind(serviceKey(sv), bd)) {
        bind_written_[i] = std::move(up);
      } else {
        ++bind_failed_;
      }
    }
  } catch (const std::bad_alloc&) {
    ++bind_failed_;
  }
}

bool SynAnswerAdapter::writeConfig() noexcept {
  tandem_syn_config c{};
  if (!engine_.synKernelConfig(c)) return false;
  c.active = active_ ? 1 : 0;
  c.no_bind = bind_paused_ ? 1 : 0;
  if (kernel_.setConfig(c)) return true;
  ++config_failed_;
  return false;
}

void SynAnswerAdapter::setActive(bool active) noexcept {
  if (active == active_) return;
  active_ = active;
  if (!writeConfig() && !active) {
    logf(LogLevel::kError, "syn cookies: cannot tell the kernel this node is a standby");
  }
  logf(LogLevel::kInfo, "syn cookies in the kernel: %s", active ? "answering" : "off (standby)");
}

void SynAnswerAdapter::pauseBind(bool paused) noexcept {
  if (!bind_ || paused == bind_paused_) return;
  bind_paused_ = paused;
  if (!writeConfig()) logf(LogLevel::kError, "syn cookies: cannot pause or resume kernel binding");
}

void SynAnswerAdapter::tick(uint64_t now_ns) noexcept {
  (void)writeConfig();  // the clock offset follows the wall clock
  writeBinds();
  const uint64_t count = engine_.cookieCount(now_ns);
  // The previous period's key too: the kernel checks cookie ACKs (fastpath_bind), and a cookie
  // stays valid one period after the one it was made in (SynCookie::check).
  const uint64_t want[3] = {count > 0 ? count - 1 : count, count, count + 1};
  uint64_t have[3] = {UINT64_MAX, UINT64_MAX, UINT64_MAX};
  for (size_t i = 0; i < 3; ++i) {
    const uint64_t c = want[i];
    if (std::find(std::begin(have_), std::end(have_), c) != std::end(have_)) {
      have[i] = c;
      continue;
    }
    tandem_syn_key k{};
    const bool ok = engine_.synKernelKey(c, k) && kernel_.putKey(c, k);
    OPENSSL_cleanse(&k, sizeof k);
    if (ok) {
      have[i] = c;
    } else {
      ++key_failed_;
    }
  }
  std::copy(std::begin(have), std::end(have), std::begin(have_));
  try {
    for (uint64_t c : kernel_.keyCounts())
      if (std::find(std::begin(want), std::end(want), c) == std::end(want))
        (void)kernel_.eraseKey(c);
  } catch (const std::bad_alloc&) {
  }
}

std::string SynAnswerAdapter::metricsText() const {
  const std::vector<uint64_t> st = kernel_.stats();
  auto stat = [&](tandem_syn_stat i) -> uint64_t { return i < st.size() ? st[i] : 0; };
  PromText m;
  m.single("tandem_fastpath_syn_enabled", "gauge", kEnabledHelp, 1);
  m.single("tandem_fastpath_syn_active", "gauge",
           "1: this node is active and the kernel answers; 0: a standby (it never answers).",
           active_ ? 1 : 0);
  m.single("tandem_fastpath_syn_answered_total", "counter",
           "Splice SYNs answered with a SYN-cookie SYN-ACK by the kernel, off NFQUEUE.",
           stat(TANDEM_SYN_ST_ANSWERED));
  m.family("tandem_fastpath_syn_passed_total", "counter",
           "SYNs the kernel left to NFQUEUE untouched, by reason.");
  for (const PassReason& r : kPassReasons)
    m.sample("tandem_fastpath_syn_passed_total", stat(r.stat), "reason", r.reason);
  m.single("tandem_fastpath_syn_unroutable_total", "counter",
           "SYNs dropped in the kernel because the client's address is blackholed, unreachable "
           "or prohibited (the engine's SYN-ACK would have been dropped by routing).",
           stat(TANDEM_SYN_ST_DROP_UNROUTABLE));
  m.single("tandem_fastpath_syn_failed_total", "counter",
           "SYNs dropped because a rewrite failed half-way (the client resends).",
           stat(TANDEM_SYN_ST_FAILED));
  m.single("tandem_fastpath_syn_key_failed_total", "counter",
           "Cookie period keys tandemd could not derive or write (their SYNs go to NFQUEUE).",
           key_failed_);
  m.single("tandem_fastpath_bind_answered_total", "counter",
           "Splice cookie ACKs checked in the kernel and turned into the backend SYN there "
           "(daemon.fastpath_bind = on).",
           stat(TANDEM_SYN_ST_BOUND));
  m.single("tandem_fastpath_bind_passed_total", "counter",
           "Bare ACKs to a kernel-bound service left to NFQUEUE (no valid cookie of the last two "
           "periods, no UP backend, no route, odd options, entries already there, ring full).",
           stat(TANDEM_SYN_ST_ACK_PASS));
  m.single("tandem_fastpath_bind_map_failed_total", "counter",
           "Writes of a service's backends to the kernel that failed.", bind_failed_);
  m.single("tandem_fastpath_syn_config_failed_total", "counter",
           "Config map writes the kernel refused.", config_failed_);
  return m.take();
}

std::string synAnswerDisabledMetricsText() {
  PromText m;
  m.single("tandem_fastpath_syn_enabled", "gauge", kEnabledHelp, 0);
  return m.take();
}

}  // namespace tandem
