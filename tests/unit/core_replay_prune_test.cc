// Pruning of the vmac takeover's replay (planReplay with a classifier): which shadowed frames the
// dead active had certainly forwarded, for passthrough and splice flows (two sequence spaces,
// translated through the flow's offsets), on both legs, across 2^32, with a checkpoint that has
// not yet got the backend leg; RSTs and FINs always kept, a closed flow's SYN never replayed.
// Golden table: {description, flow, frames, kept frames, pruned by reason and leg}.
#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

#include "common/packet.h"
#include "proxy/core/engine.h"
#include "proxy/core/resplice.h"
#include "proxy/core/shadow_ring.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kFin = 0x01;
constexpr size_t kClientLeg = 0, kBackendLeg = 1;

// One flow (7): the client leg 10.0.1.2:40001 -> VIP 10.0.1.100:80 (front), the backend leg
// 10.0.2.2:8080 -> SNAT 10.0.2.10:20001 (back). The ring holds frames sent to the proxy only.
constexpr char kCli[] = "10.0.1.2:40001";
constexpr char kVip[] = "10.0.1.100:80";
constexpr char kBe[] = "10.0.2.2:8080";
constexpr char kSnat[] = "10.0.2.10:20001";

/// The flow as the standby's table holds it.
struct FlowSpec {
  bool splice = true;
  uint32_t proxy_isn = 0;   ///< the cookie
  uint32_t backend_isn = 0;
  bool splice_pending = false;  ///< the checkpoint predates the backend's SYN-ACK
};

Flow flowOf(const FlowSpec& s) {
  Flow f;
  f.splice = s.splice;
  f.proxy_isn = s.proxy_isn;
  f.splice_pending = s.splice_pending;
  if (s.splice && !s.splice_pending) {
    f.adj[dirIndex(Direction::kFromBackend)] = spliceBackendAdj(s.proxy_isn, s.backend_isn);
    f.has_seqadj = true;
  }
  return f;
}

struct Frame {
  bool from_client;
  uint32_t seq;
  uint32_t ack;  ///< 0: no ACK flag
  uint8_t flags; ///< besides ACK
  size_t payload;
  uint64_t ts;
};

struct PruneCount {
  ReplayPrune reason;
  size_t leg;
  uint64_t count;
};

struct Golden {
  const char* description;
  FlowSpec flow;
  std::vector<Frame> frames;
  std::vector<uint64_t> kept;  ///< ring ids (1-based push order), in replay order
  std::vector<PruneCount> pruned;
  std::array<uint64_t, 2> offset_unknown{};
  uint64_t offsets_learnt = 0;
};

std::vector<uint8_t> build(const Frame& f) {
  PacketBuilder b;
  if (f.from_client) {
    b.src(kCli).dst(kVip);
  } else {
    b.src(kBe).dst(kSnat);
  }
  b.flags(f.flags).seq(f.seq);
  if (f.ack != 0) b.ack(f.ack);
  if (f.payload != 0) b.payloadSize(f.payload);
  return b.build();
}

ReplayClassifier classifierFor(const Flow& flow) {
  return [flow](uint32_t sa, uint32_t, uint16_t sp, uint16_t dp, ReplayFlowRef& out) {
    if (sa == 0x0a000102 && sp == 40001 && dp == 80) {
      out = replayFlowRef(flow, 7, Direction::kFromClient);
      return true;
    }
    if (sa == 0x0a000202 && sp == 8080 && dp == 20001) {
      out = replayFlowRef(flow, 7, Direction::kFromBackend);
      return true;
    }
    return false;
  };
}

std::string describe(const std::vector<uint64_t>& ids) {
  std::string s;
  for (uint64_t id : ids) s += std::to_string(id) + " ";
  return s;
}

// Sequence numbers of the goldens: client ISN C, cookie P, backend ISN B; the backend's bytes
// reach the client shifted by P - B, the client's reach the backend unchanged.
constexpr uint32_t C = 1000;
constexpr uint32_t B = 500000;
constexpr uint32_t kPAhead = B + 0x10000000;   // cookie numerically past the backend's space
constexpr uint32_t kPBehind = B - 0x10000000;  // ... and before it

