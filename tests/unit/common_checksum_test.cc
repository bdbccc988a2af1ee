// Internet checksum: full computation against an independent reference, and RFC 1624 incremental
// updates against full recomputation.

#include "common/checksum.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "common/bytes.h"
#include "common/packet.h"
#include "packet_builder.h"

namespace tandem {
namespace {

using Bytes = std::vector<uint8_t>;

// ---- Reference implementation: the textbook RFC 1071 loop, 16-bit words, no cleverness. ----

uint32_t refFoldLoop(uint32_t sum) {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}

/// One's-complement sum of 16-bit big-endian words (an odd last byte is padded with zero).
uint16_t refSum(const Bytes& b) {
  uint32_t sum = 0;
  for (size_t i = 0; i < b.size(); i += 2) {
    const uint32_t hi = b[i];
    const uint32_t lo = i + 1 < b.size() ? b[i + 1] : 0;
    sum = refFoldLoop(sum + ((hi << 8) | lo));
  }
  return static_cast<uint16_t>(sum);
}

uint16_t refChecksum(const Bytes& b) { return static_cast<uint16_t>(~refSum(b)); }

/// RFC 793 pseudo-header followed by the segment with its checksum field zeroed.
Bytes refTcpV4Input(uint32_t saddr, uint32_t daddr, const Bytes& segment) {
  Bytes b(12 + segment.size());
  store32(&b[0], saddr);
  store32(&b[4], daddr);
  b[8] = 0;
  b[9] = 6;
  store16(&b[10], static_cast<uint16_t>(segment.size()));
  std::copy(segment.begin(), segment.end(), b.begin() + 12);
  for (size_t i = 12 + 16; i < 12 + 18 && i < b.size(); ++i) b[i] = 0;
  return b;
}

uint16_t refTcpChecksumV4(uint32_t saddr, uint32_t daddr, const Bytes& segment) {
  return refChecksum(refTcpV4Input(saddr, daddr, segment));
}

uint16_t refIpv4HeaderChecksum(Bytes header) {
  for (size_t i = 10; i < 12 && i < header.size(); ++i) header[i] = 0;
  return refChecksum(header);
}

class ChecksumTest : public ::testing::Test {
 protected:
  Bytes randomBytes(size_t n) {
    Bytes b(n);
    for (auto& x : b) x = static_cast<uint8_t>(rng_());
    return b;
  }
  uint32_t random32() { return static_cast<uint32_t>(rng_()); }
  uint16_t random16() { return static_cast<uint16_t>(rng_()); }
  size_t randomBelow(size_t n) { return static_cast<size_t>(rng_() % n); }

