// The kernel fast path against the engine's translator: every case builds a Flow and a packet,
// translates a copy with translateSegment() (complete checksum), runs the loaded BPF program on
// another copy with BPF_PROG_TEST_RUN (fastPathEntry() gives its map entry) and compares the two
// byte for byte, checksums included. Then what the program leaves alone (SYN, close, no entry,
// IP options, marked, truncated), the close events, the "seen" fields and the map operations.
//
// Needs root and a kernel with BPF: skipped loudly otherwise (CI runs it as root).
#include <gtest/gtest.h>

#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <thread>

#include "common/checksum.h"
#include "common/packet.h"
#include "proxy/core/fastpath_entry.h"
#include "proxy/core/translator.h"
#include "proxy/fastpath/kernel_fastpath.h"
#include "tests/unit/kernel_fastpath_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
constexpr const char* kClient = "10.0.0.2:40000";
constexpr const char* kVip = "10.0.0.100:80";
constexpr const char* kBackend = "10.1.0.2:8080";
constexpr const char* kSource = "10.1.0.1:30000";

Flow passthroughFlow(bool snat) {
  Flow f;
  f.client_addr = *IpAddr::parse("10.0.0.2");
  f.client_port = 40000;
  f.vip_addr = *IpAddr::parse("10.0.0.100");
  f.vip_port = 80;
  f.backend_addr = *IpAddr::parse("10.1.0.2");
  f.backend_port = 8080;
  // Transparent: the backend leg keeps the client as its source.
  f.source_addr = *IpAddr::parse(snat ? "10.1.0.1" : "10.0.0.2");
  f.source_port = snat ? 30000 : 40000;
  f.in_use = true;
  return f;
}

Flow spliceFlow(int32_t backend_off, int32_t client_off, uint32_t ts_offset) {
  Flow f = passthroughFlow(true);
  f.splice = true;
  f.has_seqadj = true;
  f.adj[dirIndex(Direction::kFromBackend)] = {0x12345678u, backend_off, backend_off};
  f.adj[dirIndex(Direction::kFromClient)] = {0x0badf00du, client_off, client_off};
  f.has_ts_adj = true;
  f.ts_offset = ts_offset;
  return f;
}

PacketBuilder from(Direction dir, const Flow& f) {
  PacketBuilder b;
  if (dir == Direction::kFromClient) return b.src(kClient).dst(kVip);
  return b.src(kBackend).dst(f.source_addr.toString() + ":" + std::to_string(f.source_port));
}

/// translateSegment() on a copy with a complete checksum, as NFQUEUE hands a forwarded packet.
std::vector<uint8_t> engineTranslate(const Flow& f, Direction dir, std::vector<uint8_t> p) {
  TcpPacket pkt;
  EXPECT_EQ(parseTcpPacket(p.data(), p.size(), pkt), ParseError::kNone);
  TcpOptions opts;
  EXPECT_EQ(parseTcpOptions(pkt.options(), pkt.optionsLen(), opts), OptionError::kNone);
  Counters c;
  translateSegment(f, dir, pkt, opts, PacketMeta{}, c);
  return p;
}

/// Raw options: `pad` NOPs, then a timestamp (if ts) and a SACK with `blocks` blocks.
std::vector<uint8_t> rawOptions(int pad, bool ts, int blocks, uint32_t base) {
  std::vector<uint8_t> o(static_cast<size_t>(pad), 1);
  auto u32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) o.push_back(static_cast<uint8_t>(v >> s));
  };
  if (ts) {
    o.insert(o.end(), {8, 10});
    u32(base + 7);
    u32(base + 9);
  }
  if (blocks > 0) {
    o.insert(o.end(), {5, static_cast<uint8_t>(2 + 8 * blocks)});
    for (int i = 0; i < blocks; ++i) {
      u32(base + 1000u * static_cast<uint32_t>(i) + 100);
      u32(base + 1000u * static_cast<uint32_t>(i) + 600);
    }
  }
  return o;
}

class FastPathBpf : public test::KernelFastPathFixture<::testing::Test> {
 protected:
  /// Installs the flow's entry for `dir` (plus `extra` rewrite flags) and returns the key.
  tandem_fp_key install(const Flow& f, Direction dir, uint8_t extra = 0) {
    tandem_fp_key k{};
    tandem_fp_rewrite v{};
    EXPECT_TRUE(fastPathEntry(f, dir, k, v));
    v.flags = static_cast<uint8_t>(v.flags | extra);
    v.flow_id = 41;
    v.generation = 3;
    EXPECT_TRUE(fp_->update(k, v));
    return k;
  }

