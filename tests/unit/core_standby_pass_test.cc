// A standby passing client packets that match no flow to the active (Engine::
// setPassUnknownToActive): accepted byte for byte untranslated, no flow created, counted; known
// flows are still translated; backend packets without a flow are still dropped.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10;
constexpr uint64_t kSec = 1'000'000'000ull;

EngineConfig config(Mode mode) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.mode = mode;
  s.addressing = Addressing::kTransparent;
  c.services.push_back(s);
  c.max_flows = 64;
  c.splice.cookie_secret.assign(16, 7);
  return c;
}

struct PassCase {
  const char* description;
  Mode mode;
  bool standby;
  bool pass;
  std::vector<uint8_t> packet;
  Verdict verdict;
  bool modified;        // the engine rewrote the packet (translated or answered it)
  size_t flows;         // flows in the table afterwards
  uint64_t passed;      // passedToActive() afterwards
};

std::vector<uint8_t> clientSyn() {
  return PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn).seq(100)
      .mss(1460).build();
}
std::vector<uint8_t> clientAck() {
  return PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck).seq(101)
      .ack(5000).payload("GET /").build();
}
std::vector<uint8_t> backendSynAck() {
  return PacketBuilder().src("10.1.0.2:8080").dst("10.0.0.2:40000").flags(kSyn | kAck).seq(900)
      .ack(101).mss(1460).build();
}

TEST(StandbyPass, UnknownClientPacketsGoToTheActiveUntranslated) {
  const PassCase cases[] = {
      {"active: a SYN creates and translates a flow", Mode::kPassthrough, false, true,
       clientSyn(), Verdict::kAccept, true, 1, 0},
      {"standby without pass: creates the flow as before", Mode::kPassthrough, true, false,
       clientSyn(), Verdict::kAccept, true, 1, 0},
      {"standby with pass: SYN passed untranslated, no flow", Mode::kPassthrough, true, true,
       clientSyn(), Verdict::kAccept, false, 0, 1},
      {"standby with pass: a data segment of an unknown flow passed", Mode::kPassthrough, true,
       true, clientAck(), Verdict::kAccept, false, 0, 1},
      {"standby with pass: splice SYN passed, not answered with a cookie", Mode::kSplice, true,
       true, clientSyn(), Verdict::kAccept, false, 0, 1},
      {"standby with pass: splice cookie ACK passed, no flow", Mode::kSplice, true, true,
       clientAck(), Verdict::kAccept, false, 0, 1},
      {"standby with pass: a backend packet without a flow is still dropped", Mode::kPassthrough,
       true, true, backendSynAck(), Verdict::kDrop, false, 0, 0},
  };
  for (const PassCase& c : cases) {
    Engine e(config(c.mode));
    e.setStandby(c.standby, kSec);
    e.setPassUnknownToActive(c.pass);
    std::vector<uint8_t> p = c.packet;
    const size_t len = p.size();
    p.resize(256);
    const Decision d = e.process(p.data(), len, p.size(), {}, kSec);
    EXPECT_EQ(d.verdict, c.verdict) << c.description;
    EXPECT_EQ(d.modified, c.modified) << c.description;
    EXPECT_EQ(e.activeFlows(), c.flows) << c.description;
    EXPECT_EQ(e.passedToActive(), c.passed) << c.description;
    if (d.verdict == Verdict::kAccept && !d.modified) {
      EXPECT_EQ(d.len, len) << c.description;
      EXPECT_TRUE(std::equal(c.packet.begin(), c.packet.end(), p.begin())) << c.description;
    }
  }
}

TEST(StandbyPass, KnownFlowsAreStillTranslatedOnTheStandby) {
  // The flow exists on the standby (checkpointed): its packets are translated as the active
  // would, whatever the pass setting.
  Engine active(config(Mode::kPassthrough));
  active.enableChangeTracking();
  std::vector<uint8_t> syn = clientSyn();
  const size_t len = syn.size();
  syn.resize(256);
  ASSERT_EQ(active.process(syn.data(), len, syn.size(), {}, kSec).verdict, Verdict::kAccept);
  Flow state;
  active.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { state = f; });

  Engine standby(config(Mode::kPassthrough));
  standby.setStandby(true, kSec);
  standby.setPassUnknownToActive(true);
  ASSERT_EQ(standby.installFlow(state, kSec), DropReason::kNone);
  std::vector<uint8_t> again = clientSyn();  // the client's SYN retransmitted
  again.resize(256);
  const Decision d = standby.process(again.data(), len, again.size(), {}, kSec);
  EXPECT_EQ(d.verdict, Verdict::kAccept);
  EXPECT_TRUE(d.modified);
  EXPECT_EQ(standby.passedToActive(), 0u);
  EXPECT_EQ(standby.activeFlows(), 1u);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

std::vector<uint8_t> runPacket(Engine& e, std::vector<uint8_t> p, DropReason* reason = nullptr) {
  const size_t len = p.size();
  p.resize(256);
  const Decision d = e.process(p.data(), len, p.size(), {}, kSec);
  if (reason != nullptr) *reason = d.reason;
  if (d.verdict != Verdict::kAccept) return {};
  p.resize(d.len);
  return p;
}

std::string stateOf(const Engine& e) {
  std::string s;
  e.forEachFlow([&](const FlowInfo& f) { s = tcpStateName(f.state); }, kSec);
  return s;
}

TEST(StandbyPass, CheckpointOneHandshakeStepBehindCatchesUp) {
  // The active saw only the client's SYN when it checkpointed; the backend's SYN-ACK then went
  // through it (after a switchover), so the new active holds SYN_SENT while the client already
  // ACKs the SYN-ACK.
  Engine active(config(Mode::kPassthrough));
  active.enableChangeTracking();
  ASSERT_FALSE(runPacket(active, clientSyn()).empty());
  Flow state;
  active.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { state = f; });
  ASSERT_EQ(state.state, TcpState::kSynSent);

  Engine next(config(Mode::kPassthrough));
  ASSERT_EQ(next.installFlow(state, kSec), DropReason::kNone);
  const auto ack = PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                       .seq(101).ack(901).payload("GET /").build();
  EXPECT_FALSE(runPacket(next, ack).empty()) << "the client's ACK must reach the backend";
  EXPECT_EQ(stateOf(next), tcpStateName(TcpState::kEstablished));
  // And the connection goes on both ways.
  const Endpoint backend = state.backendEp();
  const auto reply = PacketBuilder().src(backend.toString()).dst("10.0.0.2:40000").flags(kAck)
                         .seq(901).ack(106).payload("200 OK").build();
  EXPECT_FALSE(runPacket(next, reply).empty());
  EXPECT_FALSE(runPacket(next, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80")
                                   .flags(kAck).seq(106).ack(907).build()).empty());
  EXPECT_EQ(stateOf(next), tcpStateName(TcpState::kEstablished));

  // A flow this engine opened itself (it saw the SYN) still refuses an ACK before the SYN-ACK.
  Engine own(config(Mode::kPassthrough));
  ASSERT_FALSE(runPacket(own, clientSyn()).empty());
  DropReason why = DropReason::kNone;
  EXPECT_TRUE(runPacket(own, ack, &why).empty());
  EXPECT_EQ(why, DropReason::kInvalidTransition);
}

}  // namespace
}  // namespace tandem
