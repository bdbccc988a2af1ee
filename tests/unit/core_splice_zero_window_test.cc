// The zero-window handshake of splice mode (ServiceConfig::zero_window_handshake): the SYN-ACK
// offers no window, the backend leg's completion sends the client the ACK that opens it, and a
// zero-window probe whose cookie ACK never arrived opens the splice itself.
#include <gtest/gtest.h>

#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::Seen;
using test::checksumsValid;
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kPsh = 0x08;
constexpr uint64_t kNow = 1'000'000'000ull;
const char* const kClient = "10.0.0.2:40000";
const char* const kVip = "10.0.0.100:80";
const char* const kBackend = "10.1.0.2:8080";

EngineConfig config(bool zero_window) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(kBackend)};
  s.mode = Mode::kSplice;
  s.zero_window_handshake = zero_window;
  c.services.push_back(s);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  c.splice.window = 64240;
  return c;
}

Seen run(Engine& e, std::vector<uint8_t> p) { return test::runPacket(e, std::move(p), kNow); }

using Sent = test::Originated;
std::vector<Sent> drain(Engine& e) { return test::drainOutbox(e); }

/// The client's SYN (ISN 1000, timestamps, scale 6) and the proxy's SYN-ACK.
struct Syn {
  uint32_t cookie = 0, proxy_ts = 0;
  uint16_t window = 0;
};
Syn synAck(Engine& e) {
  const Seen sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(1000).mss(1460)
                             .wscale(6).sackPermitted().timestamp(111, 0).build());
  EXPECT_EQ(sa.d.verdict, Verdict::kAccept);
  EXPECT_EQ(sa.pkt.flags(), kSyn | kAck);
  return {sa.pkt.seq(), sa.opts.ts_val, sa.pkt.window()};
}

TEST(ZeroWindow, TheSynAckOffersNoWindowOnlyWhenConfigured) {
  Engine zero(config(true));
  EXPECT_EQ(synAck(zero).window, 0);
  Engine open(config(false));
  EXPECT_EQ(synAck(open).window, 64240);
}

TEST(ZeroWindow, TheBackendHandshakeSendsTheClientTheAckThatOpensItsWindow) {
  Engine e(config(true));
  const Syn s = synAck(e);
  const Seen syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001)
                              .ack(s.cookie + 1).window(502).timestamp(112, s.proxy_ts).build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  ASSERT_EQ(syn.pkt.flags(), kSyn);
  EXPECT_TRUE(drain(e).empty());  // the backend has not answered: nothing for the client yet
  const Seen ack = run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck)
                              .seq(7000).ack(1001).window(29200).mss(1400).wscale(9)
                              .sackPermitted().timestamp(5000, 112).build());
  ASSERT_EQ(ack.d.verdict, Verdict::kAccept);
  EXPECT_EQ(ack.pkt.flags(), kAck);  // the backend's ACK, as without the zero window
  EXPECT_EQ(ack.pkt.dst().toString(), kBackend);

  const std::vector<Sent> out = drain(e);
  ASSERT_EQ(out.size(), 1u);
  const Sent& w = out[0];
  EXPECT_EQ(w.pkt.src().toString(), kVip);
  EXPECT_EQ(w.pkt.dst().toString(), kClient);
  EXPECT_EQ(w.pkt.flags(), kAck);
  EXPECT_EQ(w.pkt.seq(), s.cookie + 1);
  EXPECT_EQ(w.pkt.ack(), 1001u);  // what the backend acknowledged: the SYN, nothing more
  EXPECT_EQ(w.pkt.window(), 29200 >> 7);  // the SYN-ACK's unscaled window in the client's scale
  EXPECT_EQ(w.pkt.payloadLen(), 0u);
  ASSERT_TRUE(w.opts.has_timestamp);
  EXPECT_EQ(w.opts.ts_val, s.proxy_ts);  // the backend's SYN-ACK TSval in the client's clock
  EXPECT_EQ(w.opts.ts_ecr, 112u);
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);
  EXPECT_EQ(e.counters().splices_completed, 1u);

  // The client's first data then passes as on any spliced flow.
  const Seen req = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(1001)
                              .ack(s.cookie + 1).timestamp(113, s.proxy_ts).payload("GET /")
                              .build());
  ASSERT_EQ(req.d.verdict, Verdict::kAccept);
  EXPECT_EQ(req.pkt.ack(), 7001u);
}

