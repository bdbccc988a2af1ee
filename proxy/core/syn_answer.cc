// The engine's side of the kernel SYN answerer (proxy/fastpath/syncookie.bpf.c,
// docs/fastpath.md "SYN cookies in the kernel"): what the kernel needs to answer a SYN exactly as
// spliceOpen() would, the active flag, and the cookie ACK of a SYN the engine never saw arriving
// on a tuple whose previous incarnation is still in the table.
#include <openssl/crypto.h>

#include <algorithm>
#include <cstring>

#include "common/segment_writer.h"
#include "common/seq.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/resplice.h"
#include "proxy/core/syn_answer_port.h"
#include "proxy/core/translator.h"

namespace tandem {

void Engine::setSynAnswer(SynAnswerPort* port) noexcept {
  impl_->syn_port = port;
  if (port != nullptr) port->setActive(!impl_->standby);
}

bool Engine::synKernelConfig(tandem_syn_config& out) const noexcept {
  out = tandem_syn_config{};
  if (impl_->cookie == nullptr || !impl_->cookie->scheduled()) return false;
  const SynCookieConfig& cc = impl_->cookie->config();
  const SpliceConfig& sc = config_.splice;
  out.period_ns = cc.period_ns;
  out.clock_offset_ns = static_cast<uint64_t>(impl_->cookie_clock_offset_ns);
  const size_t n = std::min<size_t>(cc.mss_table.size(), 4);
  for (size_t i = 0; i < n; ++i) out.mss_table[i] = cc.mss_table[i];
  out.mss_table_size = static_cast<uint8_t>(n);
  // The SynAckParams spliceOpen() passes to buildSynAck().
  out.mss = sc.mss;
  out.window = sc.window;
  out.wscale = sc.wscale;
  out.ttl = 64;
  out.enable = static_cast<uint8_t>((cc.timestamps ? TANDEM_SYN_EN_TS : 0) |
                                    (cc.window_scaling ? TANDEM_SYN_EN_WSCALE : 0) |
                                    (cc.sack ? TANDEM_SYN_EN_SACK : 0) |
                                    (cc.ecn ? TANDEM_SYN_EN_ECN : 0));
  out.active = impl_->standby ? 0 : 1;
  return true;
}

bool Engine::synKernelKey(uint64_t count, tandem_syn_key& out) const noexcept {
  if (impl_->cookie == nullptr) return false;
  uint8_t key[16];
  const bool ok = impl_->cookie->periodKeyBytes(count, key);
  if (ok) std::memcpy(out.bytes, key, sizeof key);
  OPENSSL_cleanse(key, sizeof key);
  return ok;
}

uint64_t Engine::cookieCount(uint64_t now_ns) const noexcept {
  if (impl_->cookie == nullptr) return 0;
  const int64_t t = static_cast<int64_t>(now_ns) + impl_->cookie_clock_offset_ns;
  return static_cast<uint64_t>(t) / impl_->cookie->config().period_ns;
}

std::vector<SpliceVip> Engine::spliceVips() const {
  std::vector<SpliceVip> out;
  for (size_t i = 0; i < config_.services.size(); ++i) {
    const ServiceConfig& s = config_.services[i];
    if (s.mode != Mode::kSplice) continue;
    SpliceVip v;
    v.vip = s.vip;
    v.zero_window = s.zero_window_handshake;
    v.service = i;
    bool v4 = s.vip.addr.isV4();
    for (size_t b = 0; b < s.backends.size(); ++b) {
      v4 = v4 && s.backends[b].addr.isV4();
      v.backends.push_back({Endpoint{s.backends[b].addr, s.backends[b].port},
                            impl_->backends[i][b].state == BackendState::kUp});
    }
    v.kbind_ok = v4 && s.addressing == Addressing::kTransparent && s.bind == BindOn::kAck &&
                 s.zero_window_handshake && !s.resplice &&
                 s.scheduler == Scheduler::kRoundRobin && !s.backends.empty() &&
                 s.backends.size() <= 16;
    out.push_back(std::move(v));
  }
  return out;
}

bool Engine::Impl::isCookieAck(const FlowKey& key, const TcpPacket& pkt, const TcpOptions& opts,
                               uint64_t now_ns) noexcept {
  if (cookie == nullptr ||
      (pkt.flags() & (tcpflag::kSyn | tcpflag::kRst | tcpflag::kFin | tcpflag::kAck)) !=
          tcpflag::kAck)
    return false;
  const int svc = findService(key.daddr, key.dport);
  if (svc < 0 || config.services[static_cast<size_t>(svc)].mode != Mode::kSplice) return false;
  return cookie
      ->check(cookieInputFromAck(pkt), pkt.ack() - 1, opts.ts_ecr, opts.has_timestamp,
              now_ns + cookie_clock_offset_ns)
      .ok;
}

bool Engine::Impl::ackForeignTo(const Flow& f, const TcpPacket& pkt) const noexcept {
  if ((pkt.flags() & tcpflag::kAck) == 0) return false;
  const TcpWindow& b = f.win[dirIndex(Direction::kFromBackend)];
  const TcpWindow& c = f.win[dirIndex(Direction::kFromClient)];
  if (!b.seen) return pkt.ack() != f.proxy_isn + 1;
  const uint32_t nxt = seqForward(f.adj[dirIndex(Direction::kFromBackend)], b.td_end);
  const uint32_t span = std::max<uint32_t>(c.td_maxwin, 1u << 16);
  return seqAfter(pkt.ack(), nxt) || seqBefore(pkt.ack(), nxt - span);
}

void Engine::Impl::retireForNewIncarnation(uint32_t index) noexcept {
  const Flow& f = table.at(index);
  if (f.win[dirIndex(Direction::kFromBackend)].seen) {
    SegmentSpec rst[4];
    const size_t n = buildFlowResets(f, rst);
    for (size_t i = 0; i < n; ++i)
      if (rst[i].daddr == f.backend_addr.v4() && rst[i].dport == f.backend_port) emitOut(rst[i]);
  }
  retire(index);
}

}  // namespace tandem
