// The shadow ring (window, bounds, order, wrap-around) and the replay plan (order, skips).
#include "proxy/core/shadow_ring.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/packet.h"
#include "packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;

constexpr uint64_t kMs = 1'000'000;

std::vector<uint8_t> bytesOf(size_t n, uint8_t fill) { return std::vector<uint8_t>(n, fill); }

std::vector<uint64_t> ids(const ShadowRing& r) {
  std::vector<uint64_t> out;
  for (size_t i = 0; i < r.size(); ++i) out.push_back(r.at(i).id);
  return out;
}

TEST(ShadowRingTest, KeepsFramesInOrderWithTheirMetadata) {
  ShadowRing r(ShadowRingConfig{4096, 16, 100 * kMs});
  ASSERT_TRUE(r.push(bytesOf(100, 1), ShadowSide::kFront, true, 10 * kMs, 10 * kMs));
  ASSERT_TRUE(r.push(bytesOf(200, 2), ShadowSide::kBack, false, 11 * kMs, 11 * kMs));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r.bytesUsed(), 300u);
  EXPECT_EQ(r.at(0).packet.size(), 100u);
  EXPECT_EQ(r.at(0).packet[99], 1);
  EXPECT_TRUE(r.at(0).csum_not_ready);
  EXPECT_EQ(r.at(0).side, ShadowSide::kFront);
  EXPECT_EQ(r.at(1).packet[0], 2);
  EXPECT_FALSE(r.at(1).csum_not_ready);
  EXPECT_EQ(r.at(1).side, ShadowSide::kBack);
  EXPECT_EQ(r.at(1).ts_ns, 11 * kMs);
  EXPECT_EQ(ids(r), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(r.counters().stored, 2u);
}

TEST(ShadowRingTest, ExpiresFramesOlderThanTheWindow) {
  ShadowRing r(ShadowRingConfig{4096, 16, 50 * kMs});
  for (uint64_t t = 0; t < 10; ++t) {
    ASSERT_TRUE(r.push(bytesOf(10, static_cast<uint8_t>(t)), ShadowSide::kFront, false,
                       100 * kMs + t * 10 * kMs, 100 * kMs + t * 10 * kMs));
  }
  // Last push at 190 ms: frames captured before 140 ms are gone.
  EXPECT_EQ(r.size(), 6u);
  EXPECT_EQ(r.at(0).ts_ns, 140 * kMs);
  EXPECT_EQ(r.counters().expired, 4u);
  EXPECT_EQ(r.counters().dropped_full, 0u);
  r.expire(300 * kMs);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.bytesUsed(), 0u);
}

TEST(ShadowRingTest, AFullArenaDropsTheOldestAndCountsThem) {
  ShadowRing r(ShadowRingConfig{1000, 64, 0});
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(r.push(bytesOf(300, static_cast<uint8_t>(i)), ShadowSide::kFront, false, 0, 0));
    EXPECT_LE(r.bytesUsed(), 1000u);
  }
  EXPECT_EQ(r.size(), 3u);
  EXPECT_EQ(r.counters().dropped_full, 7u);
  EXPECT_EQ(ids(r), (std::vector<uint64_t>{8, 9, 10}));
  for (size_t i = 0; i < r.size(); ++i) {
    // Every frame's bytes survived the arena's wrap-around intact.
    const auto p = r.at(i).packet;
    EXPECT_EQ(p.size(), 300u);
    EXPECT_EQ(p.front(), static_cast<uint8_t>(r.at(i).id - 1));
    EXPECT_EQ(p.back(), static_cast<uint8_t>(r.at(i).id - 1));
  }
}

TEST(ShadowRingTest, FullRecordsDropTheOldest) {
  ShadowRing r(ShadowRingConfig{1 << 16, 4, 0});
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(r.push(bytesOf(40, 0), ShadowSide::kBack, false, 0, 0));
  EXPECT_EQ(r.size(), 4u);
  EXPECT_EQ(r.counters().dropped_full, 2u);
  EXPECT_EQ(ids(r), (std::vector<uint64_t>{3, 4, 5, 6}));
}

