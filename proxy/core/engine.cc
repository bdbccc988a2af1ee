#include "proxy/core/engine.h"

#include <algorithm>
#include <random>
#include <stdexcept>
#include <vector>

#include "common/packet.h"
#include "common/seq.h"
#include "common/tcp_options.h"
#include "proxy/core/engine_impl.h"
#include "proxy/core/flow_table.h"
#include "proxy/core/resplice.h"
#include "proxy/core/tcp_tracker.h"
#include "proxy/core/translator.h"

namespace tandem {

const char* modeName(Mode m) noexcept {
  return m == Mode::kPassthrough ? "passthrough" : "splice";
}
const char* addressingName(Addressing a) noexcept {
  return a == Addressing::kTransparent ? "transparent" : "snat";
}
const char* schedulerName(Scheduler s) noexcept {
  return s == Scheduler::kRoundRobin ? "roundrobin" : "hash";
}
const char* bindOnName(BindOn b) noexcept { return b == BindOn::kAck ? "ack" : "data"; }

const char* tcpStateName(TcpState s) noexcept {
  switch (s) {
    case TcpState::kNone: return "NONE";
    case TcpState::kSynSent: return "SYN_SENT";
    case TcpState::kSynRecv: return "SYN_RECV";
    case TcpState::kEstablished: return "ESTABLISHED";
    case TcpState::kFinWait: return "FIN_WAIT";
    case TcpState::kCloseWait: return "CLOSE_WAIT";
    case TcpState::kLastAck: return "LAST_ACK";
    case TcpState::kTimeWait: return "TIME_WAIT";
    case TcpState::kClose: return "CLOSE";
    case TcpState::kCount: break;
  }
  return "?";
}

namespace {

DropReason fromParseError(ParseError e) noexcept {
  switch (e) {
    case ParseError::kTooShort:
    case ParseError::kNotIpv4:
    case ParseError::kBadIhl:
    case ParseError::kBadTotalLength: return DropReason::kMalformedIp;
    case ParseError::kFragment: return DropReason::kFragment;
    case ParseError::kNotTcp: return DropReason::kNotTcp;
    case ParseError::kTcpTooShort:
    case ParseError::kBadDataOffset: return DropReason::kMalformedTcp;
    case ParseError::kNone: break;
  }
  return DropReason::kMalformedIp;
}

uint64_t mixHash(uint64_t v) noexcept {
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  v *= 0xc4ceb9fe1a85ec53ull;
  v ^= v >> 33;
  return v;
}

}  // namespace

bool isOpeningSyn(uint8_t flags) noexcept {
  return (flags & (tcpflag::kSyn | tcpflag::kAck | tcpflag::kRst | tcpflag::kFin)) ==
         tcpflag::kSyn;
}

Engine::Engine(EngineConfig config) : config_(std::move(config)) {
  if (config_.services.empty()) throw std::invalid_argument("no service configured");
  for (const auto& s : config_.services) {
    if (s.backends.empty()) throw std::invalid_argument("service " + s.name + " has no backend");
    if (s.backends.size() > UINT16_MAX) throw std::invalid_argument("too many backends");
    if (!s.vip.addr.isV4()) throw std::invalid_argument("service " + s.name + ": IPv4 VIP only");
    for (const auto& b : s.backends)
      if (!b.addr.isV4()) throw std::invalid_argument("service " + s.name + ": IPv4 only");
    if (s.addressing == Addressing::kSnat &&
        (!s.snat_addr.isV4() || s.snat_port_min == 0 || s.snat_port_min > s.snat_port_max))
      throw std::invalid_argument("service " + s.name + ": bad SNAT address or port range");
  }
  impl_ = std::make_unique<Impl>(config_, counters_);
  for (const auto& s : config_.services) impl_->backends.emplace_back(s.backends.size());
  const bool any_splice = std::any_of(config_.services.begin(), config_.services.end(),
                                      [](const ServiceConfig& s) { return s.mode == Mode::kSplice; });
  if (any_splice) {
    std::vector<uint8_t> secret = config_.splice.cookie_secret;
    if (secret.empty()) {  // a single proxy: any secret will do, as long as nobody can guess it
      std::random_device rd;
      secret.resize(32);
      for (auto& b : secret) b = static_cast<uint8_t>(rd());
    }
    SynCookieConfig cc;
    cc.period_ns = config_.splice.cookie_period_ns;
    // The key rotates every period on its own, derived from the secret (a standby derives the
    // same keys).
    impl_->cookie = std::make_unique<SynCookie>(cc, std::span<const uint8_t>(secret));
  }
}

Engine::~Engine() = default;

size_t Engine::activeFlows() const noexcept { return impl_->table.size(); }
uint64_t Engine::spliceGeneration() const noexcept { return impl_->splice_generation; }
uint64_t Engine::fastPathKeptInstalls() const noexcept { return impl_->fp_kept_installs; }
size_t Engine::maxFlows() const noexcept { return impl_->table.capacity(); }

Decision Engine::process(uint8_t* data, size_t len, size_t cap, const PacketMeta& meta,
                         uint64_t now_ns) noexcept {
  TcpPacket pkt;
  if (const ParseError pe = parseTcpPacket(data, len, pkt); pe != ParseError::kNone)
    return impl_->dropped(fromParseError(pe));
  const FlowKey key{IpAddr::fromV4(pkt.saddr()), IpAddr::fromV4(pkt.daddr()), pkt.sport(),
                    pkt.dport()};
  return processParsed(data, len, cap, meta, now_ns, pkt, key, impl_->table.hashKey(key));
}

Decision Engine::processParsed(uint8_t* data, size_t len, size_t cap, const PacketMeta& meta,
                               uint64_t now_ns, TcpPacket& pkt, const FlowKey& key,
                               uint64_t hash) noexcept {
  auto drop = [this](DropReason r) { return impl_->dropped(r); };
  if (cap < len) cap = len;

  TcpOptions opts;
  if (parseTcpOptions(pkt.options(), pkt.optionsLen(), opts) != OptionError::kNone)
    return drop(DropReason::kBadOptions);

  FlowTable& table = impl_->table;
  FlowTable::Hit hit = table.find(key, hash);
  // The kernel fast path held the flow: its edges and idle time are stale (a RST also takes it
  // off the fast path, after which the refreshed edges stand).
  if (hit && table.at(hit.index).fast_path)
    impl_->fastPathSlowPacket(hit.index, pkt.flags(), now_ns);
  if (hit) {
    const Flow& f = table.at(hit.index);
    if (!impl_->standby && flowExpired(f, config_.timeouts, now_ns)) {
      impl_->retire(hit.index);
      hit = {};
    } else if (hit.dir == Direction::kFromClient) {
      // A new incarnation of the tuple: forget the old flow, choose a backend afresh. With the
      // kernel answering SYNs the engine first sees the new incarnation's cookie ACK, on a live
      // flow's tuple too (the kernel cannot tell a flow off its fast path from none): the
      // client started over, its old connection is gone, and the backend's is reset.
      const bool closed = f.state == TcpState::kTimeWait || f.state == TcpState::kClose;
      const bool reopen =
          closed ? isOpeningSyn(pkt.flags()) || impl_->isCookieAck(key, pkt, opts, now_ns)
                 : impl_->syn_port != nullptr && impl_->ackForeignTo(f, pkt) &&
                       impl_->isCookieAck(key, pkt, opts, now_ns);
      if (reopen) {
        if (closed) {
          impl_->retire(hit.index);
        } else {
          impl_->retireForNewIncarnation(hit.index);
        }
        ++counters_.flows_reopened;
        hit = {};
      }
    }
  }

  bool created = false;
  if (!hit) {
    const int svc = impl_->findService(key.daddr, key.dport);
    if (svc >= 0 && impl_->standby && impl_->pass_unknown) {
      ++impl_->passed_to_active;  // not ours to create: the kernel routes it to the VIP's holder
      return {Verdict::kAccept, DropReason::kNone, false, len};
    }
    if (svc >= 0 && config_.services[static_cast<size_t>(svc)].mode == Mode::kSplice)
      return impl_->spliceOpen(static_cast<size_t>(svc), key, pkt, opts, data, cap, meta, now_ns);
    if (!isOpeningSyn(pkt.flags())) {
      return drop(svc >= 0 || impl_->isBackendLeg(key) ? DropReason::kNoFlow
                                                       : DropReason::kNoService);
    }
    if (svc < 0) return drop(DropReason::kNoService);
    const DropReason r = impl_->createFlow(static_cast<size_t>(svc), key, hit);
    if (r != DropReason::kNone) return drop(r);
    created = true;
  }

  if (hit.dir == Direction::kFromClient && impl_->leaving(table.at(hit.index)) &&
      !table.at(hit.index).splice_pending) {
    hit.index = impl_->beforeClientSegment(hit.index, now_ns);  // may move or reset the flow
    if (hit.index == FlowTable::kNone) return drop(DropReason::kBackendDown);
  }
  if (hit.dir == Direction::kFromBackend && pkt.has(tcpflag::kFin | tcpflag::kRst)) {
    const int absorbed = impl_->absorbBackendClose(hit.index, pkt.payloadLen() > 0, now_ns);
    if (absorbed > 0) return drop(DropReason::kBackendClosed);  // the client never sees it
    if (absorbed < 0) return drop(DropReason::kBackendDown);
  }
  Flow& f = table.at(hit.index);
  if (f.splice_pending)
    return impl_->splicePending(hit.index, hit.dir, pkt, opts, data, cap, meta, now_ns);
  if (impl_->holdForSync(f, hit.dir, pkt.flags(), meta))
    return {Verdict::kHold, DropReason::kNone, false, 0};
  if (impl_->fastPathOvertakenAck(f, hit.dir, pkt)) return drop(DropReason::kAckOvertaken);

  // The tracker works in the backend leg's sequence space: a client segment is translated
  // first (its ack and SACK edges move into the backend's space), a backend one after.
  const bool from_client = hit.dir == Direction::kFromClient;
  if (f.splice) noteQuiescence(f);  // before a request: the point a replay would start from
  if (from_client) {
    if (f.splice) {  // what a re-splice's SYN and ACK carry in the client's name
      if (opts.has_timestamp && seqAfter(opts.ts_val, f.client_tsval)) f.client_tsval = opts.ts_val;
      f.client_window = pkt.window();
    }
    translateSegment(f, hit.dir, pkt, opts, meta, counters_);  // opts follow the new edges
  }
  const TcpState before = f.state;
  const DropReason r = trackSegment(f, hit.dir, pkt, opts, now_ns, counters_);
  if (f.state != before) impl_->touch(hit.index);
  if (r != DropReason::kNone) {
    if (created) {
      table.remove(hit.index);  // keep nothing from a refused opening segment
      --counters_.flows_created;
    }
    return drop(r);
  }
  if (!from_client) {
    // Passive health signal. Not after the close (TIME_WAIT): a closed socket's RST answering
    // a duplicate of the close (RFC 9293 3.10.7.1) is no sign of a sick backend, and with the
    // kernel fast path (FINs through NFQUEUE) such duplicates are common.
    if (pkt.has(tcpflag::kRst) && f.state == TcpState::kClose && before != TcpState::kClose &&
        before != TcpState::kTimeWait)
      ++impl_->backends[f.service][f.backend].rsts;
    translateSegment(f, hit.dir, pkt, opts, meta, counters_);
    impl_->noteToClient(f, opts);
  }
  if (f.splice)  // who spoke last, the quiescent point; move if the backend is leaving
    impl_->afterSegment(hit.index, hit.dir, pkt.payloadLen() > 0, now_ns);
  const size_t d = dirIndex(hit.dir);
  ++counters_.packets[d];
  counters_.bytes[d] += pkt.totalLen();
  if (meta.gso) ++counters_.gso_packets;
  if (impl_->fp != nullptr && !f.fast_path &&
      !pkt.has(tcpflag::kSyn | tcpflag::kFin | tcpflag::kRst))
    impl_->fastPathMaybeInstall(hit.index, hit.dir,
                                pkt.payloadLen() > 0 ? Impl::InstallOrder::kTriggerAfter
                                                     : Impl::InstallOrder::kNow);
  if (f.fast_path) {
    if (pkt.has(tcpflag::kFin) && !pkt.has(tcpflag::kRst))
      impl_->fastPathAfterFin(hit.index, hit.dir);
    impl_->fastPathAfterClose(hit.index);
  }
  return {Verdict::kAccept, DropReason::kNone, true, len};
}

int Engine::Impl::findService(const IpAddr& daddr, uint16_t dport) const noexcept {
  for (size_t i = 0; i < config.services.size(); ++i) {
    const auto& vip = config.services[i].vip;
    if (vip.port == dport && vip.addr == daddr) return static_cast<int>(i);
  }
  return -1;
}

bool Engine::Impl::isBackendLeg(const FlowKey& key) const noexcept {
  for (const auto& s : config.services) {
    if (s.addressing == Addressing::kSnat && s.snat_addr == key.daddr) return true;
    for (const auto& b : s.backends)
      if (b.port == key.sport && b.addr == key.saddr) return true;
  }
  return false;
}

DropReason Engine::Impl::createFlow(size_t svc, const FlowKey& key, FlowTable::Hit& hit,
                                    int backend) noexcept {
  const ServiceConfig& s = config.services[svc];
  const uint32_t index = table.allocate();
  if (index == FlowTable::kNone) return DropReason::kTableFull;
  Flow& f = table.at(index);
  f.client_addr = key.saddr;
  f.client_port = key.sport;
  f.vip_addr = key.daddr;
  f.vip_port = key.dport;
  f.service = static_cast<uint16_t>(svc);

  int picked = -1;
  if (backend >= 0 && static_cast<size_t>(backend) < s.backends.size() &&
      (backends[svc][static_cast<size_t>(backend)].state == BackendState::kUp ||
       kbind_flow_id != 0)) {
    // Chosen by a splice route rule, or by the kernel, which sent the SYN there already.
    picked = backend;
  } else {
    picked = pickBackend(svc, key);  // the scheduler, among UP backends
  }
  if (picked < 0) {
    table.remove(index);
    return DropReason::kNoBackend;
  }
  const size_t b = static_cast<size_t>(picked);
  f.backend = static_cast<uint16_t>(b);
  f.backend_addr = s.backends[b].addr;
  f.backend_port = s.backends[b].port;

  auto free_slot = [&](DropReason r) {
    table.remove(index);
    return r;
  };
  if (s.addressing == Addressing::kTransparent) {
    f.source_addr = f.client_addr;
    f.source_port = f.client_port;
    if (table.find(FlowTable::backendKey(f))) return free_slot(DropReason::kTupleClash);
  } else {
    f.source_addr = s.snat_addr;
    const uint32_t range = uint32_t{s.snat_port_max} - s.snat_port_min + 1;
    const uint32_t tries = std::min<uint32_t>(range, 64);
    bool found = false;
    uint32_t closed = FlowTable::kNone;  // a flow in TIME_WAIT or CLOSE holding a candidate
    uint16_t closed_port = 0;
    for (uint32_t t = 0; t < tries && !found; ++t) {
      f.source_port = static_cast<uint16_t>(s.snat_port_min + snat_cursor[svc]++ % range);
      const FlowTable::Hit clash = table.find(FlowTable::backendKey(f));
      found = !clash;
      if (clash && closed == FlowTable::kNone) {
        const TcpState st = table.at(clash.index).state;
        if (st == TcpState::kTimeWait || st == TcpState::kClose) {
          closed = clash.index;
          closed_port = f.source_port;
        }
      }
    }
    if (!found && closed != FlowTable::kNone) {
      // Every free port is taken: reuse one whose flow is only lingering after its close, as
      // Linux NAT does (nf_nat_used_tuple_harder). The backend accepts a new SYN on a tuple in
      // TIME_WAIT when its sequence number or timestamp is newer (RFC 6191).
      retire(closed);
      ++counters.snat_ports_reused;
      f.source_port = closed_port;
      found = true;
    }
    if (!found) return free_slot(DropReason::kNoSnatPort);
  }
  table.insert(index);
  ++counters.flows_created;
  touch(index);
  f.sync_pending = tracking && defer;
  hit = {index, Direction::kFromClient};
  return DropReason::kNone;
}

int Engine::Impl::pickBackend(size_t svc, const FlowKey& key) noexcept {
  const ServiceConfig& s = config.services[svc];
  const size_t n = s.backends.size();
  const size_t start = s.scheduler == Scheduler::kRoundRobin
                           ? rr[svc]++ % n
                           : mixHash(key.saddr.v4()) % n;  // source affinity, as IPVS's sh
  // The scheduler's choice if it is UP, else the next UP one (for hash: the same fallback for
  // the same client).
  int fallback = -1;
  for (size_t i = 0; i < n; ++i) {
    const size_t b = (start + i) % n;
    if (backends[svc][b].state != BackendState::kUp) continue;
    if (static_cast<int>(b) != avoid_backend) return static_cast<int>(b);
    fallback = static_cast<int>(b);
  }
  return fallback;
}

void Engine::Impl::retire(uint32_t index) noexcept {
  fastPathErase(index);
  const Flow& f = table.at(index);
  if (tracking) {
    if (removed_log.size() < kMaxRemovedLog) {
      removed_log.push_back(FlowTable::clientKey(f));  // capacity reserved
    } else {
      lost_changes = true;
    }
  }
  if (f.state == TcpState::kSynSent)
    ++backends[f.service][f.backend].connect_timeouts;  // passive health signal
  if (f.state == TcpState::kTimeWait || f.state == TcpState::kClose)
    ++counters.flows_closed;
  else
    ++counters.flows_expired;
  table.remove(index);
}

size_t Engine::processBatch(PacketSlot* slots, size_t n, uint64_t now_ns) noexcept {
  constexpr size_t kStride = 32;
  const FlowTable& table = impl_->table;
  // Each packet is parsed and hashed once: the lookup pass keeps what processParsed() needs.
  uint64_t hashes[kStride];
  bool valid[kStride];
  TcpPacket pkts[kStride];
  FlowKey keys[kStride];
  for (size_t base = 0; base < n; base += kStride) {
    const size_t m = std::min(kStride, n - base);
    for (size_t i = 0; i < m; ++i) {
      valid[i] = parseTcpPacket(slots[base + i].data, slots[base + i].len, pkts[i]) ==
                 ParseError::kNone;
      if (!valid[i]) continue;
      keys[i] = {IpAddr::fromV4(pkts[i].saddr()), IpAddr::fromV4(pkts[i].daddr()),
                 pkts[i].sport(), pkts[i].dport()};
      hashes[i] = table.hashKey(keys[i]);
      table.prefetch(hashes[i]);
    }
    for (size_t i = 0; i < m; ++i)
      if (valid[i]) table.prefetchFlow(hashes[i]);
    const uint64_t generation = impl_->splice_generation;
    const uint64_t kept = impl_->fp_kept_installs;
    for (size_t i = 0; i < m; ++i) {
      PacketSlot& s = slots[base + i];
      s.decision = valid[i] ? processParsed(s.data, s.len, s.cap, s.meta, now_ns, pkts[i],
                                            keys[i], hashes[i])
                            : process(s.data, s.len, s.cap, s.meta, now_ns);  // counts the drop
      if (impl_->splice_generation != generation || impl_->fp_kept_installs != kept)
        return base + i + 1;
    }
  }
  return n;
}

void Engine::enableChangeTracking() {
  impl_->dirty_list.reserve(impl_->table.capacity());
  impl_->removed_log.reserve(Impl::kMaxRemovedLog);
  impl_->tracking = true;
}

bool Engine::drainChanges(const std::function<void(const FlowKey&)>& removed,
                          const std::function<void(const Flow&)>& changed) {
  // Removals first: a tuple removed and then opened again must end up present.
  for (const FlowKey& k : impl_->removed_log) removed(k);
  impl_->removed_log.clear();
  for (uint32_t index : impl_->dirty_list) {
    Flow& f = impl_->table.at(index);
    if (!f.in_use || !f.dirty) continue;  // gone since, or listed twice after slot reuse
    f.dirty = false;
    changed(f);
  }
  impl_->dirty_list.clear();
  const bool complete = !impl_->lost_changes;
  impl_->lost_changes = false;
  return complete;
}

uint32_t Engine::forEachLiveFlow(uint32_t cursor, uint32_t limit,
                                 const std::function<void(const Flow&)>& fn) const {
  const FlowTable& table = impl_->table;
  const uint32_t high = table.highWater();
  uint32_t seen = 0;
  for (; cursor < high && seen < limit; ++cursor) {
    const Flow& f = table.at(cursor);
    if (!f.in_use) continue;
    fn(f);
    ++seen;
  }
  return cursor >= high ? 0 : cursor;
}

DropReason Engine::installFlow(const Flow& state, uint64_t now_ns) noexcept {
  if (state.service >= config_.services.size() ||
      state.backend >= config_.services[state.service].backends.size() ||
      state.state >= TcpState::kCount)
    return DropReason::kNoService;  // a checkpoint that does not fit this configuration
  FlowTable& table = impl_->table;
  // The connection's window edges, if a shadowing standby kept them warm (observeShadow).
  Flow warm;
  const FlowTable::Hit old = table.find(FlowTable::clientKey(state));
  if (old && old.dir == Direction::kFromClient) warm = table.at(old.index);
  // The active's view wins: drop whatever holds either leg's tuple here.
  for (const FlowKey& k : {FlowTable::clientKey(state), FlowTable::backendKey(state)}) {
    if (const FlowTable::Hit hit = table.find(k)) {
      impl_->fastPathErase(hit.index);
      table.remove(hit.index);
    }
  }
  const uint32_t index = table.allocate();
  if (index == FlowTable::kNone) return DropReason::kTableFull;
  Flow& f = table.at(index);
  f = state;
  f.in_use = true;
  f.dirty = false;
  f.fast_path = false;  // the active's entries are the active's
  f.fast_path_armed = false;
  for (size_t d = 0; d < 2; ++d) {
    if (old && adoptWarmEdges(f.win[d], warm, state, d)) continue;
    // Liberal until seen: the edges moved on while the checkpoint travelled.
    f.win[d].seen = false;
    f.win[d].ack_seen = false;
  }
  f.last_seen_ns = now_ns;
  table.insert(index);
  return DropReason::kNone;
}

bool Engine::classify(const FlowKey& key, uint32_t& flow_id, Direction& dir,
                      bool& seq_adjusted) const noexcept {
  const FlowTable::Hit hit = impl_->table.find(key);
  if (!hit) return false;
  const Flow& f = impl_->table.at(hit.index);
  flow_id = hit.index;
  dir = hit.dir;
  seq_adjusted = f.has_seqadj || f.splice;
  return true;
}

bool Engine::removeFlow(const FlowKey& client_key) noexcept {
  const FlowTable::Hit hit = impl_->table.find(client_key);
  if (!hit || hit.dir != Direction::kFromClient) return false;
  impl_->fastPathErase(hit.index);
  impl_->table.remove(hit.index);
  return true;
}

void Engine::setSyncDeferral(bool on) noexcept {
  if (impl_->defer && !on) ++impl_->splice_generation;  // held SYN-ACKs may all go now
  impl_->defer = on;
}

bool Engine::markSynced(const FlowKey& client_key) noexcept {
  const FlowTable::Hit hit = impl_->table.find(client_key);
  if (!hit || hit.dir != Direction::kFromClient) return false;
  Flow& f = impl_->table.at(hit.index);
  if (!f.sync_pending) return false;
  f.sync_pending = false;
  ++impl_->splice_generation;
  return true;
}
void Engine::setPassUnknownToActive(bool pass) noexcept { impl_->pass_unknown = pass; }

uint64_t Engine::passedToActive() const noexcept { return impl_->passed_to_active; }

void Engine::setStandby(bool standby, uint64_t now_ns) noexcept {
  if (impl_->standby && !standby) {
    FlowTable& table = impl_->table;
    for (uint32_t i = 0; i < table.highWater(); ++i) {
      Flow& f = table.at(i);
      if (!f.in_use) continue;
      f.last_seen_ns = now_ns;
      // A splice still opening, from a checkpoint: its backend SYN is resent on this node's
      // timer (a SYN-ACK that went to the old active was dropped there), not only on the
      // client's retransmissions.
      if (f.splice_pending) impl_->armSynTimer(i);
    }
  }
  if (standby && impl_->fp != nullptr) {
    impl_->fp->clear();  // a standby forwards nothing of its own
    impl_->fastPathForgetAll();
  }
  impl_->standby = standby;
  if (impl_->syn_port != nullptr) impl_->syn_port->setActive(!standby);
}

void Engine::expire(uint64_t now_ns) noexcept {
  if (impl_->standby) return;
  impl_->spliceTick(now_ns);
  FlowTable& table = impl_->table;
  const uint32_t high = table.highWater();
  if (high == 0) return;
  const uint32_t batch = std::max<uint32_t>(config_.expire_batch, high / 32);
  uint32_t& cur = impl_->gc_cursor;
  for (uint32_t n = 0; n < batch && n < high; ++n) {
    if (cur >= high) cur = 0;
    const Flow& f = table.at(cur);
    if (f.in_use && flowExpired(f, config_.timeouts, now_ns) &&
        impl_->fastPathIdle(cur, now_ns)) {  // a fast flow: by the kernel's clock too
      impl_->retire(cur);
    } else if (f.in_use && impl_->leaving(f) && !f.splice_pending) {
      impl_->beforeClientSegment(cur, now_ns);  // a backend leaving: move when idle, or reset
    }
    ++cur;
  }
}

void Engine::forEachFlow(const std::function<void(const FlowInfo&)>& fn, uint64_t now_ns) const {
  const FlowTable& table = impl_->table;
  for (uint32_t i = 0; i < table.highWater(); ++i) {
    const Flow& f = table.at(i);
    if (!f.in_use) continue;
    FlowInfo info;
    info.service = config_.services[f.service].name;
    info.client = f.client();
    info.vip = f.vip();
    info.backend = f.backendEp();
    info.source = f.source();
    info.state = f.state;
    info.idle_ns = now_ns > f.last_seen_ns ? now_ns - f.last_seen_ns : 0;
    info.quiescent = flowQuiescent(f);
    info.fast_path = f.fast_path;
    fn(info);
  }
}

}  // namespace tandem
