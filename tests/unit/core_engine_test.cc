// Engine tests: whole conversations through the packet core, both addressings.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "common/packet.h"
#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kFin = 0x01, kRst = 0x04, kPsh = 0x08;
constexpr uint64_t kSec = 1'000'000'000ull;

EngineConfig makeConfig(Addressing addressing, Scheduler sched = Scheduler::kRoundRobin) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.addressing = addressing;
  s.scheduler = sched;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  s.snat_port_min = 30000;
  s.snat_port_max = 30009;
  c.services.push_back(s);
  c.max_flows = 64;
  c.hash_seed = 42;
  c.timeouts.established_ns = 100 * kSec;
  return c;
}

struct Out {
  Decision d;
  std::vector<uint8_t> pkt;
  TcpPacket view() {
    TcpPacket p;
    EXPECT_EQ(parseTcpPacket(pkt.data(), pkt.size(), p), ParseError::kNone);
    return p;
  }
};

Out run(Engine& e, std::vector<uint8_t> pkt, uint64_t now = kSec, PacketMeta meta = {}) {
  Out o;
  o.d = e.process(pkt.data(), pkt.size(), meta, now);
  o.pkt = std::move(pkt);
  return o;
}

/// Drives one connection through the engine as a client and a backend would.
struct Conversation {
  explicit Conversation(Engine& engine) : e(engine) {}
  Engine& e;
  std::string client = "10.0.0.2:40000";
  uint32_t cseq = 1000, bseq = 5000;
  Endpoint backend;  // learned from the SYN
  Endpoint source;   // what the backend sees

  Out syn(uint64_t now = kSec) {
    auto o = run(e, PacketBuilder().src(client).dst("10.0.0.100:80").flags(kSyn).seq(cseq)
                        .mss(1460).wscale(7).sackPermitted().timestamp(1, 0).build(), now);
    if (o.d.verdict == Verdict::kAccept) {
      auto v = o.view();
      backend = v.dst();
      source = v.src();
    }
    return o;
  }
  Out synack(uint64_t now = kSec) {
    return run(e, PacketBuilder().src(backend.toString()).dst(source.toString())
                      .flags(kSyn | kAck).seq(bseq).ack(cseq + 1).mss(1460).wscale(7)
                      .sackPermitted().timestamp(2, 1).build(), now);
  }
  Out clientSend(uint8_t flags, size_t len, uint64_t now = kSec) {
    auto o = run(e, PacketBuilder().src(client).dst("10.0.0.100:80").flags(flags)
                        .seq(cseq + 1).ack(bseq + 1).payloadSize(len).build(), now);
    return o;
  }
  Out backendSend(uint8_t flags, size_t len, uint64_t now = kSec) {
    return run(e, PacketBuilder().src(backend.toString()).dst(source.toString()).flags(flags)
                      .seq(bseq + 1).ack(cseq + 1).payloadSize(len).build(), now);
  }
  void establish() {
    ASSERT_EQ(syn().d.verdict, Verdict::kAccept);
    ASSERT_EQ(synack().d.verdict, Verdict::kAccept);
    ASSERT_EQ(clientSend(kAck, 0).d.verdict, Verdict::kAccept);
  }
};

TcpState stateOf(Engine& e) {
  TcpState s = TcpState::kNone;
  e.forEachFlow([&](const FlowInfo& f) { s = f.state; }, kSec);
  return s;
}

class EngineBoth : public ::testing::TestWithParam<Addressing> {};