TEST(ShadowRingTest, MixedSizesNeverOverlap) {
  // A pseudo-random sequence of sizes: every stored frame must still hold its own fill byte.
  ShadowRing r(ShadowRingConfig{5000, 32, 0});
  uint32_t x = 12345;
  for (int i = 0; i < 2000; ++i) {
    x = x * 1103515245u + 12345u;
    const size_t len = 1 + (x >> 16) % 1500;
    ASSERT_TRUE(r.push(bytesOf(len, static_cast<uint8_t>(r.nextId())), ShadowSide::kFront, false,
                       0, 0));
    size_t total = 0;
    for (size_t k = 0; k < r.size(); ++k) {
      const ShadowFrame f = r.at(k);
      total += f.packet.size();
      for (uint8_t b : f.packet) ASSERT_EQ(b, static_cast<uint8_t>(f.id)) << "frame " << f.id;
    }
    ASSERT_EQ(total, r.bytesUsed());
    ASSERT_LE(total, 5000u);
  }
}

TEST(ShadowRingTest, RefusesAFrameLargerThanTheArena) {
  ShadowRing r(ShadowRingConfig{100, 4, 0});
  ASSERT_TRUE(r.push(bytesOf(50, 1), ShadowSide::kFront, false, 0, 0));
  EXPECT_FALSE(r.push(bytesOf(101, 1), ShadowSide::kFront, false, 0, 0));
  EXPECT_EQ(r.counters().too_big, 1u);
  EXPECT_EQ(r.size(), 1u);
}

// ---- replay plan ----

constexpr const char* kClient = "10.0.1.2:40000";
constexpr const char* kVip = "10.0.1.100:80";
constexpr const char* kBackend = "10.0.2.2:8080";

void put(ShadowRing& r, const PacketBuilder& b, ShadowSide side, uint64_t ts) {
  ASSERT_TRUE(r.push(b.build(), side, false, ts, ts));
}

std::vector<uint64_t> planIds(const ShadowRing& r, uint64_t from, uint64_t until,
                              uint64_t min_id, ReplayPlanStats& st) {
  std::vector<uint32_t> idx;
  planReplay(r, from, until, min_id, idx, st);
  std::vector<uint64_t> out;
  for (uint32_t i : idx) out.push_back(r.at(i).id);
  return out;
}

TEST(ReplayPlanTest, ClientFramesFirstThenBackendFramesEachInCaptureOrder) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  put(r, PacketBuilder().src(kBackend).dst(kClient).ack(1).payload("b1"), ShadowSide::kBack, 10);
  put(r, PacketBuilder().src(kClient).dst(kVip).ack(1).payload("c1"), ShadowSide::kFront, 11);
  put(r, PacketBuilder().src(kBackend).dst(kClient).ack(1).payload("b2"), ShadowSide::kBack, 12);
  put(r, PacketBuilder().src(kClient).dst(kVip).ack(1).payload("c2"), ShadowSide::kFront, 13);
  // Drained from the back socket first: captured earlier, pushed later.
  put(r, PacketBuilder().src(kClient).dst(kVip).ack(1).payload("c0"), ShadowSide::kFront, 5);
  ReplayPlanStats st;
  EXPECT_EQ(planIds(r, 0, 100, 0, st), (std::vector<uint64_t>{5, 2, 4, 1, 3}));
  EXPECT_EQ(st.considered, 5u);
  EXPECT_EQ(st.skipped_closed, 0u);
}

TEST(ReplayPlanTest, OnlyTheWindowAndNewIds) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  for (uint64_t t = 1; t <= 6; ++t) {
    put(r, PacketBuilder().src(kClient).dst(kVip).ack(1).seq(static_cast<uint32_t>(t)),
        ShadowSide::kFront, t * 10);
  }
  ReplayPlanStats st;
  EXPECT_EQ(planIds(r, 20, 50, 0, st), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(planIds(r, 20, 50, 4, st), (std::vector<uint64_t>{4}));
}

TEST(ReplayPlanTest, SkipsASynWhoseConnectionLaterClosed) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  const char* c2 = "10.0.1.2:40001";
  const char* c3 = "10.0.1.2:40002";
  const char* c4 = "10.0.1.2:40003";
  // 40000: SYN then the client's RST: skipped.
  put(r, PacketBuilder().src(kClient).dst(kVip).flags(tcpflag::kSyn), ShadowSide::kFront, 10);
  put(r, PacketBuilder().src(kClient).dst(kVip).flags(tcpflag::kRst), ShadowSide::kFront, 20);
  // 40001: SYN, then the backend's RST on the backend leg (transparent): skipped.
  put(r, PacketBuilder().src(c2).dst(kVip).flags(tcpflag::kSyn), ShadowSide::kFront, 11);
  put(r, PacketBuilder().src(kBackend).dst(c2).flags(tcpflag::kRst | tcpflag::kAck),
      ShadowSide::kBack, 21);
  // 40002: FIN of an earlier connection on the same port, then a new SYN: replayed.
  put(r, PacketBuilder().src(c3).dst(kVip).flags(tcpflag::kFin | tcpflag::kAck), ShadowSide::kFront,
      12);
  put(r, PacketBuilder().src(c3).dst(kVip).flags(tcpflag::kSyn), ShadowSide::kFront, 22);
  // 40003: a SYN with no close: replayed.
  put(r, PacketBuilder().src(c4).dst(kVip).flags(tcpflag::kSyn), ShadowSide::kFront, 13);
  ReplayPlanStats st;
  const std::vector<uint64_t> plan = planIds(r, 0, 100, 0, st);
  EXPECT_EQ(plan, (std::vector<uint64_t>{5, 7, 2, 6, 4}));
  EXPECT_EQ(st.skipped_closed, 2u);
}

