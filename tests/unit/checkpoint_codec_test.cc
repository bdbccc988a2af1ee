// The checkpoint codec end to end: a flow built by the active engine becomes a FlowRecord
// (proxy/tandemd/flow_record.h), travels in a sync frame (sync/wire.h), comes back as a Flow on
// the standby, and the standby translates the next segments byte for byte as the active does.
// Covers passthrough and splice flows (cookie, timestamp and window-scale translation).
#include "proxy/tandemd/flow_record.h"

#include <gtest/gtest.h>

#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "sync/wire.h"
#include "tests/unit/checkpoint_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using namespace test::checkpoint;  // config, run, view, kSec, the splice connection
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPsh = 0x08;

std::vector<Flow> drainChanged(Engine& e) {
  std::vector<Flow> out;
  e.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { out.push_back(f); });
  return out;
}

/// Encodes the records as FLOW_UPSERT items of one frame and decodes them back.
std::vector<sync::FlowRecord> overTheWire(const std::vector<sync::FlowRecord>& in) {
  struct Sink : sync::SectionHandler {
    std::vector<sync::FlowRecord> out;
    void onFlowUpsert(const sync::FlowUpsert& u) noexcept override { out.push_back(u.flow); }
  } sink;
  std::vector<uint8_t> frame;
  sync::FrameWriter w(frame);
  uint64_t seq = 1;
  for (const sync::FlowRecord& r : in) EXPECT_TRUE(w.add(sync::FlowUpsert{seq++, r}));
  w.finish({});
  const sync::HeaderResult h = sync::decodeHeader(frame);
  EXPECT_EQ(h.error, sync::WireError::kNone);
  EXPECT_EQ(sync::decodePayload(h.payload, sink).error, sync::WireError::kNone);
  return sink.out;
}

/// Flow -> record -> wire -> record -> Flow; the result converts to the same record again.
Flow roundTrip(const Flow& f) {
  const sync::FlowRecord sent = flowToRecord(f, f.last_seen_ns);
  const std::vector<sync::FlowRecord> got = overTheWire({sent});
  EXPECT_EQ(got.size(), 1u);
  if (got.empty()) return {};
  EXPECT_EQ(got[0], sent);
  Flow back;
  EXPECT_TRUE(recordToFlow(got[0], back));
  EXPECT_EQ(flowToRecord(back, 0), sent);
  return back;
}

class CheckpointCodec : public ::testing::TestWithParam<Addressing> {};

TEST_P(CheckpointCodec, SpliceFlowCarriesEveryTranslationFieldAndTheStandbyTranslatesAlike) {
  Engine active(config(Mode::kSplice, GetParam()));
  Engine standby(config(Mode::kSplice, GetParam()));
  active.enableChangeTracking();
  SpliceOpen o;
  ASSERT_NO_FATAL_FAILURE(openSplice(active, o));

  // While the backend leg opens, the pending flow travels too (the standby may have to resend
  // the backend SYN).
  std::vector<Flow> pending = drainChanged(active);
  ASSERT_EQ(pending.size(), 1u);
  ASSERT_TRUE(pending[0].splice_pending);
  const Flow p = roundTrip(pending[0]);
  EXPECT_TRUE(p.splice && p.splice_pending);
  EXPECT_EQ(p.proxy_isn, pending[0].proxy_isn);
  EXPECT_EQ(p.syn_mss, pending[0].syn_mss);
  EXPECT_EQ(p.syn_sack, pending[0].syn_sack);
  EXPECT_EQ(p.proxy_tsval, pending[0].proxy_tsval);

  ASSERT_NO_FATAL_FAILURE(answerSplice(active, o));
  std::vector<Flow> changed = drainChanged(active);
  ASSERT_EQ(changed.size(), 1u);
  const Flow& a = changed[0];
  ASSERT_TRUE(a.splice);
  ASSERT_FALSE(a.splice_pending);
  ASSERT_TRUE(a.has_ts_adj);
  ASSERT_TRUE(a.rescale_window);  // the backend's shift 9 differs from the offered one
  const Flow b = roundTrip(a);
  EXPECT_TRUE(b.splice);
  EXPECT_FALSE(b.splice_pending);
  EXPECT_EQ(b.has_ts_adj, a.has_ts_adj);
  EXPECT_EQ(b.rescale_window, a.rescale_window);
  EXPECT_EQ(b.backend_wscale, a.backend_wscale);
  EXPECT_EQ(b.client_view_wscale, a.client_view_wscale);
  EXPECT_EQ(b.ts_offset, a.ts_offset);
  EXPECT_EQ(b.proxy_isn, a.proxy_isn);
  EXPECT_EQ(b.client_tsval, a.client_tsval);
  EXPECT_EQ(b.proxy_tsval, a.proxy_tsval);
  EXPECT_EQ(b.client_window, a.client_window);
  EXPECT_EQ(b.adj[0].offset_after, a.adj[0].offset_after);
  EXPECT_EQ(b.adj[1].offset_after, a.adj[1].offset_after);
  EXPECT_EQ(b.source_addr, a.source_addr);
  EXPECT_EQ(b.source_port, a.source_port);
  EXPECT_EQ(b.backend, a.backend);

  ASSERT_EQ(standby.installFlow(b, 2 * kSec), DropReason::kNone);
  expectStandbyTranslatesAlike(standby, active, o);
}

TEST_P(CheckpointCodec, PassthroughFlowRoundTrips) {
  Engine active(config(Mode::kPassthrough, GetParam()));
  Engine standby(config(Mode::kPassthrough, GetParam()));
  active.enableChangeTracking();
  auto syn = run(active, PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kSyn)
                             .seq(100).mss(1460).wscale(7).build());
  ASSERT_FALSE(syn.empty());
  const Endpoint backend = view(syn).dst(), source = view(syn).src();
  ASSERT_FALSE(run(active, PacketBuilder().src(backend.toString()).dst(source.toString())
                               .flags(kSyn | kAck).seq(900).ack(101).mss(1460).wscale(7)
                               .build()).empty());
  std::vector<Flow> changed = drainChanged(active);
  ASSERT_EQ(changed.size(), 1u);
  const Flow b = roundTrip(changed[0]);
  EXPECT_FALSE(b.splice);
  ASSERT_EQ(standby.installFlow(b, 2 * kSec), DropReason::kNone);
  auto ack = PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                 .seq(101).ack(901).build();
  EXPECT_EQ(run(standby, ack, 2 * kSec), run(active, ack, 2 * kSec));
}

INSTANTIATE_TEST_SUITE_P(Addressing, CheckpointCodec,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

TEST(CheckpointCodecRecord, SpliceRecordOfRevision10IsRefusedPassthroughAccepted) {
  sync::FlowRecord r;
  r.mode = static_cast<uint8_t>(Mode::kSplice);
  r.tcp_state = static_cast<uint8_t>(TcpState::kEstablished);
  r.splice_fields = false;  // as decoded from a 168-byte item
  Flow f;
  EXPECT_FALSE(recordToFlow(r, f));
  r.splice_fields = true;
  EXPECT_TRUE(recordToFlow(r, f));
  EXPECT_TRUE(f.splice);
  r.mode = static_cast<uint8_t>(Mode::kPassthrough);
  r.splice_fields = false;
  EXPECT_TRUE(recordToFlow(r, f));
  EXPECT_FALSE(f.splice);
  r.tcp_state = sync::kTcpStateCount;
  EXPECT_FALSE(recordToFlow(r, f));
}

}  // namespace
}  // namespace tandem