  /// Runs `p` through the program; expects it translated exactly as the engine would.
  void expectSame(const Flow& f, Direction dir, const std::vector<uint8_t>& p,
                  const std::string& what, uint8_t extra = 0) {
    install(f, dir, extra);
    const auto want = engineTranslate(f, dir, p);
    auto got = p;
    uint32_t mark = 0;
    EXPECT_EQ(fp_->testRun(got, &mark), TC_ACT_OK) << what;
    EXPECT_EQ(mark, TANDEM_FP_MARK) << what;
    EXPECT_EQ(test::hexDump(got), test::hexDump(want)) << what;
    EXPECT_EQ(got, want) << what;
    EXPECT_TRUE(checksumsValid(got)) << what;
    EXPECT_NE(got, p) << what << ": nothing was rewritten";
  }

  /// Runs `p`; expects it untouched, unmarked, and the stat `idx` moved by one.
  void expectUntouched(std::vector<uint8_t> p, int idx, const std::string& what,
                       uint32_t mark_in = 0) {
    const auto before = fp_->stats();
    const auto orig = p;
    uint32_t mark = mark_in;
    EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK) << what;
    EXPECT_EQ(mark, mark_in) << what;
    EXPECT_EQ(p, orig) << what;
    const auto after = fp_->stats();
    ASSERT_EQ(after.size(), static_cast<size_t>(TANDEM_FP_ST_COUNT));
    for (int i = 0; i < TANDEM_FP_ST_COUNT; ++i)
      EXPECT_EQ(after[i] - before[i], i == idx ? 1u : 0u) << what << ": stat " << i;
  }
};

TEST_F(FastPathBpf, PassthroughAddressesOnlyBothDirections) {
  uint64_t bytes = 0;
  for (bool snat : {false, true}) {
    const Flow f = passthroughFlow(snat);
    for (Direction dir : {Direction::kFromClient, Direction::kFromBackend}) {
      for (size_t len : {0u, 1u, 1400u}) {
        const std::string what = std::string(snat ? "snat" : "transparent") + " dir " +
                                 std::to_string(dirIndex(dir)) + " payload " + std::to_string(len);
        const auto p = from(dir, f).flags(kAck | kPsh).seq(0xdeadbeef).ack(77).timestamp(5, 6)
                           .payloadSize(len, static_cast<uint8_t>(len)).build();
        bytes += p.size();
        expectSame(f, dir, p, what);
      }
    }
  }
  const auto st = fp_->stats();
  EXPECT_EQ(st[TANDEM_FP_ST_TRANSLATED], 12u);
  EXPECT_EQ(st[TANDEM_FP_ST_BYTES], bytes);  // IP bytes
}

TEST_F(FastPathBpf, SpliceOffsetsWrapAcross2To32BothLegs) {
  struct Case {
    int32_t backend_off, client_off;
    uint32_t seq, ack;
  };
  const Case cases[] = {
      {0x10000000, 0, 0xfffffff0u, 0x00000010u},
      {-0x20, 0x40, 0x00000010u, 0xffffffe0u},
      {static_cast<int32_t>(0x80000001u), -5, 0x7fffffffu, 3u},
  };
  for (const auto& c : cases) {
    const Flow f = spliceFlow(c.backend_off, c.client_off, 0);
    for (Direction dir : {Direction::kFromClient, Direction::kFromBackend}) {
      expectSame(f, dir,
                 from(dir, f).flags(kAck).seq(c.seq).ack(c.ack).payloadSize(100).build(),
                 "splice seq " + std::to_string(c.seq) + " dir " + std::to_string(dirIndex(dir)));
    }
  }
}

TEST_F(FastPathBpf, SackBlocksAtEvenAndOddOffsets) {
  const Flow f = spliceFlow(-0x1000, 0x333, 0);
  for (Direction dir : {Direction::kFromClient, Direction::kFromBackend}) {
    for (int blocks = 1; blocks <= 4; ++blocks) {
      std::vector<SackBlock> sack;
      for (int i = 0; i < blocks; ++i)
        sack.push_back({0xfffff000u + 1000u * static_cast<uint32_t>(i),
                        0xfffff100u + 1000u * static_cast<uint32_t>(i)});
      const std::string what = "dir " + std::to_string(dirIndex(dir)) + " blocks " +
                               std::to_string(blocks);
      // NOP NOP SACK: edges at an even offset (with a timestamp when three fit beside it).
      auto b = from(dir, f).flags(kAck).seq(1).ack(0xfffff000u).sack(sack).payloadSize(10);
      if (blocks <= 3) b.timestamp(1, 2);
      expectSame(f, dir, b.build(), what + " even");
      // One NOP: edges at an odd offset.
      expectSame(f, dir,
                 from(dir, f).flags(kAck).seq(1).ack(2)
                     .rawOptions(rawOptions(1, false, blocks, 0xffffff00u)).payloadSize(10).build(),
                 what + " odd");
    }
  }
}

