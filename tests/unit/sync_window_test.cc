// The send window of the reliable sender (sync/reliable.h) and the bulk transfer paced by it
// (sync/bulk.h): a full window sends nothing, an ack opens it, a loss resends exactly the lost
// messages, a stalled peer gets a few probes rather than the window again, live updates go out
// during a bulk, and a window that fits the standby's socket buffer never overflows it.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <set>
#include <unordered_map>
#include <vector>

#include "sync/bulk.h"
#include "sync/reliable.h"

#include "tests/unit/sync_test_tables.h"

namespace tandem::sync {
namespace {

constexpr uint64_t kMs = 1'000'000;

std::vector<uint64_t> seqs(const std::vector<Update>& v) {
  std::vector<uint64_t> out;
  for (const Update& u : v) out.push_back(u.seq);
  return out;
}

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (uint64_t s = first; s <= last; ++s) out.push_back(s);
  return out;
}

TEST(SyncWindow, AFullWindowSendsNothingAndAnAckOpensIt) {
  ReliableSender s({100, 10 * kMs, 4}, 1);
  for (uint32_t i = 0; i < 10; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  EXPECT_EQ(s.windowSpace(), 0u);
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 100, out), 4u);
  EXPECT_EQ(seqs(out), range(1, 4));
  EXPECT_EQ(s.inFlight(), 4u);
  EXPECT_EQ(s.unsent(), 6u);
  EXPECT_FALSE(s.sendable());
  out.clear();
  EXPECT_EQ(s.poll(kMs, 100, out), 0u);  // full: nothing new, nothing due
  EXPECT_GT(s.counters().window_full, 0u);
  // A range above a hole does not move the window's edge (the receiver still buffers 2-3)...
  s.onAck(Ack{1, 0, 1, {{2, 3}, {}, {}, {}}});
  out.clear();
  EXPECT_EQ(s.poll(kMs, 100, out), 1u);
  EXPECT_EQ(seqs(out), (std::vector<uint64_t>{1}));  // ...but shows seq 1 lost: resent alone
  // The cumulative ack opens the window by what it acknowledged.
  s.onAck(Ack{1, 4, 0, {}});
  EXPECT_TRUE(s.sendable());
  out.clear();
  EXPECT_EQ(s.poll(2 * kMs, 100, out), 4u);
  EXPECT_EQ(seqs(out), range(5, 8));
  s.onAck(Ack{1, 6, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(3 * kMs, 100, out), 2u);
  EXPECT_EQ(seqs(out), range(9, 10));
  s.onAck(Ack{1, 10, 0, {}});
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.counters().resent, 1u);
  EXPECT_EQ(s.counters().timeouts, 0u);
}

/// Sends everything the window allows in frames of `per_frame`, drops the frames whose index
/// is in `lost`, feeds the rest to the receiver, and returns the receiver's ack.
Ack transfer(ReliableSender& s, ReliableReceiver& r, uint64_t now, size_t per_frame,
             const std::set<size_t>& lost, std::vector<Update>* sent = nullptr) {
  std::vector<Update> out;
  s.poll(now, 100000, out);
  if (sent != nullptr) *sent = out;
  for (size_t i = 0, frame = 0; i < out.size(); i += per_frame, ++frame) {
    if (lost.count(frame) != 0) continue;
    const size_t end = std::min(out.size(), i + per_frame);
    r.onFrame(s.base(), std::span<const Update>(out.data() + i, end - i));
  }
  return r.ack();
}

