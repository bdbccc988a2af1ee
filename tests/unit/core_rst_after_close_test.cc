// Golden case from a capture of `tcpcheck --connect-rate --conns 256` through a splice service
// (both legs of the proxy, 2026-11-27; docs/rst-after-close.md has the packets). Every
// RST the proxy dropped there came after a complete close: the proxy held the client's request
// and FIN while the backend leg opened, the client's loss probe resent its FIN carrying the ack
// it had before the response (overtaken by its own later ACKs), and that stale FIN reached the
// backend after its socket had closed. The backend answered with a RST whose seq is the stale
// segment's ack (RFC 9293 3.10.7.1), 65 bytes below the client's RCV.NXT: the client, in
// TIME_WAIT, discards it, and so does the proxy, as `rst_after_close` rather than
// `rst_out_of_window` (kept for RSTs that hit a live flow: blind ones, or edges that lag).
// The connection's sequence numbers are the captured ones; only the cookie is the engine's.
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
constexpr uint8_t kSyn = 0x02, kAck = 0x10, kRst = 0x04, kPsh = 0x08, kFin = 0x01;
constexpr uint64_t kNow = 1'000'000'000ull;

// From the capture: client 10.54.1.2:23982, ISN 2290784170; backend ISN 855479949.
constexpr uint32_t kC = 2290784170u;
constexpr uint32_t kB = 855479949u;
const std::string kClient = "10.0.0.2:23982";
const std::string kVip = "10.0.0.100:8085";
const std::string kBackend = "10.1.0.2:8085";

EngineConfig config() {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(kBackend)};
  s.mode = Mode::kSplice;
  s.addressing = Addressing::kTransparent;
  c.services.push_back(s);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  return c;
}

using test::Seen;

Seen run(Engine& e, std::vector<uint8_t> p) { return test::runPacket(e, std::move(p), kNow); }

TcpState stateOf(Engine& e) { return test::flowState(e, kNow); }

/// The captured connection up to its response: cookie handshake, backend leg, the client's 96
/// bytes, the backend's 64. Returns the cookie (the client leg's server ISN).
uint32_t exchange(Engine& e) {
  auto sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(kC).window(64240)
                       .mss(1460).wscale(7).sackPermitted().timestamp(98532768, 0).build());
  EXPECT_EQ(sa.d.verdict, Verdict::kAccept);
  const uint32_t k = sa.pkt.seq();
  const uint32_t kts = sa.opts.ts_val;
  auto client = [&](uint8_t flags, uint32_t seq, uint32_t ack, size_t len) {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(flags).seq(seq).ack(ack)
                      .window(63).timestamp(98532777, kts).payloadSize(len).build());
  };
  auto backend = [&](uint8_t flags, uint32_t seq, uint32_t ack, size_t len) {
    return run(e, PacketBuilder().src(kBackend).dst(kClient).flags(flags).seq(seq).ack(ack)
                      .window(64).timestamp(1842697099, 98532777).payloadSize(len).build());
  };
  EXPECT_EQ(client(kAck, kC + 1, k + 1, 0).pkt.flags(), kSyn);  // the backend leg's SYN
  EXPECT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck).seq(kB)
                       .ack(kC + 1).window(65160).mss(1460).wscale(7).sackPermitted()
                       .timestamp(1842697091, 98532776).build()).d.verdict,
            Verdict::kAccept);
  EXPECT_EQ(client(kAck | kPsh, kC + 1, k + 1, 32).d.verdict, Verdict::kAccept);
  EXPECT_EQ(backend(kAck, kB + 1, kC + 33, 0).d.verdict, Verdict::kAccept);
  EXPECT_EQ(client(kAck | kPsh, kC + 33, k + 1, 64).d.verdict, Verdict::kAccept);
  EXPECT_EQ(backend(kAck, kB + 1, kC + 97, 0).d.verdict, Verdict::kAccept);
  return k;
}

Seen backendRst(Engine& e, uint32_t seq) {
  return run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kRst).seq(seq).build());
}