TEST_F(FastPathBpf, TimestampsBothDirectionsWithAndWithoutAck) {
  const Flow f = spliceFlow(0, 0, 0xfffffff0u);
  for (Direction dir : {Direction::kFromClient, Direction::kFromBackend}) {
    for (uint8_t flags : {kAck, kPsh}) {
      const std::string what = "dir " + std::to_string(dirIndex(dir)) + " flags " +
                               std::to_string(flags);
      auto b = from(dir, f).flags(flags).seq(1).timestamp(0x10, 0x20).payloadSize(5);
      if (flags & kAck) b.ack(99);
      b.flags(flags);
      const auto p = b.build();
      // (A client segment without ACK keeps its TSecr: only the addresses change.)
      expectSame(f, dir, p, what + " even");
      // Timestamp at an odd offset (one NOP before it).
      auto o = from(dir, f).flags(flags).seq(1)
                   .rawOptions(rawOptions(1, true, 0, 0xfffffff8u)).payloadSize(5);
      if (flags & kAck) o.ack(99);
      o.flags(flags);
      expectSame(f, dir, o.build(), what + " odd");
    }
  }
}

TEST_F(FastPathBpf, WindowRescaleWithClamp) {
  Flow f = spliceFlow(0, 0, 0);
  f.rescale_window = true;
  struct Case {
    uint8_t in, out;
    uint16_t window;
  };
  const Case cases[] = {{7, 7, 1000}, {9, 7, 100}, {7, 9, 1001}, {14, 0, 2}, {10, 2, 0xffff},
                        {0, 14, 0xffff}};
  for (const auto& c : cases) {
    f.backend_wscale = c.in;
    f.client_view_wscale = c.out;
    for (Direction dir : {Direction::kFromClient, Direction::kFromBackend})
      expectSame(f, dir, from(dir, f).flags(kAck).ack(5).window(c.window).payloadSize(3).build(),
                 "window " + std::to_string(c.window) + " <<" + std::to_string(c.in) + " >>" +
                     std::to_string(c.out) + " dir " + std::to_string(dirIndex(dir)));
  }
  // The clamp: 4 << 14 >> 0 does not fit 16 bits.
  tandem_fp_key k{};
  tandem_fp_rewrite v{};
  f.backend_wscale = 14;
  f.client_view_wscale = 0;
  ASSERT_TRUE(fastPathEntry(f, Direction::kFromBackend, k, v));
  ASSERT_TRUE(fp_->update(k, v));
  auto p = from(Direction::kFromBackend, f).flags(kAck).ack(5).window(4).build();
  ASSERT_EQ(fp_->testRun(p), TC_ACT_OK);
  EXPECT_EQ(load16(&p[20 + 14]), 0xffff);
}

TEST_F(FastPathBpf, FinWithoutCloseFastIsLeftToNfqueue) {
  const Flow f = spliceFlow(7, 9, 11);
  install(f, Direction::kFromClient);
  expectUntouched(from(Direction::kFromClient, f).flags(kFin | kAck).ack(3).build(),
                  TANDEM_FP_ST_PASS_CLOSE, "fin");
  expectUntouched(from(Direction::kFromClient, f).flags(kRst).build(), TANDEM_FP_ST_PASS_RST,
                  "rst");
  size_t n = fp_->drainEvents([](const tandem_fp_event&) {});
  EXPECT_EQ(n, 0u);
}

