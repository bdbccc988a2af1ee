// Deferral (issue 4): the packet that makes a new flow visible to the client, the backend's
// SYN-ACK, is held (Verdict::kHold) until the standby acknowledged the flow. Engine side
// (setSyncDeferral / markSynced / the hold generation), the daemon's bookkeeping (DeferredFlows)
// and the reliable sender's delivered(seq) it relies on.
#include <gtest/gtest.h>

#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/tandemd/deferral.h"
#include "sync/reliable.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPsh = 0x08;
constexpr uint64_t kSec = 1'000'000'000ull;
constexpr uint64_t kMs = 1'000'000ull;

EngineConfig config(Mode mode) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.mode = mode;
  c.services.push_back(s);
  c.max_flows = 64;
  c.splice.cookie_secret.assign(16, 7);
  return c;
}

struct Out {
  Verdict verdict = Verdict::kDrop;
  std::vector<uint8_t> bytes;
};

Out run(Engine& e, std::vector<uint8_t> p, bool can_hold = true, uint64_t now = kSec) {
  const size_t len = p.size();
  p.resize(256);
  PacketMeta meta;
  meta.can_hold = can_hold;
  const Decision d = e.process(p.data(), len, p.size(), meta, now);
  p.resize(d.verdict == Verdict::kAccept ? d.len : 0);
  return {d.verdict, p};
}

TcpPacket view(std::vector<uint8_t>& p) {
  TcpPacket v;
  EXPECT_EQ(parseTcpPacket(p.data(), p.size(), v), ParseError::kNone);
  return v;
}

const FlowKey kClientKey{*IpAddr::parse("10.0.0.2"), *IpAddr::parse("10.0.0.100"), 40000, 80};

/// A client SYN through a passthrough engine; returns the backend's SYN-ACK to it.
std::vector<uint8_t> openPassthrough(Engine& e) {
  Out syn = run(e, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn)
                       .seq(100).mss(1460).build());
  EXPECT_EQ(syn.verdict, Verdict::kAccept);
  const Endpoint backend = view(syn.bytes).dst(), source = view(syn.bytes).src();
  return PacketBuilder().src(backend.toString()).dst(source.toString()).flags(kSyn | kAck)
      .seq(900).ack(101).mss(1460).build();
}

TEST(Deferral, BackendSynAckIsHeldUntilTheFlowIsMarkedSynced) {
  Engine e(config(Mode::kPassthrough));
  e.enableChangeTracking();
  e.setSyncDeferral(true);
  const auto synack = openPassthrough(e);
  std::vector<Flow> changed;
  e.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { changed.push_back(f); });
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_TRUE(changed[0].sync_pending);  // the daemon learns it must wait for this one

  const uint64_t gen = e.spliceGeneration();
  EXPECT_EQ(run(e, synack).verdict, Verdict::kHold);
  EXPECT_EQ(run(e, synack).verdict, Verdict::kHold);  // offered again: held again
  EXPECT_EQ(e.counters().sync_deferred, 2u);
  EXPECT_EQ(e.spliceGeneration(), gen);
  // Held before tracking: the flow has not moved on.
  EXPECT_EQ(e.counters().packets[1], 0u);

  EXPECT_TRUE(e.markSynced(kClientKey));
  EXPECT_NE(e.spliceGeneration(), gen);  // the I/O layer offers its held packets again
  Out released = run(e, synack);
  EXPECT_EQ(released.verdict, Verdict::kAccept);
  EXPECT_EQ(view(released.bytes).dport(), 40000);
  EXPECT_FALSE(e.markSynced(kClientKey));  // nothing waits any more
  EXPECT_EQ(e.counters().sync_deferred, 2u);
}

TEST(Deferral, NoHoldWithoutDeferralOrWhenTheCallerCannotHold) {
  {
    Engine e(config(Mode::kPassthrough));
    e.enableChangeTracking();  // a pair without a ready standby: deferral off
    EXPECT_EQ(run(e, openPassthrough(e)).verdict, Verdict::kAccept);
    EXPECT_FALSE(e.markSynced(kClientKey));
  }
  {
    Engine e(config(Mode::kPassthrough));
    e.setSyncDeferral(true);  // no change tracking: a single proxy never defers
    EXPECT_EQ(run(e, openPassthrough(e)).verdict, Verdict::kAccept);
  }
  {
    Engine e(config(Mode::kPassthrough));
    e.enableChangeTracking();
    e.setSyncDeferral(true);
    EXPECT_EQ(run(e, openPassthrough(e), /*can_hold=*/false).verdict, Verdict::kAccept);
    EXPECT_EQ(e.counters().sync_deferred, 0u);
  }
}

TEST(Deferral, TurningDeferralOffReleasesHeldSynAcks) {
  Engine e(config(Mode::kPassthrough));
  e.enableChangeTracking();
  e.setSyncDeferral(true);
  const auto synack = openPassthrough(e);
  EXPECT_EQ(run(e, synack).verdict, Verdict::kHold);
  const uint64_t gen = e.spliceGeneration();
  e.setSyncDeferral(false);  // the standby died or fell behind
  EXPECT_NE(e.spliceGeneration(), gen);
  EXPECT_EQ(run(e, synack).verdict, Verdict::kAccept);
}

