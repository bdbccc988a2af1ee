// Translator tests: address rewrite, sequence adjustment around a correction position and across
// the 2^32 wrap, SACK edges, and every checksum policy.
#include <gtest/gtest.h>

#include "common/packet.h"
#include "proxy/core/translator.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kAck = 0x10;

Flow makeFlow() {
  Flow f;
  f.client_addr = *IpAddr::parse("10.0.0.2");
  f.client_port = 40000;
  f.vip_addr = *IpAddr::parse("10.0.0.100");
  f.vip_port = 80;
  f.backend_addr = *IpAddr::parse("10.1.0.2");
  f.backend_port = 8080;
  f.source_addr = *IpAddr::parse("10.1.0.1");
  f.source_port = 30000;
  f.in_use = true;
  return f;
}

struct Translated {
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
};

Translated translate(const Flow& f, Direction dir, std::vector<uint8_t> p, PacketMeta meta = {}) {
  Translated t{std::move(p), {}};
  EXPECT_EQ(parseTcpPacket(t.bytes.data(), t.bytes.size(), t.pkt), ParseError::kNone);
  TcpOptions opts;
  EXPECT_EQ(parseTcpOptions(t.pkt.options(), t.pkt.optionsLen(), opts), OptionError::kNone);
  Counters c;
  translateSegment(f, dir, t.pkt, opts, meta, c);
  return t;
}

TEST(SeqAdjust, OffsetsFollowTheCorrectionPosition) {
  SeqAdj a{1000, 0, 50};
  EXPECT_EQ(seqForward(a, 900), 900u);    // before: a retransmission of old bytes
  EXPECT_EQ(seqForward(a, 1000), 1000u);  // at the position: still "before"
  EXPECT_EQ(seqForward(a, 1001), 1051u);  // after
  // Acks from the far side name adjusted numbers; map them back.
  EXPECT_EQ(ackBackward(a, 900), 900u);
  EXPECT_EQ(ackBackward(a, 1051), 1001u);
  EXPECT_EQ(ackBackward(a, 1000), 1000u);
}

TEST(SeqAdjust, WrapsAcross2To32) {
  SeqAdj a{0xfffffff0u, 0, 0x20};
  EXPECT_EQ(seqForward(a, 0xffffff00u), 0xffffff00u);
  EXPECT_EQ(seqForward(a, 0xfffffff8u), 0x18u);       // after the position, wraps past 0
  EXPECT_EQ(seqForward(a, 0x10u), 0x30u);             // already wrapped on input
  EXPECT_EQ(ackBackward(a, 0x18u), 0xfffffff8u);
  SeqAdj neg{100, 0, -200};
  EXPECT_EQ(seqForward(neg, 150), static_cast<uint32_t>(-50));
  EXPECT_EQ(ackBackward(neg, static_cast<uint32_t>(-50)), 150u);
}

