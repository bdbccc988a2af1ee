// Splice mode, bind = data: the cookie ACK creates the flow but opens no backend leg; the first
// data segment chooses the backend (route rules on SNI / Host, else the scheduler), is held, and
// the backend SYN leaves through the engine's outbox.
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
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPsh = 0x08, kRst = 0x04;
constexpr uint64_t kNow = 5'000'000'000ull;
constexpr uint64_t kMs = 1'000'000ull;

EngineConfig bindDataConfig(Addressing addressing) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "tls";
  s.vip = *Endpoint::parse("10.0.0.100:443");
  s.backends = {*Endpoint::parse("10.1.0.2:8443"), *Endpoint::parse("10.1.0.3:8443")};
  s.mode = Mode::kSplice;
  s.addressing = addressing;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  s.bind = BindOn::kData;
  RouteRule b = parseRouteMatch("sni:b.example");
  b.backend = 1;
  RouteRule h = parseRouteMatch("host:b.example");
  h.backend = 1;
  s.routes = {b, h};
  c.services.push_back(s);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  return c;
}

using Out = test::Originated;
std::vector<Out> drain(Engine& e) { return test::drainOutbox(e); }

/// Runs a packet; `out` gets the rewritten packet when accepted.
Decision run(Engine& e, const std::vector<uint8_t>& p, uint64_t now, bool can_hold = false,
             Out* out = nullptr) {
  std::vector<uint8_t> buf = p;
  buf.resize(256);
  PacketMeta meta;
  meta.can_hold = can_hold;
  const Decision d = e.process(buf.data(), p.size(), buf.size(), meta, now);
  if (out != nullptr && d.verdict == Verdict::kAccept) {
    buf.resize(d.len);
    out->bytes = buf;
    EXPECT_EQ(parseTcpPacket(out->bytes.data(), out->bytes.size(), out->pkt), ParseError::kNone);
    EXPECT_EQ(parseTcpOptions(out->pkt.options(), out->pkt.optionsLen(), out->opts),
              OptionError::kNone);
  }
  return d;
}

/// Client handshake with the proxy; returns the cookie and the proxy's TSval.
std::pair<uint32_t, uint32_t> handshake(Engine& e, const std::string& client, uint32_t isn,
                                        uint64_t now) {
  const std::string vip = "10.0.0.100:443";
  Out sa;
  EXPECT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(isn).mss(1460).wscale(7)
                       .sackPermitted().timestamp(100, 0).build(), now, false, &sa).verdict,
            Verdict::kAccept);
  const uint32_t cookie = sa.pkt.seq();
  const uint32_t ts = sa.opts.ts_val;
  // The cookie ACK: the flow exists, nothing is sent to any backend yet.
  const Decision d = run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(isn + 1)
                                .ack(cookie + 1).timestamp(101, ts).build(), now, true);
  EXPECT_EQ(d.verdict, Verdict::kDrop);
  EXPECT_EQ(d.reason, DropReason::kSpliceBindWait);
  EXPECT_TRUE(drain(e).empty());
  return {cookie, ts};
}

std::string backendOf(Engine& e, const std::string& client) {
  std::string b;
  e.forEachFlow([&](const FlowInfo& f) {
    if (f.client.toString() == client) b = f.backend.toString();
  }, kNow);
  return b;
}

/// A minimal TLS 1.2 ClientHello carrying SNI `name`.
std::vector<uint8_t> clientHello(const std::string& name) {
  std::vector<uint8_t> sni = {0, 0};  // extension type server_name
  const size_t n = name.size();
  const size_t list = n + 3;
  sni.insert(sni.end(), {0, static_cast<uint8_t>(list + 2), 0, static_cast<uint8_t>(list), 0, 0,
                         static_cast<uint8_t>(n)});
  sni.insert(sni.end(), name.begin(), name.end());
  std::vector<uint8_t> body = {3, 3};
  body.insert(body.end(), 32, 0x42);
  body.insert(body.end(), {0, 0, 2, 0xc0, 0x2f, 1, 0, 0, static_cast<uint8_t>(sni.size())});
  body.insert(body.end(), sni.begin(), sni.end());
  std::vector<uint8_t> rec = {22, 3, 1, 0, static_cast<uint8_t>(body.size() + 4), 1, 0, 0,
                              static_cast<uint8_t>(body.size())};
  rec.insert(rec.end(), body.begin(), body.end());
  return rec;
}

class BindData : public ::testing::TestWithParam<Addressing> {};

