// Bulk resync: a standby asks for the whole table and gets it in bounded chunks over a lossy
// link, while the active keeps changing the table and streaming incremental updates; it turns
// ready only at BULK_END, and then its table equals the active's.
#include "sync/bulk.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <unordered_map>
#include <vector>

#include "tests/unit/sync_test_tables.h"

namespace tandem::sync {
namespace {

constexpr uint64_t kMs = 1'000'000;

/// The active's table, ordered by id; the cursor is the next id to visit.
struct SourceTable : FlowSource {
  std::map<uint32_t, FlowRecord> flows;
  bool next(uint64_t& cursor, FlowRecord& out) noexcept override {
    auto it = flows.lower_bound(static_cast<uint32_t>(cursor));
    if (cursor > UINT32_MAX || it == flows.end()) return false;
    out = it->second;
    cursor = uint64_t{it->first} + 1;
    return true;
  }
};

TEST(SyncBulk, RequestsAreResentUntilTheEndAndRepeatsAreIgnored) {
  BulkReceiver r(100 * kMs);
  EXPECT_FALSE(r.poll(0));
  r.start(7, 0);
  EXPECT_EQ(r.poll(0)->request_id, 7u);
  EXPECT_FALSE(r.poll(99 * kMs));
  EXPECT_TRUE(r.poll(100 * kMs));
  EXPECT_FALSE(r.onBulkEnd(6, 10));  // an older transfer's end
  EXPECT_FALSE(r.ready());
  EXPECT_TRUE(r.onBulkEnd(7, 10));
  EXPECT_TRUE(r.ready());
  EXPECT_FALSE(r.poll(500 * kMs));

  BulkSender s;
  s.onRequest({7});
  s.onRequest({7});
  EXPECT_EQ(s.counters().requests, 1u);
  EXPECT_EQ(s.counters().duplicates, 1u);
  s.onRequest({8});
  EXPECT_EQ(s.counters().requests, 2u);
}

TEST(SyncBulk, StepsAreBoundedAndLeaveTheReserveFree) {
  SourceTable src;
  for (uint32_t i = 0; i < 1000; ++i) src.flows[i] = testFlow(i, 3);
  ReliableSender sender({300, 10 * kMs}, 1);
  BulkSender bulk(50);
  bulk.onRequest({1});
  EXPECT_EQ(bulk.step(src, sender, 100), 100u);
  EXPECT_EQ(bulk.step(src, sender, 1000), 149u);  // 300 - 50 reserve - 1 for BULK_END
  EXPECT_EQ(bulk.step(src, sender, 1000), 0u);
  EXPECT_FALSE(sender.resyncNeeded());
  for (uint32_t i = 0; i < 50; ++i) EXPECT_TRUE(sender.upsert(testFlow(5000 + i, 1)));
}

TEST(SyncBulk, StandbyConvergesWhileTheTableChangesUnderALossyLink) {
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    std::mt19937 rng(seed);
    SourceTable src;
    for (uint32_t i = 0; i < 5000; ++i) src.flows[i * 2] = testFlow(i * 2, 3);
    // The reserve must hold the incremental updates of a few resend timeouts (here 2/ms).
    ReliableSender sender({1024, 20 * kMs}, 77);
    BulkSender bulk(256);
    MirrorTable mirror;
    ReliableReceiver receiver(mirror, 1024);
    BulkReceiver want(200 * kMs);
    mirror.bulk = &want;
    want.start(1, 0);

    auto lossy = [&rng] { return rng() % 10 == 0; };  // 10% loss, each way
    uint64_t now = 0;
    bool ready_seen_early = false;
    for (int tick = 0; tick < 20000 && !(want.ready() && sender.idle()); ++tick, now += kMs) {
      // Standby -> active: bulk requests.
      if (auto req = want.poll(now); req && !lossy()) bulk.onRequest(*req);
      // The table keeps changing while the bulk runs (for the first 2 s).
      if (now < 2000 * kMs) {
        for (int k = 0; k < 2; ++k) {
          const uint32_t id = static_cast<uint32_t>(rng() % 12000);
          if (rng() % 3 == 0) {
            if (src.flows.erase(id) != 0) {
              ASSERT_TRUE(sender.remove(testFlow(id, 0).key));
            }
          } else {
            src.flows[id] = testFlow(id, static_cast<uint8_t>(rng() % kTcpStateCount));
            ASSERT_TRUE(sender.upsert(src.flows[id]));
          }
        }
      }
      bulk.step(src, sender, 64);
      std::vector<Update> out;
      sender.poll(now, 64, out);
      std::vector<Update> arrived;
      for (const Update& u : out) {
        if (!lossy()) arrived.push_back(u);
      }
      receiver.onFrame(sender.base(), arrived);
      if (want.ready() && now < 2000 * kMs && bulk.active()) ready_seen_early = true;
      if (receiver.ackDue() && !lossy()) sender.onAck(receiver.ack());
      receiver.ackSent();
    }
    EXPECT_FALSE(ready_seen_early);
    ASSERT_TRUE(want.ready()) << "seed " << seed;
    EXPECT_TRUE(sender.idle());
    EXPECT_FALSE(sender.resyncNeeded());
    std::unordered_map<FlowKey, FlowRecord, FlowKeyHash> truth;
    for (const auto& [id, f] : src.flows) truth[f.key] = f;
    EXPECT_EQ(mirror.flows, truth) << "seed " << seed;
    EXPECT_EQ(bulk.counters().completed, 1u);
  }
}

}  // namespace
}  // namespace tandem::sync
