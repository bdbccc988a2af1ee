// Reliable delivery: coalescing, acks and resends, the bounded queue, sessions, and two peers
// over a FakeTransport that drops, duplicates and reorders (seeded), through the real frame
// format and authentication: once the link heals, the standby's table equals the active's.
#include "sync/reliable.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <unordered_map>
#include <vector>

#include "sync/auth.h"
#include "tests/unit/sync_test_tables.h"

namespace tandem::sync {
namespace {

constexpr uint64_t kMs = 1'000'000;

/// The mirrored table: idempotent upsert/delete by key, and a record of bulk ends.
struct Table : UpdateSink {
  std::unordered_map<FlowKey, FlowRecord, FlowKeyHash> flows;
  std::vector<uint64_t> seqs;
  std::vector<uint32_t> bulk_ends;
  void apply(const Update& u) noexcept override {
    seqs.push_back(u.seq);
    switch (u.kind) {
      case UpdateKind::kUpsert: flows[u.flow.key] = u.flow; break;
      case UpdateKind::kDelete: flows.erase(u.flow.key); break;
      case UpdateKind::kBulkEnd: bulk_ends.push_back(u.request_id); break;
    }
  }
};

TEST(SyncReliable, CoalescesUnsentUpdatesByKey) {
  ReliableSender s({}, 1);
  EXPECT_TRUE(s.upsert(testFlow(1, 1)));
  EXPECT_TRUE(s.upsert(testFlow(2, 1)));
  EXPECT_TRUE(s.upsert(testFlow(1, 3)));  // replaces the pending upsert of flow 1
  EXPECT_TRUE(s.remove(testFlow(2).key));  // replaces the pending upsert of flow 2
  EXPECT_EQ(s.pending(), 2u);
  EXPECT_EQ(s.counters().coalesced, 2u);
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 100, out), 2u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].seq, 1u);
  EXPECT_EQ(out[0].kind, UpdateKind::kUpsert);
  EXPECT_EQ(out[0].flow.tcp_state, 3);
  EXPECT_EQ(out[1].seq, 2u);
  EXPECT_EQ(out[1].kind, UpdateKind::kDelete);
  // Sent messages are never altered: a new update of flow 1 is a new message.
  EXPECT_TRUE(s.upsert(testFlow(1, 5)));
  EXPECT_EQ(s.pending(), 3u);
}

TEST(SyncReliable, ResendsTheLostAtOnceTheTailAfterTheTimeoutAndSkipsSackedOnes) {
  ReliableSender s({16, 10 * kMs}, 7);
  for (uint32_t i = 0; i < 4; ++i) s.upsert(testFlow(i));
  std::vector<Update> out;
  EXPECT_EQ(s.poll(0, 100, out), 4u);
  out.clear();
  EXPECT_EQ(s.poll(9 * kMs, 100, out), 0u);
  EXPECT_EQ(s.nextResendNs(), 10 * kMs);
  // Seq 1 and 3 arrived: cumulative 1, range [3, 3]. Seq 2 was sent before 3: lost, resent
  // at once; seq 4 was sent after 3: not known lost, it waits for the timeout.
  Ack a{7, 1, 1, {{3, 3}, {}, {}, {}}};
  s.onAck(a);
  EXPECT_EQ(s.pending(), 3u);
  EXPECT_EQ(s.base(), (SeqBase{7, 2}));
  EXPECT_EQ(s.nextResendNs(), 0u);
  EXPECT_EQ(s.poll(9 * kMs, 100, out), 1u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].seq, 2u);
  EXPECT_EQ(s.counters().lost, 1u);
  out.clear();
  // The ack's progress restarted the timeout at 9 ms: nothing until 19 ms, then the probe
  // resends the oldest unacknowledged ones (2 and 4), skipping the acknowledged 3.
  EXPECT_EQ(s.poll(18 * kMs, 100, out), 0u);
  EXPECT_EQ(s.poll(19 * kMs, 100, out), 2u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].seq, 2u);
  EXPECT_EQ(out[1].seq, 4u);
  EXPECT_EQ(s.counters().timeouts, 1u);
  EXPECT_EQ(s.counters().resent, 3u);
  s.onAck(Ack{7, 4, 0, {}});
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(s.base(), (SeqBase{7, 5}));
  // Acks of another session, or of seqs never sent, are ignored and counted.
  s.upsert(testFlow(9));
  s.onAck(Ack{8, 5, 0, {}});
  s.onAck(Ack{7, 5, 0, {}});
  EXPECT_EQ(s.pending(), 1u);
  EXPECT_EQ(s.counters().bad_acks, 2u);
}

