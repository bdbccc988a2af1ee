// The engine's side of the kernel SYN answerer (proxy/core/syn_answer.cc): the kernel answers a
// splice SYN with the engine's cookie, so the engine may first hear of a connection from its
// cookie ACK, while the tuple's previous incarnation (TIME_WAIT or CLOSE) is still in the table.
// Also: the period keys it hands out are the ones its own cookies are made with, and the port
// follows setStandby().
#include <gtest/gtest.h>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/syn_answer_port.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04;
constexpr uint64_t kNow = 1'000'000'000ull;
const std::string kClient = "10.0.0.2:40000";
const std::string kVip = "10.0.0.100:80";

EngineConfig spliceConfig() {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse("10.1.0.2:8080")};
  s.mode = Mode::kSplice;
  s.addressing = Addressing::kSnat;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  c.services.push_back(s);
  ServiceConfig p = s;
  p.name = "plain";
  p.vip = *Endpoint::parse("10.0.0.100:81");
  p.mode = Mode::kPassthrough;
  c.services.push_back(p);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  return c;
}

using test::Seen;

Seen run(Engine& e, std::vector<uint8_t> p, uint64_t now = kNow) {
  return test::runPacket(e, std::move(p), now);
}

TcpState stateOf(Engine& e) { return test::flowState(e, kNow); }

/// A splice connection from kClient with client ISN `isn`, established on both legs, then reset
/// by the client: its flow stays in CLOSE.
void openAndReset(Engine& e, uint32_t isn) {
  auto sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(isn).mss(1460)
                       .timestamp(100, 0).build());
  ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
  const uint32_t cookie = sa.pkt.seq();
  auto syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(isn + 1)
                        .ack(cookie + 1).timestamp(101, sa.opts.ts_val).build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  ASSERT_EQ(syn.pkt.flags(), kSyn);
  auto ack = run(e, PacketBuilder().src("10.1.0.2:8080").dst(syn.pkt.src().toString())
                        .flags(kSyn | kAck).seq(777).ack(isn + 1).mss(1460)
                        .timestamp(5000, 101).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  ASSERT_EQ(stateOf(e), TcpState::kEstablished);
  auto rst = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(isn + 1).build());
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  ASSERT_EQ(stateOf(e), TcpState::kClose);
}

TEST(SynAnswer, CookieAckOfAKernelAnsweredSynRetiresTheClosedFlowAndOpensTheNewOne) {
  Engine e(spliceConfig());
  openAndReset(e, 1000);
  // The kernel answers the new SYN with the same cookie a second engine with the same secret
  // makes (the engine never sees this SYN).
  Engine kernel_like(spliceConfig());
  auto sa = run(kernel_like, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(90000)
                                 .mss(1460).timestamp(200, 0).build(), kNow + 1000);
  ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
  const uint32_t cookie = sa.pkt.seq();

  // A forged cookie ACK leaves the old flow alone.
  auto forged = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(90001)
                           .ack(cookie + 2).timestamp(201, sa.opts.ts_val).build(), kNow + 2000);
  EXPECT_FALSE(forged.d.verdict == Verdict::kAccept && forged.pkt.flags() == kSyn);
  EXPECT_EQ(e.counters().flows_reopened, 0u);
  EXPECT_EQ(stateOf(e), TcpState::kClose);

  auto syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(90001)
                        .ack(cookie + 1).timestamp(201, sa.opts.ts_val).build(), kNow + 2000);
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  EXPECT_EQ(syn.pkt.flags(), kSyn);  // the new backend leg opens
  EXPECT_EQ(syn.pkt.seq(), 90000u);
  EXPECT_EQ(syn.pkt.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(e.counters().flows_reopened, 1u);
  EXPECT_EQ(e.activeFlows(), 1u);
  EXPECT_EQ(stateOf(e), TcpState::kSynSent);
  EXPECT_EQ(e.counters().syncookies_sent, 1u);  // only the first connection's SYN
}