TEST_P(EngineBoth, HandshakeDataAndTranslationBothWays) {
  Engine e(makeConfig(GetParam()));
  Conversation c(e);
  auto s = c.syn();
  ASSERT_EQ(s.d.verdict, Verdict::kAccept);
  EXPECT_TRUE(s.d.modified);
  EXPECT_TRUE(checksumsValid(s.pkt));
  EXPECT_EQ(c.backend.toString(), "10.1.0.2:8080");
  if (GetParam() == Addressing::kTransparent) {
    EXPECT_EQ(c.source.toString(), "10.0.0.2:40000");
  } else {
    EXPECT_EQ(c.source.addr.toString(), "10.1.0.1");
    EXPECT_GE(c.source.port, 30000);
    EXPECT_LE(c.source.port, 30009);
  }
  EXPECT_EQ(s.view().seq(), 1000u);  // passthrough: sequence space untouched

  auto sa = c.synack();
  ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
  EXPECT_EQ(sa.view().src().toString(), "10.0.0.100:80");
  EXPECT_EQ(sa.view().dst().toString(), "10.0.0.2:40000");
  EXPECT_TRUE(checksumsValid(sa.pkt));
  EXPECT_EQ(stateOf(e), TcpState::kSynRecv);

  ASSERT_EQ(c.clientSend(kAck, 0).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  auto data = c.clientSend(kAck | kPsh, 100);
  ASSERT_EQ(data.d.verdict, Verdict::kAccept);
  EXPECT_TRUE(checksumsValid(data.pkt));
  EXPECT_EQ(data.view().payloadLen(), 100u);
  EXPECT_EQ(e.counters().packets[0], 3u);
  EXPECT_EQ(e.counters().packets[1], 1u);
  EXPECT_EQ(e.activeFlows(), 1u);
}

TEST_P(EngineBoth, FinExchangeReachesTimeWaitAndIsClosedAfterLinger) {
  Engine e(makeConfig(GetParam()));
  Conversation c(e);
  c.establish();
  ASSERT_EQ(c.clientSend(kFin | kAck, 0).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kFinWait);
  // Backend acknowledges the FIN: half-closed, the backend may still send.
  auto ack = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kAck).seq(c.bseq + 1).ack(c.cseq + 2).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kCloseWait);
  auto more = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                         .flags(kAck | kPsh).seq(c.bseq + 1).ack(c.cseq + 2).payloadSize(10).build());
  ASSERT_EQ(more.d.verdict, Verdict::kAccept);
  auto fin = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kFin | kAck).seq(c.bseq + 11).ack(c.cseq + 2).build());
  ASSERT_EQ(fin.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kLastAck);
  auto last = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kAck)
                         .seq(c.cseq + 2).ack(c.bseq + 12).build());
  ASSERT_EQ(last.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kTimeWait);
  e.expire(kSec + 121 * kSec);
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_EQ(e.counters().flows_closed, 1u);
}

TEST_P(EngineBoth, IdleFlowExpires) {
  Engine e(makeConfig(GetParam()));
  Conversation c(e);
  c.establish();
  e.expire(kSec + 99 * kSec);
  EXPECT_EQ(e.activeFlows(), 1u);
  e.expire(kSec + 101 * kSec);
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_EQ(e.counters().flows_expired, 1u);
  // A late segment of the expired flow is refused and counted, not forwarded.
  auto late = c.clientSend(kAck, 10, 200 * kSec);
  EXPECT_EQ(late.d.verdict, Verdict::kDrop);
  EXPECT_EQ(late.d.reason, DropReason::kNoFlow);
}

TEST_P(EngineBoth, LazyExpiryOnLookup) {
  Engine e(makeConfig(GetParam()));
  Conversation c(e);
  c.establish();
  auto late = c.clientSend(kAck, 10, 200 * kSec);  // no sweep ran: the lookup expires it
  EXPECT_EQ(late.d.reason, DropReason::kNoFlow);
  EXPECT_EQ(e.counters().flows_expired, 1u);
}

