// Microbenchmark of splice mode's per-connection cost in the packet core: one whole connection
// per iteration (client SYN -> cookie SYN-ACK, cookie ACK -> backend SYN, backend SYN-ACK -> its
// ACK, a request and a response, FINs both ways, the last ACK), with SACK, window scaling and
// timestamps negotiated, as Linux clients do. The I/O cost (NFQUEUE crossings) is not in it:
// bench/system_bench.sh measures the whole path. Run: build/release/bench/tandem_core_bench
// --benchmark_filter=Splice
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/fastpath_port.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint64_t kSec = 1'000'000'000ull;

EngineConfig spliceBenchConfig(Addressing addressing) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.mode = Mode::kSplice;
  s.addressing = addressing;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  s.snat_port_min = 1024;
  s.snat_port_max = 65535;
  c.services.push_back(s);
  c.max_flows = 1u << 20;
  c.hash_seed = 1;
  c.splice.cookie_secret.assign(32, 0x42);
  return c;
}

/// A packet template whose ports, seq, ack and timestamps are patched per connection.
struct Tmpl {
  std::vector<uint8_t> bytes;
  size_t ts = 0;  // offset of the timestamp option's TSval, 0 if none
};

Tmpl tmpl(PacketBuilder b) {
  Tmpl t{b.build(), 0};
  TcpPacket p;
  parseTcpPacket(t.bytes.data(), t.bytes.size(), p);
  TcpOptions o;
  parseTcpOptions(p.options(), p.optionsLen(), o);
  const uint8_t* opt = p.options();
  for (size_t i = 0; i + 10 <= p.optionsLen();) {
    if (opt[i] == tcpopt::kNop) { ++i; continue; }
    if (opt[i] == tcpopt::kTimestamp) { t.ts = static_cast<size_t>(opt + i + 2 - t.bytes.data()); break; }
    i += opt[i + 1];
  }
  return t;
}

struct Buf {
  uint8_t data[256];
  size_t len;
};

/// Copies the template into `b` with the given fields (the checksums are not fixed: the engine
/// updates them incrementally and never verifies them).
void fill(Buf& b, const Tmpl& t, const Endpoint& from, const Endpoint& to, uint32_t seq,
          uint32_t ack, uint32_t tsval, uint32_t tsecr) {
  std::memcpy(b.data, t.bytes.data(), t.bytes.size());
  b.len = t.bytes.size();
  store32(b.data + 12, from.addr.v4());
  store32(b.data + 16, to.addr.v4());
  store16(b.data + 20, from.port);
  store16(b.data + 22, to.port);
  store32(b.data + 24, seq);
  store32(b.data + 28, ack);
  if (t.ts != 0) {
    store32(b.data + t.ts, tsval);
    store32(b.data + t.ts + 4, tsecr);
  }
}

/// One connection's packets as templates (client 10.2.0.1, VIP 10.0.0.100:80, backend
/// 10.1.0.2:8080); addresses, ports, seq, ack and timestamps are patched per connection.
struct ConnTemplates {
  const std::string cli = "10.2.0.1:1000", vip = "10.0.0.100:80";
  const Endpoint vip_ep = *Endpoint::parse(vip);
  const Tmpl syn = tmpl(PacketBuilder().src(cli).dst(vip).flags(0x02).mss(1460).wscale(7)
                            .sackPermitted().timestamp(1, 0));
  const Tmpl ack = tmpl(PacketBuilder().src(cli).dst(vip).flags(0x10).timestamp(1, 1));
  const Tmpl req = tmpl(PacketBuilder().src(cli).dst(vip).flags(0x18).timestamp(1, 1)
                            .payload(std::string(64, 'q')));
  const Tmpl fin = tmpl(PacketBuilder().src(cli).dst(vip).flags(0x11).timestamp(1, 1));
  const Tmpl bsa = tmpl(PacketBuilder().src("10.1.0.2:8080").dst(cli).flags(0x12).mss(1460)
                            .wscale(7).sackPermitted().timestamp(1, 1));
  const Tmpl bdata = tmpl(PacketBuilder().src("10.1.0.2:8080").dst(cli).flags(0x18)
                              .timestamp(1, 1).payload(std::string(64, 'r')));
  const Tmpl bfin = tmpl(PacketBuilder().src("10.1.0.2:8080").dst(cli).flags(0x11)
                             .timestamp(1, 1));
};