const std::vector<Golden>& goldens() {
  static const std::vector<Golden> g = {
      {"splice, both legs: the other end's acks, translated, prune what arrived",
       {true, kPAhead, B},
       {
           {true, C + 1, kPAhead + 1, 0, 64, 10},        // 1 request 1: acked by the backend
           {false, B + 1, C + 65, 0, 64, 11},            // 2 response 1: acked by the client
           {true, C + 65, kPAhead + 65, 0, 64, 12},      // 3 request 2: unanswered
       },
       {3},
       {{ReplayPrune::kDelivered, kClientLeg, 1}, {ReplayPrune::kDelivered, kBackendLeg, 1}}},
      {"splice, cookie past the backend ISN: a client ack beyond the backend's own numbers does "
       "not prove the response arrived (the passthrough rule would prune it)",
       {true, kPAhead, B},
       {
           {false, B + 1, C + 1, 0, 64, 10},        // 1 response: not yet acknowledged
           {true, C + 1, kPAhead + 1, 0, 0, 11},    // 2 client ACK of the cookie only
       },
       {2, 1},
       {}},
      {"splice, cookie before the backend ISN: the translated ack prunes a response the raw "
       "numbers would keep",
       {true, kPBehind, B},
       {
           {false, B + 1, C + 1, 0, 64, 10},          // 1 response, acknowledged below
           {true, C + 1, kPBehind + 65, 0, 0, 11},    // 2 client ACK of the whole response
       },
       {2},
       {{ReplayPrune::kDelivered, kBackendLeg, 1}}},
      {"splice across 2^32: client bytes, backend bytes and the cookie all wrap; a response "
       "the raw numbers call acknowledged is kept",
       {true, 0x00000200, 0xfffffff0},
       {
           {true, 0xffffffe1, 0x201, 0, 64, 10},       // 1 client bytes ...e1..21: acked
           {false, 0xfffffff1, 0x21, 0, 64, 11},       // 2 backend ...f1..31 = client ..241
           {false, 0x31, 0x21, 0, 64, 12},             // 3 backend 31..71 = client 241..281
           {true, 0x21, 0x241, 0, 0, 13},              // 4 client ACK 241 (= backend 31)
       },
       {4, 3},
       {{ReplayPrune::kDelivered, kClientLeg, 1}, {ReplayPrune::kDelivered, kBackendLeg, 1}}},
      {"splice, the checkpoint has not got the backend leg and the ring no SYN-ACK: backend data "
       "kept unjudged, client data still pruned (its leg's offset is always zero)",
       {true, kPAhead, B, true},
       {
           {true, C + 1, kPAhead + 1, 0, 64, 10},     // 1 request: acked by the backend
           {false, B + 1, C + 65, 0, 64, 11},         // 2 response: offset unknown
           {true, C + 65, kPAhead + 65, 0, 0, 12},    // 3 client ACK
       },
       {3, 2},
       {{ReplayPrune::kDelivered, kClientLeg, 1}},
       {0, 1}},
      {"splice, the checkpoint has not got the backend leg, the ring has the SYN-ACK: the offset "
       "is learnt from it; the SYN-ACK itself ends at the proxy and is kept",
       {true, kPAhead, B, true},
       {
           {false, B, C + 1, kSyn, 0, 9},              // 1 SYN-ACK: kept
           {true, C + 1, kPAhead + 1, 0, 64, 10},      // 2 request: acked by the backend
           {false, B + 1, C + 65, 0, 64, 11},          // 3 response: acked by the client
           {true, C + 65, kPAhead + 65, 0, 0, 12},     // 4 client ACK
       },
       {4, 1},
       {{ReplayPrune::kDelivered, kClientLeg, 1}, {ReplayPrune::kDelivered, kBackendLeg, 1}},
       {0, 0},
       1},
      {"splice, RST and FIN never pruned; the opening SYN of a flow the backend reset on its own "
       "leg (SNAT: the RST carries no client endpoint) is not replayed",
       {true, kPAhead, B},
       {
           {true, C, 0, kSyn, 0, 8},                      // 1 opening SYN: closed since
           {true, C + 1, kPAhead + 1, kFin, 64, 10},      // 2 request + FIN, acked: kept
           {false, B + 1, C + 66, kRst, 0, 11},           // 3 the backend's RST: kept
       },
       {2, 3},
       {{ReplayPrune::kClosedSyn, kClientLeg, 1}}},
      {"a retransmission captured during the outage is replayed once; a longer one is kept",
       {true, kPAhead, B},
       {
           {true, C + 1, kPAhead + 1, 0, 64, 10},     // 1 request
           {true, C + 1, kPAhead + 1, 0, 64, 20},     // 2 its RTO retransmission
           {true, C + 1, kPAhead + 1, 0, 128, 30},    // 3 retransmission with more bytes
       },
       {1, 3},
       {{ReplayPrune::kReplayedCopy, kClientLeg, 1}}},
      {"splice, pure ACKs: only each sender's newest is kept",
       {true, kPAhead, B},
       {
           {true, C + 1, kPAhead + 1, 0, 0, 10},      // 1 superseded
           {false, B + 1, C + 1, 0, 0, 11},           // 2 backend's only ACK: kept
           {true, C + 1, kPAhead + 1, 0, 0, 12},      // 3 newest client ACK
       },
       {3, 2},
       {{ReplayPrune::kSupersededAck, kClientLeg, 1}}},
      {"passthrough (one space): acks compared as they are, both legs",
       {false, 0, 0},
       {
           {true, 1000, 5000, 0, 64, 10},   // 1 acked by the backend
           {false, 5000, 1064, 0, 64, 11},  // 2 acked by the client
           {true, 1064, 5064, 0, 64, 12},   // 3 unanswered
       },
       {3},
       {{ReplayPrune::kDelivered, kClientLeg, 1}, {ReplayPrune::kDelivered, kBackendLeg, 1}}},
  };
  return g;
}