INSTANTIATE_TEST_SUITE_P(Addressing, EngineBoth,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

TEST(Engine, RoundRobinAlternatesAndHashIsStable) {
  Engine rr(makeConfig(Addressing::kTransparent));
  std::map<std::string, int> seen;
  for (int i = 0; i < 6; ++i) {
    Conversation c(rr);
    c.client = "10.0.0.2:" + std::to_string(41000 + i);
    ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
    seen[c.backend.toString()]++;
  }
  EXPECT_EQ(seen["10.1.0.2:8080"], 3);
  EXPECT_EQ(seen["10.1.0.3:8080"], 3);

  Engine h1(makeConfig(Addressing::kTransparent, Scheduler::kHash));
  Engine h2(makeConfig(Addressing::kTransparent, Scheduler::kHash));
  std::set<std::string> used;
  for (int i = 0; i < 16; ++i) {
    Conversation a(h1), b(h2);
    a.client = b.client = "10.0.7." + std::to_string(10 + i) + ":50000";
    ASSERT_EQ(a.syn().d.verdict, Verdict::kAccept);
    ASSERT_EQ(b.syn().d.verdict, Verdict::kAccept);
    EXPECT_EQ(a.backend, b.backend);  // same client address, same backend, whatever engine
    used.insert(a.backend.toString());
    Conversation again(h1);  // another connection from the same address: same backend
    again.client = "10.0.7." + std::to_string(10 + i) + ":50001";
    ASSERT_EQ(again.syn().d.verdict, Verdict::kAccept);
    EXPECT_EQ(again.backend, a.backend);
  }
  EXPECT_EQ(used.size(), 2u);
}

TEST(Engine, TableFullRefusesCleanly) {
  auto cfg = makeConfig(Addressing::kTransparent);
  cfg.max_flows = 4;
  Engine e(cfg);
  for (int i = 0; i < 4; ++i) {
    Conversation c(e);
    c.client = "10.0.0.2:" + std::to_string(42000 + i);
    ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
  }
  Conversation extra(e);
  extra.client = "10.0.0.2:43000";
  auto o = extra.syn();
  EXPECT_EQ(o.d.verdict, Verdict::kDrop);
  EXPECT_EQ(o.d.reason, DropReason::kTableFull);
  EXPECT_EQ(e.counters().dropped(DropReason::kTableFull), 1u);
  EXPECT_EQ(e.activeFlows(), 4u);
}

TEST(Engine, SnatPortRangeExhaustion) {
  auto cfg = makeConfig(Addressing::kSnat);
  cfg.services[0].backends.resize(1);
  cfg.services[0].snat_port_max = 30003;  // four ports
  Engine e(cfg);
  std::set<uint16_t> ports;
  for (int i = 0; i < 4; ++i) {
    Conversation c(e);
    c.client = "10.0.0.2:" + std::to_string(44000 + i);
    ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
    ports.insert(c.source.port);
  }
  EXPECT_EQ(ports.size(), 4u);
  Conversation extra(e);
  extra.client = "10.0.0.2:45000";
  EXPECT_EQ(extra.syn().d.reason, DropReason::kNoSnatPort);
}

TEST(Engine, SnatPortOfAClosedFlowIsReusedWhenTheRangeIsFull) {
  auto cfg = makeConfig(Addressing::kSnat);
  cfg.services[0].backends.resize(1);
  cfg.services[0].snat_port_max = 30001;  // two ports
  Engine e(cfg);
  Conversation a(e), b(e);
  a.client = "10.0.0.2:46000";
  b.client = "10.0.0.2:46001";
  a.establish();
  b.establish();
  // b is reset: its flow lingers in CLOSE, holding its port.
  auto rst = run(e, PacketBuilder().src(b.client).dst("10.0.0.100:80").flags(kRst)
                        .seq(b.cseq + 1).build());
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  Conversation c(e);
  c.client = "10.0.0.2:46002";
  ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
  EXPECT_EQ(c.source.port, b.source.port);
  EXPECT_EQ(e.counters().snat_ports_reused, 1u);
  EXPECT_EQ(e.activeFlows(), 2u);
  // The live flow's port is never taken.
  Conversation d(e);
  d.client = "10.0.0.2:46003";
  EXPECT_EQ(d.syn().d.reason, DropReason::kNoSnatPort);
}

TEST(Engine, UnknownTrafficIsDroppedWithReasons) {
  Engine e(makeConfig(Addressing::kTransparent));
  // Mid-stream segment to the VIP without a flow.
  auto a = run(e, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck).build());
  EXPECT_EQ(a.d.reason, DropReason::kNoFlow);
  // Backend-side segment without a flow.
  auto b = run(e, PacketBuilder().src("10.1.0.2:8080").dst("10.0.0.2:40000").flags(kAck).build());
  EXPECT_EQ(b.d.reason, DropReason::kNoFlow);
  // Nothing to do with any service.
  auto c = run(e, PacketBuilder().src("10.9.0.1:1").dst("10.9.0.2:2").flags(kSyn).build());
  EXPECT_EQ(c.d.reason, DropReason::kNoService);
  // SYN+FIN to the VIP.
  auto d = run(e, PacketBuilder().src("10.0.0.2:40001").dst("10.0.0.100:80").flags(kSyn | kFin).build());
  EXPECT_EQ(d.d.verdict, Verdict::kDrop);
  EXPECT_EQ(e.activeFlows(), 0u);
}

struct MalformedCase {
  const char* description;
  size_t truncate_to;  // 0: keep length
  size_t byte;
  uint8_t value;
  DropReason expected;
};

