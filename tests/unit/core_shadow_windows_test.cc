// A vmac standby keeps its flows' window edges warm from the frames it shadows
// (Engine::observeShadow): after a takeover, in-window segments pass and out-of-window RSTs are
// refused at once, where a cold standby must let the endpoint judge them (liberal until seen).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/packet.h"
#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08;
constexpr uint64_t kSec = 1'000'000'000ull;
constexpr char kClient[] = "10.0.0.2:40000";
constexpr char kVip[] = "10.0.0.100:80";

EngineConfig config() {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse("10.1.0.2:8080")};
  s.mode = Mode::kPassthrough;
  s.addressing = Addressing::kSnat;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  c.services.push_back(s);
  c.max_flows = 64;
  return c;
}

Verdict run(Engine& e, std::vector<uint8_t> p, std::vector<uint8_t>* out = nullptr,
            uint64_t now = kSec) {
  const size_t len = p.size();
  p.resize(256);
  const Decision d = e.process(p.data(), len, p.size(), {}, now);
  if (out != nullptr) *out = std::vector<uint8_t>(p.begin(), p.begin() + d.len);
  return d.verdict;
}

struct Pair {
  Engine active{config()};
  Engine warm{config()};  ///< shadows the traffic
  Engine cold{config()};  ///< does not
  std::string backend, source;
  Flow checkpoint;

  // The handshake through the active (client ISN 100, backend ISN 900, window scale 7), its
  // checkpoint installed on both standbys.
  Pair() {
    active.enableChangeTracking();
    warm.setStandby(true, kSec);
    cold.setStandby(true, kSec);
    std::vector<uint8_t> syn;
    EXPECT_EQ(run(active, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(100).mss(1460)
                              .wscale(7).build(), &syn), Verdict::kAccept);
    TcpPacket v;
    EXPECT_EQ(parseTcpPacket(syn.data(), syn.size(), v), ParseError::kNone);
    backend = v.dst().toString();
    source = v.src().toString();
    EXPECT_EQ(run(active, PacketBuilder().src(backend).dst(source).flags(kSyn | kAck).seq(900)
                              .ack(101).mss(1460).wscale(7).build()), Verdict::kAccept);
    EXPECT_EQ(run(active, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(101).ack(901)
                              .build()), Verdict::kAccept);
    std::vector<Flow> changed;
    active.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { changed.push_back(f); });
    EXPECT_EQ(changed.size(), 1u);
    checkpoint = changed.at(0);
    EXPECT_EQ(checkpoint.state, TcpState::kEstablished);
    EXPECT_EQ(warm.installFlow(checkpoint, kSec), DropReason::kNone);
    EXPECT_EQ(cold.installFlow(checkpoint, kSec), DropReason::kNone);
  }

  // A frame on its way to the active: the active forwards it, the warm standby observes it.
  void wire(const std::vector<uint8_t>& p, bool* learnt = nullptr) {
    EXPECT_EQ(run(active, p), Verdict::kAccept);
    const bool l = warm.observeShadow(p.data(), p.size());
    if (learnt != nullptr) *learnt = l;
  }
};

// 20 KB from the client after the checkpoint, acknowledged by the backend: the client's next
// sequence number is 20101, far from where the checkpoint left it (101).
void exchange(Pair& p) {
  const std::string chunk(1000, 'x');
  for (uint32_t i = 0; i < 20; ++i) {
    bool learnt = false;
    p.wire(PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(101 + i * 1000).ack(901)
               .window(512).payload(chunk).build(), &learnt);
    EXPECT_TRUE(learnt) << "segment " << i;
    p.wire(PacketBuilder().src(p.backend).dst(p.source).flags(kAck).seq(901)
               .ack(101 + (i + 1) * 1000).window(512).build(), &learnt);
    EXPECT_TRUE(learnt) << "ack " << i;
  }
}