TEST(RstAfterClose, StaleFinAnsweredByTheClosedBackendIsDroppedAsAfterClose) {
  Engine e(config());
  const uint32_t k = exchange(e);
  auto client = [&](uint8_t flags, uint32_t seq, uint32_t ack) {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(flags).seq(seq).ack(ack)
                      .window(63).timestamp(98532799, 1).build());
  };
  // The client's FIN; the backend's response and FIN; the client acknowledges both.
  ASSERT_EQ(client(kFin | kAck, kC + 97, k + 1).d.verdict, Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kAck | kPsh).seq(kB + 1)
                       .ack(kC + 98).window(64).payloadSize(64).build()).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kFin | kAck).seq(kB + 65)
                       .ack(kC + 98).window(64).build()).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(client(kAck, kC + 98, k + 65).d.verdict, Verdict::kAccept);
  ASSERT_EQ(client(kAck, kC + 98, k + 66).d.verdict, Verdict::kAccept);
  ASSERT_EQ(stateOf(e), TcpState::kTimeWait);

  // The loss probe: the FIN again, with the ack of before the response. Passed (translated: its
  // ack is the backend's ISN + 1), as the endpoints judge it.
  auto probe = client(kFin | kAck, kC + 97, k + 1);
  ASSERT_EQ(probe.d.verdict, Verdict::kAccept);
  EXPECT_EQ(probe.pkt.ack(), kB + 1);
  // The closed backend's answer: seq = the probe's ack, 65 below the client's RCV.NXT.
  auto stale = backendRst(e, kB + 1);
  EXPECT_EQ(stale.d.verdict, Verdict::kDrop);
  EXPECT_EQ(stale.d.reason, DropReason::kRstAfterClose) << dropReasonName(stale.d.reason);
  EXPECT_EQ(stateOf(e), TcpState::kTimeWait);  // nothing changed: the close was complete
  EXPECT_EQ(e.counters().dropped(DropReason::kRstAfterClose), 1u);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstOutOfWindow), 0u);

  // The other kind in the same capture (2946 of them): a duplicate ACK of the backend's FIN
  // reaches the closed backend, whose RST then sits exactly at the client's RCV.NXT: accepted
  // and translated to it (the client in TIME_WAIT takes it, RFC 1337's assassination, as it
  // would without the proxy).
  ASSERT_EQ(client(kAck, kC + 98, k + 66).d.verdict, Verdict::kAccept);
  auto exact = backendRst(e, kB + 66);
  ASSERT_EQ(exact.d.verdict, Verdict::kAccept) << dropReasonName(exact.d.reason);
  EXPECT_EQ(exact.pkt.seq(), k + 66);
  EXPECT_EQ(exact.pkt.dst().toString(), kClient);
  EXPECT_EQ(exact.pkt.src().toString(), kVip);
  EXPECT_TRUE(checksumsValid(exact.bytes));
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  EXPECT_EQ(e.counters().rst_accepted, 1u);
  // Another stale one after the reset: still refused, still after the close.
  EXPECT_EQ(backendRst(e, kB + 1).d.reason, DropReason::kRstAfterClose);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstAfterClose), 2u);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstOutOfWindow), 0u);
}

// The control: the same RST on a flow that is still open is out of the window of a live
// connection, and keeps its name (a blind RST, RFC 5961 3.2); the flow stays established.
TEST(RstAfterClose, TheSameRstOnALiveFlowIsStillOutOfWindow) {
  Engine e(config());
  const uint32_t k = exchange(e);
  ASSERT_EQ(run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kAck | kPsh).seq(kB + 1)
                       .ack(kC + 97).window(64).payloadSize(64).build()).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(kC + 97).ack(k + 65)
                       .window(63).build()).d.verdict,
            Verdict::kAccept);
  auto rst = backendRst(e, kB + 1);
  EXPECT_EQ(rst.d.reason, DropReason::kRstOutOfWindow) << dropReasonName(rst.d.reason);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_EQ(e.counters().dropped(DropReason::kRstAfterClose), 0u);
}

}  // namespace
}  // namespace tandem