TEST(Translator, ClientToBackendRewritesAddressesAndKeepsChecksumsValid) {
  Flow f = makeFlow();
  auto t = translate(f, Direction::kFromClient,
                     PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                         .seq(7).ack(9).payload("hello").build());
  EXPECT_EQ(t.pkt.src().toString(), "10.1.0.1:30000");
  EXPECT_EQ(t.pkt.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(t.pkt.seq(), 7u);
  EXPECT_EQ(t.pkt.ack(), 9u);
  EXPECT_TRUE(checksumsValid(t.bytes));
}

TEST(Translator, BackendToClient) {
  Flow f = makeFlow();
  auto t = translate(f, Direction::kFromBackend,
                     PacketBuilder().src("10.1.0.2:8080").dst("10.1.0.1:30000").flags(kAck)
                         .seq(7).ack(9).payload("world!").build());
  EXPECT_EQ(t.pkt.src().toString(), "10.0.0.100:80");
  EXPECT_EQ(t.pkt.dst().toString(), "10.0.0.2:40000");
  EXPECT_TRUE(checksumsValid(t.bytes));
}

struct SeqCase {
  const char* description;
  Direction dir;
  uint32_t seq, ack;
  std::vector<SackBlock> sack;
  uint32_t want_seq, want_ack;
  std::vector<SackBlock> want_sack;
};

TEST(Translator, GoldenSequenceTranslation) {
  Flow f = makeFlow();
  f.has_seqadj = true;
  f.adj[0] = {0xfffffff0u, 0, 100};    // client bytes after the position shift by +100
  f.adj[1] = {5000, 10, -20};          // backend bytes: +10 before, -20 after
  const SeqCase cases[] = {
      {"client retransmits bytes before the position", Direction::kFromClient, 0xffffff00u,
       5015, {}, 0xffffff00u, 5035, {}},
      {"client new data after the position wraps", Direction::kFromClient, 0xfffffff8u, 4000,
       {}, 0x5cu, 3990, {}},
      {"backend before its position", Direction::kFromBackend, 4990, 0x5cu, {},
       5000, 0xfffffff8u, {}},
      {"backend after its position; ack of wrapped client data", Direction::kFromBackend, 6000,
       0x64u, {}, 5980, 0u, {}},
      {"SACK edges follow the ack's direction", Direction::kFromBackend, 6000, 0x100u,
       {{0x64u, 0xc8u}, {0x1f4u, 0x258u}}, 5980, 0x9cu,
       {{0u, 0x64u}, {0x190u, 0x1f4u}}},
      {"client SACK of backend bytes", Direction::kFromClient, 0x10u, 5980,
       {{5990, 6010}}, 0x74u, 6000, {{6010, 6030}}},
  };
  for (const auto& tc : cases) {
    const bool from_client = tc.dir == Direction::kFromClient;
    auto t = translate(f, tc.dir,
                       PacketBuilder()
                           .src(from_client ? "10.0.0.2:40000" : "10.1.0.2:8080")
                           .dst(from_client ? "10.0.0.100:80" : "10.1.0.1:30000")
                           .flags(kAck).seq(tc.seq).ack(tc.ack).timestamp(11, 22).sack(tc.sack)
                           .payloadSize(20).build());
    EXPECT_EQ(t.pkt.seq(), tc.want_seq) << tc.description;
    EXPECT_EQ(t.pkt.ack(), tc.want_ack) << tc.description;
    TcpOptions o;
    ASSERT_EQ(parseTcpOptions(t.pkt.options(), t.pkt.optionsLen(), o), OptionError::kNone);
    ASSERT_EQ(o.sack_count, tc.want_sack.size()) << tc.description;
    for (size_t i = 0; i < tc.want_sack.size(); ++i)
      EXPECT_EQ(o.sack[i], tc.want_sack[i]) << tc.description << " block " << i;
    EXPECT_EQ(o.ts_val, 11u) << tc.description;  // timestamps pass untouched in passthrough
    EXPECT_EQ(o.ts_ecr, 22u) << tc.description;
    EXPECT_TRUE(checksumsValid(t.bytes)) << tc.description;
  }
}

TEST(Translator, IncrementalChecksumSurvivesManyRandomRewrites) {
  uint32_t x = 12345;
  auto rnd = [&] { x = x * 1664525u + 1013904223u; return x; };
  for (int i = 0; i < 2000; ++i) {
    Flow f = makeFlow();
    f.source_addr = IpAddr::fromV4(rnd());
    f.backend_addr = IpAddr::fromV4(rnd());
    f.source_port = static_cast<uint16_t>(rnd());
    f.backend_port = static_cast<uint16_t>(rnd());
    f.has_seqadj = true;
    f.adj[0] = {rnd(), static_cast<int32_t>(rnd()), static_cast<int32_t>(rnd())};
    f.adj[1] = {rnd(), static_cast<int32_t>(rnd()), static_cast<int32_t>(rnd())};
    auto t = translate(f, Direction::kFromClient,
                       PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                           .seq(rnd()).ack(rnd()).sack({{rnd(), rnd()}})
                           .payloadSize(rnd() % 200, static_cast<uint8_t>(rnd())).build());
    ASSERT_TRUE(checksumsValid(t.bytes)) << "iteration " << i;
  }
}

TEST(Translator, PartialChecksumNonGsoIsCompletedInFull) {
  Flow f = makeFlow();
  PacketMeta meta;
  meta.csum_not_ready = true;
  auto t = translate(f, Direction::kFromClient,
                     PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                         .payloadSize(101).partialChecksum().build(),
                     meta);
  EXPECT_TRUE(checksumsValid(t.bytes));
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// "NOP SACK ..." leaves the SACK blocks at an odd offset: the incremental checksum must still
// match a full recomputation (found by review of the fuzzing work).
TEST(Translator, SackAtOddOffsetKeepsChecksumValid) {
  Flow f = makeFlow();
  f.has_seqadj = true;
  f.adj[1] = {5000, 0x01020304, 0x0a0b0c0d};
  // NOP, SACK(len 10) with one block, then EOL padding: blocks start at options offset 3.
  std::vector<uint8_t> opts = {1, 5, 10, 0, 0, 0x13, 0x88, 0, 0, 0x17, 0x70, 0};
  auto t = translate(f, Direction::kFromClient,
                     PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(kAck)
                         .seq(1).ack(6000).rawOptions(opts).payloadSize(7).build());
  TcpOptions o;
  ASSERT_EQ(parseTcpOptions(t.pkt.options(), t.pkt.optionsLen(), o), OptionError::kNone);
  ASSERT_EQ(o.sack_count, 1u);
  EXPECT_EQ(o.sack_offset % 2, 1u);
  EXPECT_EQ(o.sack[0].left, ackBackward(f.adj[1], 5000));
  EXPECT_TRUE(checksumsValid(t.bytes));
}

}  // namespace
}  // namespace tandem