TEST(ShadowWindows, ObservingIsReadOnlyTowardsForwarding) {
  Pair p;
  const Counters before = p.warm.counters();
  exchange(p);
  const Counters& after = p.warm.counters();
  EXPECT_EQ(after.packets, before.packets);
  EXPECT_EQ(after.drops, before.drops);
  EXPECT_EQ(after.rst_accepted + after.rst_challenged, 0u);
  EXPECT_EQ(p.warm.activeFlows(), 1u);
  // A RST seen on the wire learns nothing and closes nothing (the checkpoint brings that).
  EXPECT_FALSE(p.warm.observeShadow(
      PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(20101).build().data(), 40));
  // Frames of no flow, or no TCP at all, are ignored.
  const auto other = PacketBuilder().src("10.0.0.9:1234").dst(kVip).flags(kAck).seq(1).ack(1)
                         .build();
  EXPECT_FALSE(p.warm.observeShadow(other.data(), other.size()));
  const std::vector<uint8_t> junk(40, 0x45);
  EXPECT_FALSE(p.warm.observeShadow(junk.data(), junk.size()));
  // The flow still expires by nothing and forwards as before: nothing but edges changed.
  std::vector<Flow> none;
  p.warm.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { none.push_back(f); });
  EXPECT_TRUE(none.empty());
}

TEST(ShadowWindows, TakeoverRefusesAnOutOfWindowRstAtOnce) {
  Pair p;
  exchange(p);
  p.warm.setStandby(false, 2 * kSec);
  p.cold.setStandby(false, 2 * kSec);
  // Far beyond any edge: the warm node knows the window and drops it; the cold one has seen
  // nothing of the client yet and must pass it for the endpoint to judge (RFC 5961).
  const auto blind = PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(101 + (1u << 30))
                         .build();
  EXPECT_EQ(run(p.warm, blind, nullptr, 2 * kSec), Verdict::kDrop);
  EXPECT_EQ(p.warm.counters().dropped(DropReason::kRstOutOfWindow), 1u);
  EXPECT_EQ(run(p.cold, blind, nullptr, 2 * kSec), Verdict::kAccept);
  EXPECT_EQ(p.cold.counters().rst_challenged, 1u);
}

TEST(ShadowWindows, TakeoverAcceptsInWindowSegmentsAndKnowsTheExactRst) {
  Pair p;
  exchange(p);
  // A later checkpoint of the same connection (any hard-state change) keeps the warm edges.
  ASSERT_EQ(p.warm.installFlow(p.checkpoint, kSec), DropReason::kNone);
  p.warm.setStandby(false, 2 * kSec);
  // The next segments each way are inside the window learnt from the shadow.
  EXPECT_EQ(run(p.warm, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(20101)
                            .ack(901).window(512).payload("more").build(), nullptr, 2 * kSec),
            Verdict::kAccept);
  EXPECT_EQ(run(p.warm, PacketBuilder().src(p.backend).dst(p.source).flags(kAck | kPsh).seq(901)
                            .ack(20105).window(512).payload("reply").build(), nullptr, 2 * kSec),
            Verdict::kAccept);
  EXPECT_EQ(p.warm.counters().seq_out_of_window, 0u);
  // A RST at the receiver's RCV.NXT (20105) is exact: accepted, the flow closes.
  EXPECT_EQ(run(p.warm, PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(20105).build(),
                nullptr, 2 * kSec),
            Verdict::kAccept);
  EXPECT_EQ(p.warm.counters().rst_accepted, 1u);
  EXPECT_EQ(p.warm.counters().rst_challenged, 0u);
}

TEST(ShadowWindows, ANewIncarnationVoidsTheWarmEdges) {
  Pair p;
  exchange(p);
  // The connection closed (the active's checkpoint: TIME_WAIT), then the client reuses the
  // tuple: its SYN, seen by the shadow, voids the old edges, so that the new connection is not
  // judged against the old incarnation's window.
  Flow tw = p.checkpoint;
  tw.state = TcpState::kTimeWait;
  ASSERT_EQ(p.warm.installFlow(tw, kSec), DropReason::kNone);
  const auto syn = PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(7'000'000).build();
  EXPECT_TRUE(p.warm.observeShadow(syn.data(), syn.size()));
  p.warm.setStandby(false, 2 * kSec);
  // A RST near the new sequence space: the endpoint judges it (nothing stale refuses it).
  EXPECT_EQ(run(p.warm, PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(7'000'001)
                            .build(), nullptr, 2 * kSec),
            Verdict::kAccept);
  EXPECT_EQ(p.warm.counters().dropped(DropReason::kRstOutOfWindow), 0u);
}

}  // namespace
}  // namespace tandem
