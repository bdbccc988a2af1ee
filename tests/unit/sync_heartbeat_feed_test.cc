// The heartbeat thread's pure parts (sync/heartbeat_feed.h, sync/auth.h): the snapshot box
// (whole values only, also against a concurrent writer), the liveness rule as a function of
// times, the stall limit, and two sealers of one sender sharing a counter: unique counters,
// each frame verified by the peer, also when they arrive out of order within the window.
#include "sync/heartbeat_feed.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "sync/auth.h"

namespace tandem::sync {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(SyncHeartbeatFeed, NothingToReadBeforeTheFirstPublish) {
  SnapshotBox<HeartbeatSnapshot> box;
  HeartbeatSnapshot s;
  s.epoch = 77;
  EXPECT_FALSE(box.tryRead(s));
  EXPECT_EQ(s.epoch, 77u);  // untouched
  EXPECT_EQ(box.published(), 0u);
}

TEST(SyncHeartbeatFeed, ReadsTheLatestPublishedValueWhole) {
  SnapshotBox<HeartbeatSnapshot> box;
  HeartbeatSnapshot a;
  a.heartbeat = Heartbeat{Role::kActive, 150, true, false, 9, 1234, 6, 0};
  a.base = SeqBase{0x1122334455667788ull, 42};
  a.epoch = 9;
  a.with_base = true;
  box.publish(a);
  HeartbeatSnapshot out;
  ASSERT_TRUE(box.tryRead(out));
  EXPECT_EQ(out.heartbeat, a.heartbeat);
  EXPECT_EQ(out.base, a.base);
  EXPECT_EQ(out.epoch, 9u);
  EXPECT_TRUE(out.with_base);
  // A role change (the handover): the next read sees it, never the old role again.
  HeartbeatSnapshot b = a;
  b.heartbeat.role = Role::kStandby;
  b.heartbeat.handover = true;
  b.with_base = false;
  box.publish(b);
  ASSERT_TRUE(box.tryRead(out));
  EXPECT_EQ(out.heartbeat.role, Role::kStandby);
  EXPECT_TRUE(out.heartbeat.handover);
  EXPECT_FALSE(out.with_base);
  EXPECT_EQ(box.published(), 2u);
}

// A value whose every word carries the same number: a torn read would mix two of them.
struct Stripes {
  uint64_t w[9];
};

TEST(SyncHeartbeatFeed, AConcurrentReaderNeverSeesATornValue) {
  SnapshotBox<Stripes> box;
  constexpr uint64_t kWrites = 200'000;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t i = 1; i <= kWrites; ++i) {
      Stripes s;
      std::fill(std::begin(s.w), std::end(s.w), i);
      box.publish(s);
    }
    done.store(true);
  });
  uint64_t reads = 0, torn = 0, last = 0, backwards = 0;
  while (!done.load() || reads == 0) {
    Stripes s;
    if (!box.tryRead(s, 1)) continue;
    ++reads;
    for (uint64_t v : s.w) torn += v != s.w[0] ? 1 : 0;
    backwards += s.w[0] < last ? 1 : 0;
    last = s.w[0];
  }
  writer.join();
  EXPECT_GT(reads, 0u);
  EXPECT_EQ(torn, 0u);
  EXPECT_EQ(backwards, 0u);  // one writer: values only move forward
  Stripes s;
  ASSERT_TRUE(box.tryRead(s));
  EXPECT_EQ(s.w[8], kWrites);
}