TEST(Engine, MalformedPacketsAreDroppedAndCounted) {
  const MalformedCase cases[] = {
      {"shorter than an IPv4 header", 12, 0, 0x45, DropReason::kMalformedIp},
      {"IPv6 version nibble", 0, 0, 0x65, DropReason::kMalformedIp},
      {"IHL of 4", 0, 0, 0x44, DropReason::kMalformedIp},
      {"total length beyond buffer", 0, 2, 0xff, DropReason::kMalformedIp},
      {"UDP", 0, 9, 17, DropReason::kNotTcp},
      {"fragment", 0, 6, 0x20, DropReason::kFragment},
      {"TCP header cut", 30, 0, 0x45, DropReason::kMalformedTcp},
      {"data offset of 4", 0, 32, 0x40, DropReason::kMalformedTcp},
      {"data offset past the end", 0, 32, 0xf0, DropReason::kMalformedTcp},
  };
  for (const auto& tc : cases) {
    Engine e(makeConfig(Addressing::kTransparent));
    auto p = PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn).build();
    p[tc.byte] = tc.value;
    if (tc.truncate_to) {
      p.resize(tc.truncate_to);
      store16(&p[2], static_cast<uint16_t>(tc.truncate_to));
    }
    auto o = run(e, p);
    EXPECT_EQ(o.d.verdict, Verdict::kDrop) << tc.description;
    EXPECT_EQ(o.d.reason, tc.expected) << tc.description << ": got " << dropReasonName(o.d.reason);
    EXPECT_EQ(e.counters().dropped(tc.expected), 1u) << tc.description;
  }
  // Truncated TCP options.
  Engine e(makeConfig(Addressing::kTransparent));
  auto o = run(e, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn)
                      .rawOptions({2, 4, 5, 0xb4, 3, 3, 7, 8}).build());
  // kind 8 (timestamp) with its length byte pointing past the options area
  EXPECT_EQ(o.d.reason, DropReason::kBadOptions);
}

TEST(Engine, OutOfWindowRstFromThirdPartyDoesNotKillTheFlow) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  // Spoofed as the client, sequence number far away.
  auto rst = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kRst)
                        .seq(c.cseq + 0x40000000).build());
  EXPECT_EQ(rst.d.verdict, Verdict::kDrop);
  EXPECT_EQ(rst.d.reason, DropReason::kRstOutOfWindow);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  // Spoofed as the backend.
  auto rst2 = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                         .flags(kRst | kAck).seq(c.bseq - 0x10000000).ack(c.cseq + 1).build());
  EXPECT_EQ(rst2.d.reason, DropReason::kRstOutOfWindow);
  EXPECT_EQ(c.clientSend(kAck | kPsh, 10).d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstOutOfWindow), 2u);
}

TEST(Engine, InWindowInexactRstIsPassedForChallengeAck) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  auto rst = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kRst)
                        .seq(c.cseq + 1 + 1000).build());
  EXPECT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_EQ(e.counters().rst_challenged, 1u);
}

TEST(Engine, ExactRstClosesTheFlow) {
  Engine e(makeConfig(Addressing::kSnat));
  Conversation c(e);
  c.establish();
  auto rst = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kRst).seq(c.bseq + 1).build());
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_TRUE(checksumsValid(rst.pkt));
  EXPECT_EQ(rst.view().dst().toString(), c.client);
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  EXPECT_EQ(e.counters().rst_accepted, 1u);
}

// Golden case from a capture (iperf3's data connection through tandem, test_splice.sh's
// sporadic rst_out_of_window drops): the backend sends its FIN (seq F), the client ACKs it
// (ack F+1) while its data is still in flight; the backend's socket is closed, so every late data
// segment is answered with a RST whose seq is that segment's ack: F for segments sent before the
// client saw the FIN. The client is in CLOSE_WAIT and accepts RCV.NXT - 1 there (Linux
// tcp_reset_check(), RFC 5961 3.2 extended "after a FIN"): the proxy must pass it, not drop it.
TEST(Engine, RstAtTheSequenceOfAnAcknowledgedFinIsExact) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  ASSERT_EQ(c.clientSend(kAck | kPsh, 1000).d.verdict, Verdict::kAccept);
  // Backend: FIN at bseq+1 (acks the 1000 bytes), the client ACKs the FIN.
  auto fin = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kFin | kAck).seq(c.bseq + 1).ack(c.cseq + 1 + 1000).build());
  ASSERT_EQ(fin.d.verdict, Verdict::kAccept);
  auto ack = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kAck | kPsh)
                        .seq(c.cseq + 1 + 1000).ack(c.bseq + 2).payloadSize(1000).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kCloseWait);
  // RST answering a segment that acknowledged only up to the FIN's own sequence number.
  auto rst = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kRst).seq(c.bseq + 1).build());
  EXPECT_EQ(rst.d.verdict, Verdict::kAccept) << dropReasonName(rst.d.reason);
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  EXPECT_EQ(e.counters().rst_accepted, 1u);
  // The same RST again after the flow closed (one per late segment): still passed.
  auto again = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                          .flags(kRst).seq(c.bseq + 1).build());
  EXPECT_EQ(again.d.verdict, Verdict::kAccept) << dropReasonName(again.d.reason);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstOutOfWindow), 0u);
  // One further below is out of the window: still refused, named after the close it follows.
  auto blind = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                          .flags(kRst).seq(c.bseq).build());
  EXPECT_EQ(blind.d.reason, DropReason::kRstAfterClose);
}

