// Microbenchmarks of the packet core: whole per-packet processing, translation alone, and flow
// lookup at up to 1,000,000 flows. Run: build/release/bench/tandem_core_bench
#include <benchmark/benchmark.h>

#include <array>
#include <memory>
#include <random>
#include <vector>

#include "common/packet.h"
#include "proxy/core/engine.h"
#include "proxy/core/flow_table.h"
#include "proxy/core/translator.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint64_t kSec = 1'000'000'000ull;

EngineConfig benchConfig(size_t max_flows, Addressing addressing) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "bench";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.addressing = addressing;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  s.snat_port_min = 1024;
  s.snat_port_max = 65535;
  c.services.push_back(s);
  c.max_flows = max_flows;
  c.hash_seed = 1;
  return c;
}

/// Clients of the benchmark's flows and one data segment to send from each: the segment is
/// rewritten from a template per iteration, as a fresh packet arrives in a fresh buffer.
struct BenchFlows {
  std::vector<Endpoint> clients;
  std::vector<uint8_t> tmpl;
};

BenchFlows openAll(Engine& e, size_t n) {
  BenchFlows b;
  b.clients.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    b.clients.push_back({IpAddr::fromV4(0x0a020000u + static_cast<uint32_t>(i / 60000)),
                         static_cast<uint16_t>(1024 + i % 60000)});
    const std::string client = b.clients.back().toString();
    auto syn = PacketBuilder().src(client).dst("10.0.0.100:80").flags(0x02).seq(100)
                   .mss(1460).wscale(7).sackPermitted().timestamp(1, 0).build();
    e.process(syn.data(), syn.size(), {}, kSec);
    TcpPacket v;
    parseTcpPacket(syn.data(), syn.size(), v);
    auto synack = PacketBuilder().src(v.dst().toString()).dst(v.src().toString())
                      .flags(0x12).seq(900).ack(101).mss(1460).wscale(7).sackPermitted()
                      .timestamp(2, 1).build();
    e.process(synack.data(), synack.size(), {}, kSec);
    auto ack = PacketBuilder().src(client).dst("10.0.0.100:80").flags(0x10).seq(101).ack(901)
                   .timestamp(3, 2).build();
    e.process(ack.data(), ack.size(), {}, kSec);
  }
  b.tmpl = PacketBuilder().src("10.2.0.0:1").dst("10.0.0.100:80").flags(0x18).seq(101)
               .ack(901).timestamp(4, 2).payloadSize(1400).build();
  return b;
}

/// 65,536 packet headers of flows chosen at random, built before timing starts: a packet handed
/// over by the kernel has just been copied and is in cache, so the benchmark must not pay a
/// cache miss to build it. The payload part of the buffers never changes.
std::vector<std::array<uint8_t, 64>> randomHeaders(const BenchFlows& b) {
  std::vector<std::array<uint8_t, 64>> hdrs(1 << 16);
  std::mt19937 rng(1);
  for (auto& h : hdrs) {
    const Endpoint& c = b.clients[rng() % b.clients.size()];
    std::copy(b.tmpl.begin(), b.tmpl.begin() + 64, h.begin());
    store32(&h[12], c.addr.v4());
    store16(&h[20], c.port);
  }
  return hdrs;
}

// Whole per-packet path: parse, options, lookup, track, translate, checksum (incremental),
// one packet at a time.
void BM_ProcessEstablished(benchmark::State& state) {
  const size_t flows = static_cast<size_t>(state.range(0));
  Engine e(benchConfig(flows, Addressing::kTransparent));
  BenchFlows b = openAll(e, flows);
  const auto hdrs = randomHeaders(b);
  std::vector<uint8_t> buf = b.tmpl;
  size_t i = 0;
  for (auto _ : state) {
    const auto& h = hdrs[i++ & 0xffff];
    std::copy(h.begin(), h.end(), buf.begin());  // the engine rewrites in place
    auto d = e.process(buf.data(), buf.size(), {}, 2 * kSec);
    benchmark::DoNotOptimize(d);
  }
  state.counters["flows"] = static_cast<double>(e.activeFlows());
  state.counters["accepted"] = static_cast<double>(e.counters().packets[0]);
}
BENCHMARK(BM_ProcessEstablished)->Arg(1)->Arg(1000)->Arg(1'000'000);

// The same in batches of 64, as the NFQUEUE adapter hands them over (one recvmmsg).
void BM_ProcessBatch64(benchmark::State& state) {
  const size_t flows = static_cast<size_t>(state.range(0));
  Engine e(benchConfig(flows, Addressing::kTransparent));
  BenchFlows b = openAll(e, flows);
  const auto hdrs = randomHeaders(b);
  constexpr size_t kBatch = 64;
  std::vector<std::vector<uint8_t>> bufs(kBatch, b.tmpl);
  PacketSlot slots[kBatch];
  size_t i = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < kBatch; ++k) {
      const auto& h = hdrs[i++ & 0xffff];
      std::copy(h.begin(), h.end(), bufs[k].begin());
      slots[k].data = bufs[k].data();
      slots[k].len = bufs[k].size();
    }
    e.processBatch(slots, kBatch, 2 * kSec);
    benchmark::DoNotOptimize(slots[0].decision);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
  state.counters["ns_per_packet"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kBatch),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_ProcessBatch64)->Arg(1)->Arg(1000)->Arg(1'000'000);

