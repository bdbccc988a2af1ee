// Splice mode through the engine: cookie SYN-ACK, late backend binding, the proxy completing the
// backend handshake, then translation of sequence space, timestamps and window scale.
#include <gtest/gtest.h>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08;
constexpr uint64_t kNow = 1'000'000'000ull;

EngineConfig spliceConfig(Addressing addressing) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080")};
  s.mode = Mode::kSplice;
  s.addressing = addressing;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  c.services.push_back(s);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  return c;
}

using test::Seen;

Seen run(Engine& e, std::vector<uint8_t> p, uint64_t now = kNow) {
  return test::runPacket(e, std::move(p), now);
}

TcpState stateOf(Engine& e) { return test::flowState(e, kNow); }

class Splice : public ::testing::TestWithParam<Addressing> {};

TEST_P(Splice, HandshakeBindingAndTranslation) {
  Engine e(spliceConfig(GetParam()));
  const std::string client = "10.0.0.2:40000";
  const std::string vip = "10.0.0.100:80";

  // 1. The client's SYN comes back as the proxy's SYN-ACK; no flow yet.
  auto sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(1000).mss(1460)
                       .wscale(6).sackPermitted().timestamp(111, 0).build());
  ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
  EXPECT_EQ(sa.pkt.flags(), kSyn | kAck);
  EXPECT_EQ(sa.pkt.src().toString(), vip);
  EXPECT_EQ(sa.pkt.dst().toString(), client);
  EXPECT_EQ(sa.pkt.ack(), 1001u);
  EXPECT_TRUE(sa.opts.has_timestamp);
  EXPECT_EQ(sa.opts.ts_ecr, 111u);
  EXPECT_EQ(sa.opts.wscale, 7);
  EXPECT_TRUE(checksumsValid(sa.bytes));
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_EQ(e.counters().syncookies_sent, 1u);
  const uint32_t cookie = sa.pkt.seq();
  const uint32_t proxy_ts = sa.opts.ts_val;

  // A forged ACK is refused and creates nothing.
  auto forged = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(1001)
                           .ack(cookie + 2).timestamp(112, proxy_ts).build());
  EXPECT_EQ(forged.d.reason, DropReason::kBadCookie);
  EXPECT_EQ(e.activeFlows(), 0u);

  // 2. The cookie ACK becomes the backend leg's SYN, with the client's own options.
  auto syn = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(1001).ack(cookie + 1)
                        .window(1000).timestamp(112, proxy_ts).build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  EXPECT_EQ(syn.pkt.flags(), kSyn);
  EXPECT_EQ(syn.pkt.seq(), 1000u);
  EXPECT_EQ(syn.pkt.dst().toString(), "10.1.0.2:8080");
  const Endpoint source = syn.pkt.src();
  EXPECT_EQ(source.addr.toString(),
            GetParam() == Addressing::kSnat ? "10.1.0.1" : "10.0.0.2");
  EXPECT_EQ(syn.opts.mss, 1460);
  EXPECT_TRUE(syn.opts.has_wscale);
  EXPECT_EQ(syn.opts.wscale, 6);
  EXPECT_TRUE(syn.opts.sack_permitted);
  EXPECT_EQ(syn.opts.ts_val, 112u);
  EXPECT_TRUE(checksumsValid(syn.bytes));
  EXPECT_EQ(stateOf(e), TcpState::kSynSent);

  // Client data before the backend answers is left for the client to resend.
  auto early = run(e, PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(1001)
                          .ack(cookie + 1).timestamp(113, proxy_ts).payload("GET /").build());
  EXPECT_EQ(early.d.reason, DropReason::kSplicePending);

  // 3. The backend's SYN-ACK becomes the proxy's ACK to the backend.
  auto ack = run(e, PacketBuilder().src("10.1.0.2:8080").dst(source.toString())
                        .flags(kSyn | kAck).seq(7000).ack(1001).mss(1400).wscale(9)
                        .sackPermitted().timestamp(5000, 112).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(ack.pkt.flags(), kAck);
  EXPECT_EQ(ack.pkt.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(ack.pkt.src(), source);
  EXPECT_EQ(ack.pkt.seq(), 1001u);
  EXPECT_EQ(ack.pkt.ack(), 7001u);
  EXPECT_EQ(ack.pkt.window(), 1000);
  EXPECT_EQ(ack.opts.ts_val, 112u);
  EXPECT_EQ(ack.opts.ts_ecr, 5000u);
  EXPECT_TRUE(checksumsValid(ack.bytes));
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_EQ(e.counters().splices_completed, 1u);

  // 4. Client data: ack and TSecr move into the backend's spaces.
  auto req = run(e, PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(1001)
                        .ack(cookie + 1).timestamp(114, proxy_ts).sack({{cookie + 1, cookie + 1}})
                        .payload("GET / HTTP/1.1\r\n\r\n").build());
  ASSERT_EQ(req.d.verdict, Verdict::kAccept);
  EXPECT_EQ(req.pkt.seq(), 1001u);
  EXPECT_EQ(req.pkt.ack(), 7001u);
  EXPECT_EQ(req.opts.ts_ecr, 5000u);
  EXPECT_EQ(req.opts.sack[0].left, 7001u);
  EXPECT_TRUE(checksumsValid(req.bytes));

  // 5. Backend data: seq and TSval move into the cookie's spaces, the window into scale 7.
  auto resp = run(e, PacketBuilder().src("10.1.0.2:8080").dst(source.toString())
                         .flags(kAck | kPsh).seq(7001).ack(1019).window(100)
                         .timestamp(5003, 114).payload("HTTP/1.1 200 OK\r\n\r\n").build());
  ASSERT_EQ(resp.d.verdict, Verdict::kAccept);
  EXPECT_EQ(resp.pkt.src().toString(), vip);
  EXPECT_EQ(resp.pkt.dst().toString(), client);
  EXPECT_EQ(resp.pkt.seq(), cookie + 1);
  EXPECT_EQ(resp.pkt.ack(), 1019u);
  EXPECT_EQ(resp.opts.ts_val, proxy_ts + 3);
  EXPECT_EQ(resp.opts.ts_ecr, 114u);
  EXPECT_EQ(resp.pkt.window(), 400);  // 100 << 9 bytes = 400 << 7
  EXPECT_TRUE(checksumsValid(resp.bytes));
  EXPECT_EQ(e.counters().totalDrops(), 2u);  // the forged ACK and the early data
}

TEST_P(Splice, BackendRefusalBecomesAnAcceptableRstToTheClient) {
  Engine e(spliceConfig(GetParam()));
  auto sa = run(e, PacketBuilder().src("10.0.0.2:40001").dst("10.0.0.100:80").flags(kSyn)
                       .seq(50).mss(1460).build());
  ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
  const uint32_t cookie = sa.pkt.seq();
  EXPECT_FALSE(sa.opts.has_timestamp);
  auto syn = run(e, PacketBuilder().src("10.0.0.2:40001").dst("10.0.0.100:80").flags(kAck)
                        .seq(51).ack(cookie + 1).build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  auto rst = run(e, PacketBuilder().src("10.1.0.2:8080").dst(syn.pkt.src().toString())
                        .flags(kRst | kAck).seq(0).ack(51).build());
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_EQ(rst.pkt.flags() & kRst, kRst);
  EXPECT_EQ(rst.pkt.dst().toString(), "10.0.0.2:40001");
  EXPECT_EQ(rst.pkt.src().toString(), "10.0.0.100:80");
  EXPECT_EQ(rst.pkt.seq(), cookie + 1);  // exactly what the client expects next
  EXPECT_TRUE(checksumsValid(rst.bytes));
  EXPECT_EQ(stateOf(e), TcpState::kClose);
}

TEST_P(Splice, EarlyClientDataIsHeldAndForwardedOnceTheBackendAnswers) {
  Engine e(spliceConfig(GetParam()));
  const std::string client = "10.0.0.2:40002", vip = "10.0.0.100:80";
  auto sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(500).mss(1460).build());
  const uint32_t cookie = sa.pkt.seq();
  auto syn = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(501).ack(cookie + 1)
                        .build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  // The request arrives before the backend's SYN-ACK: a caller that can hold it gets kHold.
  auto request = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(501)
                     .ack(cookie + 1).payload("GET / HTTP/1.0\r\n\r\n").build();
  std::vector<uint8_t> held = request;
  held.resize(256);
  PacketMeta meta;
  meta.can_hold = true;
  Decision d = e.process(held.data(), request.size(), held.size(), meta, kNow);
  EXPECT_EQ(d.verdict, Verdict::kHold);
  EXPECT_EQ(e.counters().splice_held, 1u);
  EXPECT_EQ(e.counters().totalDrops(), 0u);
  std::copy(request.begin(), request.end(), held.begin());
  d = e.process(held.data(), request.size(), held.size(), meta, kNow);
  EXPECT_EQ(d.verdict, Verdict::kHold);  // still opening: held again
  // The backend answers; offered again, the request goes through, translated.
  auto ack = run(e, PacketBuilder().src("10.1.0.2:8080").dst(syn.pkt.src().toString())
                        .flags(kSyn | kAck).seq(9000).ack(501).mss(1460).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  std::copy(request.begin(), request.end(), held.begin());
  d = e.process(held.data(), request.size(), held.size(), meta, kNow);
  ASSERT_EQ(d.verdict, Verdict::kAccept);
  held.resize(d.len);
  TcpPacket out;
  ASSERT_EQ(parseTcpPacket(held.data(), held.size(), out), ParseError::kNone);
  EXPECT_EQ(out.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(out.ack(), 9001u);
  EXPECT_EQ(out.payloadLen(), 18u);
  EXPECT_TRUE(checksumsValid(held));
}

// The client's first request reached the queue before its bare cookie ACK (they leave the client
// from different CPUs): the request opens the splice, and a caller that can hold it keeps it;
// the backend SYN goes out on its own (outbox). The late bare ACK waits too, and once the
// backend answers the request goes through with its bytes (it used to become the SYN, and the
// client had to send it again after its loss-probe timeout).
TEST_P(Splice, ARequestAheadOfItsCookieAckIsHeldNotTurnedIntoTheSyn) {
  Engine e(spliceConfig(GetParam()));
  const std::string client = "10.0.0.2:40005", vip = "10.0.0.100:80";
  auto sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(500).mss(1460).build());
  const uint32_t cookie = sa.pkt.seq();
  const auto request = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(501)
                           .ack(cookie + 1).payload("GET / HTTP/1.0\r\n\r\n").build();
  std::vector<uint8_t> held = request;
  held.resize(256);
  PacketMeta meta;
  meta.can_hold = true;
  ASSERT_EQ(e.process(held.data(), request.size(), held.size(), meta, kNow).verdict,
            Verdict::kHold);
  std::vector<std::vector<uint8_t>> out;
  e.drainOutbox([&](const uint8_t* p, size_t n) { out.emplace_back(p, p + n); });
  ASSERT_EQ(out.size(), 1u);
  TcpPacket syn;
  ASSERT_EQ(parseTcpPacket(out[0].data(), out[0].size(), syn), ParseError::kNone);
  EXPECT_EQ(syn.flags(), kSyn);
  EXPECT_EQ(syn.seq(), 500u);
  EXPECT_EQ(syn.dst().toString(), "10.1.0.2:8080");
  EXPECT_TRUE(checksumsValid(out[0]));
  // The bare ACK, late: the leg is opening, it waits too.
  auto bare = PacketBuilder().src(client).dst(vip).flags(kAck).seq(501).ack(cookie + 1).build();
  std::vector<uint8_t> bare_buf = bare;
  bare_buf.resize(256);
  EXPECT_EQ(e.process(bare_buf.data(), bare.size(), bare_buf.size(), meta, kNow).verdict,
            Verdict::kHold);
  auto ack = run(e, PacketBuilder().src("10.1.0.2:8080").dst(syn.src().toString())
                        .flags(kSyn | kAck).seq(9000).ack(501).mss(1460).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  std::copy(request.begin(), request.end(), held.begin());
  const Decision d = e.process(held.data(), request.size(), held.size(), meta, kNow);
  ASSERT_EQ(d.verdict, Verdict::kAccept);
  held.resize(d.len);
  TcpPacket fwd;
  ASSERT_EQ(parseTcpPacket(held.data(), held.size(), fwd), ParseError::kNone);
  EXPECT_EQ(fwd.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(fwd.seq(), 501u);
  EXPECT_EQ(fwd.payloadLen(), 18u);
  EXPECT_TRUE(checksumsValid(held));
  EXPECT_EQ(e.counters().totalDrops(), 0u);
}

// A batch with the backend's SYN-ACK and, behind it, the client's FIN: processBatch stops after
// the SYN-ACK, so that the I/O layer sends the request it held before the FIN (which the engine
// would otherwise accept at once, ahead of the request: the backend would see them reordered).
TEST_P(Splice, ProcessBatchStopsAfterTheSegmentThatCompletesASplice) {
  Engine e(spliceConfig(GetParam()));
  const std::string client = "10.0.0.2:40004", vip = "10.0.0.100:80";
  auto sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(500).mss(1460).build());
  const uint32_t cookie = sa.pkt.seq();
  auto syn = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(501).ack(cookie + 1)
                        .build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  const std::vector<std::vector<uint8_t>> packets = {
      PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(501).ack(cookie + 1)
          .payload("GET / HTTP/1.0\r\n\r\n").build(),  // held: the backend leg is opening
      PacketBuilder().src("10.1.0.2:8080").dst(syn.pkt.src().toString()).flags(kSyn | kAck)
          .seq(9000).ack(501).mss(1460).build(),
      PacketBuilder().src(client).dst(vip).flags(kAck | tcpflag::kFin).seq(519).ack(cookie + 1).build(),
  };
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<PacketSlot> slots(packets.size());
  for (size_t i = 0; i < packets.size(); ++i) {
    bufs.push_back(packets[i]);
    bufs.back().resize(256);
    slots[i].data = bufs.back().data();
    slots[i].len = packets[i].size();
    slots[i].cap = bufs.back().size();
    slots[i].meta.can_hold = true;
  }
  const uint64_t generation = e.spliceGeneration();
  ASSERT_EQ(e.processBatch(slots.data(), slots.size(), kNow), 2u);
  EXPECT_EQ(slots[0].decision.verdict, Verdict::kHold);
  EXPECT_EQ(slots[1].decision.verdict, Verdict::kAccept);  // became the proxy's ACK
  EXPECT_NE(e.spliceGeneration(), generation);
  // The held request goes next, then the rest of the batch: nothing stops it early.
  std::copy(packets[0].begin(), packets[0].end(), bufs[0].begin());
  PacketMeta meta;
  meta.can_hold = true;
  EXPECT_EQ(e.process(bufs[0].data(), packets[0].size(), bufs[0].size(), meta, kNow).verdict,
            Verdict::kAccept);
  EXPECT_EQ(e.processBatch(slots.data() + 2, 1, kNow), 1u);
  EXPECT_EQ(slots[2].decision.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().totalDrops(), 0u);
}

TEST_P(Splice, SilentBackendGetsTheClientReset) {
  Engine e(spliceConfig(GetParam()));
  const std::string client = "10.0.0.2:40003", vip = "10.0.0.100:80";
  auto sa = run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(700).mss(1460).build());
  const uint32_t cookie = sa.pkt.seq();
  ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(701).ack(cookie + 1)
                       .build()).d.verdict, Verdict::kAccept);
  auto data = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(701).ack(cookie + 1)
                  .payload("hello").build();
  EXPECT_EQ(run(e, data, kNow + 500'000'000ull).d.reason, DropReason::kSplicePending);
  // A client retransmission more than 1 s after the backend SYN sends that SYN again (it or its
  // answer may have been lost), up to three times.
  uint64_t t = kNow;
  for (int retry = 1; retry <= 3; ++retry) {
    t += 1'500'000'000ull;
    auto again = run(e, data, t);
    ASSERT_EQ(again.d.verdict, Verdict::kAccept) << "retry " << retry;
    EXPECT_EQ(again.pkt.flags(), kSyn);
    EXPECT_EQ(again.pkt.seq(), 700u);
    EXPECT_EQ(again.pkt.dst().toString(), "10.1.0.2:8080");
    EXPECT_EQ(again.opts.mss, 1460);
    EXPECT_TRUE(checksumsValid(again.bytes));
  }
  EXPECT_EQ(e.counters().splice_syn_retransmits, 3u);
  EXPECT_EQ(run(e, data, t + 2'000'000'000ull).d.reason, DropReason::kSplicePending);
  // Past the connect timeout (3 s) after the last one, the retransmission becomes a RST.
  auto rst = run(e, data, t + 4'000'000'000ull);
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_EQ(rst.pkt.flags() & kRst, kRst);
  EXPECT_EQ(rst.pkt.dst().toString(), client);
  EXPECT_EQ(rst.pkt.seq(), cookie + 1);
  EXPECT_TRUE(checksumsValid(rst.bytes));
  EXPECT_EQ(e.counters().splice_connect_timeouts, 1u);
  EXPECT_EQ(e.backendStats(0, 0).connect_timeouts, 1u);  // the passive health signal
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  e.expire(t + 600'000'000'000ull);  // retired in CLOSE: not counted a second time
  EXPECT_EQ(e.backendStats(0, 0).connect_timeouts, 1u);
}

INSTANTIATE_TEST_SUITE_P(Addressing, Splice,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

}  // namespace
}  // namespace tandem
