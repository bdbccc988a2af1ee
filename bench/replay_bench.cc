// The vmac takeover's replay plan (planReplay with a classifier) over a full shadow ring: its
// cost is part of the clients' gap at a takeover. Run: build/release/bench/tandem_core_bench
// --benchmark_filter=PlanReplay
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "proxy/core/resplice.h"
#include "proxy/core/shadow_ring.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;

/// `frames` frames of 100 splice flows (request/response, 64-byte segments). acked: each
/// segment acknowledged by the other end later in the ring (the usual case: almost everything
/// pruned); otherwise nothing acknowledged (everything kept, the copy check's worst case).
void BM_PlanReplay(benchmark::State& state) {
  const size_t frames = static_cast<size_t>(state.range(0));
  const bool acked = state.range(1) != 0;
  constexpr uint32_t kFlows = 100;
  ShadowRing ring(ShadowRingConfig{64u << 20, frames, 0});
  std::vector<uint32_t> cseq(kFlows, 1000), bseq(kFlows, 500000);
  constexpr uint32_t kCookie = 0x40000000;
  for (size_t i = 0; i < frames; ++i) {
    const uint32_t f = static_cast<uint32_t>(i % kFlows);
    const bool from_client = (i / kFlows) % 2 == 0;
    const std::string cli = "10.0.1.2:" + std::to_string(20000 + f);
    const std::string snat = "10.0.2.10:" + std::to_string(20000 + f);
    PacketBuilder b;
    if (from_client) {
      b.src(cli).dst("10.0.1.100:80").seq(cseq[f]).ack(acked ? bseq[f] - 500000 + kCookie : 1);
      cseq[f] += 64;
    } else {
      b.src("10.0.2.2:8080").dst(snat).seq(bseq[f]).ack(acked ? cseq[f] : 1);
      bseq[f] += 64;
    }
    b.payloadSize(64);
    (void)ring.push(b.build(), from_client ? ShadowSide::kFront : ShadowSide::kBack, false, i, i);
  }
  Flow flow;
  flow.splice = true;
  flow.has_seqadj = true;
  flow.proxy_isn = kCookie - 1;
  flow.adj[1] = spliceBackendAdj(kCookie - 1, 500000 - 1);
  const ReplayClassifier classify = [&](uint32_t sa, uint32_t, uint16_t sp, uint16_t dp,
                                        ReplayFlowRef& out) {
    const bool from_client = sa == 0x0a000102;
    out = replayFlowRef(flow, from_client ? sp : dp,
                        from_client ? Direction::kFromClient : Direction::kFromBackend);
    return true;
  };
  std::vector<uint32_t> plan;
  for (auto _ : state) {
    ReplayPlanStats st;
    planReplay(ring, 0, UINT64_MAX, 0, plan, st, classify);
    benchmark::DoNotOptimize(plan.data());
  }
  state.counters["planned"] = static_cast<double>(plan.size());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * frames));
}
BENCHMARK(BM_PlanReplay)
    ->Args({10'000, 1})
    ->Args({10'000, 0})
    ->Args({65'536, 1})
    ->Args({65'536, 0})
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tandem