TEST(ZeroWindow, ABackendWindowBelowOneUnitOfTheClientsScaleIsOneUnitNotZero) {
  Engine e(config(true));
  const Syn s = synAck(e);
  ASSERT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001)
                       .ack(s.cookie + 1).timestamp(112, s.proxy_ts).build()).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck).seq(7000)
                       .ack(1001).window(100).wscale(9).timestamp(5000, 112).build()).d.verdict,
            Verdict::kAccept);
  const std::vector<Sent> out = drain(e);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].pkt.window(), 1);
}

TEST(ZeroWindow, WithoutItTheBackendHandshakeSendsTheClientNothing) {
  Engine e(config(false));
  const Syn s = synAck(e);
  ASSERT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001)
                       .ack(s.cookie + 1).timestamp(112, s.proxy_ts).build()).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck).seq(7000)
                       .ack(1001).window(29200).wscale(9).timestamp(5000, 112).build()).d.verdict,
            Verdict::kAccept);
  EXPECT_TRUE(drain(e).empty());
  EXPECT_EQ(e.counters().splice_windows_opened, 0u);
}

TEST(ZeroWindow, AProbeWhoseCookieAckNeverArrivedOpensTheSplice) {
  Engine e(config(true));
  const Syn s = synAck(e);
  // RFC 9293 3.8.6.1: a zero-window probe carries SND.UNA - 1, the client's ISN.
  const Seen syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1000)
                              .ack(s.cookie + 1).timestamp(150, s.proxy_ts).build());
  ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
  EXPECT_EQ(syn.pkt.flags(), kSyn);
  EXPECT_EQ(syn.pkt.seq(), 1000u);  // the client's ISN: its next byte is 1001 on both legs
  EXPECT_EQ(syn.pkt.dst().toString(), kBackend);
  EXPECT_EQ(syn.opts.ts_val, 150u);
  EXPECT_EQ(e.counters().splice_opened_by_probe, 1u);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck).seq(7000)
                       .ack(1001).window(29200).wscale(9).timestamp(5000, 150).build()).d.verdict,
            Verdict::kAccept);
  const std::vector<Sent> out = drain(e);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].pkt.ack(), 1001u);
  EXPECT_EQ(out[0].opts.ts_ecr, 150u);
}

TEST(ZeroWindow, AForgedProbeOrAProbeToAnOpenWindowServiceOpensNothing) {
  Engine e(config(true));
  const Syn s = synAck(e);
  EXPECT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(999)
                       .ack(s.cookie + 1).timestamp(150, s.proxy_ts).build()).d.reason,
            DropReason::kBadCookie);
  EXPECT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1000)
                       .ack(s.cookie + 2).timestamp(150, s.proxy_ts).build()).d.reason,
            DropReason::kBadCookie);
  // A segment with data at the ISN is no probe.
  EXPECT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(1000)
                       .ack(s.cookie + 1).timestamp(150, s.proxy_ts).payload("x").build())
                .d.reason,
            DropReason::kBadCookie);
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_EQ(e.counters().splice_opened_by_probe, 0u);

  Engine open(config(false));
  const Syn o = synAck(open);
  EXPECT_EQ(run(open, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1000)
                          .ack(o.cookie + 1).timestamp(150, o.proxy_ts).build()).d.reason,
            DropReason::kBadCookie);
  EXPECT_EQ(open.activeFlows(), 0u);
}

}  // namespace
}  // namespace tandem