TEST(Deferral, OnlyTheSynAckWaitsNotTheClientsSegments) {
  Engine e(config(Mode::kPassthrough));
  e.enableChangeTracking();
  e.setSyncDeferral(true);
  (void)openPassthrough(e);
  // A client SYN retransmission passes (the backend answers it again).
  EXPECT_EQ(run(e, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn)
                       .seq(100).mss(1460).build()).verdict,
            Verdict::kAccept);
}

TEST(Deferral, SpliceBackendSynAckIsHeldUntilSynced) {
  Engine e(config(Mode::kSplice));
  e.enableChangeTracking();
  e.setSyncDeferral(true);
  const std::string client = "10.0.0.2:40000", vip = "10.0.0.100:80";
  Out sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(1000).mss(1460)
                      .timestamp(10, 0).build());
  ASSERT_EQ(sa.verdict, Verdict::kAccept);
  const TcpPacket sav = view(sa.bytes);
  TcpOptions so;
  ASSERT_EQ(parseTcpOptions(sav.options(), sav.optionsLen(), so), OptionError::kNone);
  Out bsyn = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(1001)
                        .ack(sav.seq() + 1).timestamp(11, so.ts_val).build());
  ASSERT_EQ(bsyn.verdict, Verdict::kAccept);
  const Endpoint backend = view(bsyn.bytes).dst(), source = view(bsyn.bytes).src();
  const auto synack = PacketBuilder().src(backend.toString()).dst(source.toString())
                          .flags(kSyn | kAck).seq(70000).ack(1001).mss(1460)
                          .timestamp(500, 11).build();
  EXPECT_EQ(run(e, synack).verdict, Verdict::kHold);
  EXPECT_EQ(e.counters().splices_completed, 0u);
  // Client data meanwhile is held by the splice handshake as before.
  EXPECT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(1001)
                       .ack(sav.seq() + 1).timestamp(12, so.ts_val).payload("GET /").build())
                .verdict,
            Verdict::kHold);
  ASSERT_TRUE(e.markSynced(kClientKey));
  Out ack = run(e, synack);
  ASSERT_EQ(ack.verdict, Verdict::kAccept);  // the proxy's ACK to the backend
  EXPECT_EQ(view(ack.bytes).flags() & (kSyn | kAck), kAck);
  EXPECT_EQ(e.counters().splices_completed, 1u);
}

TEST(DeferredFlows, ReleasesOnDeliveryOrTimeoutAndAllAtOnce) {
  DeferredFlows d(50 * kMs);
  FlowKey k1 = kClientKey, k2 = kClientKey, k3 = kClientKey;
  k2.sport = 40001;
  k3.sport = 40002;
  d.add(k1, 1, 0);
  d.add(k2, 2, 10 * kMs);
  d.add(k3, 3, 20 * kMs);
  std::vector<uint16_t> released;
  auto rel = [&](const FlowKey& k) { released.push_back(k.sport); };
  // Seq 2 delivered (a SACK range), not 1: only k2 goes.
  EXPECT_EQ(d.poll(30 * kMs, [](uint64_t s) { return s == 2; }, rel), 1u);
  EXPECT_EQ(released, (std::vector<uint16_t>{40001}));
  // At 50 ms k1's wait ran out; k3 (deadline 70 ms) keeps waiting.
  EXPECT_EQ(d.poll(50 * kMs, [](uint64_t) { return false; }, rel), 1u);
  EXPECT_EQ(released.back(), 40000);
  EXPECT_EQ(d.size(), 1u);
  EXPECT_EQ(d.releaseAll(rel), 1u);
  EXPECT_EQ(released.back(), 40002);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.counters().tracked, 3u);
  EXPECT_EQ(d.counters().acked, 1u);
  EXPECT_EQ(d.counters().timed_out, 1u);
  EXPECT_EQ(d.counters().abandoned, 1u);
}

sync::FlowRecord record(uint16_t port) {
  sync::FlowRecord r;
  r.key.client_port = port;
  r.splice_fields = true;
  return r;
}

TEST(Deferral, ReliableSenderReportsDeliveryOfEachSeq) {
  sync::ReliableSender s({16, 10 * kMs}, 7);
  uint64_t a = 0, b = 0, c = 0, a2 = 0;
  ASSERT_TRUE(s.upsert(record(1), &a));
  ASSERT_TRUE(s.upsert(record(2), &b));
  ASSERT_TRUE(s.upsert(record(1), &a2));  // coalesced into the unsent message
  EXPECT_EQ(a2, a);
  ASSERT_TRUE(s.upsert(record(3), &c));
  EXPECT_EQ(b, a + 1);
  EXPECT_EQ(c, b + 1);
  EXPECT_FALSE(s.delivered(a));
  std::vector<sync::Update> out;
  EXPECT_EQ(s.poll(0, 100, out), 3u);
  EXPECT_FALSE(s.delivered(a));
  s.onAck(sync::Ack{7, a, 1, {{c, c}, {}, {}, {}}});  // a cumulatively, c as a range
  EXPECT_TRUE(s.delivered(a));
  EXPECT_FALSE(s.delivered(b));
  EXPECT_TRUE(s.delivered(c));
  EXPECT_FALSE(s.delivered(c + 1));  // never queued
  s.onAck(sync::Ack{7, c, 0, {}});
  EXPECT_TRUE(s.delivered(b));
}

}  // namespace
}  // namespace tandem
