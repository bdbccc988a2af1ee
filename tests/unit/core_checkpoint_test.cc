// Checkpointing through the engine: change tracking on the active, installation on the standby,
// and the standby translating the next packets exactly as the active would have.
#include <gtest/gtest.h>

#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "tests/unit/checkpoint_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using namespace test::checkpoint;  // config, run, view, kSec, the splice connection
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08;

struct Drained {
  std::vector<FlowKey> removed;
  std::vector<Flow> changed;
  bool complete = true;
};

Drained drain(Engine& e) {
  Drained d;
  d.complete = e.drainChanges([&](const FlowKey& k) { d.removed.push_back(k); },
                              [&](const Flow& f) { d.changed.push_back(f); });
  return d;
}

TEST(Checkpoint, PassthroughFlowMovesToTheStandby) {
  Engine active(config(Mode::kPassthrough));
  Engine standby(config(Mode::kPassthrough));
  active.enableChangeTracking();

  auto syn = run(active, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn)
                             .seq(100).mss(1460).wscale(7).build());
  const Endpoint backend = view(syn).dst(), source = view(syn).src();
  ASSERT_FALSE(run(active, PacketBuilder().src(backend.toString()).dst(source.toString())
                               .flags(kSyn | kAck).seq(900).ack(101).mss(1460).wscale(7)
                               .build()).empty());
  ASSERT_FALSE(run(active, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80")
                               .flags(kAck).seq(101).ack(901).build()).empty());

  // Three state changes, one checkpoint: changes coalesce until drained.
  Drained d = drain(active);
  EXPECT_TRUE(d.complete);
  ASSERT_EQ(d.changed.size(), 1u);
  EXPECT_EQ(d.changed[0].state, TcpState::kEstablished);
  EXPECT_TRUE(d.removed.empty());
  // Data does not change hard state: nothing to send.
  auto data = PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck | kPsh)
                  .seq(101).ack(901).payload("hello").build();
  auto on_active = run(active, data);
  ASSERT_FALSE(on_active.empty());
  EXPECT_TRUE(drain(active).changed.empty());

  ASSERT_EQ(standby.installFlow(d.changed[0], 5 * kSec), DropReason::kNone);
  EXPECT_EQ(standby.activeFlows(), 1u);
  // The same segment through the standby leaves byte for byte as it left the active.
  EXPECT_EQ(run(standby, data, 5 * kSec), on_active);
  auto reply = PacketBuilder().src(backend.toString()).dst(source.toString()).flags(kAck)
                   .seq(901).ack(106).payload("world").build();
  EXPECT_EQ(run(standby, reply, 5 * kSec), run(active, reply));

  // A reset closes the flow on the active; its expiry is a removal.
  ASSERT_FALSE(run(active, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80")
                               .flags(kRst).seq(106).build()).empty());
  d = drain(active);
  ASSERT_EQ(d.changed.size(), 1u);
  EXPECT_EQ(d.changed[0].state, TcpState::kClose);
  active.expire(100 * kSec);
  d = drain(active);
  ASSERT_EQ(d.removed.size(), 1u);
  EXPECT_TRUE(standby.removeFlow(d.removed[0]));
  EXPECT_EQ(standby.activeFlows(), 0u);
  EXPECT_FALSE(standby.removeFlow(d.removed[0]));
}

TEST(Checkpoint, SplicedFlowKeepsItsTranslationOnTheStandby) {
  Engine active(config(Mode::kSplice));
  Engine standby(config(Mode::kSplice));
  active.enableChangeTracking();
  SpliceOpen o;
  ASSERT_NO_FATAL_FAILURE(openSplice(active, o));
  ASSERT_NO_FATAL_FAILURE(answerSplice(active, o));
  Drained d = drain(active);
  ASSERT_EQ(d.changed.size(), 1u);
  EXPECT_TRUE(d.changed[0].splice);
  EXPECT_FALSE(d.changed[0].splice_pending);
  ASSERT_EQ(standby.installFlow(d.changed[0], 2 * kSec), DropReason::kNone);
  expectStandbyTranslatesAlike(standby, active, o);
}

TEST(Checkpoint, StandbyKeepsFlowsUntilItTakesOverThenRestartsTheirIdleTimers) {
  auto cfg = config(Mode::kPassthrough);
  cfg.timeouts.established_ns = 10 * kSec;
  Engine active(cfg), standby(cfg);
  active.enableChangeTracking();
  standby.setStandby(true, kSec);
  auto syn = run(active, PacketBuilder().src("10.0.0.2:43000").dst("10.0.0.100:80").flags(kSyn)
                             .seq(1).build());
  const Endpoint backend = view(syn).dst(), source = view(syn).src();
  run(active, PacketBuilder().src(backend.toString()).dst(source.toString()).flags(kSyn | kAck)
                  .seq(50).ack(2).build());
  run(active, PacketBuilder().src("10.0.0.2:43000").dst("10.0.0.100:80").flags(kAck).seq(2)
                  .ack(51).build());
  Drained d = drain(active);
  ASSERT_EQ(d.changed.size(), 1u);
  ASSERT_EQ(standby.installFlow(d.changed[0], kSec), DropReason::kNone);
  // Far beyond the established timeout: the active's flow is busy, the standby hears nothing.
  standby.expire(100 * kSec);
  EXPECT_EQ(standby.activeFlows(), 1u);
  standby.setStandby(false, 100 * kSec);  // takeover: the idle timer starts now
  standby.expire(105 * kSec);
  EXPECT_EQ(standby.activeFlows(), 1u);
  standby.expire(111 * kSec);
  EXPECT_EQ(standby.activeFlows(), 0u);
}

TEST(Checkpoint, InstallRefusesACheckpointThatDoesNotFitTheConfiguration) {
  Engine e(config(Mode::kPassthrough));
  Flow f;
  f.service = 3;
  EXPECT_EQ(e.installFlow(f, kSec), DropReason::kNoService);
  f.service = 0;
  f.backend = 9;
  EXPECT_EQ(e.installFlow(f, kSec), DropReason::kNoService);
  EXPECT_EQ(e.activeFlows(), 0u);
}

TEST(Checkpoint, BulkWalkVisitsEveryLiveFlowOnce) {
  Engine e(config(Mode::kPassthrough));
  for (int i = 0; i < 10; ++i) {
    ASSERT_FALSE(run(e, PacketBuilder().src("10.0.0.2:" + std::to_string(42000 + i))
                            .dst("10.0.0.100:80").flags(kSyn).seq(1).build()).empty());
  }
  size_t seen = 0;
  uint32_t cursor = 0;
  int calls = 0;
  do {
    cursor = e.forEachLiveFlow(cursor, 3, [&](const Flow&) { ++seen; });
    ++calls;
  } while (cursor != 0 && calls < 100);
  EXPECT_EQ(seen, 10u);
  EXPECT_GE(calls, 4);
}

}  // namespace
}  // namespace tandem
