// Backend states, quiescence, re-splicing and flow resets (proxy/core/resplice.cc) through the
// engine, plus the pure arithmetic of resplice.h, including wrap at 2^32.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "common/packet.h"
#include "common/segment_writer.h"
#include "common/seq.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/resplice.h"
#include "proxy/core/translator.h"
#include "tests/unit/packet_builder.h"
#include "tests/unit/resplice_fixture.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08, kFin = 0x01;
using namespace test::resplice;  // kNow, kClient, kVip, kBe1, kBe2, config()

struct Seen {
  Decision d;
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
  TcpOptions opts;
};

Seen parsed(std::vector<uint8_t> bytes) {
  Seen s;
  s.bytes = std::move(bytes);
  EXPECT_EQ(parseTcpPacket(s.bytes.data(), s.bytes.size(), s.pkt), ParseError::kNone);
  EXPECT_EQ(parseTcpOptions(s.pkt.options(), s.pkt.optionsLen(), s.opts), OptionError::kNone);
  return s;
}

Seen run(Engine& e, std::vector<uint8_t> p, uint64_t now = kNow, bool can_hold = false) {
  const size_t len = p.size();
  p.resize(256);
  PacketMeta meta;
  meta.can_hold = can_hold;
  const Decision d = e.process(p.data(), len, p.size(), meta, now);
  Seen s;
  if (d.verdict == Verdict::kAccept) {
    p.resize(d.len);
    s = parsed(p);
  }
  s.d = d;
  return s;
}

std::vector<Seen> outbox(Engine& e) {
  std::vector<Seen> out;
  e.drainOutbox([&](const uint8_t* p, size_t n) { out.push_back(parsed({p, p + n})); });
  return out;
}

bool quiescent(Engine& e) {
  bool q = false;
  size_t n = 0;
  e.forEachFlow([&](const FlowInfo& f) { q = f.quiescent; ++n; }, kNow);
  EXPECT_EQ(n, 1u);
  return q;
}

/// One spliced connection, driven from both ends. Sequence numbers: the client's own; the
/// client's view of its server (from the cookie on); the current backend's.
struct Conn {
  Engine& e;
  std::string backend;
  std::string source;     // the backend leg's source, as the backend sees it
  uint32_t cseq = 0;      // client's next sequence number
  uint32_t view = 0;      // next server byte the client expects (client view)
  uint32_t bseq = 0;      // backend's next sequence number (backend space)
  uint32_t backend_acked = 0;  // the backend's latest ack
  uint32_t client_ts = 100;
  uint32_t seen_ts = 0;   // newest TSval the client has received
  uint32_t backend_ts = 5000;
  bool manual_ack = false;  // the client acks cack, not everything it received
  uint32_t cack = 0;
  uint32_t clientAckValue() const { return manual_ack ? cack : view; }

  Conn(Engine& engine, uint32_t client_isn, uint32_t backend_isn) : e(engine) {
    auto sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(client_isn)
                         .mss(1460).wscale(6).sackPermitted().timestamp(client_ts, 0).build());
    EXPECT_EQ(sa.d.verdict, Verdict::kAccept);
    view = sa.pkt.seq() + 1;
    seen_ts = sa.opts.ts_val;
    cseq = client_isn + 1;
    auto syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(cseq).ack(view)
                          .window(1000).timestamp(++client_ts, seen_ts).build());
    EXPECT_EQ(syn.pkt.flags(), kSyn);
    backend = syn.pkt.dst().toString();
    source = syn.pkt.src().toString();
    auto ack = run(e, PacketBuilder().src(backend).dst(source).flags(kSyn | kAck)
                          .seq(backend_isn).ack(cseq).mss(1460).wscale(9).sackPermitted()
                          .timestamp(backend_ts, client_ts).build());
    EXPECT_EQ(ack.pkt.flags(), kAck);
    bseq = backend_isn + 1;
    backend_acked = cseq;
  }
  Seen clientData(size_t n, bool can_hold = false) {
    auto s = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(cseq)
                        .ack(clientAckValue())
                        .window(1000).timestamp(++client_ts, seen_ts).payloadSize(n).build(),
                 kNow, can_hold);
    if (s.d.verdict != Verdict::kHold) cseq += static_cast<uint32_t>(n);
    return s;
  }
  Seen clientAck() {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(cseq).ack(clientAckValue())
                      .window(1000).timestamp(++client_ts, seen_ts).build());
  }
  Seen backendAck(uint32_t through) {
    backend_acked = through;
    auto s = run(e, PacketBuilder().src(backend).dst(source).flags(kAck).seq(bseq).ack(through)
                        .window(500).timestamp(++backend_ts, client_ts).build());
    if (s.d.verdict == Verdict::kAccept) seen_ts = s.opts.ts_val;
    return s;
  }
  Seen backendData(size_t n) {
    auto s = run(e, PacketBuilder().src(backend).dst(source).flags(kAck | kPsh).seq(bseq)
                        .ack(backend_acked).window(500).timestamp(++backend_ts, client_ts)
                        .payloadSize(n, 'r').build());
    EXPECT_EQ(s.d.verdict, Verdict::kAccept);
    if (s.d.verdict == Verdict::kAccept) {
      EXPECT_EQ(s.pkt.seq(), view) << "the client's view of its server continues";
      view += static_cast<uint32_t>(n);
      seen_ts = s.opts.ts_val;
    }
    bseq += static_cast<uint32_t>(n);
    return s;
  }
  /// A request and its response, all acknowledged: quiescent afterwards.
  void exchange() {
    clientData(30);
    backendData(100);
    backendAck(cseq);
    clientAck();
  }
};