class ReplayPruneGolden : public ::testing::TestWithParam<size_t> {};

TEST_P(ReplayPruneGolden, KeepsAndPrunesAsExpected) {
  const Golden& g = goldens()[GetParam()];
  SCOPED_TRACE(g.description);
  ShadowRing ring(ShadowRingConfig{1 << 16, 64, 0});
  for (const Frame& f : g.frames) {
    ASSERT_TRUE(ring.push(build(f), f.from_client ? ShadowSide::kFront : ShadowSide::kBack,
                          false, f.ts, f.ts));
  }
  std::vector<uint32_t> plan;
  ReplayPlanStats st;
  planReplay(ring, 0, 1000, 0, plan, st, classifierFor(flowOf(g.flow)));
  std::vector<uint64_t> kept;
  for (uint32_t i : plan) kept.push_back(ring.at(i).id);
  EXPECT_EQ(kept, g.kept) << "kept: " << describe(kept);
  std::array<std::array<uint64_t, 2>, kReplayPruneCount> want{};
  for (const PruneCount& p : g.pruned) want[static_cast<size_t>(p.reason)][p.leg] = p.count;
  for (size_t r = 0; r < kReplayPruneCount; ++r) {
    for (size_t leg = 0; leg < 2; ++leg) {
      EXPECT_EQ(st.pruned[r][leg], want[r][leg])
          << replayPruneName(static_cast<ReplayPrune>(r)) << " leg " << leg;
    }
  }
  EXPECT_EQ(st.offset_unknown, g.offset_unknown);
  EXPECT_EQ(st.offsets_learnt, g.offsets_learnt);
  EXPECT_EQ(st.considered, g.frames.size());
  EXPECT_EQ(kept.size() + st.skipped_closed + st.skipped_delivered + st.skipped_superseded +
                st.skipped_copies,
            g.frames.size());
}

INSTANTIATE_TEST_SUITE_P(Goldens, ReplayPruneGolden,
                         ::testing::Range<size_t>(0, goldens().size()));