TEST_P(BindData, SniRoutesTheFirstDataAndHoldsIt) {
  Engine e(bindDataConfig(GetParam()));
  const std::string client = "10.0.0.2:41000", vip = "10.0.0.100:443";
  const auto [cookie, ts] = handshake(e, client, 1000, kNow);
  EXPECT_EQ(e.activeFlows(), 1u);
  // A bare ACK (window update) still waits.
  EXPECT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(1001).ack(cookie + 1)
                       .timestamp(102, ts).build(), kNow, true).reason,
            DropReason::kSpliceBindWait);

  const std::string hello(reinterpret_cast<const char*>(clientHello("B.example").data()),
                          clientHello("B.example").size());
  const auto data = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(1001)
                        .ack(cookie + 1).timestamp(103, ts).payload(hello).build();
  EXPECT_EQ(run(e, data, kNow + kMs, true).verdict, Verdict::kHold);
  EXPECT_EQ(e.counters().splice_routed, 1u);
  EXPECT_EQ(backendOf(e, client), "10.1.0.3:8443");
  auto syns = drain(e);
  ASSERT_EQ(syns.size(), 1u);
  const TcpPacket& syn = syns[0].pkt;
  EXPECT_EQ(syn.flags(), kSyn);
  EXPECT_EQ(syn.seq(), 1000u);
  EXPECT_EQ(syn.dst().toString(), "10.1.0.3:8443");
  EXPECT_EQ(syn.src().addr.toString(),
            GetParam() == Addressing::kSnat ? "10.1.0.1" : "10.0.0.2");
  EXPECT_EQ(syns[0].opts.mss, 1460);
  EXPECT_EQ(syns[0].opts.wscale, 7);
  EXPECT_TRUE(syns[0].opts.sack_permitted);
  EXPECT_EQ(syns[0].opts.ts_val, 103u);

  // The backend answers; the proxy completes its handshake; the held hello then goes through.
  Out ack;
  ASSERT_EQ(run(e, PacketBuilder().src("10.1.0.3:8443").dst(syn.src().toString())
                       .flags(kSyn | kAck).seq(9000).ack(1001).mss(1400).wscale(7)
                       .sackPermitted().timestamp(7000, 103).build(), kNow + 2 * kMs, false,
                &ack).verdict, Verdict::kAccept);
  EXPECT_EQ(ack.pkt.flags(), kAck);
  EXPECT_EQ(ack.pkt.ack(), 9001u);
  Out fwd;
  ASSERT_EQ(run(e, data, kNow + 3 * kMs, true, &fwd).verdict, Verdict::kAccept);
  EXPECT_EQ(fwd.pkt.dst().toString(), "10.1.0.3:8443");
  EXPECT_EQ(fwd.pkt.ack(), 9001u);
  EXPECT_EQ(fwd.pkt.payloadLen(), hello.size());
  EXPECT_TRUE(checksumsValid(fwd.bytes));
  // The backend's reply reaches the client in the cookie's sequence space.
  Out resp;
  ASSERT_EQ(run(e, PacketBuilder().src("10.1.0.3:8443").dst(syn.src().toString())
                       .flags(kAck | kPsh).seq(9001).ack(1001 + static_cast<uint32_t>(hello.size()))
                       .timestamp(7001, 103).payload("hi").build(), kNow + 4 * kMs, false, &resp)
                .verdict, Verdict::kAccept);
  EXPECT_EQ(resp.pkt.dst().toString(), client);
  EXPECT_EQ(resp.pkt.seq(), cookie + 1);
}

