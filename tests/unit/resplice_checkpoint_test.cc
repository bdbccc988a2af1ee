// Re-splicing and the proxy pair: a moved flow reaches the standby as a checkpoint (once at the
// start of the move, once when the new leg is up, never per packet), survives engine -> record ->
// sync frame -> engine, and the standby translates the next segments byte for byte as the
// active does. A standby's engine never acts on a backend state change: it forwards nothing.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/tandemd/flow_record.h"
#include "sync/wire.h"
#include "tests/unit/packet_builder.h"
#include "tests/unit/resplice_fixture.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08;
using namespace test::resplice;  // kNow, kClient, kVip, kBe1, kBe2, config()

struct Seen {
  Verdict verdict = Verdict::kDrop;
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
  TcpOptions opts;
};

Seen run(Engine& e, std::vector<uint8_t> p, uint64_t now = kNow) {
  const size_t len = p.size();
  p.resize(256);
  const Decision d = e.process(p.data(), len, p.size(), {}, now);
  Seen s;
  s.verdict = d.verdict;
  if (d.verdict != Verdict::kAccept) return s;
  p.resize(d.len);
  s.bytes = p;
  EXPECT_EQ(parseTcpPacket(s.bytes.data(), s.bytes.size(), s.pkt), ParseError::kNone);
  EXPECT_EQ(parseTcpOptions(s.pkt.options(), s.pkt.optionsLen(), s.opts), OptionError::kNone);
  return s;
}

std::vector<TcpPacket> outbox(Engine& e, std::vector<std::vector<uint8_t>>& keep) {
  std::vector<TcpPacket> out;
  keep.clear();
  e.drainOutbox([&](const uint8_t* p, size_t n) { keep.emplace_back(p, p + n); });
  for (auto& b : keep) {
    TcpPacket v;
    EXPECT_EQ(parseTcpPacket(b.data(), b.size(), v), ParseError::kNone);
    out.push_back(v);
  }
  return out;
}

std::vector<Flow> drainChanged(Engine& e) {
  std::vector<Flow> out;
  e.drainChanges([](const FlowKey&) {}, [&](const Flow& f) { out.push_back(f); });
  return out;
}

/// Flow -> record -> FLOW_UPSERT in a frame -> record -> Flow.
Flow overTheWire(const Flow& f) {
  struct Sink : sync::SectionHandler {
    std::vector<sync::FlowRecord> out;
    void onFlowUpsert(const sync::FlowUpsert& u) noexcept override { out.push_back(u.flow); }
  } sink;
  const sync::FlowRecord sent = flowToRecord(f, f.last_seen_ns);
  std::vector<uint8_t> frame;
  sync::FrameWriter w(frame);
  EXPECT_TRUE(w.add(sync::FlowUpsert{1, sent}));
  w.finish({});
  const sync::HeaderResult h = sync::decodeHeader(frame);
  EXPECT_EQ(h.error, sync::WireError::kNone);
  EXPECT_EQ(sync::decodePayload(h.payload, sink).error, sync::WireError::kNone);
  EXPECT_EQ(sink.out.size(), 1u);
  if (sink.out.empty()) return {};
  EXPECT_EQ(sink.out[0], sent);
  Flow back;
  EXPECT_TRUE(recordToFlow(sink.out[0], back));
  EXPECT_EQ(flowToRecord(back, 0), sent);
  return back;
}

/// A spliced, quiescent connection on backend 1 of `e`, after one request and its response.
struct Conn {
  std::string backend, source;
  uint32_t cseq = 0, view = 0, bseq = 0, client_ts = 100, seen_ts = 0, backend_ts = 5000;

