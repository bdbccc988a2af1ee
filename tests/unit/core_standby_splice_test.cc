// A splice still opening (the backend's SYN-ACK not yet seen) on a standby: only the active opens
// a backend leg. The old active of a planned switchover keeps receiving packets until the
// endpoints' ARP caches move; had it completed the splice there (the backend's SYN-ACK), the
// change would never be checkpointed and the new active, still holding the flow as opening,
// would drop the backend's segments from then on (docs/pair-operations.md, the splice
// switchover defect). So a standby passes the client's segments to the active untranslated,
// drops the backend's, and sends nothing of its own; the new active resends the backend SYN on
// its own timer, and a checkpoint of the completion replaces the standby's opening flow.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/unit/checkpoint_fixture.h"

namespace tandem {
namespace {

using namespace test::checkpoint;  // NOLINT: the fixture's helpers
using test::PacketBuilder;

std::vector<Flow> changedFlows(Engine& e) {
  std::vector<Flow> out;
  e.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { out.push_back(f); });
  return out;
}

std::string stateOf(const Engine& e) {
  std::string s;
  e.forEachFlow([&](const FlowInfo& f) { s = tcpStateName(f.state); }, kSec);
  return s;
}

size_t outboxSize(Engine& e, std::vector<std::vector<uint8_t>>* out = nullptr) {
  return e.drainOutbox([&](const uint8_t* p, size_t n) {
    if (out != nullptr) out->emplace_back(p, p + n);
  });
}

/// The backend's SYN-ACK for the connection `o` opened (ISN 70000).
std::vector<uint8_t> backendSynAck(const SpliceOpen& o) {
  return PacketBuilder().src(o.backend.toString()).dst(o.source.toString())
      .flags(tcpflag::kSyn | tcpflag::kAck).seq(70000).ack(1001).mss(1460).wscale(9)
      .sackPermitted().timestamp(500, 11).build();
}

/// The client's first request, as it retransmits it while the backend leg opens.
std::vector<uint8_t> clientRequest(const SpliceOpen& o) {
  return PacketBuilder().src(o.client).dst(o.vip).flags(tcpflag::kAck | tcpflag::kPsh).seq(1001)
      .ack(o.cookie + 1).timestamp(12, o.cookie_tsval).payload("GET /").build();
}

/// The old active `a` opened the splice and checkpointed it (still opening) to `b`.
void openAndCheckpoint(Engine& a, Engine& b, SpliceOpen& o) {
  a.enableChangeTracking();
  ASSERT_NO_FATAL_FAILURE(openSplice(a, o));
  const std::vector<Flow> changed = changedFlows(a);
  ASSERT_EQ(changed.size(), 1u);
  ASSERT_TRUE(changed[0].splice_pending);
  b.setStandby(true, kSec);
  ASSERT_EQ(b.installFlow(changed[0], kSec), DropReason::kNone);
  (void)outboxSize(a);
}

TEST(StandbySplice, TheOldActiveNeitherCompletesNorDrivesAnOpeningSplice) {
  Engine a(config(Mode::kSplice, Addressing::kTransparent));
  Engine b(config(Mode::kSplice, Addressing::kTransparent));
  SpliceOpen o;
  ASSERT_NO_FATAL_FAILURE(openAndCheckpoint(a, b, o));
  // The planned switchover: a hands over (tandemd passes unknown client packets on standbys).
  a.setStandby(true, kSec);
  a.setPassUnknownToActive(true);
  b.setStandby(false, kSec);

  // The backend's SYN-ACK reaches a before the backend's ARP cache moved: not completed here.
  std::vector<uint8_t> synack = backendSynAck(o);
  const size_t synack_len = synack.size();
  synack.resize(256);
  Decision d = a.process(synack.data(), synack_len, synack.size(), {}, kSec + 1000);
  EXPECT_EQ(d.verdict, Verdict::kDrop);
  EXPECT_EQ(d.reason, DropReason::kStandbyPending);
  EXPECT_EQ(a.counters().dropped(DropReason::kStandbyPending), 1u);
  EXPECT_EQ(a.counters().splices_completed, 0u);
  EXPECT_EQ(stateOf(a), tcpStateName(TcpState::kSynSent));
  EXPECT_TRUE(changedFlows(a).empty());

  // The client's request, retransmitted long after the backend SYN (where an active resends
  // that SYN in its place), and again with a queue that could hold it: passed untranslated,
  // byte for byte, never turned into a SYN, never held.
  const std::vector<uint8_t> req = clientRequest(o);
  for (const bool can_hold : {false, true}) {
    std::vector<uint8_t> p = req;
    p.resize(256);
    PacketMeta meta;
    meta.can_hold = can_hold;
    d = a.process(p.data(), req.size(), p.size(), meta, 5 * kSec);
    EXPECT_EQ(d.verdict, Verdict::kAccept) << "can_hold " << can_hold;
    EXPECT_FALSE(d.modified) << "can_hold " << can_hold;
    EXPECT_EQ(d.len, req.size());
    EXPECT_TRUE(std::equal(req.begin(), req.end(), p.begin()));
  }
  EXPECT_EQ(a.passedToActive(), 2u);
  EXPECT_EQ(a.counters().splice_syn_retransmits, 0u);

  // A client RST too goes to the active, which aborts its backend leg.
  std::vector<uint8_t> rst = PacketBuilder().src(o.client).dst(o.vip).flags(tcpflag::kRst)
                                 .seq(1001).build();
  EXPECT_FALSE(run(a, rst, 5 * kSec).empty());
  EXPECT_EQ(a.passedToActive(), 3u);

  // Nothing of its own either: no SYN, no RST to the client, on packets or on timers.
  a.expire(30 * kSec);
  EXPECT_EQ(outboxSize(a), 0u);
  EXPECT_EQ(stateOf(a), tcpStateName(TcpState::kSynSent));
  EXPECT_TRUE(changedFlows(a).empty());

  // Without the pass (a standby outside tandemd's pair), the client's segments are dropped
  // here, still with nothing sent.
  Engine c(config(Mode::kSplice, Addressing::kTransparent));
  Engine d2(config(Mode::kSplice, Addressing::kTransparent));
  SpliceOpen o2;
  ASSERT_NO_FATAL_FAILURE(openAndCheckpoint(c, d2, o2));
  EXPECT_TRUE(run(d2, clientRequest(o2), 5 * kSec).empty());
  EXPECT_EQ(d2.counters().dropped(DropReason::kStandbyPending), 1u);
  EXPECT_EQ(d2.passedToActive(), 0u);
  EXPECT_EQ(outboxSize(d2), 0u);
}

TEST(StandbySplice, TheNewActiveResendsTheBackendSynOnItsTimerAndCompletes) {
  Engine a(config(Mode::kSplice, Addressing::kTransparent));
  Engine b(config(Mode::kSplice, Addressing::kTransparent));
  SpliceOpen o;
  ASSERT_NO_FATAL_FAILURE(openAndCheckpoint(a, b, o));
  a.setStandby(true, kSec);
  a.setPassUnknownToActive(true);
  b.enableChangeTracking();
  (void)changedFlows(b);
  // b takes over; the SYN-ACK went to a, which dropped it. No client segment comes (its data
  // is held, or it waits): b's timer resends the SYN 250 ms after the takeover.
  const uint64_t takeover = kSec + 500'000'000;
  b.setStandby(false, takeover);
  b.expire(takeover + 100'000'000);
  EXPECT_EQ(outboxSize(b), 0u);
  b.expire(takeover + 300'000'000);
  std::vector<std::vector<uint8_t>> out;
  ASSERT_EQ(outboxSize(b, &out), 1u);
  const TcpPacket syn = view(out[0]);
  EXPECT_EQ(syn.flags() & (tcpflag::kSyn | tcpflag::kAck), tcpflag::kSyn);
  EXPECT_EQ(syn.dst(), o.backend);
  EXPECT_EQ(syn.src(), o.source);
  EXPECT_EQ(syn.seq(), 1000u) << "the client's ISN, as the first SYN";
  EXPECT_EQ(b.counters().splice_syn_retransmits, 1u);

  // The backend answers the repeated SYN with its SYN-ACK: b completes the splice and
  // checkpoints the binding.
  EXPECT_FALSE(run(b, backendSynAck(o), takeover + 301'000'000).empty());
  EXPECT_EQ(b.counters().splices_completed, 1u);
  const std::vector<Flow> changed = changedFlows(b);
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_FALSE(changed[0].splice_pending);

  // That checkpoint replaces a's opening flow: a translates the connection as b does.
  ASSERT_EQ(a.installFlow(changed[0], takeover + 302'000'000), DropReason::kNone);
  EXPECT_EQ(a.activeFlows(), 1u);
  expectStandbyTranslatesAlike(a, b, o);
}

}  // namespace
}  // namespace tandem