TEST_P(BindData, HostHeaderRoutesAndMissFallsBackToTheScheduler) {
  Engine e(bindDataConfig(GetParam()));
  const std::string vip = "10.0.0.100:443";
  // Host b.example -> backend 1.
  {
    const std::string client = "10.0.0.2:41001";
    const auto [cookie, ts] = handshake(e, client, 2000, kNow);
    const auto get = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(2001)
                         .ack(cookie + 1).timestamp(103, ts)
                         .payload("GET / HTTP/1.1\r\nHost: b.example:443\r\n\r\n").build();
    EXPECT_EQ(run(e, get, kNow, true).verdict, Verdict::kHold);
    EXPECT_EQ(backendOf(e, client), "10.1.0.3:8443");
    EXPECT_EQ(drain(e).size(), 1u);
  }
  // No rule matches: the scheduler's choice stands (round robin: the second flow, backend 1;
  // the first flow's creation took backend 0). Without a caller that can hold, the data
  // segment itself becomes the backend SYN and the client resends its data.
  {
    const std::string client = "10.0.0.2:41002";
    const auto [cookie, ts] = handshake(e, client, 3000, kNow);
    const std::string before = backendOf(e, client);
    const auto get = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(3001)
                         .ack(cookie + 1).timestamp(103, ts)
                         .payload("GET / HTTP/1.1\r\nHost: other.example\r\n\r\n").build();
    Out syn;
    ASSERT_EQ(run(e, get, kNow, false, &syn).verdict, Verdict::kAccept);
    EXPECT_EQ(syn.pkt.flags(), kSyn);
    EXPECT_EQ(syn.pkt.seq(), 3000u);
    EXPECT_EQ(syn.pkt.dst().toString(), before);
    EXPECT_EQ(backendOf(e, client), before);
    EXPECT_TRUE(checksumsValid(syn.bytes));
    EXPECT_TRUE(drain(e).empty());
  }
  // Garbage is no match either, and never crashes: the scheduler chooses.
  {
    const std::string client = "10.0.0.2:41003";
    const auto [cookie, ts] = handshake(e, client, 4000, kNow);
    const auto junk = PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(4001)
                          .ack(cookie + 1).timestamp(103, ts).payload("\x16\x03\x01\xff\xff")
                          .build();
    EXPECT_EQ(run(e, junk, kNow, true).verdict, Verdict::kHold);
    EXPECT_EQ(drain(e).size(), 1u);
  }
  EXPECT_EQ(e.counters().splice_routed, 1u);
  EXPECT_EQ(e.counters().splice_route_misses, 2u);
  EXPECT_EQ(e.activeFlows(), 3u);
}

TEST_P(BindData, CookieAckCarryingDataIsRoutedAtOnce) {
  // Data on the cookie ACK itself (the bare ACK came later, or never): the backend is chosen
  // from it right away. A caller that can hold the segment keeps it for the backend leg and
  // the SYN goes out through the outbox; otherwise the segment becomes the backend SYN (its
  // data, never acknowledged, is sent again by the client).
  for (bool can_hold : {true, false}) {
    Engine e(bindDataConfig(GetParam()));
    const std::string client = "10.0.0.2:41005", vip = "10.0.0.100:443";
    Out sa;
    ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(8000).mss(1460)
                         .timestamp(100, 0).build(), kNow, false, &sa).verdict, Verdict::kAccept);
    const auto hello = clientHello("b.example");
    Out syn;
    const Decision d = run(e, PacketBuilder().src(client).dst(vip).flags(kAck | kPsh).seq(8001)
                                  .ack(sa.pkt.seq() + 1).timestamp(101, sa.opts.ts_val)
                                  .payload(std::string(hello.begin(), hello.end())).build(),
                           kNow, can_hold, &syn);
    if (can_hold) {
      ASSERT_EQ(d.verdict, Verdict::kHold);
      const auto out = drain(e);
      ASSERT_EQ(out.size(), 1u);
      syn.bytes = out[0].bytes;  // out[0].pkt views out[0]'s buffer, freed with `out`
      ASSERT_EQ(parseTcpPacket(syn.bytes.data(), syn.bytes.size(), syn.pkt), ParseError::kNone);
      EXPECT_EQ(e.counters().splice_held, 1u);
    } else {
      ASSERT_EQ(d.verdict, Verdict::kAccept);
      EXPECT_TRUE(drain(e).empty());
    }
    EXPECT_EQ(syn.pkt.flags(), kSyn);
    EXPECT_EQ(syn.pkt.seq(), 8000u);
    EXPECT_EQ(syn.pkt.payloadLen(), 0u);
    EXPECT_EQ(syn.pkt.dst().toString(), "10.1.0.3:8443");
    EXPECT_TRUE(checksumsValid(syn.bytes));
    EXPECT_EQ(e.counters().splice_routed, 1u);
  }
}

TEST_P(BindData, ClientRstWhileWaitingClosesTheFlow) {
  Engine e(bindDataConfig(GetParam()));
  const std::string client = "10.0.0.2:41004", vip = "10.0.0.100:443";
  const auto [cookie, ts] = handshake(e, client, 5000, kNow);
  Out rst;
  ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kRst | kAck).seq(5001)
                       .ack(cookie + 1).build(), kNow, true, &rst).verdict, Verdict::kAccept);
  TcpState st = TcpState::kNone;
  e.forEachFlow([&](const FlowInfo& f) { st = f.state; }, kNow);
  EXPECT_EQ(st, TcpState::kClose);
  EXPECT_TRUE(drain(e).empty());
}