  explicit Conn(Engine& e) {
    auto sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(1000).mss(1460)
                         .wscale(6).sackPermitted().timestamp(client_ts, 0).build());
    view = sa.pkt.seq() + 1;
    seen_ts = sa.opts.ts_val;
    cseq = 1001;
    auto syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(cseq).ack(view)
                          .window(1000).timestamp(++client_ts, seen_ts).build());
    backend = syn.pkt.dst().toString();
    source = syn.pkt.src().toString();
    run(e, PacketBuilder().src(backend).dst(source).flags(kSyn | kAck).seq(7000).ack(cseq)
               .mss(1460).wscale(9).sackPermitted().timestamp(backend_ts, client_ts).build());
    bseq = 7001;
    EXPECT_EQ(request(e, 30).verdict, Verdict::kAccept);
    EXPECT_EQ(response(e, 100).verdict, Verdict::kAccept);
    EXPECT_EQ(backendAck(e).verdict, Verdict::kAccept);
    EXPECT_EQ(clientAck(e).verdict, Verdict::kAccept);
  }
  std::vector<uint8_t> requestPacket(size_t n) const {
    return PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(cseq).ack(view)
        .window(1000).timestamp(client_ts + 1, seen_ts).payloadSize(n).build();
  }
  std::vector<uint8_t> responsePacket(size_t n) const {
    return PacketBuilder().src(backend).dst(source).flags(kAck | kPsh).seq(bseq).ack(cseq)
        .window(500).timestamp(backend_ts + 1, client_ts).payloadSize(n, 'r').build();
  }
  std::vector<uint8_t> backendAckPacket() const {
    return PacketBuilder().src(backend).dst(source).flags(kAck).seq(bseq).ack(cseq).window(500)
        .timestamp(backend_ts + 1, client_ts).build();
  }
  std::vector<uint8_t> clientAckPacket() const {
    return PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(cseq).ack(view).window(1000)
        .timestamp(client_ts + 1, seen_ts).build();
  }
  // Each step advances the connection's numbers as the real ends would.
  Seen request(Engine& e, size_t n) {
    Seen s = run(e, requestPacket(n));
    ++client_ts;
    cseq += static_cast<uint32_t>(n);
    return s;
  }
  Seen response(Engine& e, size_t n) {
    Seen s = run(e, responsePacket(n));
    ++backend_ts;
    bseq += static_cast<uint32_t>(n);
    if (s.verdict == Verdict::kAccept) {
      EXPECT_EQ(s.pkt.seq(), view) << "the client's view of its server continues";
      view += static_cast<uint32_t>(n);
      seen_ts = s.opts.ts_val;
    }
    return s;
  }
  Seen backendAck(Engine& e) {
    Seen s = run(e, backendAckPacket());
    ++backend_ts;
    return s;
  }
  Seen clientAck(Engine& e) {
    Seen s = run(e, clientAckPacket());
    ++client_ts;
    return s;
  }
};

class RespliceCheckpoint : public ::testing::TestWithParam<Addressing> {};

TEST_P(RespliceCheckpoint, MovedFlowRoundTripsAndTheStandbyTranslatesItAlike) {
  Engine active(config(GetParam()));
  active.enableChangeTracking();
  Conn c(active);
  ASSERT_EQ(c.backend, kBe1);
  drainChanged(active);  // the first splice's checkpoints

  active.noteBackendAlive(0, 0, kNow);
  active.setBackendState(0, 0, BackendState::kDown, kNow);
  std::vector<std::vector<uint8_t>> keep;
  const auto out = outbox(active, keep);
  ASSERT_EQ(out.size(), 2u);  // the old leg's RST, the new leg's SYN
  ASSERT_EQ(out[1].flags(), kSyn);
  const std::string new_source = out[1].src().toString();

  // The start of the move is one checkpoint: the new backend and source, pending, moving.
  std::vector<Flow> started = drainChanged(active);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_TRUE(started[0].moving);
  EXPECT_TRUE(started[0].splice_pending);
  const Flow s = overTheWire(started[0]);
  EXPECT_TRUE(s.moving);
  EXPECT_TRUE(s.splice_pending);
  EXPECT_EQ(s.backend, 1);
  EXPECT_EQ(s.backendEp().toString(), kBe2);
  EXPECT_EQ(s.source().toString(), new_source);
  EXPECT_EQ(s.proxy_isn, started[0].proxy_isn);
  EXPECT_EQ(s.proxy_tsval, started[0].proxy_tsval);

  // The new backend answers near the wrap; the completed binding is the second checkpoint.
  c.backend = kBe2;
  c.source = new_source;
  c.backend_ts = 9;
  const uint32_t new_isn = 0xfffffff0u;
  auto ack = run(active, PacketBuilder().src(kBe2).dst(c.source).flags(kSyn | kAck)
                             .seq(new_isn).ack(c.cseq).mss(1460).wscale(2).sackPermitted()
                             .timestamp(c.backend_ts, c.client_ts).build());
  ASSERT_EQ(ack.verdict, Verdict::kAccept);
  ASSERT_EQ(ack.pkt.flags(), kAck);
  c.bseq = new_isn + 1;
  std::vector<Flow> done = drainChanged(active);
  ASSERT_EQ(done.size(), 1u);
  const Flow& a = done[0];
  EXPECT_FALSE(a.moving);
  EXPECT_FALSE(a.splice_pending);
  EXPECT_EQ(a.adj[1].correction_pos, new_isn);
  const Flow b = overTheWire(a);
  EXPECT_FALSE(b.moving);
  EXPECT_FALSE(b.splice_pending);
  EXPECT_EQ(b.backend, a.backend);
  EXPECT_EQ(b.backend_addr, a.backend_addr);
  EXPECT_EQ(b.backend_port, a.backend_port);
  EXPECT_EQ(b.source_addr, a.source_addr);
  EXPECT_EQ(b.source_port, a.source_port);
  for (size_t d = 0; d < 2; ++d) {
    EXPECT_EQ(b.adj[d].correction_pos, a.adj[d].correction_pos);
    EXPECT_EQ(b.adj[d].offset_before, a.adj[d].offset_before);
    EXPECT_EQ(b.adj[d].offset_after, a.adj[d].offset_after);
    EXPECT_EQ(b.win[d].td_scale, a.win[d].td_scale);
  }
  EXPECT_EQ(b.has_seqadj, a.has_seqadj);
  EXPECT_EQ(b.ts_offset, a.ts_offset);
  EXPECT_EQ(b.has_ts_adj, a.has_ts_adj);
  EXPECT_EQ(b.rescale_window, a.rescale_window);
  EXPECT_EQ(b.backend_wscale, a.backend_wscale);
  EXPECT_EQ(b.client_view_wscale, a.client_view_wscale);
  EXPECT_EQ(b.client_spoke_last, a.client_spoke_last);

  // The standby, which also saw backend 1 go down, installs it and takes over.
  Engine standby(config(GetParam()));
  standby.setStandby(true, kNow);
  standby.setBackendState(0, 0, BackendState::kDown, kNow);
  ASSERT_EQ(standby.installFlow(b, kNow), DropReason::kNone);
  standby.setStandby(false, kNow);

  // Request and response across 2^32 of the new backend's space: byte for byte alike, and no
  // further checkpoint (per-packet changes are not hard state).
  for (int round = 0; round < 2; ++round) {
    auto req = c.requestPacket(30);
    const Seen via_standby = run(standby, req);
    ASSERT_EQ(via_standby.verdict, Verdict::kAccept);
    EXPECT_EQ(via_standby.pkt.dst().toString(), kBe2);
    EXPECT_EQ(via_standby.bytes, c.request(active, 30).bytes);
    auto resp = c.responsePacket(40);
    const Seen r = run(standby, resp);
    ASSERT_EQ(r.verdict, Verdict::kAccept);
    EXPECT_EQ(r.pkt.dst().toString(), kClient);
    EXPECT_EQ(r.bytes, c.response(active, 40).bytes);  // checks the client's view continues
    const Seen cack = run(standby, c.clientAckPacket());
    ASSERT_EQ(cack.verdict, Verdict::kAccept);
    EXPECT_EQ(cack.bytes, c.clientAck(active).bytes);
  }
  EXPECT_EQ(c.bseq, 0x41u);  // wrapped
  EXPECT_TRUE(drainChanged(active).empty()) << "a moved flow is checkpointed once, not per packet";
}