// ---------------------------------------------------------------------------------------------
// Quiescence

/// Every interleaving of two client segments, the backend's acks of them, two backend segments
/// and the client's acks of those (each ack after its data, in order): the flow is quiescent
/// exactly when every byte sent either way has been acknowledged and the last payload was not
/// the client's (a request the backend took but has not answered is not "between requests").
TEST(Quiescence, EveryInterleavingOfDataAndAck) {
  enum Ev { kC1, kC2, kAb1, kAb2, kS1, kS2, kAc1, kAc2 };
  auto allowed = [](const std::vector<int>& done, int ev) {
    auto has = [&](int x) { return std::find(done.begin(), done.end(), x) != done.end(); };
    switch (ev) {
      case kC2: return has(kC1);
      case kAb1: return has(kC1);
      case kAb2: return has(kC2) && has(kAb1);
      case kS2: return has(kS1);
      case kAc1: return has(kS1);
      case kAc2: return has(kS2) && has(kAc1);
      default: return true;
    }
  };
  size_t orders = 0;
  std::vector<int> order;
  std::function<void()> walk = [&]() {
    if (order.size() == 8) {
      ++orders;
      Engine e(config(Addressing::kTransparent));
      Conn c(e, 1000, 7000);
      ASSERT_TRUE(quiescent(e)) << "after the handshake";
      const uint32_t c0 = c.cseq;
      const uint32_t view0 = c.view;
      c.manual_ack = true;
      c.cack = view0;
      int sent_c = 0, acked_c = 0, sent_s = 0, acked_s = 0;
      bool client_last = false;  // the last payload was the client's: a request unanswered
      std::string trace;
      for (int ev : order) {
        trace += std::to_string(ev) + " ";
        switch (ev) {
          case kC1: case kC2:
            c.clientData(10);
            ++sent_c;
            client_last = true;
            break;
          case kAb1: case kAb2:
            ++acked_c;
            c.backendAck(c0 + 10u * static_cast<uint32_t>(acked_c));
            break;
          case kS1: case kS2:
            c.backendData(20);
            ++sent_s;
            client_last = false;
            break;
          case kAc1: case kAc2: {
            ++acked_s;
            c.cack = view0 + 20u * static_cast<uint32_t>(acked_s);
            c.clientAck();
            break;
          }
        }
        EXPECT_EQ(quiescent(e), sent_c == acked_c && sent_s == acked_s && !client_last)
            << "events " << trace;
      }
      return;
    }
    for (int ev = 0; ev < 8; ++ev) {
      if (std::find(order.begin(), order.end(), ev) != order.end() || !allowed(order, ev)) continue;
      order.push_back(ev);
      walk();
      order.pop_back();
    }
  };
  walk();
  EXPECT_EQ(orders, 280u);  // 2 client orders x 2 server orders x C(8,4) merges
}