/// What the handshake tells the client and the backend: the cookie, the proxy's TSval, the
/// backend leg's tuple (src: the proxy's side, dst: the backend).
struct Handshake {
  uint32_t cookie = 0;
  uint32_t pts = 0;
  Endpoint src, dst;
};

/// The client's SYN (-> cookie SYN-ACK), its cookie ACK (-> backend SYN) and the backend's
/// SYN-ACK (-> its ACK): the connection is spliced. Client ISN 1000, backend ISN 7000.
Handshake handshake(Engine& e, const ConnTemplates& t, const Endpoint& client, uint64_t now,
                    Buf& b) noexcept {
  Handshake h;
  TcpPacket p;
  fill(b, t.syn, client, t.vip_ep, 1000, 0, 50, 0);
  Decision d = e.process(b.data, b.len, sizeof b.data, {}, now);
  parseTcpPacket(b.data, d.len, p);
  h.cookie = p.seq();
  TcpOptions o;
  parseTcpOptions(p.options(), p.optionsLen(), o);
  h.pts = o.ts_val;
  fill(b, t.ack, client, t.vip_ep, 1001, h.cookie + 1, 51, h.pts);
  d = e.process(b.data, b.len, sizeof b.data, {}, now);
  parseTcpPacket(b.data, d.len, p);
  h.src = p.src();
  h.dst = p.dst();
  fill(b, t.bsa, h.dst, h.src, 7000, 1001, 900, 51);
  e.process(b.data, b.len, sizeof b.data, {}, now);
  return h;
}

void BM_SpliceConnection(benchmark::State& state) {
  const auto addressing = static_cast<Addressing>(state.range(0));
  Engine e(spliceBenchConfig(addressing));
  const ConnTemplates t;
  uint64_t now = 100 * kSec;
  Endpoint client = *Endpoint::parse(t.cli);
  Buf b;
  for (auto _ : state) {
    if (++client.port == 0) client.port = 1024;
    now += 1000;
    const Handshake h = handshake(e, t, client, now, b);
    // Request, response, FINs, last ACK.
    fill(b, t.req, client, t.vip_ep, 1001, h.cookie + 1, 52, h.pts);
    Decision d = e.process(b.data, b.len, sizeof b.data, {}, now);
    fill(b, t.bdata, h.dst, h.src, 7001, 1065, 901, 52);
    d = e.process(b.data, b.len, sizeof b.data, {}, now);
    fill(b, t.fin, client, t.vip_ep, 1065, h.cookie + 65, 53, h.pts + 1);
    d = e.process(b.data, b.len, sizeof b.data, {}, now);
    fill(b, t.bfin, h.dst, h.src, 7065, 1066, 902, 53);
    d = e.process(b.data, b.len, sizeof b.data, {}, now);
    fill(b, t.ack, client, t.vip_ep, 1066, h.cookie + 66, 54, h.pts + 2);
    d = e.process(b.data, b.len, sizeof b.data, {}, now);
    benchmark::DoNotOptimize(d);
  }
  state.counters["splices"] = static_cast<double>(e.counters().splices_completed);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SpliceConnection)->Arg(static_cast<int>(Addressing::kTransparent))
    ->Arg(static_cast<int>(Addressing::kSnat));

/// A map of one flow's two entries in memory: the engine's side of the fast path without the
/// syscalls (each of its calls is one bpf() syscall with KernelFastPath).
class TwoEntryPort : public FastPathPort {
 public:
  bool put(const tandem_fp_key& k, const tandem_fp_rewrite& v) noexcept override {
    Slot* s = find(k);
    if (s == nullptr) s = free();
    if (s == nullptr) return false;
    *s = {true, k, v};
    return true;
  }
  bool get(const tandem_fp_key& k, tandem_fp_rewrite& v) const noexcept override {
    const Slot* s = const_cast<TwoEntryPort*>(this)->find(k);
    if (s == nullptr) return false;
    v = s->v;
    return true;
  }
  bool erase(const tandem_fp_key& k) noexcept override {
    Slot* s = find(k);
    if (s == nullptr) return false;
    s->used = false;
    return true;
  }
  void clear() noexcept override { slots_[0].used = slots_[1].used = false; }
  /// What the program writes when it translates a packet of direction `dir`; the entry.
  tandem_fp_rewrite* entry(uint8_t dir) noexcept {
    for (Slot& s : slots_)
      if (s.used && s.v.dir == dir) return &s.v;
    return nullptr;
  }