TEST(SyncHeartbeatFeed, LivenessRule) {
  constexpr uint64_t kMs = 1'000'000;
  struct Case {
    const char* description;
    uint64_t now, last_turn, limit;
    bool send;
  } cases[] = {
      {"the loop never turned", 100 * kMs, 0, 12 * kMs, false},
      {"turned just now", 100 * kMs, 100 * kMs, 12 * kMs, true},
      {"turned within the limit", 100 * kMs, 90 * kMs, 12 * kMs, true},
      {"exactly at the limit", 100 * kMs, 88 * kMs, 12 * kMs, true},
      {"one ns past the limit", 100 * kMs + 1, 88 * kMs, 12 * kMs, false},
      {"wedged for longer than the limit", 118 * kMs, 100 * kMs, 12 * kMs, false},
      {"stamp from another CPU, after our clock read", 100 * kMs, 100 * kMs + 5, 12 * kMs,
       true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(loopTurnedRecently(c.now, c.last_turn, c.limit), c.send) << c.description;
  }
}

TEST(SyncHeartbeatFeed, StallLimitIsTheDeadInterval) {
  EXPECT_EQ(heartbeatStallLimitNs(6'000'000, 3), 18'000'000u);
  EXPECT_EQ(heartbeatStallLimitNs(10'000'000, 3), 30'000'000u);
  EXPECT_EQ(heartbeatStallLimitNs(50'000'000, 2), 100'000'000u);
  // A loop one dead interval and 1 ns without turning is not vouched for.
  const uint64_t limit = heartbeatStallLimitNs(6'000'000, 3);
  EXPECT_TRUE(loopTurnedRecently(1'000'000'000 + limit, 1'000'000'000, limit));
  EXPECT_FALSE(loopTurnedRecently(1'000'000'000 + limit + 1, 1'000'000'000, limit));
}

Bytes seal(Sealer& s, uint32_t node) {
  Bytes out;
  FrameWriter w(out);
  EXPECT_TRUE(w.add(Heartbeat{Role::kActive, 100, true, false, 1, 0, 6, 0}));
  EXPECT_TRUE(s.seal(w, FrameHeader{0, 0, 0, 0, node, 1}));
  return out;
}

struct CountHeartbeats : SectionHandler {
  int n = 0;
  void onHeartbeat(const Heartbeat&) noexcept override { ++n; }
};

TEST(SyncHeartbeatFeed, TwoSealersOfOneSenderShareTheCounterAndEachFrameVerifies) {
  const Bytes key(32, 7);
  KeyRing loop_keys, thread_keys, peer_keys;  // the thread has its own MAC contexts
  for (KeyRing* k : {&loop_keys, &thread_keys, &peer_keys}) {
    k->add(1, key);
    k->setSendKey(1);
  }
  Sealer loop(loop_keys, 5000);
  Sealer thread(thread_keys, loop);
  // Taken in this order, sent in another: a heartbeat sealed before a burst of data frames
  // arrives after them (inside the replay window), and is still accepted once.
  const Bytes hb = seal(thread, 1);
  std::vector<Bytes> data;
  for (int i = 0; i < 100; ++i) data.push_back(seal(i % 2 == 0 ? loop : thread, 1));
  EXPECT_EQ(loop.lastCounter(), 5101u);
  EXPECT_EQ(thread.lastCounter(), 5101u);
  Verifier peer(peer_keys);
  CountHeartbeats h;
  for (const Bytes& f : data) EXPECT_EQ(peer.open(f, h).reject, Reject::kNone);
  EXPECT_EQ(peer.open(hb, h).reject, Reject::kNone);
  EXPECT_EQ(peer.open(hb, h).reject, Reject::kReplay);
  EXPECT_EQ(h.n, 101);
}

TEST(SyncHeartbeatFeed, ConcurrentSealersNeverRepeatACounter) {
  const Bytes key(32, 9);
  KeyRing a_keys, b_keys, peer_keys;
  for (KeyRing* k : {&a_keys, &b_keys, &peer_keys}) {
    k->add(1, key);
    k->setSendKey(1);
  }
  Sealer a(a_keys, 1);
  Sealer b(b_keys, a);
  constexpr int kEach = 2000;
  std::vector<Bytes> fa, fb;
  std::thread t([&] {
    for (int i = 0; i < kEach; ++i) fb.push_back(seal(b, 1));
  });
  for (int i = 0; i < kEach; ++i) fa.push_back(seal(a, 1));
  t.join();
  // Every frame's counter (bytes 8..15 of the header) is unique, and all were taken.
  std::set<uint64_t> counters;
  for (const auto* v : {&fa, &fb}) {
    for (const Bytes& f : *v) {
      uint64_t c = 0;
      for (int i = 8; i < 16; ++i) c = (c << 8) | f[i];
      counters.insert(c);
    }
  }
  EXPECT_EQ(counters.size(), 2u * kEach);
  EXPECT_EQ(*counters.rbegin(), 1u + 2 * kEach);
  EXPECT_EQ(a.lastCounter(), 1u + 2 * kEach);
  // In counter order every frame verifies once.
  Verifier peer(peer_keys);
  CountHeartbeats h;
  std::vector<const Bytes*> all;
  for (const Bytes& f : fa) all.push_back(&f);
  for (const Bytes& f : fb) all.push_back(&f);
  std::sort(all.begin(), all.end(), [](const Bytes* x, const Bytes* y) {
    return std::lexicographical_compare(x->begin() + 8, x->begin() + 16, y->begin() + 8,
                                        y->begin() + 16);
  });
  for (const Bytes* f : all) EXPECT_EQ(peer.open(*f, h).reject, Reject::kNone);
  EXPECT_EQ(h.n, 2 * kEach);
}

}  // namespace
}  // namespace tandem::sync