TEST(SyncWindow, ALossResendsExactlyTheLostMessages) {
  ReliableSender s({1000, 30 * kMs, 64}, 5);
  MirrorTable t;
  ReliableReceiver r(t, 64);
  for (uint32_t i = 0; i < 40; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  // Frames of 4 messages: frames 1 and 3 (seqs 5-8 and 13-16) are lost.
  std::vector<Update> sent;
  const Ack a = transfer(s, r, 0, 4, {1, 3}, &sent);
  EXPECT_EQ(sent.size(), 40u);
  EXPECT_EQ(a.cumulative, 4u);
  s.onAck(a);
  std::vector<Update> again;
  const Ack b = transfer(s, r, kMs, 4, {}, &again);
  std::vector<uint64_t> lost = range(5, 8);
  for (uint64_t q = 13; q <= 16; ++q) lost.push_back(q);
  EXPECT_EQ(seqs(again), lost);
  s.onAck(b);
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.counters().resent, 8u);
  EXPECT_EQ(s.counters().lost, 8u);
  EXPECT_EQ(s.counters().timeouts, 0u);
  EXPECT_EQ(t.flows.size(), 40u);
  EXPECT_EQ(r.counters().duplicates, 0u);
  // A resend lost again is found by the next ack that covers a later transmission.
  for (uint32_t i = 100; i < 110; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));  // seqs 41-50
  s.onAck(transfer(s, r, 2 * kMs, 5, {0}));  // 41-45 lost
  s.onAck(transfer(s, r, 3 * kMs, 5, {0}));  // their resend lost too
  EXPECT_FALSE(s.idle());
  s.onAck(transfer(s, r, 3 * kMs, 5, {}));  // nothing newer acked: no evidence, no resend
  EXPECT_FALSE(s.idle());
  std::vector<Update> probe;
  s.onAck(transfer(s, r, 40 * kMs, 5, {}, &probe));  // the timeout's probe
  EXPECT_EQ(seqs(probe), range(41, 45));
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.counters().resent, 8u + 5u + 5u);
}

TEST(SyncWindow, ALostTailIsProbedAfterTheTimeoutThenResentWhole) {
  ReliableSender s({1000, 10 * kMs, 64}, 5);
  MirrorTable t;
  ReliableReceiver r(t, 64);
  for (uint32_t i = 0; i < 30; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  // Frames of 6: the last three frames (seqs 13-30, 18 messages) are lost. No later message
  // arrived, so nothing shows the loss until the timeout.
  s.onAck(transfer(s, r, 0, 6, {2, 3, 4}));
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 100, out), 0u);  // notes the ack's progress: the timeout counts from 0
  EXPECT_EQ(s.poll(9 * kMs, 100, out), 0u);
  EXPECT_EQ(s.poll(10 * kMs, 100, out), kTimeoutProbe);
  EXPECT_EQ(seqs(out), range(13, 12 + kTimeoutProbe));
  for (const Update& u : out) r.onFrame(s.base(), std::span<const Update>(&u, 1));
  s.onAck(r.ack());
  // The probe's ack covers the probed messages only: the tail was lost, the rest (sent
  // before the probe) is resent at once.
  out.clear();
  EXPECT_EQ(s.poll(11 * kMs, 100, out), 18u - kTimeoutProbe);
  EXPECT_EQ(seqs(out), range(13 + kTimeoutProbe, 30));
  for (const Update& u : out) r.onFrame(s.base(), std::span<const Update>(&u, 1));
  s.onAck(r.ack());
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.counters().resent, 18u);
  EXPECT_EQ(s.counters().timeouts, 1u);
  EXPECT_EQ(t.flows.size(), 30u);
}