TEST(ReplayFlowRefTest, DescribesEachKindOfFlow) {
  const size_t c = dirIndex(Direction::kFromClient);
  const size_t b = dirIndex(Direction::kFromBackend);
  Flow pass;
  ReplayFlowRef r = replayFlowRef(pass, 3, Direction::kFromBackend);
  EXPECT_EQ(r.flow_id, 3u);
  EXPECT_FALSE(r.from_client);
  EXPECT_TRUE(r.same_seq_space);

  Flow spliced = flowOf({true, kPAhead, B});
  r = replayFlowRef(spliced, 4, Direction::kFromClient);
  EXPECT_TRUE(r.from_client);
  EXPECT_FALSE(r.same_seq_space);
  EXPECT_TRUE(r.adj_known[c]);
  EXPECT_TRUE(r.adj_known[b]);
  EXPECT_EQ(r.adj[b].correction_pos, B);
  EXPECT_EQ(r.adj[b].offset_after, static_cast<int32_t>(kPAhead - B));

  Flow pending = flowOf({true, kPAhead, B, true});
  r = replayFlowRef(pending, 5, Direction::kFromBackend);
  EXPECT_FALSE(r.same_seq_space);
  EXPECT_TRUE(r.adj_known[c]);
  EXPECT_FALSE(r.adj_known[b]);
  EXPECT_TRUE(r.proxy_isn_known);
  EXPECT_EQ(r.proxy_isn, kPAhead);

  // A re-splice in progress: the offsets are the old backend's; the new one's is unknown.
  Flow moving = spliced;
  moving.splice_pending = true;
  moving.moving = true;
  r = replayFlowRef(moving, 6, Direction::kFromBackend);
  EXPECT_FALSE(r.adj_known[b]);
}

// The three fields of the first ReplayFlowRef: not same-space, no offsets known: nothing judged
// against acknowledgements (the conservative reading of an older classifier).
TEST(ReplayFlowRefTest, AnotherSpaceWithoutOffsetsIsNeverPrunedByAcks) {
  ShadowRing ring(ShadowRingConfig{1 << 16, 64, 0});
  ASSERT_TRUE(ring.push(build({true, C + 1, kPAhead + 1, 0, 64, 10}), ShadowSide::kFront, false,
                        10, 10));
  ASSERT_TRUE(ring.push(build({false, B + 1, C + 65, 0, 64, 11}), ShadowSide::kBack, false, 11,
                        11));
  std::vector<uint32_t> plan;
  ReplayPlanStats st;
  planReplay(ring, 0, 100, 0, plan, st,
             [](uint32_t sa, uint32_t, uint16_t, uint16_t, ReplayFlowRef& out) {
               out = {7, sa == 0x0a000102, false};
               return true;
             });
  EXPECT_EQ(plan.size(), 2u);
  EXPECT_EQ(st.offset_unknown[0] + st.offset_unknown[1], 2u);
}

// ---- through the engine's table (Engine::planShadowReplay) ----

EngineConfig spliceConfig() {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(kBe)};
  s.mode = Mode::kSplice;
  s.addressing = Addressing::kSnat;
  s.snat_addr = *IpAddr::parse("10.0.2.10");
  c.services.push_back(s);
  c.max_flows = 64;
  c.splice.cookie_secret.assign(32, 0x5a);
  return c;
}

/// The checkpoint of an established splice flow with the legs above.
Flow checkpoint(bool splice_pending) {
  Flow f = flowOf({true, kPAhead, B, splice_pending});
  f.client_addr = *IpAddr::parse("10.0.1.2");
  f.client_port = 40001;
  f.vip_addr = *IpAddr::parse("10.0.1.100");
  f.vip_port = 80;
  f.backend_addr = *IpAddr::parse("10.0.2.2");
  f.backend_port = 8080;
  f.source_addr = *IpAddr::parse("10.0.2.10");
  f.source_port = 20001;
  f.state = TcpState::kEstablished;
  return f;
}

constexpr uint64_t kNow = 1'000'000'000ull;

