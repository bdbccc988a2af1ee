#include "proxy/tandemd/syn_answer_adapter.h"

#include <openssl/crypto.h>

#include <arpa/inet.h>

#include <cstring>
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

}  // namespace

SynAnswerAdapter::SynAnswerAdapter(const Engine& engine,
                                   const std::vector<std::string>& interfaces,
                                   int fp_flows_fd, uint64_t now_ns)
    : engine_(engine), kernel_(fp_flows_fd) {
  for (const SpliceVip& sv : engine_.spliceVips()) {
    tandem_syn_service s{};
    const auto& b = sv.vip.addr.bytes();
    std::memcpy(&s.addr, &b[12], 4);  // network byte order, as on the wire
    s.port = htons(sv.vip.port);
    const uint8_t flags = TANDEM_SYN_SVC_ON | (sv.zero_window ? TANDEM_SYN_SVC_ZERO_WINDOW : 0);
    if (!kernel_.putService(s, flags))
      throw std::runtime_error("syn cookies: writing the services map");
  }
  if (!writeConfig()) throw std::runtime_error("syn cookies: no splice service, or no config");
  tick(now_ns);
  if (have_[0] == UINT64_MAX) throw std::runtime_error("syn cookies: deriving the period keys");
  for (const std::string& name : interfaces) kernel_.attach(name);
}

bool SynAnswerAdapter::writeConfig() noexcept {
  tandem_syn_config c{};
  if (!engine_.synKernelConfig(c)) return false;
  c.active = active_ ? 1 : 0;
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

void SynAnswerAdapter::tick(uint64_t now_ns) noexcept {
  (void)writeConfig();  // the clock offset follows the wall clock
  const uint64_t count = engine_.cookieCount(now_ns);
  for (uint64_t c : {count, count + 1}) {
    if (c == have_[0] || c == have_[1]) continue;
    tandem_syn_key k{};
    const bool ok = engine_.synKernelKey(c, k) && kernel_.putKey(c, k);
    OPENSSL_cleanse(&k, sizeof k);
    if (!ok) {
      ++key_failed_;
      continue;
    }
    if (have_[0] != count && have_[0] != count + 1) {
      have_[0] = c;
    } else {
      have_[1] = c;
    }
  }
  try {
    for (uint64_t c : kernel_.keyCounts())
      if (c != count && c != count + 1) (void)kernel_.eraseKey(c);
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