TEST(Quiescence, AFinEitherWayIsNeverQuiescent) {
  for (bool from_client : {true, false}) {
    Engine e(config(Addressing::kTransparent));
    Conn c(e, 1000, 7000);
    c.exchange();
    ASSERT_TRUE(quiescent(e));
    if (from_client) {
      run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kFin).seq(c.cseq).ack(c.view)
                 .timestamp(++c.client_ts, c.seen_ts).build());
      c.backendAck(c.cseq + 1);
    } else {
      run(e, PacketBuilder().src(c.backend).dst(c.source).flags(kAck | kFin).seq(c.bseq)
                 .ack(c.cseq).timestamp(++c.backend_ts, c.client_ts).build());
      ++c.view;
      c.clientAck();
    }
    EXPECT_FALSE(quiescent(e)) << (from_client ? "client FIN" : "backend FIN");
  }
}

// ---------------------------------------------------------------------------------------------
// Backend states and the scheduler

TEST(BackendState, NewFlowsGoOnlyToUpBackendsAndNoneUpIsCounted) {
  Engine e(config(Addressing::kTransparent));
  e.setBackendState(0, 0, BackendState::kDraining, kNow);
  for (uint16_t port = 41000; port < 41004; ++port) {
    const std::string client = "10.0.0.2:" + std::to_string(port);
    auto sa = run(e, PacketBuilder().src(client).dst(kVip).flags(kSyn).seq(1).mss(1460).build());
    auto syn = run(e, PacketBuilder().src(client).dst(kVip).flags(kAck).seq(2)
                          .ack(sa.pkt.seq() + 1).build());
    ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
    EXPECT_EQ(syn.pkt.dst().toString(), kBe2);
  }
  e.setBackendState(0, 1, BackendState::kDown, kNow);
  auto sa = run(e, PacketBuilder().src("10.0.0.2:42000").dst(kVip).flags(kSyn).seq(1).mss(1460)
                       .build());
  auto refused = run(e, PacketBuilder().src("10.0.0.2:42000").dst(kVip).flags(kAck).seq(2)
                            .ack(sa.pkt.seq() + 1).build());
  EXPECT_EQ(refused.d.reason, DropReason::kNoBackend);
  EXPECT_EQ(e.counters().dropped(DropReason::kNoBackend), 1u);
  EXPECT_EQ(e.backendStats(0, 1).state, BackendState::kDown);
  e.setBackendState(0, 0, BackendState::kUp, kNow);
  auto sa2 = run(e, PacketBuilder().src("10.0.0.2:42001").dst(kVip).flags(kSyn).seq(1).mss(1460)
                        .build());
  auto back = run(e, PacketBuilder().src("10.0.0.2:42001").dst(kVip).flags(kAck).seq(2)
                         .ack(sa2.pkt.seq() + 1).build());
  EXPECT_EQ(back.pkt.dst().toString(), kBe1);
}

TEST(BackendState, RstsFromABackendAreCountedForTheHealthLayer) {
  Engine e(config(Addressing::kTransparent, /*resplice=*/false));
  Conn c(e, 1000, 7000);
  run(e, PacketBuilder().src(c.backend).dst(c.source).flags(kRst | kAck).seq(c.bseq).ack(c.cseq)
             .build());
  EXPECT_EQ(e.backendStats(0, 0).rsts, 1u);
  EXPECT_EQ(e.backendStats(0, 1).rsts, 0u);
}