TEST(ReplayPlanTest, ACloseAfterTheWindowStillSkipsTheSyn) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  put(r, PacketBuilder().src(kClient).dst(kVip).flags(tcpflag::kSyn), ShadowSide::kFront, 10);
  put(r, PacketBuilder().src(kClient).dst(kVip).flags(tcpflag::kRst), ShadowSide::kFront, 200);
  ReplayPlanStats st;
  EXPECT_TRUE(planIds(r, 0, 100, 0, st).empty());
  EXPECT_EQ(st.skipped_closed, 1u);
}

TEST(ReplayPlanTest, CountsFramesThatAreNotTcp) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  std::vector<uint8_t> udp = PacketBuilder().src(kClient).dst(kVip).build();
  udp[9] = 17;
  ASSERT_TRUE(r.push(udp, ShadowSide::kFront, false, 1, 1));
  ASSERT_TRUE(r.push(bytesOf(10, 0x45), ShadowSide::kFront, false, 2, 2));
  ReplayPlanStats st;
  EXPECT_TRUE(planIds(r, 0, 100, 0, st).empty());
  EXPECT_EQ(st.not_tcp, 2u);
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

TEST(TcpSegmentTest, SplitsASuperPacketAsTheKernelWould) {
  const std::vector<uint8_t> big = test::PacketBuilder()
                                       .src("10.0.1.2:40000")
                                       .dst("10.0.1.100:80")
                                       .seq(1000)
                                       .ack(7)
                                       .flags(tcpflag::kAck | tcpflag::kPsh | tcpflag::kFin |
                                              tcpflag::kCwr)
                                       .timestamp(5, 6)
                                       .payloadSize(3000, 'a')
                                       .build();
  const size_t mtu = 1500;
  const size_t headers = 20 + 32;  // IP, TCP with the timestamp option (padded)
  ASSERT_EQ(tcpSegmentCount(big, mtu), 3u);
  std::vector<uint8_t> out(2000);
  size_t payload = 0;
  for (size_t i = 0; i < 3; ++i) {
    const size_t len = writeTcpSegmentOf(big, mtu, i, out.data(), out.size());
    ASSERT_GT(len, headers);
    ASSERT_LE(len, mtu);
    const std::vector<uint8_t> seg(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_TRUE(test::checksumsValid(seg)) << "segment " << i;
    EXPECT_EQ(load32(&seg[20 + 4]), 1000 + payload) << "segment " << i;
    const uint8_t flags = seg[20 + 13];
    EXPECT_EQ((flags & tcpflag::kCwr) != 0, i == 0);
    EXPECT_EQ((flags & tcpflag::kFin) != 0, i == 2);
    EXPECT_EQ((flags & tcpflag::kPsh) != 0, i == 2);
    EXPECT_NE(flags & tcpflag::kAck, 0);
    payload += len - headers;
  }
  EXPECT_EQ(payload, 3000u);
  EXPECT_EQ(writeTcpSegmentOf(big, mtu, 3, out.data(), out.size()), 0u);
}

TEST(TcpSegmentTest, APacketThatFitsIsOneSegment) {
  const std::vector<uint8_t> p =
      test::PacketBuilder().src("10.0.1.2:40000").dst("10.0.1.100:80").payloadSize(100).build();
  EXPECT_EQ(tcpSegmentCount(p, 1500), 1u);
  EXPECT_EQ(tcpSegmentCount(std::vector<uint8_t>(10, 0x45), 1500), 0u);
  EXPECT_EQ(tcpSegmentCount(p, 40), 0u);  // no room for payload
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// A fake flow table: the client leg 10.0.1.2:40001 -> VIP and the backend leg
// 10.0.2.2:8080 <-> SNAT 10.0.2.10:20001 are flow 7 (passthrough: one sequence space).
ReplayClassifier fakeTable(bool same_seq_space = true) {
  return [same_seq_space](uint32_t sa, uint32_t, uint16_t sp, uint16_t dp, ReplayFlowRef& out) {
    if (sa == 0x0a000102 && dp == 80) {
      out = {7, true, same_seq_space};
      return true;
    }
    if (sa == 0x0a000202 && sp == 8080) {
      out = {7, false, same_seq_space};
      return true;
    }
    return false;
  };
}

constexpr const char* kCli = "10.0.1.2:40001";
constexpr const char* kVip2 = "10.0.1.100:80";
constexpr const char* kBe = "10.0.2.2:8080";
constexpr const char* kSnat = "10.0.2.10:20001";

TEST(ReplayPruneTest, LeavesOutWhatTheOtherEndAcknowledged) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  auto put2 = [&](const test::PacketBuilder& b, ShadowSide side, uint64_t ts) {
    ASSERT_TRUE(r.push(b.build(), side, false, ts, ts));
  };
  // Request 1 (client seq 1000..1064), answered (backend acks 1064), response 1 (backend seq
  // 5000..5064) acknowledged by request 2 (ack 5064); request 2 (1064..1128) is not answered:
  // the active died. Then only request 2 must be replayed.
  put2(test::PacketBuilder().src(kCli).dst(kVip2).seq(1000).ack(5000).payloadSize(64),
       ShadowSide::kFront, 10);
  put2(test::PacketBuilder().src(kBe).dst(kSnat).seq(5000).ack(1064).payloadSize(64),
       ShadowSide::kBack, 11);
  put2(test::PacketBuilder().src(kCli).dst(kVip2).seq(1064).ack(5064).payloadSize(64),
       ShadowSide::kFront, 12);
  ReplayPlanStats st;
  std::vector<uint32_t> idx;
  planReplay(r, 0, 100, 0, idx, st, fakeTable());
  ASSERT_EQ(idx.size(), 1u);
  EXPECT_EQ(r.at(idx[0]).id, 3u);
  EXPECT_EQ(st.skipped_delivered, 2u);

  // Another sequence space on each leg with no offsets given: nothing judged by acks (splice
  // flows carry their offsets, tests/unit/core_replay_prune_test.cc).
  ReplayPlanStats st2;
  planReplay(r, 0, 100, 0, idx, st2, fakeTable(false));
  EXPECT_EQ(idx.size(), 3u);
  // Without a classifier nothing is pruned either.
  ReplayPlanStats st3;
  planReplay(r, 0, 100, 0, idx, st3);
  EXPECT_EQ(idx.size(), 3u);
}

TEST(ReplayPruneTest, KeepsOnlyTheLatestPureAckAndEveryRst) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  for (uint64_t t = 1; t <= 3; ++t) {
    ASSERT_TRUE(r.push(test::PacketBuilder().src(kCli).dst(kVip2).seq(1000).ack(
                           static_cast<uint32_t>(5000 + t)).build(),
                       ShadowSide::kFront, false, t, t));
  }
  ASSERT_TRUE(r.push(test::PacketBuilder().src(kBe).dst(kSnat).seq(5000).ack(1000)
                         .flags(tcpflag::kRst | tcpflag::kAck).build(),
                     ShadowSide::kBack, false, 4, 4));
  ReplayPlanStats st;
  std::vector<uint32_t> idx;
  planReplay(r, 0, 100, 0, idx, st, fakeTable());
  ASSERT_EQ(idx.size(), 2u);
  EXPECT_EQ(r.at(idx[0]).id, 3u);  // the newest ACK
  EXPECT_EQ(r.at(idx[1]).id, 4u);  // the RST
  EXPECT_EQ(st.skipped_superseded, 2u);
}

TEST(ReplayPruneTest, UnknownFlowsAreKept) {
  ShadowRing r(ShadowRingConfig{1 << 16, 64, 0});
  ASSERT_TRUE(r.push(test::PacketBuilder().src("10.0.1.9:5555").dst(kVip2).seq(1).ack(2)
                         .payloadSize(10).build(),
                     ShadowSide::kFront, false, 1, 1));
  ReplayPlanStats st;
  std::vector<uint32_t> idx;
  planReplay(r, 0, 100, 0, idx, st, fakeTable());
  EXPECT_EQ(idx.size(), 1u);  // the engine decides (no_flow)
}

}  // namespace
}  // namespace tandem