struct RecordingPort : SynAnswerPort {
  std::vector<bool> calls;
  void setActive(bool active) noexcept override { calls.push_back(active); }
};

struct Opened {
  std::string source;   ///< the backend leg's source (the SNAT address and port)
  uint32_t cookie = 0;  ///< the client leg's server ISN
};

/// A splice connection from kClient (ISN 1000) established on both legs (backend ISN 777).
Opened openEstablished(Engine& e) {
  auto sa0 = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(1000).mss(1460)
                        .timestamp(100, 0).build());
  auto syn0 = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001)
                         .ack(sa0.pkt.seq() + 1).timestamp(101, sa0.opts.ts_val).build());
  EXPECT_EQ(syn0.pkt.flags(), kSyn);
  const std::string source = syn0.pkt.src().toString();
  EXPECT_EQ(run(e, PacketBuilder().src("10.1.0.2:8080").dst(source).flags(kSyn | kAck).seq(777)
                       .ack(1001).mss(1460).timestamp(5000, 101).build()).d.verdict,
            Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  return {source, sa0.pkt.seq()};
}

// docs/fastpath.md: a SYN on an established flow that is not on the fast path is answered by
// the kernel (it cannot tell such a flow from none), and the engine first sees the client's
// cookie ACK. With the kernel answering (a SynAnswerPort set), a cookie ACK whose ack names
// nothing the old connection's server side sent replaces the flow: the old backend connection
// is reset (as the client's RST after a challenge ACK would have reset it) and the new one
// opens. Without it the engine saw the SYN first (challenge ACK): a cookie ACK alone is a
// segment of the old connection.
TEST(SynAnswer, CookieAckOnAnEstablishedFlowReplacesItWhenTheKernelAnswersSyns) {
  for (bool kernel_answers : {false, true}) {
    SCOPED_TRACE(kernel_answers ? "kernel answers SYNs" : "engine answers SYNs");
    Engine e(spliceConfig());
    RecordingPort port;
    if (kernel_answers) e.setSynAnswer(&port);
    const std::string source = openEstablished(e).source;
    Engine kernel_like(spliceConfig());
    auto sa = run(kernel_like, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(90000)
                                   .mss(1460).timestamp(200, 0).build());
    // A forged cookie ACK never replaces the flow.
    auto forged = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(90001)
                             .ack(sa.pkt.seq() + 2).timestamp(201, sa.opts.ts_val).build());
    EXPECT_NE(forged.pkt.flags(), kSyn);
    EXPECT_EQ(e.counters().flows_reopened, 0u);
    e.drainOutbox([](const uint8_t*, size_t) {});

    auto ack = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(90001)
                          .ack(sa.pkt.seq() + 1).timestamp(201, sa.opts.ts_val).build());
    ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
    EXPECT_EQ(ack.pkt.dst().toString(), "10.1.0.2:8080");
    std::vector<std::vector<uint8_t>> out;
    e.drainOutbox([&](const uint8_t* p, size_t n) { out.emplace_back(p, p + n); });
    if (!kernel_answers) {
      // Forwarded to the backend as a segment of the old connection.
      EXPECT_EQ(ack.pkt.flags(), kAck);
      EXPECT_EQ(e.counters().flows_reopened, 0u);
      EXPECT_EQ(stateOf(e), TcpState::kEstablished);
      EXPECT_TRUE(out.empty());
      continue;
    }
    EXPECT_EQ(ack.pkt.flags(), kSyn);  // the new connection's backend leg
    EXPECT_EQ(ack.pkt.seq(), 90000u);
    EXPECT_EQ(e.counters().flows_reopened, 1u);
    EXPECT_EQ(e.activeFlows(), 1u);
    EXPECT_EQ(stateOf(e), TcpState::kSynSent);
    // The old backend connection is reset, and nothing goes to the client.
    ASSERT_FALSE(out.empty());
    for (auto& bytes : out) {
      TcpPacket rst;
      ASSERT_EQ(parseTcpPacket(bytes.data(), bytes.size(), rst), ParseError::kNone);
      EXPECT_EQ(rst.dst().toString(), "10.1.0.2:8080");
      EXPECT_EQ(rst.src().toString(), source);
      EXPECT_NE(rst.flags() & kRst, 0);
      EXPECT_EQ(rst.seq(), 1001u);  // the old client stream's end, in the backend leg's space
    }
  }
}