TEST_F(FastPathBpf, FinWithCloseFastIsTranslatedAndReportedRstNever) {
  const Flow f = spliceFlow(7, 9, 11);
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);  // the FIN arms its ack's report
  expectSame(f, Direction::kFromBackend,
             from(Direction::kFromBackend, f).flags(kFin | kAck).seq(500).ack(600).window(321)
                 .payloadSize(20).build(),
             "fin", TANDEM_FP_CLOSE_FAST);
  // A RST goes to the engine even with close-fast: only it checks RSTs against the window
  // (RFC 5961 3.2), so a blind RST cannot pass through the kernel.
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);
  expectUntouched(from(Direction::kFromClient, f).flags(kRst).seq(700).window(0).build(),
                  TANDEM_FP_ST_PASS_RST, "rst");
  expectUntouched(from(Direction::kFromClient, f).flags(kRst | kAck).seq(700).ack(9).build(),
                  TANDEM_FP_ST_PASS_RST, "rst+ack");
  std::vector<tandem_fp_event> evs;
  EXPECT_GE(fp_->eventFd(), 0);
  EXPECT_EQ(fp_->drainEvents([&](const tandem_fp_event& e) { evs.push_back(e); }), 1u);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].flow_id, 41u);
  EXPECT_EQ(evs[0].generation, 3u);
  EXPECT_EQ(evs[0].seq, 500u);
  EXPECT_EQ(evs[0].ack, 600u);
  EXPECT_EQ(evs[0].payload_len, 20u);
  EXPECT_EQ(evs[0].window, 321u);
  EXPECT_EQ(evs[0].tcp_flags, kFin | kAck);
  EXPECT_EQ(evs[0].dir, 1u);
  EXPECT_GT(evs[0].ns, 0u);
  const auto st = fp_->stats();
  EXPECT_EQ(st[TANDEM_FP_ST_EVENTS], 1u);
  EXPECT_EQ(st[TANDEM_FP_ST_EVENTS_FULL], 0u);
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) {}), 0u);
}

// tandemd writes a flow's two entries at different moments (FastPathPort::install): a FIN that
// finds only its own cannot arm the other's report of its acknowledgement, so it is not taken.
TEST_F(FastPathBpf, AFinWhoseOtherDirectionIsNotInTheMapIsLeftToNfqueue) {
  const Flow f = spliceFlow(7, 9, 11);
  install(f, Direction::kFromBackend, TANDEM_FP_CLOSE_FAST);
  const auto fin = from(Direction::kFromBackend, f).flags(kFin | kAck).seq(500).ack(600).build();
  expectUntouched(fin, TANDEM_FP_ST_PASS_NO_PEER, "fin, no peer entry");
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) {}), 0u);
  // Data of the same direction is translated: only the close needs both entries.
  auto data = from(Direction::kFromBackend, f).flags(kAck | kPsh).seq(400).ack(600)
                  .payloadSize(10).build();
  uint32_t mark = 0;
  EXPECT_EQ(fp_->testRun(data, &mark), TC_ACT_OK);
  EXPECT_EQ(mark, TANDEM_FP_MARK);
  // Once the other entry is written, the same FIN is taken and reported.
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);
  auto again = fin;
  mark = 0;
  EXPECT_EQ(fp_->testRun(again, &mark), TC_ACT_OK);
  EXPECT_EQ(mark, TANDEM_FP_MARK);
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) {}), 1u);
}