TEST(SyncReliable, FullQueueRefusesAndSignalsResync) {
  ReliableSender s({3, kMs}, 1);
  EXPECT_TRUE(s.upsert(testFlow(1)));
  EXPECT_TRUE(s.upsert(testFlow(2)));
  EXPECT_TRUE(s.bulkEnd(1, 2));
  EXPECT_FALSE(s.upsert(testFlow(3)));
  EXPECT_TRUE(s.upsert(testFlow(2, 4)));  // coalescing still works when full
  EXPECT_TRUE(s.resyncNeeded());
  EXPECT_EQ(s.counters().overflow, 1u);
  s.clearResyncNeeded();
  EXPECT_FALSE(s.resyncNeeded());
}

TEST(SyncReliable, ReceiverDeliversInOrderAcksRangesAndDropsDuplicates) {
  Table t;
  ReliableReceiver r(t, 8);
  auto up = [](uint64_t seq, uint32_t id) {
    Update u;
    u.seq = seq;
    u.flow = testFlow(id);
    return u;
  };
  std::vector<Update> f1 = {up(3, 3), up(5, 5), up(6, 6)};
  r.onFrame({1, 2}, f1);
  EXPECT_TRUE(t.seqs.empty());
  Ack a = r.ack();
  EXPECT_EQ(a.cumulative, 1u);
  ASSERT_EQ(a.range_count, 2);
  EXPECT_EQ(a.ranges[0], (AckRange{3, 3}));
  EXPECT_EQ(a.ranges[1], (AckRange{5, 6}));
  std::vector<Update> f2 = {up(2, 2), up(3, 3), up(20, 20)};
  r.onFrame({1, 2}, f2);
  EXPECT_EQ(t.seqs, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(r.counters().duplicates, 1u);
  EXPECT_EQ(r.counters().beyond_window, 1u);
  std::vector<Update> f3 = {up(4, 4)};
  r.onFrame({1, 2}, f3);
  EXPECT_EQ(t.seqs, (std::vector<uint64_t>{2, 3, 4, 5, 6}));
  EXPECT_EQ(r.ack().cumulative, 6u);
  EXPECT_EQ(r.ack().range_count, 0);
  // An older session is ignored; a newer one restarts the sequence and asks for a resync.
  r.onFrame({0, 1}, f3);
  EXPECT_EQ(r.counters().stale_session, 1u);
  EXPECT_FALSE(r.resyncNeeded());
  std::vector<Update> f4 = {up(1, 1)};
  r.onFrame({2, 1}, f4);
  EXPECT_EQ(t.seqs.back(), 1u);
  EXPECT_TRUE(r.resyncNeeded());
}

// ---- Two peers over a lossy link, through the frame format and authentication. ----

/// Delivers datagrams after a random delay (so they reorder), drops and duplicates some.
class FakeTransport {
 public:
  struct Faults {
    double drop = 0;
    double duplicate = 0;
    uint64_t max_delay_ns = 0;
  };
  explicit FakeTransport(uint32_t seed) : rng_(seed) {}
  void setFaults(Faults f) { faults_ = f; }
  void send(std::vector<uint8_t> bytes, uint64_t now_ns) {
    if (chance(faults_.drop)) return;
    const int copies = chance(faults_.duplicate) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      const uint64_t delay = faults_.max_delay_ns ? rng_() % faults_.max_delay_ns : 0;
      inflight_.emplace(now_ns + delay, bytes);
    }
  }
  std::optional<std::vector<uint8_t>> receive(uint64_t now_ns) {
    if (inflight_.empty() || inflight_.begin()->first > now_ns) return std::nullopt;
    auto node = inflight_.extract(inflight_.begin());
    return std::move(node.mapped());
  }
  bool empty() const { return inflight_.empty(); }

 private:
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  std::mt19937 rng_;
  Faults faults_;
  std::multimap<uint64_t, std::vector<uint8_t>> inflight_;
};

