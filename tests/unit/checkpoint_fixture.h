#pragma once
// The engine fixture the checkpoint tests share (core_checkpoint_test.cc, the engine's change
// tracking and installation; checkpoint_codec_test.cc, the same through FlowRecord and the wire):
// one service with two backends and the cookie secret the pair shares, a packet run through an
// engine, and the splice connection both tests checkpoint (opened in two steps, so that a test
// can look at the pending flow in between).

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace tandem::test::checkpoint {

inline constexpr uint64_t kSec = 1'000'000'000ull;

/// VIP 10.0.0.100:80, backends 10.1.0.2:8080 and 10.1.0.3:8080 (SNAT address 10.1.0.1).
inline EngineConfig config(Mode mode, Addressing addressing = Addressing::kSnat) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse("10.0.0.100:80");
  s.backends = {*Endpoint::parse("10.1.0.2:8080"), *Endpoint::parse("10.1.0.3:8080")};
  s.mode = mode;
  s.addressing = addressing;
  if (addressing == Addressing::kSnat) s.snat_addr = *IpAddr::parse("10.1.0.1");
  c.services.push_back(s);
  c.max_flows = 64;
  c.splice.cookie_secret.assign(16, 7);  // shared by the pair
  return c;
}

/// `p` through `e` at `now`: the packet as it leaves, or empty if it was not accepted.
inline std::vector<uint8_t> run(Engine& e, std::vector<uint8_t> p, uint64_t now = kSec) {
  const size_t len = p.size();
  p.resize(256);
  const Decision d = e.process(p.data(), len, p.size(), {}, now);
  if (d.verdict != Verdict::kAccept) return {};
  p.resize(d.len);
  return p;
}

/// A parsed view of `p` (which must be a whole IPv4/TCP packet).
inline TcpPacket view(std::vector<uint8_t>& p) {
  TcpPacket v;
  EXPECT_EQ(parseTcpPacket(p.data(), p.size(), v), ParseError::kNone);
  return v;
}

/// The splice connection of client 10.0.0.2:41000 to the VIP as the active opened it.
struct SpliceOpen {
  std::string client = "10.0.0.2:41000";
  std::string vip = "10.0.0.100:80";
  uint32_t cookie = 0;         ///< the SYN cookie: the client leg's ISN for the server side
  uint32_t cookie_tsval = 0;   ///< the TSval of the cookie's SYN-ACK
  Endpoint backend, source;    ///< the backend leg, from the proxy's SYN to the backend
};

/// The client's SYN (ISN 1000, window scale 6, SACK, TS 10) answered with a cookie, its ACK,
/// and the backend SYN the proxy sends then. Use with ASSERT_NO_FATAL_FAILURE.
inline void openSplice(Engine& active, SpliceOpen& o) {
  auto synack = run(active, PacketBuilder().src(o.client).dst(o.vip).flags(tcpflag::kSyn).seq(1000)
                                .mss(1460).wscale(6).sackPermitted().timestamp(10, 0).build());
  ASSERT_FALSE(synack.empty());
  const TcpPacket sa = view(synack);
  TcpOptions so;
  ASSERT_EQ(parseTcpOptions(sa.options(), sa.optionsLen(), so), OptionError::kNone);
  o.cookie = sa.seq();
  o.cookie_tsval = so.ts_val;
  auto bsyn = run(active, PacketBuilder().src(o.client).dst(o.vip).flags(tcpflag::kAck).seq(1001)
                              .ack(o.cookie + 1).timestamp(11, so.ts_val).build());
  ASSERT_FALSE(bsyn.empty());
  o.backend = view(bsyn).dst();
  o.source = view(bsyn).src();
}

/// The backend's SYN-ACK (ISN 70000, window scale 9, SACK, TS 500): the splice completes.
inline void answerSplice(Engine& active, const SpliceOpen& o) {
  ASSERT_FALSE(run(active, PacketBuilder().src(o.backend.toString()).dst(o.source.toString())
                               .flags(tcpflag::kSyn | tcpflag::kAck).seq(70000).ack(1001).mss(1460).wscale(9)
                               .sackPermitted().timestamp(500, 11).build()).empty());
}

/// The standby holding the checkpoint translates the backend's response and the client's next
/// request byte for byte as the active does (the response lands in the cookie's space).
inline void expectStandbyTranslatesAlike(Engine& standby, Engine& active, const SpliceOpen& o) {
  auto resp = PacketBuilder().src(o.backend.toString()).dst(o.source.toString()).flags(tcpflag::kAck | tcpflag::kPsh)
                  .seq(70001).ack(1001).window(64).timestamp(503, 11).payload("200 OK").build();
  auto via_standby = run(standby, resp, 2 * kSec);
  ASSERT_FALSE(via_standby.empty());
  EXPECT_EQ(view(via_standby).seq(), o.cookie + 1);
  EXPECT_EQ(via_standby, run(active, resp, 2 * kSec));
  auto req = PacketBuilder().src(o.client).dst(o.vip).flags(tcpflag::kAck | tcpflag::kPsh).seq(1001).ack(o.cookie + 7)
                 .timestamp(12, o.cookie_tsval + 3).payload("GET /").build();
  EXPECT_EQ(run(standby, req, 2 * kSec), run(active, req, 2 * kSec));
}

}  // namespace tandem::test::checkpoint