/// A request the backend leaves unacknowledged: the client's retransmission 150 ms or more after
/// the request is a stall (passive health signal), counted once per wait; none on a backend that
/// acknowledged, none before 150 ms, none without resplice.
TEST(BackendState, AClientResendingToASilentBackendIsAStall) {
  for (bool resplice : {true, false}) {
    Engine e(config(Addressing::kTransparent, resplice));
    Conn c(e, 1000, 7000);
    c.exchange();
    const uint64_t ms = 1'000'000;
    auto request = [&](uint64_t at) {
      return run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(c.cseq)
                        .ack(c.view).window(1000).timestamp(++c.client_ts, c.seen_ts)
                        .payloadSize(30).build(), at);
    };
    EXPECT_EQ(request(kNow + 1000 * ms).d.verdict, Verdict::kAccept);  // after 1 s idle
    EXPECT_EQ(request(kNow + 1100 * ms).d.verdict, Verdict::kAccept);  // resent at 100 ms
    EXPECT_EQ(e.backendStats(0, 0).stalls, 0u) << "100 ms is within a delayed ACK";
    request(kNow + 1300 * ms);                                          // resent at 300 ms
    EXPECT_EQ(e.backendStats(0, 0).stalls, resplice ? 1u : 0u);
    request(kNow + 1700 * ms);                                          // and again
    EXPECT_EQ(e.backendStats(0, 0).stalls, resplice ? 1u : 0u) << "once per wait";
    // The backend answers; the next request is acknowledged at once: no stall.
    c.cseq += 30;
    run(e, PacketBuilder().src(c.backend).dst(c.source).flags(kAck).seq(c.bseq).ack(c.cseq)
               .window(500).timestamp(++c.backend_ts, c.client_ts).build(), kNow + 1750 * ms);
    request(kNow + 2000 * ms);
    c.cseq += 30;
    run(e, PacketBuilder().src(c.backend).dst(c.source).flags(kAck).seq(c.bseq).ack(c.cseq)
               .window(500).timestamp(++c.backend_ts, c.client_ts).build(), kNow + 2010 * ms);
    request(kNow + 2500 * ms);  // more data, 490 ms after the backend's last ack: a new wait
    EXPECT_EQ(e.backendStats(0, 0).stalls, resplice ? 1u : 0u) << "acknowledged data is no stall";
    request(kNow + 2800 * ms);  // resent 300 ms after
    EXPECT_EQ(e.backendStats(0, 0).stalls, resplice ? 2u : 0u);
  }
}

// ---------------------------------------------------------------------------------------------
// Re-splice

class Resplice : public ::testing::TestWithParam<Addressing> {};

TEST_P(Resplice, QuiescentFlowMovesAndTheClientSpaceContinuesAcrossTheWrap) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  c.exchange();
  ASSERT_TRUE(quiescent(e));
  ASSERT_EQ(c.backend, kBe1);
  const uint32_t view_before = c.view;
  const uint32_t ts_before = c.seen_ts;

  e.noteBackendAlive(0, 0, kNow);  // a check passed after the flow went idle
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u);
  // The old leg gets a RST at exactly its RCV.NXT.
  EXPECT_EQ(out[0].pkt.flags(), kRst | kAck);
  EXPECT_EQ(out[0].pkt.dst().toString(), kBe1);
  EXPECT_EQ(out[0].pkt.src().toString(), c.source);
  EXPECT_EQ(out[0].pkt.seq(), c.cseq);
  EXPECT_EQ(out[0].pkt.ack(), c.bseq);
  EXPECT_TRUE(checksumsValid(out[0].bytes));
  // The new leg's SYN: the client's next sequence number - 1 and the client's options.
  const Seen& syn = out[1];
  EXPECT_EQ(syn.pkt.flags(), kSyn);
  EXPECT_EQ(syn.pkt.dst().toString(), kBe2);
  EXPECT_EQ(syn.pkt.seq(), c.cseq - 1);
  EXPECT_EQ(syn.opts.mss, 1460);
  EXPECT_TRUE(syn.opts.has_wscale);
  EXPECT_EQ(syn.opts.wscale, 6);
  EXPECT_TRUE(syn.opts.sack_permitted);
  EXPECT_TRUE(syn.opts.has_timestamp);
  EXPECT_EQ(syn.opts.ts_val, c.client_ts);
  EXPECT_TRUE(checksumsValid(syn.bytes));
  if (GetParam() == Addressing::kSnat) {
    EXPECT_EQ(syn.pkt.src().addr.toString(), "10.1.0.1");
    EXPECT_NE(syn.pkt.src().toString(), c.source) << "a new SNAT port";
  } else {
    EXPECT_EQ(syn.pkt.src().toString(), kClient);
  }
  EXPECT_EQ(e.counters().resplices_started, 1u);
  EXPECT_EQ(e.backendStats(0, 0).flows_moved, 1u);
  EXPECT_EQ(e.activeFlows(), 1u);

  // The old backend's late segments find no flow.
  auto late = run(e, PacketBuilder().src(kBe1).dst(c.source).flags(kAck).seq(c.bseq).ack(c.cseq)
                         .build());
  EXPECT_EQ(late.d.verdict, Verdict::kDrop);

  // The next request arrives while the new leg opens: held.
  auto held = c.clientData(30, /*can_hold=*/true);
  EXPECT_EQ(held.d.verdict, Verdict::kHold);

  // The new backend answers with an ISN just below 2^32 and its own clock and scale.
  c.backend = kBe2;
  c.source = syn.pkt.src().toString();
  c.backend_ts = 7;
  auto ack = run(e, PacketBuilder().src(kBe2).dst(c.source).flags(kSyn | kAck).seq(0xfffffff0u)
                        .ack(c.cseq).mss(1460).wscale(2).sackPermitted()
                        .timestamp(c.backend_ts, c.client_ts).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(ack.pkt.flags(), kAck);
  EXPECT_EQ(ack.pkt.dst().toString(), kBe2);
  EXPECT_EQ(ack.pkt.seq(), c.cseq);
  EXPECT_EQ(ack.pkt.ack(), 0xfffffff1u);
  EXPECT_EQ(ack.opts.ts_ecr, 7u);
  EXPECT_TRUE(checksumsValid(ack.bytes));
  EXPECT_EQ(e.counters().resplices_completed, 1u);
  c.bseq = 0xfffffff1u;
  c.backend_acked = c.cseq;

  // The held request goes to the new backend, its ack and TSecr in the new backend's spaces.
  auto req = c.clientData(30, true);
  ASSERT_EQ(req.d.verdict, Verdict::kAccept);
  EXPECT_EQ(req.pkt.dst().toString(), kBe2);
  EXPECT_EQ(req.pkt.ack(), 0xfffffff1u);
  // The client echoes the newest TSval it saw, one below where the new clock starts (7).
  EXPECT_EQ(req.opts.ts_ecr, 6u);
  EXPECT_TRUE(checksumsValid(req.bytes));

  // The response crosses 2^32 in the new backend's space; the client's view goes on from where
  // the old backend stopped, its timestamps above the newest the client saw.
  c.backendAck(c.cseq);
  auto r1 = c.backendData(40);  // checks seq == view
  EXPECT_EQ(r1.pkt.seq(), view_before);
  EXPECT_TRUE(seqAfter(r1.opts.ts_val, ts_before));
  EXPECT_EQ(r1.pkt.window(), (500u << 2) >> 7);  // re-expressed in the scale the client knows
  EXPECT_TRUE(checksumsValid(r1.bytes));
  auto r2 = c.backendData(40);
  EXPECT_EQ(c.bseq, 0x41u);  // 0xfffffff1 + 80, wrapped
  EXPECT_EQ(r2.pkt.seq(), view_before + 40);
  auto cack = c.clientAck();
  EXPECT_EQ(cack.pkt.ack(), 0x41u);
  EXPECT_TRUE(quiescent(e));
}