/// Collects one frame's items for the reliable layer.
struct FrameItems : SectionHandler {
  std::optional<SeqBase> base;
  std::vector<Update> updates;
  std::vector<Ack> acks;
  void onSeqBase(const SeqBase& v) noexcept override { base = v; }
  void onFlowUpsert(const FlowUpsert& v) noexcept override {
    Update u;
    u.seq = v.seq;
    u.flow = v.flow;
    updates.push_back(u);
  }
  void onFlowDelete(const FlowDelete& v) noexcept override {
    Update u;
    u.kind = UpdateKind::kDelete;
    u.seq = v.seq;
    u.flow.key = v.key;
    updates.push_back(u);
  }
  void onBulkEnd(const BulkEnd& v) noexcept override {
    Update u;
    u.kind = UpdateKind::kBulkEnd;
    u.seq = v.seq;
    u.request_id = v.request_id;
    u.bulk_flows = v.flows;
    updates.push_back(u);
  }
  void onAck(const Ack& v) noexcept override { acks.push_back(v); }
};

bool addUpdate(FrameWriter& w, const Update& u) {
  switch (u.kind) {
    case UpdateKind::kUpsert: return w.add(FlowUpsert{u.seq, u.flow});
    case UpdateKind::kDelete: return w.add(FlowDelete{u.seq, u.flow.key});
    case UpdateKind::kBulkEnd: return w.add(BulkEnd{u.seq, u.request_id, u.bulk_flows});
  }
  return false;
}

struct Pair {
  explicit Pair(uint32_t seed, ReliableConfig cfg = {4096, 20 * kMs})
      : a_to_b(seed), b_to_a(seed + 1), sender(cfg, 1000), receiver(table, 4096),
        seal_a(keys, 1), seal_b(keys, 1), verify_a(keys), verify_b(keys) {
    keys.add(1, std::vector<uint8_t>(32, 0x42));
    keys.setSendKey(1);
  }

  /// One event-loop turn of each side at time `now`.
  void step(uint64_t now) {
    // Active: frames of {base, updates} while anything is due.
    std::vector<Update> due;
    sender.poll(now, 1000, due);
    size_t i = 0;
    while (i < due.size()) {
      std::vector<uint8_t> buf;
      FrameWriter w(buf);
      w.add(sender.base());
      while (i < due.size() && addUpdate(w, due[i])) ++i;
      ASSERT_TRUE(seal_a.seal(w, FrameHeader{0, 0, 0, 0, 1, 1}));
      a_to_b.send(buf, now);
    }
    // Standby: take in frames, then acknowledge.
    while (auto bytes = a_to_b.receive(now)) {
      FrameItems items;
      if (verify_b.open(*bytes, items).reject != Reject::kNone) continue;
      if (items.base) receiver.onFrame(*items.base, items.updates);
    }
    if (receiver.ackDue()) {
      std::vector<uint8_t> buf;
      FrameWriter w(buf);
      w.add(receiver.ack());
      ASSERT_TRUE(seal_b.seal(w, FrameHeader{0, 0, 0, 0, 2, 1}));
      b_to_a.send(buf, now);
      receiver.ackSent();
    }
    while (auto bytes = b_to_a.receive(now)) {
      FrameItems items;
      if (verify_a.open(*bytes, items).reject != Reject::kNone) continue;
      for (const Ack& a : items.acks) sender.onAck(a);
    }
  }

  FakeTransport a_to_b, b_to_a;
  Table table;
  ReliableSender sender;
  ReliableReceiver receiver;
  KeyRing keys;
  Sealer seal_a, seal_b;
  Verifier verify_a, verify_b;
};