 private:
  struct Slot {
    bool used = false;
    tandem_fp_key k{};
    tandem_fp_rewrite v{};
  };
  Slot* find(const tandem_fp_key& k) noexcept {
    for (Slot& s : slots_)
      if (s.used && std::memcmp(&s.k, &k, sizeof k) == 0) return &s;
    return nullptr;
  }
  Slot* free() noexcept {
    for (Slot& s : slots_)
      if (!s.used) return &s;
    return nullptr;
  }
  Slot slots_[2];
};

/// The same connection with the kernel fast path on (TANDEM_FP_CLOSE_FAST): the engine
/// processes the SYN, the cookie ACK, the backend's SYN-ACK and the request (which puts the flow
/// on the fast path), then three close events: the two FINs and the last ACK (the first ack of
/// the backend's FIN); the response is the kernel's alone. Every connection must go on the fast
/// path and off it at TIME_WAIT (removals == iterations), or the benchmark reports an error.
/// Compare with BM_SpliceConnection: the engine's CPU per connection, port calls in memory (the
/// I/O saved, the NFQUEUE crossings of the response and the FINs, is not in either figure).
void BM_SpliceConnectionFastPath(benchmark::State& state) {
  Engine e(spliceBenchConfig(Addressing::kTransparent));
  TwoEntryPort port;
  e.setFastPath(&port, true);
  const ConnTemplates t;
  uint64_t now = 100 * kSec;
  Endpoint client = *Endpoint::parse(t.cli);
  Buf b;
  auto kernel = [&](uint8_t dir, uint32_t seq_end, uint32_t ack_no, uint8_t flags) {
    tandem_fp_rewrite* r = port.entry(dir);
    if (r == nullptr) return tandem_fp_event{};
    r->last_ns = now;
    r->seq_end = seq_end;
    r->ack = ack_no;
    r->tcp_flags = flags;
    tandem_fp_event ev{};
    ev.flow_id = r->flow_id;
    ev.generation = r->generation;
    ev.dir = dir;
    ev.tcp_flags = flags;
    ev.window = 1000;
    return ev;
  };
  for (auto _ : state) {
    if (++client.port == 0) client.port = 1024;
    now += 1000;
    const Handshake h = handshake(e, t, client, now, b);
    const uint32_t cookie = h.cookie;
    fill(b, t.req, client, t.vip_ep, 1001, cookie + 1, 52, h.pts);
    const Decision d = e.process(b.data, b.len, sizeof b.data, {}, now);  // goes on the fast path
    kernel(1, 7065, 1065, 0x18);                              // the response
    tandem_fp_event ev = kernel(0, 1066, cookie + 65, 0x11);  // client FIN
    ev.seq = 1065;
    ev.ack = cookie + 65;
    e.fastPathClose(ev, now);
    ev = kernel(1, 7066, 1066, 0x11);  // backend FIN
    ev.seq = 7065;
    ev.ack = 1066;
    e.fastPathClose(ev, now);                 // LAST_ACK
    ev = kernel(0, 1066, cookie + 66, 0x10);  // the last ACK, reported as the FIN's first ack
    ev.seq = 1066;
    ev.ack = cookie + 66;
    e.fastPathClose(ev, now);  // TIME_WAIT, off the fast path
    benchmark::DoNotOptimize(d);
  }
  state.counters["installs"] = static_cast<double>(e.counters().fastpath_installs);
  state.counters["removals"] = static_cast<double>(e.counters().fastpath_removals);
  state.counters["stale"] = static_cast<double>(e.counters().fastpath_events_stale);
  state.counters["reopened"] = static_cast<double>(e.counters().flows_reopened);
  state.SetItemsProcessed(state.iterations());
  if (e.counters().fastpath_removals != static_cast<uint64_t>(state.iterations())) {
    state.SkipWithError("not every connection went on the fast path and off it at TIME_WAIT");
  }
}
BENCHMARK(BM_SpliceConnectionFastPath);

}  // namespace
}  // namespace tandem