// Segments of the live flow are never taken for a new incarnation's cookie ACK, whatever they
// acknowledge within the window: they are forwarded to the backend as they are.
TEST(SynAnswer, SegmentsOfTheLiveFlowAreNotNewIncarnations) {
  Engine e(spliceConfig());
  RecordingPort port;
  e.setSynAnswer(&port);
  const Opened o = openEstablished(e);
  // Request data acknowledging the SYN-ACK, then a pure ACK, then an old duplicate ACK.
  for (uint32_t ack : {o.cookie + 1, o.cookie + 1, o.cookie - 1000}) {
    auto s = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001).ack(ack)
                        .timestamp(300, 5000).build());
    EXPECT_EQ(s.d.verdict, Verdict::kAccept);
    EXPECT_EQ(s.pkt.flags(), kAck);
    EXPECT_EQ(s.pkt.dst().toString(), "10.1.0.2:8080");
  }
  EXPECT_EQ(e.counters().flows_reopened, 0u);
  EXPECT_EQ(e.activeFlows(), 1u);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
}

TEST(SynAnswer, KeysAreTheOnesTheEngineMakesCookiesWith) {
  Engine e(spliceConfig());
  e.setCookieClockOffset(1'700'000'000'000'000'000ll);
  tandem_syn_config c{};
  ASSERT_TRUE(e.synKernelConfig(c));
  EXPECT_EQ(c.period_ns, 64ull * 1'000'000'000ull);
  EXPECT_EQ(c.clock_offset_ns, 1'700'000'000'000'000'000ull);
  EXPECT_EQ(c.mss_table_size, 4);
  EXPECT_EQ(c.mss_table[3], 1460);
  EXPECT_EQ(c.ttl, 64);
  EXPECT_EQ(c.active, 1);
  const uint64_t count = e.cookieCount(kNow);
  EXPECT_EQ(count, (kNow + 1'700'000'000'000'000'000ull) / c.period_ns);
  tandem_syn_key a{}, b{}, a2{};
  ASSERT_TRUE(e.synKernelKey(count, a));
  ASSERT_TRUE(e.synKernelKey(count + 1, b));
  ASSERT_TRUE(e.synKernelKey(count, a2));
  EXPECT_EQ(std::vector<uint8_t>(a.bytes, a.bytes + 16), std::vector<uint8_t>(a2.bytes, a2.bytes + 16));
  EXPECT_NE(std::vector<uint8_t>(a.bytes, a.bytes + 16), std::vector<uint8_t>(b.bytes, b.bytes + 16));
  const auto vips = e.spliceVips();
  ASSERT_EQ(vips.size(), 1u);  // the passthrough service is not answered in the kernel
  EXPECT_EQ(vips[0].vip.toString(), kVip);
}

TEST(SynAnswer, PortFollowsStandby) {
  Engine e(spliceConfig());
  RecordingPort port;
  e.setStandby(true, kNow);
  e.setSynAnswer(&port);
  e.setStandby(false, kNow);
  e.setStandby(true, kNow);
  EXPECT_EQ(port.calls, (std::vector<bool>{false, true, false}));
  tandem_syn_config c{};
  ASSERT_TRUE(e.synKernelConfig(c));
  EXPECT_EQ(c.active, 0);
  e.setSynAnswer(nullptr);
  e.setStandby(false, kNow);
  EXPECT_EQ(port.calls.size(), 3u);
}

}  // namespace
}  // namespace tandem