// Translation alone, with the partial-checksum (full recompute) policy and the incremental one.
void BM_Translate(benchmark::State& state) {
  Flow f;
  f.client_addr = *IpAddr::parse("10.0.0.2");
  f.vip_addr = *IpAddr::parse("10.0.0.100");
  f.backend_addr = *IpAddr::parse("10.1.0.2");
  f.source_addr = *IpAddr::parse("10.1.0.1");
  f.client_port = 40000;
  f.vip_port = 80;
  f.backend_port = 8080;
  f.source_port = 30000;
  f.has_seqadj = state.range(1) != 0;
  f.adj[0] = {1000, 0, 77};
  f.adj[1] = {2000, 0, -55};
  const size_t payload = static_cast<size_t>(state.range(0));
  auto tmpl = PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(0x10)
                  .seq(5000).ack(6000).timestamp(1, 2).sack({{6100, 6200}})
                  .payloadSize(payload).build();
  std::vector<uint8_t> buf = tmpl;
  TcpPacket pkt;
  parseTcpPacket(buf.data(), buf.size(), pkt);
  TcpOptions opts;
  parseTcpOptions(pkt.options(), pkt.optionsLen(), opts);
  Counters c;
  PacketMeta meta;
  meta.csum_not_ready = state.range(2) != 0;
  for (auto _ : state) {
    translateSegment(f, Direction::kFromClient, pkt, opts, meta, c);
    benchmark::DoNotOptimize(buf.data());
    benchmark::ClobberMemory();
  }
}
// {payload, seqadj, partial checksum}
BENCHMARK(BM_Translate)
    ->Args({0, 0, 0})->Args({1400, 0, 0})->Args({1400, 1, 0})->Args({0, 0, 1})->Args({1400, 0, 1});

/// Fills `t` with `n` flows and returns both legs' keys of all of them, shuffled.
std::vector<FlowKey> fillTable(FlowTable& t, size_t n) {
  std::vector<FlowKey> keys;
  keys.reserve(2 * n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t slot = t.allocate();
    Flow& f = t.at(slot);
    f.client_addr = IpAddr::fromV4(0x0a000000u + i);
    f.client_port = static_cast<uint16_t>(1024 + (i * 7919) % 60000);
    f.vip_addr = IpAddr::fromV4(0x0a0000ffu);
    f.vip_port = 80;
    f.backend_addr = IpAddr::fromV4(0x0b000002u + (i & 1));
    f.backend_port = 8080;
    f.source_addr = IpAddr::fromV4(0x0b000100u + (i >> 16));
    f.source_port = static_cast<uint16_t>(i & 0xffff);
    t.insert(slot);
    keys.push_back(FlowTable::clientKey(f));
    keys.push_back(FlowTable::backendKey(f));
  }
  std::mt19937 rng(2);
  std::shuffle(keys.begin(), keys.end(), rng);
  return keys;
}

// Flow lookup at N flows: random keys of live flows, both legs.
void BM_FlowLookup(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  FlowTable t(n, 1);
  const std::vector<FlowKey> keys = fillTable(t, n);
  size_t i = 0;
  for (auto _ : state) {
    auto hit = t.find(keys[i]);
    benchmark::DoNotOptimize(hit);
    if (++i == keys.size()) i = 0;
  }
  state.counters["bytes_per_flow"] = static_cast<double>(t.memoryBytes()) / static_cast<double>(n);
}
BENCHMARK(BM_FlowLookup)->Arg(1000)->Arg(100'000)->Arg(1'000'000);

// The same lookups 32 at a time: hash and prefetch buckets, prefetch flows, then find.
void BM_FlowLookupBatch32(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  FlowTable t(n, 1);
  const std::vector<FlowKey> keys = fillTable(t, n);
  constexpr size_t kBatch = 32;
  uint64_t hashes[kBatch];
  size_t i = 0;
  for (auto _ : state) {
    if (i + kBatch > keys.size()) i = 0;
    for (size_t k = 0; k < kBatch; ++k) {
      hashes[k] = t.hashKey(keys[i + k]);
      t.prefetch(hashes[k]);
    }
    for (size_t k = 0; k < kBatch; ++k) t.prefetchFlow(hashes[k]);
    for (size_t k = 0; k < kBatch; ++k) {
      auto hit = t.find(keys[i + k], hashes[k]);
      benchmark::DoNotOptimize(hit);
    }
    i += kBatch;
  }
  state.counters["ns_per_lookup"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kBatch),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_FlowLookupBatch32)->Arg(1000)->Arg(1'000'000);

// The first 22 flows of a fresh table of N flows, construction and unmapping excluded: what
// the first connections after a start pay in page faults (the table faults its index and first
// chunk in at construction, so this should be microseconds). Each iteration maps a new table.
void BM_FirstFlowsOfFreshTable(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    state.PauseTiming();
    auto t = std::make_unique<FlowTable>(n, 1);
    state.ResumeTiming();
    benchmark::DoNotOptimize(fillTable(*t, 22));
    state.PauseTiming();
    t.reset();
    state.ResumeTiming();
  }
}
BENCHMARK(BM_FirstFlowsOfFreshTable)->Arg(100'000)->Arg(1'000'000)->Iterations(5)
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace tandem

BENCHMARK_MAIN();