TEST_P(Resplice, RequestUnansweredByADeadBackendIsReplayedToTheNewOne) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  const uint32_t request = c.cseq;
  c.clientData(30);  // sent to the backend, which dies: never acknowledged
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  EXPECT_EQ(e.counters().flows_reset_in_flight, 0u);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pkt.seq(), request) << "the old backend's RCV.NXT";
  EXPECT_EQ(out[1].pkt.flags(), kSyn);
  EXPECT_EQ(out[1].pkt.seq(), request - 1) << "the new leg starts before the request";
  // The client's retransmission of the request is held, then goes to the new backend.
  c.cseq = request;
  EXPECT_EQ(c.clientData(30, true).d.verdict, Verdict::kHold);
  c.source = out[1].pkt.src().toString();
  c.backend = kBe2;
  auto ack = run(e, PacketBuilder().src(kBe2).dst(c.source).flags(kSyn | kAck).seq(300)
                        .ack(request).mss(1460).timestamp(1, c.client_ts).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(ack.pkt.seq(), request);
  auto again = c.clientData(30, true);
  ASSERT_EQ(again.d.verdict, Verdict::kAccept);
  EXPECT_EQ(again.pkt.dst().toString(), kBe2);
  EXPECT_EQ(again.pkt.seq(), request);
  EXPECT_EQ(again.pkt.ack(), 301u);
}

TEST_P(Resplice, ARequestTheDeadBackendAcknowledgedCannotBeReplayed) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  c.clientData(30);
  c.backendAck(c.cseq);  // the backend took the request, then died before answering
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  EXPECT_EQ(e.counters().flows_reset_in_flight, 1u);
  EXPECT_EQ(e.counters().resplices_started, 0u);
}