TEST(SyncReliable, TablesConvergeOverALinkThatDropsDuplicatesAndReorders) {
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    Pair p(seed * 101);
    p.a_to_b.setFaults({0.2, 0.1, 15 * kMs});
    p.b_to_a.setFaults({0.2, 0.1, 15 * kMs});
    std::unordered_map<FlowKey, FlowRecord, FlowKeyHash> truth;
    std::mt19937 rng(seed);
    uint64_t now = 0;
    for (int tick = 0; tick < 3000; ++tick, now += kMs) {
      for (int k = 0; k < 3; ++k) {
        const uint32_t id = static_cast<uint32_t>(rng() % 400);
        const FlowRecord f = testFlow(id, static_cast<uint8_t>(rng() % kTcpStateCount));
        const bool ok = rng() % 3 == 0 ? (truth.erase(f.key), p.sender.remove(f.key))
                                       : (truth[f.key] = f, p.sender.upsert(f));
        ASSERT_TRUE(ok) << "queue of 4096 overflowed: seed " << seed;
      }
      p.step(now);
    }
    // Heal the link and let it drain.
    p.a_to_b.setFaults({});
    p.b_to_a.setFaults({});
    for (int tick = 0; tick < 2000 && !(p.sender.idle() && p.a_to_b.empty()); ++tick) {
      p.step(now += kMs);
    }
    EXPECT_TRUE(p.sender.idle()) << "seed " << seed;
    EXPECT_EQ(p.table.flows, truth) << "seed " << seed;
    EXPECT_GT(p.sender.counters().resent, 0u);
    EXPECT_GT(p.receiver.counters().duplicates, 0u);
    EXPECT_GT(p.sender.counters().coalesced, 0u);
    EXPECT_FALSE(p.receiver.resyncNeeded());
    // In-order delivery: each seq once, increasing.
    for (size_t i = 1; i < p.table.seqs.size(); ++i) {
      ASSERT_EQ(p.table.seqs[i], p.table.seqs[i - 1] + 1) << "seed " << seed;
    }
  }
}

TEST(SyncReliable, AReceiverStartingLateFollowsTheBase) {
  Pair p(9);
  // Messages 1..3 are acknowledged by nobody (the link is down): they stay queued and a fresh
  // receiver takes them from the base the sender announces.
  p.a_to_b.setFaults({1.0, 0, 0});
  for (uint32_t i = 0; i < 3; ++i) p.sender.upsert(testFlow(i));
  p.step(0);
  p.a_to_b.setFaults({});
  for (uint64_t t = 1; t < 100 && !p.sender.idle(); ++t) p.step(t * kMs);
  EXPECT_TRUE(p.sender.idle());
  EXPECT_EQ(p.table.flows.size(), 3u);
  EXPECT_EQ(p.receiver.counters().lost, 0u);
}

TEST(SyncReliable, AFollowedSessionNeedsNoResyncUnlessItStartedWithoutUs) {
  Table table;
  ReliableReceiver r(table);
  Update u;
  u.flow = testFlow(1);
  u.seq = 1;
  r.onFrame(SeqBase{100, 1}, std::span<const Update>(&u, 1));
  EXPECT_FALSE(r.resyncNeeded());
  // A new session without followNextSession(): the sender restarted, resync.
  r.onFrame(SeqBase{200, 1}, std::span<const Update>(&u, 1));
  EXPECT_TRUE(r.resyncNeeded());
  r.clearResyncNeeded();
  // After a clean handover: the new active's session is followed from its first message.
  r.followNextSession();
  u.flow = testFlow(2);
  r.onFrame(SeqBase{300, 1}, std::span<const Update>(&u, 1));
  EXPECT_FALSE(r.resyncNeeded());
  EXPECT_EQ(table.flows.size(), 2u);
  // Only once: the session after that is a restart again.
  r.onFrame(SeqBase{400, 1}, {});
  EXPECT_TRUE(r.resyncNeeded());
  r.clearResyncNeeded();
  // Withdrawn (the handover failed): the next session is a restart again.
  r.followNextSession();
  r.cancelFollow();
  r.onFrame(SeqBase{450, 1}, {});
  EXPECT_TRUE(r.resyncNeeded());
  r.clearResyncNeeded();
  // A followed session whose base moved on already (messages given up on): resync.
  r.followNextSession();
  r.onFrame(SeqBase{500, 7}, {});
  EXPECT_TRUE(r.resyncNeeded());
}

}  // namespace
}  // namespace tandem::sync
