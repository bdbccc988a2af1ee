// Flow table tests: both legs found, backward-shift deletion against a model, the cap, memory.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <tuple>

#include "proxy/core/flow_table.h"

namespace tandem {
namespace {

void fill(Flow& f, uint32_t i) {
  f.client_addr = IpAddr::fromV4(0x0a000000u + i);
  f.client_port = static_cast<uint16_t>(1024 + i % 50000);
  f.vip_addr = IpAddr::fromV4(0x0a0000ffu);
  f.vip_port = 80;
  f.backend_addr = IpAddr::fromV4(0x0b000000u + (i % 7));
  f.backend_port = 8080;
  f.source_addr = IpAddr::fromV4(0x0c000000u + (i >> 16));
  f.source_port = static_cast<uint16_t>(i & 0xffff);
}

TEST(FlowTable, FindsBothLegsWithDirection) {
  FlowTable t(16, 1);
  const uint32_t i = t.allocate();
  ASSERT_NE(i, FlowTable::kNone);
  fill(t.at(i), 5);
  t.insert(i);
  auto c = t.find(FlowTable::clientKey(t.at(i)));
  ASSERT_TRUE(c);
  EXPECT_EQ(c.index, i);
  EXPECT_EQ(c.dir, Direction::kFromClient);
  auto b = t.find(FlowTable::backendKey(t.at(i)));
  ASSERT_TRUE(b);
  EXPECT_EQ(b.dir, Direction::kFromBackend);
  FlowKey miss = FlowTable::clientKey(t.at(i));
  miss.sport++;
  EXPECT_FALSE(t.find(miss));
}

TEST(FlowTable, CapIsEnforcedAndSlotsAreReused) {
  FlowTable t(3, 1);
  uint32_t a = t.allocate(), b = t.allocate(), c = t.allocate();
  EXPECT_NE(c, FlowTable::kNone);
  EXPECT_EQ(t.allocate(), FlowTable::kNone);
  for (auto [idx, n] : {std::pair{a, 1u}, {b, 2u}, {c, 3u}}) {
    fill(t.at(idx), n);
    t.insert(idx);
  }
  t.remove(b);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.allocate(), b);
}

TEST(FlowTable, RandomInsertRemoveMatchesModel) {
  // Small table so probe chains collide and wrap; every removal must keep the others findable.
  FlowTable t(512, 7);
  std::mt19937 rng(3);
  std::map<uint32_t, uint32_t> live;  // id -> slot
  for (int step = 0; step < 20000; ++step) {
    const uint32_t id = static_cast<uint32_t>(rng() % 700);
    auto it = live.find(id);
    if (it != live.end()) {
      t.remove(it->second);
      live.erase(it);
    } else if (live.size() < 512) {
      const uint32_t slot = t.allocate();
      ASSERT_NE(slot, FlowTable::kNone);
      fill(t.at(slot), id);
      t.insert(slot);
      live[id] = slot;
    }
    if (step % 500 == 0) {
      for (auto [lid, slot] : live) {
        Flow probe;
        fill(probe, lid);
        auto c = t.find(FlowTable::clientKey(probe));
        ASSERT_TRUE(c) << "step " << step << " id " << lid;
        EXPECT_EQ(c.index, slot);
        auto b = t.find(FlowTable::backendKey(probe));
        ASSERT_TRUE(b);
        EXPECT_EQ(b.index, slot);
      }
      for (uint32_t dead = 0; dead < 700; ++dead) {
        if (live.count(dead)) continue;
        Flow probe;
        fill(probe, dead);
        EXPECT_FALSE(t.find(FlowTable::clientKey(probe))) << "stale entry for " << dead;
      }
    }
  }
  EXPECT_EQ(t.size(), live.size());
}

// The index and the first chunk of flows are built (and faulted in) by the constructor, at
// start-up, so the first connections do not pay for page faults on the packet path; the first
// allocation maps nothing new.
TEST(FlowTable, IndexAndFirstChunkExistBeforeTheFirstFlow) {
  // Small enough that the index (4096 buckets) and the free list weigh far less than one chunk
  // of 16384 flows: memoryBytes() reaches a chunk's size only if the chunk is there.
  FlowTable t(1'000, 1);
  const size_t at_start = t.memoryBytes();
  EXPECT_GE(at_start, size_t{16384} * sizeof(Flow));
  const uint32_t slot = t.allocate();
  ASSERT_NE(slot, FlowTable::kNone);
  EXPECT_EQ(t.memoryBytes(), at_start);
}

TEST(FlowTable, MemoryPerFlowAtOneMillionIsUnder256Bytes) {
  constexpr size_t kFlows = 1'000'000;
  FlowTable t(kFlows, 1);
  for (uint32_t i = 0; i < kFlows; ++i) {
    const uint32_t slot = t.allocate();
    ASSERT_NE(slot, FlowTable::kNone);
    fill(t.at(slot), i);
    t.insert(slot);
  }
  const double per_flow = static_cast<double>(t.memoryBytes()) / kFlows;
  RecordProperty("bytes_per_flow", std::to_string(per_flow));
  EXPECT_LT(per_flow, 256.0) << "sizeof(Flow)=" << sizeof(Flow);
  Flow probe;
  fill(probe, 999'999);
  EXPECT_TRUE(t.find(FlowTable::backendKey(probe)));
}

}  // namespace
}  // namespace tandem