TEST_F(FastPathBpf, TheFirstAckOfTheOtherSidesFinIsReportedOnce) {
  // Splice offsets on both legs: the backend acks the client's FIN in the backend leg's space
  // (after the client direction's offset), the client acks the backend's in its own.
  const Flow f = spliceFlow(7, 9, 11);
  const tandem_fp_key ck = install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);
  const tandem_fp_key bk = install(f, Direction::kFromBackend, TANDEM_FP_CLOSE_FAST);
  tandem_fp_rewrite cv{}, bv{};
  ASSERT_TRUE(fp_->lookup(ck, cv));
  ASSERT_TRUE(fp_->lookup(bk, bv));
  // A backend ACK before any FIN: translated, no event.
  auto p = from(Direction::kFromBackend, f).flags(kAck).seq(5000).ack(100).build();
  uint32_t mark = 0;
  EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
  EXPECT_EQ(mark, TANDEM_FP_MARK);
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) {}), 0u);

  // The client's FIN (10 bytes of data with it) at seq 1000: it ends at 1011 on the client's
  // wire, 1011 + the client offset as the backend sees it.
  p = from(Direction::kFromClient, f).flags(kFin | kAck).seq(1000).ack(3).payloadSize(10).build();
  mark = 0;
  EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
  EXPECT_EQ(mark, TANDEM_FP_MARK);
  ASSERT_TRUE(fp_->lookup(bk, bv));
  EXPECT_EQ(bv.fin_state, TANDEM_FP_PEER_FIN);
  EXPECT_EQ(bv.peer_fin_ack, 1011u + cv.seq_add);
  ASSERT_TRUE(fp_->lookup(ck, cv));
  EXPECT_EQ(cv.fin_state, 0u);  // nobody's FIN for the client to ack yet
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) {}), 1u);  // the FIN itself

  // A backend ACK short of the FIN: no event. The one that covers it: one event. Later: none.
  for (uint32_t ack : {1010u + cv.seq_add, 1011u + cv.seq_add, 1011u + cv.seq_add}) {
    p = from(Direction::kFromBackend, f).flags(kAck).seq(5000).ack(ack).build();
    mark = 0;
    EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
    EXPECT_EQ(mark, TANDEM_FP_MARK);  // translated either way
  }
  std::vector<tandem_fp_event> evs;
  EXPECT_EQ(fp_->drainEvents([&](const tandem_fp_event& e) { evs.push_back(e); }), 1u);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].tcp_flags, kAck);
  EXPECT_EQ(evs[0].ack, 1011u + cv.seq_add);
  EXPECT_EQ(evs[0].dir, 1u);
  ASSERT_TRUE(fp_->lookup(bk, bv));
  EXPECT_EQ(bv.fin_state, TANDEM_FP_PEER_FIN | TANDEM_FP_PEER_FIN_ACKED);

  // The backend's FIN at 5000: the client acks it at 5001 + the backend offset.
  p = from(Direction::kFromBackend, f).flags(kFin | kAck).seq(5000).ack(1011u + cv.seq_add).build();
  mark = 0;
  EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
  ASSERT_TRUE(fp_->lookup(ck, cv));
  EXPECT_EQ(cv.fin_state, TANDEM_FP_PEER_FIN);
  EXPECT_EQ(cv.peer_fin_ack, 5001u + bv.seq_add);
  p = from(Direction::kFromClient, f).flags(kAck).seq(1011).ack(5001u + bv.seq_add).build();
  mark = 0;
  EXPECT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
  evs.clear();
  EXPECT_EQ(fp_->drainEvents([&](const tandem_fp_event& e) { evs.push_back(e); }), 2u);
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_EQ(evs[0].tcp_flags, kFin | kAck);  // the backend's FIN
  EXPECT_EQ(evs[1].tcp_flags, kAck);         // the last ACK
  EXPECT_EQ(evs[1].dir, 0u);
}

TEST_F(FastPathBpf, AFullEventRingLeavesTheCloseToNfqueue) {
  const Flow f = spliceFlow(7, 9, 11);
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);
  install(f, Direction::kFromBackend, TANDEM_FP_CLOSE_FAST);
  const auto fin = from(Direction::kFromClient, f).flags(kFin | kAck).seq(5).ack(6).build();
  // 256 KiB of 40-byte records (8-byte header + 32): about 6550 fit.
  int translated = 0;
  for (; translated < 10000; ++translated) {
    auto p = fin;
    uint32_t mark = 0;
    ASSERT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
    if (mark != TANDEM_FP_MARK) {
      EXPECT_EQ(p, fin);  // untouched
      break;
    }
  }
  EXPECT_GT(translated, 6000);
  EXPECT_LT(translated, 10000);
  auto st = fp_->stats();
  EXPECT_EQ(st[TANDEM_FP_ST_EVENTS], static_cast<uint64_t>(translated));
  EXPECT_EQ(st[TANDEM_FP_ST_EVENTS_FULL], 1u);
  EXPECT_EQ(st[TANDEM_FP_ST_TRANSLATED], static_cast<uint64_t>(translated));
  // Drained, it reports again.
  size_t seen = 0;
  EXPECT_EQ(fp_->drainEvents([&](const tandem_fp_event& e) { seen += e.seq == 5; }),
            static_cast<size_t>(translated));
  EXPECT_EQ(seen, static_cast<size_t>(translated));
  auto p = fin;
  uint32_t mark = 0;
  ASSERT_EQ(fp_->testRun(p, &mark), TC_ACT_OK);
  EXPECT_EQ(mark, TANDEM_FP_MARK);
  EXPECT_EQ(fp_->stats()[TANDEM_FP_ST_EVENTS_FULL], 1u);
}