TEST_P(Resplice, ABackendClosingAnIdleFlowIsHiddenFromTheClient) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  {
    // A FIN right after the response may end it (close-delimited): the client sees it.
    Engine e0(config(GetParam()));
    Conn c0(e0, 1000, 7000);
    c0.exchange();
    auto early = run(e0, PacketBuilder().src(c0.backend).dst(c0.source).flags(kAck | kFin)
                             .seq(c0.bseq).ack(c0.cseq).timestamp(c0.backend_ts + 1, c0.client_ts)
                             .build(), kNow + 100'000'000ull);
    EXPECT_EQ(early.d.verdict, Verdict::kAccept);
    EXPECT_EQ(early.pkt.dst().toString(), kClient);
    EXPECT_TRUE(outbox(e0).empty());
  }
  // Later, the backend process dies (or its keep-alive timer fires): its kernel sends a FIN.
  auto fin = run(e, PacketBuilder().src(c.backend).dst(c.source).flags(kAck | kFin).seq(c.bseq)
                        .ack(c.cseq).timestamp(++c.backend_ts, c.client_ts).build(),
                 kNow + 1'000'000'000ull);
  EXPECT_EQ(fin.d.reason, DropReason::kBackendClosed);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pkt.flags(), kRst | kAck);
  EXPECT_EQ(out[0].pkt.dst().toString(), kBe1);
  EXPECT_EQ(out[0].pkt.seq(), c.cseq);
  EXPECT_EQ(out[1].pkt.flags(), kSyn);
  EXPECT_EQ(out[1].pkt.seq(), c.cseq - 1);
  EXPECT_EQ(e.counters().resplices_started, 1u);
  // A FIN after an unanswered request (or carrying data) is the backend's to send.
  Engine e2(config(GetParam()));
  Conn d(e2, 1000, 7000);
  d.exchange();
  d.clientData(10);
  d.backendAck(d.cseq);
  auto fin2 = run(e2, PacketBuilder().src(d.backend).dst(d.source).flags(kAck | kFin)
                          .seq(d.bseq).ack(d.cseq).timestamp(++d.backend_ts, d.client_ts).build());
  EXPECT_EQ(fin2.d.verdict, Verdict::kAccept);
  EXPECT_EQ(fin2.pkt.dst().toString(), kClient);
  EXPECT_TRUE(outbox(e2).empty());
}

TEST_P(Resplice, DrainingBackendKeepsBusyFlowsUntilTheyBecomeQuiescent) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  c.clientData(30);  // a request the backend has not acknowledged yet
  e.setBackendState(0, 0, BackendState::kDraining, kNow);
  EXPECT_TRUE(outbox(e).empty()) << "busy: stays";
  c.backendData(100);  // the response, acking the request
  c.backendAck(c.cseq);
  EXPECT_TRUE(outbox(e).empty()) << "the client has not acknowledged the response";
  auto last = c.clientAck();  // now quiescent, but maybe mid-response: not yet
  ASSERT_EQ(last.d.verdict, Verdict::kAccept);
  EXPECT_EQ(last.pkt.dst().toString(), kBe1);
  e.expire(kNow + 100'000'000ull);
  EXPECT_TRUE(outbox(e).empty()) << "idle for less than resplice_min_idle";
  e.expire(kNow + 300'000'000ull);  // settled: moves with the sweep
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pkt.flags(), kRst | kAck);
  EXPECT_EQ(out[0].pkt.dst().toString(), kBe1);
  EXPECT_EQ(out[1].pkt.flags(), kSyn);
  EXPECT_EQ(out[1].pkt.dst().toString(), kBe2);
  EXPECT_EQ(e.counters().resplices_started, 1u);
}