TEST_P(RespliceCheckpoint, ReSpliceFieldsRoundTrip) {
  Engine active(config(GetParam()));
  Conn c(active);
  Flow f;
  std::vector<Flow> all;
  active.forEachLiveFlow(0, 64, [&](const Flow& x) { all.push_back(x); });
  ASSERT_EQ(all.size(), 1u);
  for (int bits = 0; bits < 8; ++bits) {
    f = all[0];
    f.moving = (bits & 1) != 0;
    f.client_spoke_last = (bits & 2) != 0;
    f.splice_await_data = (bits & 4) != 0;
    const Flow b = overTheWire(f);
    EXPECT_EQ(b.moving, f.moving);
    EXPECT_EQ(b.client_spoke_last, f.client_spoke_last);
    EXPECT_EQ(b.splice_await_data, f.splice_await_data);
  }
}

TEST_P(RespliceCheckpoint, AStandbyEmitsNothingOnBackendStateChanges) {
  Engine active(config(GetParam()));
  active.enableChangeTracking();
  Conn c(active);
  std::vector<Flow> changed = drainChanged(active);
  ASSERT_EQ(changed.size(), 1u);
  Engine standby(config(GetParam()));
  standby.setStandby(true, kNow);
  ASSERT_EQ(standby.installFlow(overTheWire(changed[0]), kNow), DropReason::kNone);
  std::vector<std::vector<uint8_t>> keep;
  for (BackendState st : {BackendState::kDraining, BackendState::kDown, BackendState::kDisabled,
                          BackendState::kUp, BackendState::kDown}) {
    standby.noteBackendAlive(0, 0, kNow);
    standby.setBackendState(0, 0, st, kNow + kNow);
    standby.expire(kNow + kNow);
    EXPECT_TRUE(outbox(standby, keep).empty()) << backendStateName(st);
    EXPECT_EQ(standby.activeFlows(), 1u);
  }
  EXPECT_EQ(standby.counters().resplices_started, 0u);
  EXPECT_EQ(standby.backendStats(0, 0).flows_reset, 0u);
  EXPECT_EQ(standby.backendStats(0, 0).state, BackendState::kDown);

  // Taking over, the former standby acts on what its checker found: the expiry sweep moves or
  // resets the flows of the down backend (here reset: the flow's last packet came after the last
  // passed check, as the takeover refreshes every flow's clock).
  standby.setStandby(false, 3 * kNow);
  standby.expire(3 * kNow);
  const auto out = outbox(standby, keep);
  ASSERT_FALSE(out.empty());
  for (const TcpPacket& p : out) EXPECT_EQ(p.flags() & kRst, kRst);
  EXPECT_EQ(standby.backendStats(0, 0).flows_reset, 1u);
  EXPECT_EQ(standby.activeFlows(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Addressing, RespliceCheckpoint,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

}  // namespace
}  // namespace tandem