// Before the FIN, RCV.NXT - 1 is not acceptable (no FIN sits there): refused as before.
TEST(Engine, RstOneBelowRcvNxtWithoutFinIsRefused) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  ASSERT_EQ(c.backendSend(kAck | kPsh, 100).d.verdict, Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kAck)
                       .seq(c.cseq + 1).ack(c.bseq + 101).build()).d.verdict, Verdict::kAccept);
  auto rst = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kRst).seq(c.bseq + 100).build());
  EXPECT_EQ(rst.d.reason, DropReason::kRstOutOfWindow);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
}

TEST(Engine, BackendRefusalRstAnsweringTheSyn) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
  auto bad = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                        .flags(kRst | kAck).seq(0).ack(c.cseq + 7).build());
  EXPECT_EQ(bad.d.reason, DropReason::kRstOutOfWindow);
  auto ok = run(e, PacketBuilder().src(c.backend.toString()).dst(c.source.toString())
                       .flags(kRst | kAck).seq(0).ack(c.cseq + 1).build());
  EXPECT_EQ(ok.d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kClose);
}

TEST(Engine, SynOnEstablishedFlowIsPassedWithoutStateChange) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  auto syn = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kSyn)
                        .seq(123456).build());
  EXPECT_EQ(syn.d.verdict, Verdict::kAccept);
  EXPECT_EQ(syn.view().dst(), c.backend);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_EQ(e.counters().syn_in_established, 1u);
}

TEST(Engine, SynAckNotAcknowledgingTheSynIsDropped) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
  c.cseq += 5;  // the SYN-ACK now acknowledges the wrong number
  EXPECT_EQ(c.synack().d.reason, DropReason::kSynAckMismatch);
  EXPECT_EQ(stateOf(e), TcpState::kSynSent);
}

TEST(Engine, NewSynReopensTimeWaitFlow) {
  Engine e(makeConfig(Addressing::kTransparent));
  Conversation c(e);
  c.establish();
  auto rst = run(e, PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kRst)
                        .seq(c.cseq + 1).build());
  ASSERT_EQ(stateOf(e), TcpState::kClose);
  Conversation again(e);
  again.cseq = 90000;
  auto s = again.syn(2 * kSec);
  ASSERT_EQ(s.d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().flows_reopened, 1u);
  EXPECT_EQ(e.activeFlows(), 1u);
  EXPECT_EQ(again.backend.toString(), "10.1.0.3:8080");  // round robin moved on
  EXPECT_EQ(stateOf(e), TcpState::kSynSent);
}

TEST(Engine, PartialChecksumPacketsGetFullChecksum) {
  Engine e(makeConfig(Addressing::kSnat));
  Conversation c(e);
  c.establish();
  auto p = PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kAck | kPsh)
               .seq(c.cseq + 1).ack(c.bseq + 1).payloadSize(333, 'q').partialChecksum().build();
  EXPECT_FALSE(checksumsValid(p));
  PacketMeta meta;
  meta.csum_not_ready = true;
  auto o = run(e, p, kSec, meta);
  ASSERT_EQ(o.d.verdict, Verdict::kAccept);
  EXPECT_TRUE(checksumsValid(o.pkt));
  EXPECT_EQ(e.counters().full_checksums, 1u);
}

TEST(Engine, GsoPacketKeepsPseudoHeaderSumForNewAddresses) {
  Engine e(makeConfig(Addressing::kSnat));
  Conversation c(e);
  c.establish();
  auto p = PacketBuilder().src(c.client).dst("10.0.0.100:80").flags(kAck)
               .seq(c.cseq + 1).ack(c.bseq + 1).payloadSize(3000).partialChecksum().build();
  PacketMeta meta;
  meta.csum_not_ready = true;
  meta.gso = true;
  auto o = run(e, p, kSec, meta);
  ASSERT_EQ(o.d.verdict, Verdict::kAccept);
  // The field must equal the pseudo-header sum of the *new* addresses and length.
  auto expected = PacketBuilder().src(c.source.toString()).dst(c.backend.toString())
                      .flags(kAck).seq(c.cseq + 1).ack(c.bseq + 1).payloadSize(3000)
                      .partialChecksum().build();
  EXPECT_EQ(load16(&o.pkt[36]), load16(&expected[36]));
  EXPECT_EQ(e.counters().gso_packets, 1u);
}

}  // namespace
}  // namespace tandem