  std::mt19937_64 rng_{0x7a6e64656dULL};  // fixed seed: failures reproduce
};

// ---- Full computation ----

TEST_F(ChecksumTest, CsumAddMatchesReferenceForOddAndEvenLengths) {
  for (size_t len = 0; len <= 300; ++len) {
    for (int rep = 0; rep < 5; ++rep) {
      const Bytes b = randomBytes(len);
      EXPECT_EQ(csumFold(csumAdd(0, b.data(), b.size())), refSum(b)) << "len=" << len;
    }
  }
}

TEST_F(ChecksumTest, CsumAddHandlesCarryHeavyAndLargeInputs) {
  // All-ones maximises carries; 70000 bytes exceeds what a 16-bit-length loop would handle.
  for (size_t len : {1u, 2u, 3u, 4u, 5u, 1499u, 1500u, 65535u, 70000u, 70001u}) {
    const Bytes ones(len, 0xff);
    EXPECT_EQ(csumFold(csumAdd(0, ones.data(), ones.size())), refSum(ones)) << "len=" << len;
    const Bytes rnd = randomBytes(len);
    EXPECT_EQ(csumFold(csumAdd(0, rnd.data(), rnd.size())), refSum(rnd)) << "len=" << len;
  }
  const Bytes zeros(64, 0);
  EXPECT_EQ(csumFold(csumAdd(0, zeros.data(), zeros.size())), 0);
}

TEST_F(ChecksumTest, CsumAddAccumulatesAcrossEvenSplitsAndInitialSum) {
  for (int rep = 0; rep < 500; ++rep) {
    const Bytes b = randomBytes(2 + randomBelow(400));
    const size_t split = randomBelow(b.size() / 2 + 1) * 2;  // even: word alignment is kept
    uint32_t sum = csumAdd(0, b.data(), split);
    sum = csumAdd(sum, b.data() + split, b.size() - split);
    EXPECT_EQ(csumFold(sum), refSum(b));

    // A large initial accumulator (as tcpChecksumV4 passes the pseudo-header sum).
    const uint32_t init = random32();
    const uint16_t expected = static_cast<uint16_t>(refFoldLoop(
        refFoldLoop((init & 0xffff) + (init >> 16)) + refSum(b)));
    EXPECT_EQ(csumFold(csumAdd(init, b.data(), b.size())), expected);
  }
}

TEST_F(ChecksumTest, CsumAddDoesNotNeedAlignment) {
  const Bytes b = randomBytes(257);
  for (size_t off = 1; off < 8; ++off) {
    const Bytes tail(b.begin() + static_cast<std::ptrdiff_t>(off), b.end());
    EXPECT_EQ(csumFold(csumAdd(0, b.data() + off, b.size() - off)), refSum(tail));
  }
}

TEST(ChecksumFold, FoldsEndAroundCarry) {
  static_assert(csumFold(0) == 0);
  static_assert(csumFold(0xffff) == 0xffff);
  static_assert(csumFold(0x10000) == 1);
  static_assert(csumFold(0x1fffe) == 0xffff);
  static_assert(csumFold(0xffffffff) == 0xffff);
  static_assert(csumFold(0x0002fffd) == 0xffff);
}

TEST(ChecksumKnownAnswer, Rfc1071ExampleBytes) {
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement).
  const Bytes b = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(csumFold(csumAdd(0, b.data(), b.size())), 0xddf2);
}

TEST(ChecksumKnownAnswer, Ipv4HeaderFromWikipediaExample) {
  // A well-known captured header: 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
  const Bytes h = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                   0x12, 0x34,  // garbage in the checksum field: must be ignored
                   0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(ipv4HeaderChecksum(h.data(), h.size()), 0xb861);
}

TEST_F(ChecksumTest, Ipv4HeaderChecksumMatchesReferenceForEveryIhl) {
  for (size_t ihl = 5; ihl <= 15; ++ihl) {
    for (int rep = 0; rep < 200; ++rep) {
      Bytes h = randomBytes(ihl * 4);
      h[0] = static_cast<uint8_t>(0x40 | ihl);
      const uint16_t c = ipv4HeaderChecksum(h.data(), h.size());
      EXPECT_EQ(c, refIpv4HeaderChecksum(h));
      // Stored, the header verifies: the sum over all of it is 0xffff (RFC 1071).
      store16(&h[10], c);
      EXPECT_EQ(refSum(h), 0xffff);
    }
  }
}

TEST_F(ChecksumTest, TcpChecksumV4MatchesReferenceForOddAndEvenLengths) {
  for (size_t len = 20; len <= 1600; len += 1 + randomBelow(7)) {
    const uint32_t s = random32();
    const uint32_t d = random32();
    Bytes seg = randomBytes(len);
    const uint16_t c = tcpChecksumV4(s, d, seg.data(), seg.size());
    EXPECT_EQ(c, refTcpChecksumV4(s, d, seg)) << "len=" << len;
    // Verifies when stored: the sum over pseudo-header plus segment is 0xffff.
    store16(&seg[16], c);
    Bytes all = refTcpV4Input(s, d, seg);
    store16(&all[12 + 16], c);
    EXPECT_EQ(refSum(all), 0xffff) << "len=" << len;
  }
}

TEST_F(ChecksumTest, TcpChecksumV4AtMaximumIpv4Length) {
  const Bytes seg = randomBytes(65535 - 20);
  EXPECT_EQ(tcpChecksumV4(0x0a000001, 0x0a000002, seg.data(), seg.size()),
            refTcpChecksumV4(0x0a000001, 0x0a000002, seg));
}

TEST_F(ChecksumTest, ShortRangesStayInBounds) {
  // Shorter than the checksum field's end: sum what is there, never read past it (ASan checks the
  // exact-size heap buffers).
  for (size_t len = 0; len < 20; ++len) {
    const Bytes seg = randomBytes(len);
    EXPECT_EQ(tcpChecksumV4(1, 2, seg.data(), seg.size()), refTcpChecksumV4(1, 2, seg));
    EXPECT_EQ(ipv4HeaderChecksum(seg.data(), seg.size()), refIpv4HeaderChecksum(seg));
  }
}

TEST(ChecksumBuilder, BuiltPacketsVerify) {
  const auto p = test::PacketBuilder().flags(tcpflag::kSyn).mss(1460).wscale(7).sackPermitted()
                     .timestamp(1, 0).build();
  EXPECT_TRUE(test::checksumsValid(p));
  const auto q = test::PacketBuilder().payload("hello, odd length").build();
  EXPECT_TRUE(test::checksumsValid(q));
}

// ---- RFC 1624 incremental updates ----

TEST(ChecksumIncremental, Rfc1624Section3Example) {
  // RFC 1624 section 3: sum of the other words 0xCD7A, m = 0x5555 -> m' = 0x3285.
  // HC = ~(0xCD7A + 0x5555) = 0xDD2F; the correct new checksum is 0x0000 (the data sums to
  // 0xFFFF), which eqn. 3 yields and the older RFC 1141 eqn. gets wrong as 0xFFFF.
  static_assert(csumReplace16(0xDD2F, 0x5555, 0x3285) == 0x0000);
  static_assert(csumReplace16(0x0000, 0x3285, 0x5555) == 0xDD2F);
  const Bytes before = {0xCD, 0x7A, 0x55, 0x55};
  const Bytes after = {0xCD, 0x7A, 0x32, 0x85};
  EXPECT_EQ(refChecksum(before), 0xDD2F);
  EXPECT_EQ(refChecksum(after), 0x0000);
}

TEST(ChecksumIncremental, PositiveAndNegativeZeroFieldValuesAreEquivalent) {
  // 0x0000 and 0xFFFF are both zero in one's complement: swapping them changes nothing.
  for (uint32_t c = 0; c < 0xffff; c += 97) {
    const auto check = static_cast<uint16_t>(c);
    EXPECT_EQ(csumReplace16(check, 0x0000, 0xffff), check);
    EXPECT_EQ(csumReplace16(check, 0xffff, 0x0000), check);
  }
  EXPECT_EQ(csumReplace16(0x0000, 0x1234, 0x1234), 0x0000);
}

TEST_F(ChecksumTest, Replace16EqualsFullRecomputation) {
  for (int rep = 0; rep < 5000; ++rep) {
    Bytes h = randomBytes(20 + 4 * randomBelow(11));
    store16(&h[10], ipv4HeaderChecksum(h.data(), h.size()));
    size_t off = 2 * randomBelow(h.size() / 2);
    if (off == 10) off = 8;  // not the checksum field itself
    const uint16_t from = load16(&h[off]);
    const uint16_t to = random16();
    store16(&h[off], to);
    const uint16_t incremental = csumReplace16(load16(&h[10]), from, to);
    EXPECT_EQ(incremental, ipv4HeaderChecksum(h.data(), h.size())) << "rep=" << rep;
  }
}

TEST_F(ChecksumTest, Replace16CornerCasesWhereTheResultIsZero) {
  // Choose m' so that the data sums to 0xFFFF (negative zero): the checksum must become 0x0000,
  // never 0xFFFF (RFC 1624 section 3). Also rewrite to and from the two zero representations.
  for (int rep = 0; rep < 3000; ++rep) {
    Bytes h = randomBytes(20);
    size_t field = 2 * randomBelow(10);
    if (field == 10) field = 12;  // not the checksum field itself
    store16(&h[10], ipv4HeaderChecksum(h.data(), h.size()));
    const uint16_t from = load16(&h[field]);
    // Sum of everything but the field (checksum field as zero).
    Bytes others = h;
    others[10] = others[11] = 0;
    store16(&others[field], 0);
    const uint16_t rest = refSum(others);
    uint16_t to = 0;
    switch (rep % 3) {
      case 0: to = static_cast<uint16_t>(0xffff - rest); break;  // total becomes 0xFFFF
      case 1: to = 0x0000; break;
      case 2: to = 0xffff; break;
    }
    store16(&h[field], to);
    const uint16_t full = ipv4HeaderChecksum(h.data(), h.size());
    if (rep % 3 == 0) {
      EXPECT_EQ(full, 0x0000);
    }
    EXPECT_EQ(csumReplace16(load16(&h[10]), from, to), full) << "rep=" << rep;
  }
}

TEST_F(ChecksumTest, Replace32EqualsFullRecomputationOnTcpSegments) {
  for (int rep = 0; rep < 5000; ++rep) {
    const uint32_t s = random32();
    const uint32_t d = random32();
    Bytes seg = randomBytes(20 + randomBelow(200));
    store16(&seg[16], tcpChecksumV4(s, d, seg.data(), seg.size()));
    // Any even offset except the checksum field: seq, ack, ports, or an option/payload word.
    size_t off = 2 * randomBelow((seg.size() - 4) / 2 + 1);
    if (off >= 14 && off < 18) off = 4;
    const uint32_t from = load32(&seg[off]);
    uint32_t to = random32();
    if (rep % 7 == 0) to = ~from;          // every bit flips
    if (rep % 11 == 0) to = from;          // no-op
    if (rep % 13 == 0) to = 0xffffffff;
    if (rep % 17 == 0) to = 0;
    store32(&seg[off], to);
    EXPECT_EQ(csumReplace32(load16(&seg[16]), from, to),
              tcpChecksumV4(s, d, seg.data(), seg.size()))
        << "rep=" << rep << " off=" << off;
  }
}

/// Swaps the two bytes of each 16-bit half.
constexpr uint32_t swapBytesInHalves(uint32_t x) {
  return ((x & 0x00ff00ffu) << 8) | ((x >> 8) & 0x00ff00ffu);
}

TEST_F(ChecksumTest, Replace32AtAnOddOffsetNeedsBytesSwappedWithinHalves) {
  // Options need not be aligned: "NOP SACK" puts the SACK edges at odd offsets, where a word's
  // bytes straddle the 16-bit checksum words. The one's-complement sum is byte-order independent
  // (RFC 1071 section 2(B)), so such a word contributes with its bytes swapped: updating with
  // swapBytesInHalves(from/to) is right, the plain update is not.
  int plain_wrong = 0;
  for (int rep = 0; rep < 3000; ++rep) {
    const uint32_t s = random32();
    const uint32_t d = random32();
    Bytes seg = randomBytes(40 + 2 * randomBelow(40));
    store16(&seg[16], tcpChecksumV4(s, d, seg.data(), seg.size()));
    const size_t off = 21 + 2 * randomBelow((seg.size() - 25) / 2);  // odd, inside the options
    const uint32_t from = load32(&seg[off]);
    const uint32_t to = random32();
    const uint16_t check = load16(&seg[16]);
    store32(&seg[off], to);
    const uint16_t full = tcpChecksumV4(s, d, seg.data(), seg.size());
    EXPECT_EQ(csumReplace32(check, swapBytesInHalves(from), swapBytesInHalves(to)), full)
        << "rep=" << rep << " off=" << off;
    if (csumReplace32(check, from, to) != full) ++plain_wrong;
  }
  EXPECT_GT(plain_wrong, 2900);
}

TEST_F(ChecksumTest, Replace32OnAddressesFixesBothIpAndTcpChecksums) {
  // NAT-style rewrite: the address is in the IP header and in the TCP pseudo-header.
  for (int rep = 0; rep < 3000; ++rep) {
    auto p = test::PacketBuilder().seq(random32()).payloadSize(randomBelow(100)).build();
    const size_t tcp_len = p.size() - 20;
    const bool source = rep % 2 == 0;
    const size_t at = source ? 12 : 16;
    const uint32_t from = load32(&p[at]);
    const uint32_t to = rep % 5 == 0 ? 0xffffffff - from : random32();
    store32(&p[at], to);
    store16(&p[10], csumReplace32(load16(&p[10]), from, to));
    store16(&p[36], csumReplace32(load16(&p[36]), from, to));
    EXPECT_EQ(load16(&p[10]), ipv4HeaderChecksum(p.data(), 20));
    EXPECT_EQ(load16(&p[36]), tcpChecksumV4(load32(&p[12]), load32(&p[16]), &p[20], tcp_len));
    EXPECT_TRUE(test::checksumsValid(p));
  }
}

TEST_F(ChecksumTest, ChainedRewritesStayConsistent) {
  // Many updates in a row on the same checksum (no drift through 0x0000/0xFFFF representations).
  Bytes seg = randomBytes(60);
  const uint32_t s = 0x0a000001;
  const uint32_t d = 0x0a000002;
  store16(&seg[16], tcpChecksumV4(s, d, seg.data(), seg.size()));
  for (int rep = 0; rep < 20000; ++rep) {
    const size_t off = rep % 2 ? 4 : 8;
    const uint32_t from = load32(&seg[off]);
    const uint32_t to = random32();
    store32(&seg[off], to);
    store16(&seg[16], csumReplace32(load16(&seg[16]), from, to));
  }
  EXPECT_EQ(load16(&seg[16]), tcpChecksumV4(s, d, seg.data(), seg.size()));
}

// ---- CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum ----

/// What the NIC (or skb_checksum_help) does to finish a CHECKSUM_PARTIAL segment: sum from the
/// TCP header to the end, including the field (which holds the pseudo-header sum), and complement.
uint16_t completePartial(const uint8_t* tcp, size_t len) {
  return static_cast<uint16_t>(~csumFold(csumAdd(0, tcp, len)));
}

TEST_F(ChecksumTest, PartialChecksumCompletesToFullChecksum) {
  const auto p = test::PacketBuilder().payload("abc").partialChecksum().build();
  EXPECT_EQ(completePartial(&p[20], p.size() - 20),
            tcpChecksumV4(load32(&p[12]), load32(&p[16]), &p[20], p.size() - 20));
}

TEST_F(ChecksumTest, PartialReplace32KeepsPseudoHeaderSumConsistent) {
  for (int rep = 0; rep < 5000; ++rep) {
    auto p = test::PacketBuilder()
                 .seq(random32())
                 .payloadSize(randomBelow(300), static_cast<uint8_t>(rng_()))
                 .partialChecksum()
                 .build();
    const size_t tcp_len = p.size() - 20;
    // Rewrite one or both addresses, updating only the partial sum in the TCP field.
    for (size_t at : {size_t{12}, size_t{16}}) {
      if (rep % 3 == 0 && at == 16) continue;
      const uint32_t from = load32(&p[at]);
      uint32_t to = random32();
      if (rep % 10 == 1) to = from;
      if (rep % 10 == 2) to = ~from;  // makes the pseudo-header word sum wrap
      store32(&p[at], to);
      store16(&p[36], csumPartialReplace32(load16(&p[36]), from, to));
    }
    EXPECT_EQ(completePartial(&p[20], tcp_len),
              tcpChecksumV4(load32(&p[12]), load32(&p[16]), &p[20], tcp_len))
        << "rep=" << rep;
  }
}

TEST(ChecksumPartial, PartialReplaceIsNotTheComplementedUpdate) {
  // Regression guard: a partial sum must move in the same direction as the data, the opposite of
  // a complemented checksum.
  const uint16_t partial = 0x1234;
  EXPECT_EQ(csumPartialReplace32(partial, 0x00000000, 0x00000001), 0x1235);
  EXPECT_EQ(csumReplace32(static_cast<uint16_t>(~partial), 0x00000000, 0x00000001),
            static_cast<uint16_t>(~0x1235));
  static_assert(csumPartialReplace32(0xfffe, 0, 1) == 0xffff);
  static_assert(csumPartialReplace32(0xffff, 0, 1) == 0x0001);
}

}  // namespace
}  // namespace tandem