TEST_P(BindData, ClientThatNeverSpeaksIsBoundByTheTimer) {
  // A server-speaks-first protocol: no data comes; after 1 s the scheduler's backend is bound
  // (the SYN from the outbox), and the backend's greeting then reaches the client translated.
  Engine e(bindDataConfig(GetParam()));
  const std::string client = "10.0.0.2:44000", vip = "10.0.0.100:443";
  const auto [cookie, ts] = handshake(e, client, 6000, kNow);
  e.expire(kNow + 999 * kMs);
  EXPECT_TRUE(drain(e).empty());
  e.expire(kNow + 1'001 * kMs);
  auto out = drain(e);
  ASSERT_EQ(out.size(), 1u);
  const TcpPacket& syn = out[0].pkt;
  EXPECT_EQ(syn.flags(), kSyn);
  EXPECT_EQ(syn.seq(), 6000u);
  EXPECT_EQ(syn.dst().toString(), backendOf(e, client));
  EXPECT_EQ(e.counters().splice_route_misses, 1u);
  ASSERT_EQ(run(e, PacketBuilder().src(syn.dst().toString()).dst(syn.src().toString())
                       .flags(kSyn | kAck).seq(100).ack(6001).mss(1460).wscale(7).sackPermitted()
                       .timestamp(500, 101).build(), kNow + 1'002 * kMs).verdict,
            Verdict::kAccept);
  Out greet;
  ASSERT_EQ(run(e, PacketBuilder().src(syn.dst().toString()).dst(syn.src().toString())
                       .flags(kAck | kPsh).seq(101).ack(6001).timestamp(501, 101)
                       .payload("220 hello\r\n").build(), kNow + 1'003 * kMs, false, &greet)
                .verdict, Verdict::kAccept);
  EXPECT_EQ(greet.pkt.dst().toString(), client);
  EXPECT_EQ(greet.pkt.seq(), cookie + 1);
  EXPECT_TRUE(checksumsValid(greet.bytes));
  // No second SYN from the timer once the leg is up.
  for (uint64_t ms = 1'100; ms < 8'000; ms += 100) e.expire(kNow + ms * kMs);
  EXPECT_TRUE(drain(e).empty());
}

TEST(SpliceMss, BackendSynCarriesTheSmallerOfClientAndPathMss) {
  struct Case {
    const char* what;
    uint16_t proxy_mss;   // SpliceConfig::mss (configured, or the interfaces' MTU - 40)
    int client_mss;       // -1: no MSS option (536 assumed, RFC 9293 3.7.1)
    uint16_t synack_mss;  // what the proxy advertises to the client
    uint16_t backend_mss; // what the backend SYN offers on the client's behalf
  };
  const Case cases[] = {
      {"client larger than the path", 1400, 1460, 1400, 1400},
      {"client smaller than the path (rounded down to the cookie table)", 1460, 1380, 1460, 1300},
      {"jumbo client, jumbo path: the cookie table caps it", 8960, 8960, 8960, 1460},
      {"no MSS option", 1460, -1, 1460, 536},
      {"path below the smallest cookie class", 1200, 1460, 1200, 1200},
  };
  uint16_t port = 42000;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    EngineConfig cfg = bindDataConfig(Addressing::kSnat);
    cfg.services[0].bind = BindOn::kAck;
    cfg.services[0].routes.clear();
    cfg.splice.mss = c.proxy_mss;
    Engine e(cfg);
    const std::string client = "10.0.0.2:" + std::to_string(port++);
    const std::string vip = "10.0.0.100:443";
    PacketBuilder syn = PacketBuilder().src(client).dst(vip).flags(kSyn).seq(10).timestamp(5, 0);
    if (c.client_mss >= 0) syn.mss(static_cast<uint16_t>(c.client_mss));
    Out sa;
    ASSERT_EQ(run(e, syn.build(), kNow, false, &sa).verdict, Verdict::kAccept);
    EXPECT_TRUE(sa.opts.has_mss);
    EXPECT_EQ(sa.opts.mss, c.synack_mss);
    Out bsyn;
    ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(11)
                         .ack(sa.pkt.seq() + 1).timestamp(6, sa.opts.ts_val).build(), kNow, false,
                  &bsyn).verdict, Verdict::kAccept);
    EXPECT_EQ(bsyn.pkt.flags(), kSyn);
    EXPECT_TRUE(bsyn.opts.has_mss);
    EXPECT_EQ(bsyn.opts.mss, c.backend_mss);
  }
}