TEST_F(FastPathBpf, WhatItLeavesAlone) {
  const Flow f = spliceFlow(7, 9, 11);
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);
  expectUntouched(from(Direction::kFromClient, f).flags(kSyn).mss(1460).build(),
                  TANDEM_FP_ST_PASS_SYN, "syn");
  expectUntouched(from(Direction::kFromClient, f).flags(kSyn | kAck).ack(1).build(),
                  TANDEM_FP_ST_PASS_SYN, "syn-ack");
  expectUntouched(PacketBuilder().src("10.0.0.3:40000").dst(kVip).flags(kAck).build(),
                  TANDEM_FP_ST_PASS_NO_FLOW, "no entry");
  // The backend direction has no entry in this test.
  expectUntouched(from(Direction::kFromBackend, f).flags(kAck).build(),
                  TANDEM_FP_ST_PASS_NO_FLOW, "other direction");
  // Already translated (by the program on a lower device): no stat moves.
  expectUntouched(from(Direction::kFromClient, f).flags(kAck).payloadSize(9).build(),
                  TANDEM_FP_ST_COUNT, "marked", TANDEM_FP_MARK);

  // IP options (ihl 6): the engine's.
  auto p = from(Direction::kFromClient, f).flags(kAck).payloadSize(4).build();
  p.insert(p.begin() + 20, {1, 1, 1, 0});
  p[0] = 0x46;
  store16(&p[2], static_cast<uint16_t>(p.size()));
  store16(&p[10], 0);
  store16(&p[10], ipv4HeaderChecksum(p.data(), 24));
  expectUntouched(p, TANDEM_FP_ST_PASS_UNPARSED, "ip options");

  // A fragment.
  p = from(Direction::kFromClient, f).flags(kAck).payloadSize(4).build();
  store16(&p[6], 0x2000);  // MF
  expectUntouched(p, TANDEM_FP_ST_PASS_UNPARSED, "fragment");

  // Malformed options (a SACK of 9 bytes).
  expectUntouched(from(Direction::kFromClient, f).flags(kAck)
                      .rawOptions({1, 5, 9, 0, 0, 0, 1, 0, 0, 0, 2}).build(),
                  TANDEM_FP_ST_PASS_UNPARSED, "bad sack");
  // An option running past the header.
  expectUntouched(from(Direction::kFromClient, f).flags(kAck).rawOptions({1, 1, 8, 10}).build(),
                  TANDEM_FP_ST_PASS_UNPARSED, "truncated option");

  // A truncated TCP header: the IP header says 30 bytes, ten of TCP.
  p = from(Direction::kFromClient, f).flags(kAck).build();
  p.resize(30);
  store16(&p[2], 30);
  store16(&p[10], 0);
  store16(&p[10], ipv4HeaderChecksum(p.data(), 20));
  expectUntouched(p, TANDEM_FP_ST_PASS_UNPARSED, "truncated tcp (tot_len)");
  // The IP header claims more than arrived.
  p = from(Direction::kFromClient, f).flags(kAck).build();
  p.resize(30);
  expectUntouched(p, TANDEM_FP_ST_PASS_UNPARSED, "truncated tcp (short packet)");
  // Data offset pointing past the packet.
  p = from(Direction::kFromClient, f).flags(kAck).build();
  p[32] = 0xf0;
  expectUntouched(p, TANDEM_FP_ST_PASS_UNPARSED, "data offset past the end");
}

TEST_F(FastPathBpf, SeenFieldsAfterATranslatedPacket) {
  const Flow f = spliceFlow(7, 9, 11);
  const tandem_fp_key k = install(f, Direction::kFromClient);
  install(f, Direction::kFromBackend);  // for the FIN below
  tandem_fp_rewrite v{};
  ASSERT_TRUE(fp_->lookup(k, v));
  EXPECT_EQ(v.last_ns, 0u);
  auto p = from(Direction::kFromClient, f).flags(kAck | kPsh).seq(0xfffffffeu).ack(1234)
               .window(777).payloadSize(10).build();
  ASSERT_EQ(fp_->testRun(p), TC_ACT_OK);
  ASSERT_TRUE(fp_->lookup(k, v));
  EXPECT_GT(v.last_ns, 0u);
  EXPECT_EQ(v.seq_end, 8u);  // wraps
  EXPECT_EQ(v.ack, 1234u);
  EXPECT_EQ(v.window, 777u);
  EXPECT_EQ(v.tcp_flags, kAck | kPsh);
  EXPECT_EQ(v.flow_id, 41u);
  // Without ACK the ack stays; a FIN counts one.
  const uint64_t first = v.last_ns;
  install(f, Direction::kFromClient, TANDEM_FP_CLOSE_FAST);  // resets the seen fields
  p = from(Direction::kFromClient, f).flags(kFin).seq(100).window(5).build();
  ASSERT_EQ(fp_->testRun(p), TC_ACT_OK);
  ASSERT_TRUE(fp_->lookup(k, v));
  EXPECT_GE(v.last_ns, first);
  EXPECT_EQ(v.seq_end, 101u);
  EXPECT_EQ(v.ack, 0u);
  EXPECT_EQ(v.tcp_flags, kFin);
}