TEST(EngineReplayPlanTest, CountsPrunedFramesByReasonAndLegInTheEngineCounters) {
  Engine standby(spliceConfig());
  standby.setStandby(true, kNow);
  ASSERT_EQ(standby.installFlow(checkpoint(false), kNow), DropReason::kNone);
  ShadowRing ring(ShadowRingConfig{1 << 16, 64, 0});
  for (const Frame& f : goldens()[0].frames) {
    ASSERT_TRUE(ring.push(build(f), f.from_client ? ShadowSide::kFront : ShadowSide::kBack,
                          false, f.ts, f.ts));
  }
  std::vector<uint32_t> plan;
  ReplayPlanStats st;
  standby.planShadowReplay(ring, 0, 1000, 0, plan, st);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(ring.at(plan[0]).id, 3u);
  const Counters& c = standby.counters();
  const size_t delivered = static_cast<size_t>(ReplayPrune::kDelivered);
  EXPECT_EQ(c.replay_pruned[delivered][kClientLeg], 1u);
  EXPECT_EQ(c.replay_pruned[delivered][kBackendLeg], 1u);
  // A second pass adds to them.
  standby.planShadowReplay(ring, 0, 1000, 0, plan, st);
  EXPECT_EQ(standby.counters().replay_pruned[delivered][kBackendLeg], 2u);
  EXPECT_EQ(std::string(replayPruneName(ReplayPrune::kDelivered)), "delivered");
}

TEST(EngineReplayPlanTest, APendingCheckpointKeepsBackendDataUnjudgedAndCountsIt) {
  Engine standby(spliceConfig());
  standby.setStandby(true, kNow);
  ASSERT_EQ(standby.installFlow(checkpoint(true), kNow), DropReason::kNone);
  ShadowRing ring(ShadowRingConfig{1 << 16, 64, 0});
  for (const Frame& f : goldens()[4].frames) {
    ASSERT_TRUE(ring.push(build(f), f.from_client ? ShadowSide::kFront : ShadowSide::kBack,
                          false, f.ts, f.ts));
  }
  std::vector<uint32_t> plan;
  ReplayPlanStats st;
  standby.planShadowReplay(ring, 0, 1000, 0, plan, st);
  EXPECT_EQ(plan.size(), 2u);
  EXPECT_EQ(standby.counters().replay_offset_unknown[kBackendLeg], 1u);
  EXPECT_EQ(standby.counters().replay_offset_unknown[kClientLeg], 0u);
}

// The replay of a flow the backend reset never brings it back: the opening SYN is not planned,
// and the planned frames, run through the new active, create no flow.
TEST(EngineReplayPlanTest, AResetFlowIsNeverResurrected) {
  Engine node(spliceConfig());
  node.setStandby(true, kNow);
  ASSERT_EQ(node.installFlow(checkpoint(false), kNow), DropReason::kNone);
  ShadowRing ring(ShadowRingConfig{1 << 16, 64, 0});
  for (const Frame& f : goldens()[6].frames) {
    ASSERT_TRUE(ring.push(build(f), f.from_client ? ShadowSide::kFront : ShadowSide::kBack,
                          false, f.ts, f.ts));
  }
  std::vector<uint32_t> plan;
  ReplayPlanStats st;
  node.planShadowReplay(ring, 0, 1000, 0, plan, st);
  for (uint32_t i : plan) {
    TcpPacket p;
    std::vector<uint8_t> copy(ring.at(i).packet.begin(), ring.at(i).packet.end());
    ASSERT_EQ(parseTcpPacket(copy.data(), copy.size(), p), ParseError::kNone);
    EXPECT_FALSE(p.has(kSyn)) << "a SYN of the reset connection is planned";
  }
  EXPECT_EQ(node.counters().replay_pruned[static_cast<size_t>(ReplayPrune::kClosedSyn)]
                                         [kClientLeg],
            1u);
  node.setStandby(false, kNow);
  const uint64_t created = node.counters().flows_created;
  for (uint32_t i : plan) {
    std::vector<uint8_t> copy(ring.at(i).packet.begin(), ring.at(i).packet.end());
    const size_t len = copy.size();
    copy.resize(512);
    (void)node.process(copy.data(), len, copy.size(), {}, kNow);
  }
  EXPECT_EQ(node.counters().flows_created, created);
  EXPECT_EQ(node.counters().flows_reopened, 0u);
  EXPECT_EQ(node.counters().syncookies_sent, 0u);  // no SYN answered: nothing reopened
}

}  // namespace
}  // namespace tandem