TEST_P(Resplice, DownBackendWithBytesInFlightResetsBothSides) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  c.clientData(30);        // unanswered request
  c.backendAck(c.cseq - 10);  // the backend acknowledged only part of it
  c.backendData(50);       // and sent bytes the client has not acknowledged
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_EQ(e.counters().flows_reset_in_flight, 1u);
  EXPECT_EQ(e.backendStats(0, 0).flows_reset, 1u);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 4u);
  // To the client: exactly its RCV.NXT if the 50 bytes arrived, and if they did not.
  EXPECT_EQ(out[0].pkt.dst().toString(), kClient);
  EXPECT_EQ(out[0].pkt.src().toString(), kVip);
  EXPECT_EQ(out[0].pkt.seq(), c.view);
  EXPECT_EQ(out[1].pkt.seq(), c.view - 50);
  // To the backend: all the client sent, and what the backend acknowledged.
  EXPECT_EQ(out[2].pkt.dst().toString(), kBe1);
  EXPECT_EQ(out[2].pkt.src().toString(), c.source);
  EXPECT_EQ(out[2].pkt.seq(), c.cseq);
  EXPECT_EQ(out[3].pkt.seq(), c.cseq - 10);
  for (const Seen& s : out) {
    EXPECT_EQ(s.pkt.flags(), kRst | kAck);
    EXPECT_EQ(s.pkt.payloadLen(), 0u);
    EXPECT_TRUE(checksumsValid(s.bytes));
  }
  EXPECT_EQ(out[0].pkt.ack(), c.cseq);
  EXPECT_EQ(out[2].pkt.ack(), c.bseq);
}

TEST_P(Resplice, AFlowActiveAfterTheLastPassedCheckMayHaveLostItsEndAndIsReset) {
  Engine e(config(GetParam()));
  e.noteBackendAlive(0, 0, kNow - 1);  // the last passed check came before the response
  Conn c(e, 1000, 7000);
  c.exchange();  // everything acknowledged: quiescent, but perhaps only half a response
  ASSERT_TRUE(quiescent(e));
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  EXPECT_EQ(e.counters().resplices_started, 0u);
  EXPECT_EQ(e.counters().flows_reset_in_flight, 1u);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].pkt.dst().toString(), kClient);
  EXPECT_EQ(out[0].pkt.seq(), c.view) << "exactly the client's RCV.NXT";
}

TEST_P(Resplice, ResplicOffResetsEvenQuiescentFlowsOfADownBackend) {
  Engine e(config(GetParam(), /*resplice=*/false));
  Conn c(e, 1000, 7000);
  c.exchange();
  e.setBackendState(0, 0, BackendState::kDisabled, kNow);
  EXPECT_EQ(e.counters().flows_reset_resplice_off, 1u);
  EXPECT_EQ(e.counters().resplices_started, 0u);
  auto out = outbox(e);
  ASSERT_EQ(out.size(), 2u) << "quiescent: one exact RST each way";
  EXPECT_EQ(out[0].pkt.seq(), c.view);
  EXPECT_EQ(out[1].pkt.seq(), c.cseq);
}