TEST_F(FastPathBpf, UpdateEraseClear) {
  const Flow f = spliceFlow(7, 9, 11);
  const tandem_fp_key kc = install(f, Direction::kFromClient);
  const tandem_fp_key kb = install(f, Direction::kFromBackend);
  tandem_fp_rewrite v{};
  ASSERT_TRUE(fp_->lookup(kb, v));
  EXPECT_EQ(v.dir, 1u);
  v.flow_id = 99;
  EXPECT_TRUE(fp_->update(kb, v));  // replaces
  tandem_fp_rewrite w{};
  ASSERT_TRUE(fp_->lookup(kb, w));
  EXPECT_EQ(w.flow_id, 99u);
  EXPECT_TRUE(fp_->erase(kc));
  EXPECT_FALSE(fp_->erase(kc));
  EXPECT_EQ(errno, ENOENT);
  EXPECT_FALSE(fp_->lookup(kc, w));
  auto p = from(Direction::kFromClient, f).flags(kAck).build();
  expectUntouched(p, TANDEM_FP_ST_PASS_NO_FLOW, "erased");
  // Fill the map (64 entries): the 65th is refused.
  tandem_fp_key k = kb;
  size_t added = 1;
  for (uint16_t port = 1; added < 64; ++port, ++added) {
    k.sport = port;
    ASSERT_TRUE(fp_->update(k, v)) << added;
  }
  k.sport = 5000;
  EXPECT_FALSE(fp_->update(k, v));
  EXPECT_EQ(errno, E2BIG);
  EXPECT_EQ(fp_->clear(), 64u);
  EXPECT_FALSE(fp_->lookup(kb, w));
  EXPECT_EQ(fp_->clear(), 0u);
  EXPECT_TRUE(fp_->update(k, v));
  EXPECT_TRUE(fp_->attached().empty());
}

TEST_F(FastPathBpf, AttachToAMissingInterfaceNamesIt) {
  try {
    fp_->attach("tdm-no-such-if0");
    FAIL() << "attach succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("tdm-no-such-if0"), std::string::npos) << e.what();
  }
}

/// Runs `fn` on a thread of its own in a new network namespace, after the shell commands
/// `setup` ran there: unshare(CLONE_NEWNET) moves only the calling thread, the commands' shell
/// inherits its namespace, and BPF_PROG_TEST_RUN (skb on that namespace's loopback) routes in it.
/// The namespace goes away with the thread. Returns what failed, or "" after `fn` ran.
std::string inPrivateNetns(const std::string& setup, const std::function<void()>& fn) {
  std::string failed;
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      failed = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    if (std::system(setup.c_str()) != 0) {
      failed = "the namespace's set-up failed: " + setup;
      return;
    }
    fn();
  });
  t.join();
  return failed;
}

/// `p` as ip_forward() leaves it: TTL one lower, header checksum recomputed.
std::vector<uint8_t> forwarded(std::vector<uint8_t> p) {
  p[8] = static_cast<uint8_t>(p[8] - 1);
  p[10] = p[11] = 0;
  const uint16_t sum = ipv4HeaderChecksum(p.data(), 20);
  p[10] = static_cast<uint8_t>(sum >> 8);
  p[11] = static_cast<uint8_t>(sum);
  return p;
}

/// `p` with another TTL (header checksum recomputed).
std::vector<uint8_t> withTtl(std::vector<uint8_t> p, uint8_t ttl) {
  p[8] = static_cast<uint8_t>(ttl + 1);
  return forwarded(std::move(p));
}