TEST(SyncWindow, AStalledPeerGetsBackedOffProbesNotTheWindowAgain) {
  ReliableSender s({10000, 10 * kMs, 4096}, 5);
  for (uint32_t i = 0; i < 4096; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 10000, out), 4096u);
  // The peer reads nothing for 300 ms (not scheduled): probes at 10, 30, 70, 150 ms (the
  // timeout doubles while nothing moves), kTimeoutProbe messages each.
  std::vector<uint64_t> probe_times;
  for (uint64_t now = kMs; now <= 300 * kMs; now += kMs) {
    out.clear();
    if (s.poll(now, 10000, out) > 0) {
      EXPECT_EQ(out.size(), kTimeoutProbe);
      probe_times.push_back(now / kMs);
    }
  }
  EXPECT_EQ(probe_times, (std::vector<uint64_t>{10, 30, 70, 150}));
  EXPECT_EQ(s.counters().resent, 4 * kTimeoutProbe);
  // It wakes up and reads its backlog: the ack of the probed messages is the first copies'
  // (ambiguous), so the messages behind them, still in its socket, are not taken for lost.
  s.onAck(Ack{5, 2000, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(300 * kMs, 10000, out), 0u);
  EXPECT_EQ(s.counters().lost, 0u);
  // Then all acknowledged: nothing more resent, the timeout is reset.
  s.onAck(Ack{5, 4096, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(301 * kMs, 10000, out), 0u);
  EXPECT_TRUE(s.idle());
  ASSERT_TRUE(s.upsert(testFlow(9999)));
  EXPECT_EQ(s.poll(302 * kMs, 10000, out), 1u);
  EXPECT_EQ(s.nextResendNs(), 312 * kMs);
}

TEST(SyncWindow, AnAckOfAResentMessageCountsAsItsFirstCopyAndNothingCascades) {
  ReliableSender s({1000, 30 * kMs, 128}, 2);
  for (uint32_t i = 0; i < 100; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 1000, out), 100u);
  // Seq 50 is acknowledged ahead of 1-49 (as if reordered): 1-49 are taken for lost.
  s.onAck(Ack{2, 0, 1, {{50, 50}, {}, {}, {}}});
  out.clear();
  EXPECT_EQ(s.poll(kMs, 1000, out), 49u);
  // Their first copies arrive after all: the ack cannot tell which copy it acknowledges, so
  // it counts as the first one's, and 51-100 (sent after those) are not taken for lost. (As
  // the resends', every message sent before them, 51-100, would be resent; and their acks in
  // turn would mark the next window lost.)
  s.onAck(Ack{2, 50, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(2 * kMs, 1000, out), 0u);
  EXPECT_EQ(s.counters().resent, 49u);
  s.onAck(Ack{2, 100, 0, {}});
  EXPECT_TRUE(s.idle());
}

TEST(SyncWindow, AnAckOlderThanTheProbeCostsOneBurstNotTheWindow) {
  ReliableSender s({1000, 30 * kMs, 128}, 4);
  for (uint32_t i = 0; i < 100; ++i) ASSERT_TRUE(s.upsert(testFlow(i)));
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 1000, out), 100u);
  out.clear();
  EXPECT_EQ(s.poll(30 * kMs, 1000, out), kTimeoutProbe);  // seqs 1-8
  // An ack the peer sent before the probe reached it, covering 1-6 only: like a lost tail,
  // it lets a burst of twice the probe go...
  s.onAck(Ack{4, 6, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(31 * kMs, 1000, out), 2 * kTimeoutProbe);
  EXPECT_EQ(seqs(out), range(9, 8 + 2 * kTimeoutProbe));
  // ...and the next ack covers first copies (the peer only lagged): recovery ends there.
  s.onAck(Ack{4, 60, 0, {}});
  out.clear();
  EXPECT_EQ(s.poll(32 * kMs, 1000, out), 0u);
  s.onAck(Ack{4, 100, 0, {}});
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.counters().resent, 3 * kTimeoutProbe);
  EXPECT_EQ(s.counters().lost, 0u);
}

TEST(SyncWindow, LiveUpdatesGoOutWhileTheBulkFillsTheWindow) {
  struct Source : FlowSource {
    uint32_t n = 0;
    bool next(uint64_t& cursor, FlowRecord& out) noexcept override {
      if (cursor >= n) return false;
      out = testFlow(static_cast<uint32_t>(cursor));
      ++cursor;
      return true;
    }
  } src;
  src.n = 1000;
  ReliableSender s({65536, 30 * kMs, 64}, 1);
  BulkSender bulk(1024);  // the window share is capped at 64 / 8 = 8
  bulk.onRequest({1});
  // The bulk queues only into the open window, less the live share: no backlog.
  EXPECT_EQ(bulk.step(src, s, 1000), 56u);
  EXPECT_EQ(bulk.step(src, s, 1000), 0u);
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 1000, out), 56u);
  EXPECT_EQ(s.unsent(), 0u);
  // A live update queued now goes out at once, without waiting for an ack.
  ASSERT_TRUE(s.upsert(testFlow(5000, 1)));
  out.clear();
  EXPECT_EQ(s.poll(0, 1000, out), 1u);
  EXPECT_EQ(out[0].flow.key, testFlow(5000).key);
  EXPECT_EQ(bulk.step(src, s, 1000), 0u);
  // Acks move the bulk on; live updates queued between its steps keep going out in order.
  uint64_t acked = 0;
  std::vector<uint64_t> live_seqs;
  for (uint32_t round = 0; round < 100 && bulk.active(); ++round) {
    acked += 20;
    s.onAck(Ack{1, acked, 0, {}});
    ASSERT_TRUE(s.upsert(testFlow(6000 + round, 2)));
    const size_t queued = bulk.step(src, s, 1000);
    EXPECT_LE(queued, 20u);
    out.clear();
    s.poll(0, 1000, out);
    EXPECT_EQ(s.unsent(), 0u) << "round " << round;  // everything queued went out
    bool live_seen = false;
    for (const Update& u : out) {
      if (u.flow.key == testFlow(6000 + round).key) {
        live_seen = true;
        live_seqs.push_back(u.seq);
      }
    }
    EXPECT_TRUE(live_seen) << "round " << round;
    EXPECT_LE(s.inFlight(), 64u);
  }
  EXPECT_FALSE(bulk.active());
  EXPECT_TRUE(std::is_sorted(live_seqs.begin(), live_seqs.end()));
}