TEST_P(Resplice, NoUpBackendLeftResetsAndADrainingOneStays) {
  Engine e(config(GetParam()));
  Conn c(e, 1000, 7000);
  c.exchange();
  e.noteBackendAlive(0, 0, kNow);
  e.setBackendState(0, 1, BackendState::kDown, kNow);
  e.setBackendState(0, 0, BackendState::kDraining, kNow);
  EXPECT_TRUE(outbox(e).empty());
  EXPECT_EQ(e.activeFlows(), 1u);
  e.setBackendState(0, 0, BackendState::kDown, kNow);
  EXPECT_EQ(e.counters().flows_reset_no_backend, 1u);
  EXPECT_EQ(outbox(e).size(), 2u);
  EXPECT_EQ(e.activeFlows(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Addressing, Resplice,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

// ---------------------------------------------------------------------------------------------
// Pure arithmetic

Flow quiescentFlow(uint32_t client_next, uint32_t backend_next, int32_t backend_off) {
  Flow f;
  f.state = TcpState::kEstablished;
  f.splice = true;
  f.has_seqadj = true;
  f.adj[1] = {backend_next - 100, backend_off, backend_off};
  TcpWindow& c = f.win[0];
  TcpWindow& b = f.win[1];
  c.seen = b.seen = c.ack_seen = b.ack_seen = true;
  c.td_end = b.last_ack = client_next;
  b.td_end = c.last_ack = backend_next;
  return f;
}

TEST(RespliceArithmetic, PlanAndNewOffsetsWrapAt2To32) {
  struct Case {
    const char* what;
    uint32_t client_next, backend_next;
    int32_t off;
    uint32_t new_isn;
  } cases[] = {
      {"no wrap", 1000, 7000, 5000, 90000},
      {"client space wraps at the SYN", 0, 7000, 5000, 90000},
      {"client view wraps", 1000, 0xfffffff0u, 0x20, 90000},
      {"new backend ISN at the top", 1000, 7000, -7000, 0xffffffffu},
      {"offset of half the space", 1000, 7000, INT32_MIN, 3},
  };
  for (const Case& k : cases) {
    const Flow f = quiescentFlow(k.client_next, k.backend_next, k.off);
    ASSERT_TRUE(flowQuiescent(f)) << k.what;
    const ResplicePlan p = planResplice(f);
    EXPECT_EQ(p.syn_seq, k.client_next - 1) << k.what;
    const uint32_t view_next = k.backend_next + static_cast<uint32_t>(k.off);
    EXPECT_EQ(p.proxy_isn, view_next - 1) << k.what;
    const SeqAdj adj = spliceBackendAdj(p.proxy_isn, k.new_isn);
    // The new backend's first byte, and one 2^31 - 1 later, land where the client expects.
    EXPECT_EQ(seqForward(adj, k.new_isn + 1), view_next) << k.what;
    EXPECT_EQ(seqForward(adj, k.new_isn + 0x7fffffffu), view_next + 0x7ffffffeu) << k.what;
    // And the client's acks map back.
    EXPECT_EQ(ackBackward(adj, view_next), k.new_isn + 1) << k.what;
    EXPECT_EQ(ackBackward(adj, view_next + 1460), k.new_isn + 1461) << k.what;
  }
}

TEST(RespliceArithmetic, TimestampsContinueAboveTheNewestTheClientSaw) {
  Flow f = quiescentFlow(1000, 7000, 0);
  f.proxy_tsval = 42;  // the cookie's, or the newest backend TSval forwarded to the client
  EXPECT_EQ(planResplice(f).proxy_tsval, 43u);
  f.proxy_tsval = 0xffffffffu;
  EXPECT_EQ(planResplice(f).proxy_tsval, 1u) << "wraps, skipping 0 (no timestamps)";
  f.proxy_tsval = 123456;
  EXPECT_EQ(planResplice(f).proxy_tsval, 123457u);
}

TEST(RespliceArithmetic, GoldenResets) {
  Flow f = quiescentFlow(1000, 7000, 100);
  f.client_addr = *IpAddr::parse("10.0.0.2");
  f.client_port = 40000;
  f.vip_addr = *IpAddr::parse("10.0.0.100");
  f.vip_port = 80;
  f.backend_addr = *IpAddr::parse("10.1.0.2");
  f.backend_port = 8080;
  f.source_addr = *IpAddr::parse("10.1.0.1");
  f.source_port = 20000;
  // In flight both ways: the client sent 1000..1200, the backend acked 1100; the backend sent
  // 7000..7300, the client acked 7000.
  f.win[0].td_end = 1200;
  f.win[1].last_ack = 1100;
  f.win[1].td_end = 7300;
  f.win[0].last_ack = 7000;
  SegmentSpec out[4];
  ASSERT_EQ(buildFlowResets(f, out), 4u);
  struct Golden {
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint32_t seq, ack;
  } golden[] = {
      {0x0a000064, 0x0a000002, 80, 40000, 7400, 1200},
      {0x0a000064, 0x0a000002, 80, 40000, 7100, 1200},
      {0x0a010001, 0x0a010002, 20000, 8080, 1200, 7300},
      {0x0a010001, 0x0a010002, 20000, 8080, 1100, 7300},
  };
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i].saddr, golden[i].saddr) << i;
    EXPECT_EQ(out[i].daddr, golden[i].daddr) << i;
    EXPECT_EQ(out[i].sport, golden[i].sport) << i;
    EXPECT_EQ(out[i].dport, golden[i].dport) << i;
    EXPECT_EQ(out[i].seq, golden[i].seq) << i;
    EXPECT_EQ(out[i].ack, golden[i].ack) << i;
    EXPECT_EQ(out[i].flags, kRst | kAck) << i;
    EXPECT_EQ(out[i].options_len, 0u) << i;
  }
  // Quiescent: one exact RST each way.
  const Flow q = quiescentFlow(1000, 7000, 100);
  EXPECT_EQ(buildFlowResets(q, out), 2u);
  EXPECT_EQ(out[0].seq, 7100u);
  EXPECT_EQ(out[1].seq, 1000u);
}

}  // namespace
}  // namespace tandem