TEST_P(BindData, TimerResendsALostBackendSynThenResetsTheClient) {
  EngineConfig cfg = bindDataConfig(GetParam());
  cfg.services[0].bind = BindOn::kAck;
  cfg.splice.connect_timeout_ns = 3'000 * kMs;
  Engine e(cfg);
  const std::string client = "10.0.0.2:43000", vip = "10.0.0.100:443";
  Out sa;
  ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(300).mss(1460).wscale(7)
                       .timestamp(9, 0).build(), kNow, false, &sa).verdict, Verdict::kAccept);
  Out syn;
  ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(301)
                       .ack(sa.pkt.seq() + 1).timestamp(10, sa.opts.ts_val).build(), kNow, false,
                &syn).verdict, Verdict::kAccept);
  ASSERT_EQ(syn.pkt.flags(), kSyn);
  // The fake clock: nothing before 250 ms; then the SYN again, at 250 ms, 500 ms and 1 s
  // intervals, identical to the first but for the timestamp, with no client packet at all.
  uint64_t t = kNow;
  const uint64_t gaps[] = {250, 500, 1000};
  for (uint64_t gap : gaps) {
    e.expire(t + gap * kMs - kMs);
    EXPECT_TRUE(drain(e).empty()) << "before " << gap << " ms";
    t += gap * kMs;
    e.expire(t);
    auto out = drain(e);
    ASSERT_EQ(out.size(), 1u) << "at " << gap << " ms";
    EXPECT_EQ(out[0].pkt.flags(), kSyn);
    EXPECT_EQ(out[0].pkt.seq(), 300u);
    EXPECT_EQ(out[0].pkt.src(), syn.pkt.src());
    EXPECT_EQ(out[0].pkt.dst(), syn.pkt.dst());
    EXPECT_EQ(out[0].opts.mss, syn.opts.mss);
    EXPECT_EQ(out[0].opts.wscale, syn.opts.wscale);
  }
  EXPECT_EQ(e.counters().splice_syn_retransmits, 3u);
  // No more SYNs; the connect timeout after the last one resets the client on the timer.
  e.expire(t + 2'999 * kMs);
  EXPECT_TRUE(drain(e).empty());
  e.expire(t + 3'001 * kMs);
  auto rst = drain(e);
  ASSERT_EQ(rst.size(), 1u);
  EXPECT_EQ(rst[0].pkt.flags() & kRst, kRst);
  EXPECT_EQ(rst[0].pkt.src().toString(), vip);
  EXPECT_EQ(rst[0].pkt.dst().toString(), client);
  EXPECT_EQ(rst[0].pkt.seq(), sa.pkt.seq() + 1);  // exactly what the client expects
  EXPECT_EQ(e.counters().splice_connect_timeouts, 1u);
  // The passive health signal, as when the client's next segment finds the timeout.
  EXPECT_EQ(e.backendStats(0, 0).connect_timeouts, 1u);
  e.expire(t + 10'000 * kMs);
  EXPECT_TRUE(drain(e).empty());
  e.expire(t + 600'000 * kMs);  // retired in CLOSE: not counted a second time
  EXPECT_EQ(e.backendStats(0, 0).connect_timeouts, 1u);
}

TEST_P(BindData, TimerStopsOnceTheBackendAnswers) {
  EngineConfig cfg = bindDataConfig(GetParam());
  cfg.services[0].bind = BindOn::kAck;
  Engine e(cfg);
  const std::string client = "10.0.0.2:43001", vip = "10.0.0.100:443";
  Out sa, syn;
  run(e, PacketBuilder().src(client).dst(vip).flags(kSyn).seq(400).mss(1460).build(), kNow,
      false, &sa);
  ASSERT_EQ(run(e, PacketBuilder().src(client).dst(vip).flags(kAck).seq(401)
                       .ack(sa.pkt.seq() + 1).build(), kNow, false, &syn).verdict,
            Verdict::kAccept);
  e.expire(kNow + 300 * kMs);  // the first SYN was lost: one resend
  ASSERT_EQ(drain(e).size(), 1u);
  ASSERT_EQ(run(e, PacketBuilder().src(syn.pkt.dst().toString()).dst(syn.pkt.src().toString())
                       .flags(kSyn | kAck).seq(5000).ack(401).mss(1460).build(),
                kNow + 310 * kMs).verdict, Verdict::kAccept);
  for (uint64_t ms = 400; ms < 20'000; ms += 100) e.expire(kNow + ms * kMs);
  EXPECT_TRUE(drain(e).empty());
  EXPECT_EQ(e.counters().splice_syn_retransmits, 1u);
  EXPECT_EQ(e.counters().splice_connect_timeouts, 0u);
  EXPECT_EQ(e.backendStats(0, 0).connect_timeouts, 0u);
}

INSTANTIATE_TEST_SUITE_P(Addressing, BindData,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

}  // namespace
}  // namespace tandem