/// A standby whose socket holds at most `buffer_frames` datagrams and reads `read_frames` of
/// them per millisecond; frames of 7 upserts (1.4 kB); acks reach the active the next ms.
struct BufferedLink {
  size_t buffer_frames;
  size_t read_frames;
  std::deque<std::vector<Update>> socket;
  uint64_t drops = 0;
  void send(std::vector<Update> frame) {
    if (socket.size() >= buffer_frames) {
      ++drops;
      return;
    }
    socket.push_back(std::move(frame));
  }
};

struct BulkRun {
  uint64_t ms = 0;
  uint64_t drops = 0;
  uint64_t resent = 0;
  bool ready = false;
  size_t flows = 0;
};

BulkRun runBulk(size_t window, uint32_t flows) {
  struct Source : FlowSource {
    uint32_t n = 0;
    bool next(uint64_t& cursor, FlowRecord& out) noexcept override {
      if (cursor >= n) return false;
      out = testFlow(static_cast<uint32_t>(cursor));
      ++cursor;
      return true;
    }
  } src;
  src.n = flows;
  ReliableSender s({65536, 30 * kMs, window}, 3);
  BulkSender bulk(1024);
  MirrorTable t;
  ReliableReceiver r(t, kMaxSendWindow);
  BulkReceiver want;
  t.bulk = &want;
  want.start(9, 0);
  bulk.onRequest({9});
  BufferedLink link{400, 60, {}, 0};
  std::optional<Ack> ack_in_flight;
  BulkRun run;
  uint64_t now = 0;
  for (; now < 20'000 * kMs && !(want.ready() && s.idle()); now += kMs) {
    if (ack_in_flight) s.onAck(*ack_in_flight);
    ack_in_flight.reset();
    for (int k = 0; k < 64; ++k) {  // the pump: until the window is full
      bulk.step(src, s, 256);
      std::vector<Update> out;
      if (s.poll(now, 256, out) == 0) break;
      for (size_t i = 0; i < out.size(); i += 7) {
        const size_t end = std::min(out.size(), i + 7);
        link.send(std::vector<Update>(out.begin() + static_cast<long>(i),
                                      out.begin() + static_cast<long>(end)));
      }
    }
    for (size_t k = 0; k < link.read_frames && !link.socket.empty(); ++k) {
      r.onFrame(s.base(), link.socket.front());
      link.socket.pop_front();
    }
    if (r.ackDue()) {
      ack_in_flight = r.ack();
      r.ackSent();
    }
  }
  run.ms = now / kMs;
  run.drops = link.drops;
  run.resent = s.counters().resent;
  run.ready = want.ready();
  run.flows = t.flows.size();
  return run;
}

TEST(SyncWindow, ABulkPacedByAWindowThatFitsTheBufferNeverOverflowsIt) {
  // 400 frames of 7 hold 2,800 messages: a window of 2,048 fits; one of 65,536 does not.
  const BulkRun fits = runBulk(2048, 50'000);
  EXPECT_TRUE(fits.ready);
  EXPECT_EQ(fits.flows, 50'000u);
  EXPECT_EQ(fits.drops, 0u);
  EXPECT_EQ(fits.resent, 0u);
  // The window keeps the reader busy: 50,000 flows at 420 per ms take about 120 ms.
  EXPECT_LT(fits.ms, 400u);

  const BulkRun overruns = runBulk(kMaxSendWindow, 50'000);
  EXPECT_TRUE(overruns.ready);
  EXPECT_EQ(overruns.flows, 50'000u);
  EXPECT_GT(overruns.drops, 0u);
  EXPECT_GT(overruns.resent, 0u);
}

}  // namespace
}  // namespace tandem::sync