// daemon.fastpath_redirect: a translated packet leaves by the routed interface, to the
// neighbour's MAC, TTL decremented, or (no forwarding route, TTL 1, neighbour unknown,
// forwarding off, GSO segments above the MTU) goes to the IP stack translated. The namespace: loopback (where the test
// packet arrives) and tdmr0 (10.1.0.1/24, MAC 02:00:00:00:0a:01) with the backend 10.1.0.2 as a
// permanent neighbour at 02:00:00:00:0b:02; no route to the client's 10.0.0.0/24.
TEST_F(FastPathBpf, RedirectSendsTranslatedPacketsOutOfTheRoutedInterface) {
  const std::string setup =
      "ip link set lo up && ip link add tdmr0 type veth peer name tdmr1 && "
      "ip link set tdmr0 address 02:00:00:00:0a:01 up && ip link set tdmr1 up && "
      "ip addr add 10.1.0.1/24 dev tdmr0 && "
      "ip neigh replace 10.1.0.2 lladdr 02:00:00:00:0b:02 dev tdmr0 nud permanent && "
      "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv4.conf.lo.forwarding=1";
  const Flow f = passthroughFlow(false);
  install(f, Direction::kFromClient);
  install(f, Direction::kFromBackend);
  const auto to_backend = withTtl(from(Direction::kFromClient, f).flags(kAck | kPsh).seq(9)
                                      .ack(77).timestamp(5, 6).payloadSize(100).build(), 64);
  const auto to_client = withTtl(from(Direction::kFromBackend, f).flags(kAck).seq(77).ack(109)
                                     .build(), 64);
  const uint8_t backend_mac[6] = {2, 0, 0, 0, 0x0b, 2}, out_mac[6] = {2, 0, 0, 0, 0x0a, 1};

  // Each run: the tc action, the packet against `want`, and which stats moved by one.
  auto run = [&](std::vector<uint8_t> p, int action, const std::vector<uint8_t>& want,
                 std::initializer_list<int> moved, const std::string& what,
                 uint32_t gso_size = 0) {
    const auto before = fp_->stats();
    uint32_t mark = 0;
    uint8_t eth[ETH_HLEN] = {};
    EXPECT_EQ(fp_->testRun(p, &mark, eth, gso_size), action) << what;
    EXPECT_EQ(mark, TANDEM_FP_MARK) << what;
    EXPECT_EQ(test::hexDump(p), test::hexDump(want)) << what;
    EXPECT_TRUE(checksumsValid(p)) << what;
    if (action == TC_ACT_REDIRECT) {
      EXPECT_EQ(std::memcmp(eth, backend_mac, 6), 0) << what << ": destination MAC";
      EXPECT_EQ(std::memcmp(eth + 6, out_mac, 6), 0) << what << ": source MAC";
    }
    const auto after = fp_->stats();
    for (int i = 0; i < TANDEM_FP_ST_COUNT; ++i) {
      if (i == TANDEM_FP_ST_BYTES) continue;
      const bool m = std::find(moved.begin(), moved.end(), i) != moved.end();
      EXPECT_EQ(after[i] - before[i], m ? 1u : 0u) << what << ": stat " << i;
    }
  };

  const std::string failed = inPrivateNetns(setup, [&] {
    const auto engine = engineTranslate(f, Direction::kFromClient, to_backend);
    run(to_backend, TC_ACT_OK, engine, {TANDEM_FP_ST_TRANSLATED}, "redirect off: the stack's");
    ASSERT_TRUE(fp_->setRedirect(true));
    run(to_backend, TC_ACT_REDIRECT, forwarded(engine),
        {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_REDIRECTED}, "routed, neighbour known");
    // GSO, tdmr0's MTU 1500, a 32-byte TCP header (timestamps): segments of 1448 fit
    // (1448 + 20 + 32), of 1449 not: ip_forward() would refuse those, so the stack gets them.
    run(to_backend, TC_ACT_REDIRECT, forwarded(engine),
        {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_REDIRECTED}, "GSO, segments within the MTU", 1448);
    run(to_backend, TC_ACT_OK, engine, {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_ROUTED_STACK},
        "GSO, segments above the MTU", 1449);
    run(withTtl(to_backend, 1), TC_ACT_OK,
        engineTranslate(f, Direction::kFromClient, withTtl(to_backend, 1)),
        {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_ROUTED_STACK}, "TTL 1: ICMP is the stack's");
    run(to_client, TC_ACT_OK, engineTranslate(f, Direction::kFromBackend, to_client),
        {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_ROUTED_STACK}, "no route to the client");
    ASSERT_EQ(std::system("sysctl -qw net.ipv4.conf.lo.forwarding=0"), 0);
    run(to_backend, TC_ACT_OK, engine, {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_ROUTED_STACK},
        "forwarding off where it came in");
    ASSERT_EQ(std::system("sysctl -qw net.ipv4.conf.lo.forwarding=1 && "
                          "ip neigh del 10.1.0.2 dev tdmr0"), 0);
    run(to_backend, TC_ACT_OK, engine, {TANDEM_FP_ST_TRANSLATED, TANDEM_FP_ST_ROUTED_STACK},
        "neighbour unknown: the stack resolves it");
    ASSERT_TRUE(fp_->setRedirect(false));
    run(to_backend, TC_ACT_OK, engine, {TANDEM_FP_ST_TRANSLATED}, "redirect off again");
  });
  EXPECT_EQ(failed, "");
}

}  // namespace
}  // namespace tandem
