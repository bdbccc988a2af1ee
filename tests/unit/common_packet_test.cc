// IPv4+TCP packet parsing: golden fixtures {description, bytes, expected ParseError}, accessors,
// and bounds (every buffer is an exact-size heap allocation, so the asan preset catches any
// out-of-bounds read).

#include "common/packet.h"

#include <gtest/gtest.h>

#include <functional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/tcp_options.h"
#include "packet_builder.h"

namespace tandem {
namespace {

using Bytes = std::vector<uint8_t>;
using test::PacketBuilder;

/// Parses a private exact-size copy of `bytes`.
struct Parsed {
  explicit Parsed(const Bytes& bytes) : buf(bytes) {
    error = parseTcpPacket(buf.empty() ? nullptr : buf.data(), buf.size(), pkt);
  }
  Bytes buf;
  TcpPacket pkt;
  ParseError error = ParseError::kNone;
};

Bytes synWithOptions() {
  return PacketBuilder().flags(tcpflag::kSyn).mss(1460).sackPermitted().timestamp(100, 0)
      .wscale(7).build();
}
Bytes pureAck() { return PacketBuilder().seq(5000).ack(7000).build(); }
Bytes dataSegment() {
  return PacketBuilder().flags(tcpflag::kAck | tcpflag::kPsh).ack(1).timestamp(1, 2)
      .payload("GET / HTTP/1.1\r\n\r\n").build();
}

/// The first `n` bytes of `b`.
Bytes prefix(const Bytes& b, size_t n) {
  return Bytes(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
}

/// Applies `edit` to a copy of `base`.
Bytes with(Bytes base, const std::function<void(Bytes&)>& edit) {
  edit(base);
  return base;
}

void setTotalLen(Bytes& p, size_t v) { store16(&p[2], static_cast<uint16_t>(v)); }
void setIhlWords(Bytes& p, unsigned words) {
  p[0] = static_cast<uint8_t>((p[0] & 0xf0) | (words & 0x0f));
}
void setDoffWords(Bytes& p, size_t ihl, unsigned words) {
  p[ihl + 12] = static_cast<uint8_t>((words << 4) | (p[ihl + 12] & 0x0f));
}

/// A valid ACK with `ihl_words` 32-bit words of IPv4 header (IP options are NOP-filled).
Bytes withIpOptions(unsigned ihl_words) {
  const Bytes base = pureAck();
  Bytes p(base.begin(), base.begin() + 20);
  p.resize(ihl_words * 4, 1);  // IPOPT_NOOP
  p.insert(p.end(), base.begin() + 20, base.end());
  setIhlWords(p, ihl_words);
  setTotalLen(p, p.size());
  return p;
}

struct ParseCase {
  std::string description;
  Bytes bytes;
  ParseError expected;
};

std::vector<ParseCase> goldenCases() {
  std::vector<ParseCase> c;
  c.push_back({"valid_syn_with_options", synWithOptions(), ParseError::kNone});
  c.push_back({"valid_pure_ack", pureAck(), ParseError::kNone});
  c.push_back({"valid_data", dataSegment(), ParseError::kNone});
  c.push_back({"valid_fin_rst_urg_flags",
               PacketBuilder().flags(tcpflag::kFin | tcpflag::kRst | tcpflag::kUrg).build(),
               ParseError::kNone});
  c.push_back({"valid_ip_options_ihl_6", withIpOptions(6), ParseError::kNone});
  c.push_back({"valid_ip_options_ihl_15", withIpOptions(15), ParseError::kNone});
  c.push_back({"valid_max_data_offset_15",
               PacketBuilder().rawOptions(Bytes(40, tcpopt::kNop)).build(), ParseError::kNone});
  c.push_back({"valid_ethernet_padding_after_total_length",
               with(pureAck(), [](Bytes& p) { p.resize(p.size() + 6, 0); }), ParseError::kNone});
  c.push_back({"valid_total_length_zero_gso", with(dataSegment(), [](Bytes& p) {
                 setTotalLen(p, 0);
               }), ParseError::kNone});
  c.push_back({"valid_df_set", pureAck(), ParseError::kNone});  // the builder sets DF
  c.push_back({"valid_reserved_flag_bit_ignored",
               with(pureAck(), [](Bytes& p) { p[6] |= 0x80; }), ParseError::kNone});

  // Too short for an IPv4 header.
  c.push_back({"empty", {}, ParseError::kTooShort});
  c.push_back({"one_byte", {0x45}, ParseError::kTooShort});
  c.push_back({"nineteen_bytes", prefix(pureAck(), 19),
               ParseError::kTooShort});

  // Version.
  c.push_back({"version_6", with(pureAck(), [](Bytes& p) { p[0] = 0x65; }),
               ParseError::kNotIpv4});
  c.push_back({"version_0", with(pureAck(), [](Bytes& p) { p[0] = 0x05; }),
               ParseError::kNotIpv4});
  c.push_back({"version_15", with(pureAck(), [](Bytes& p) { p[0] = 0xf5; }),
               ParseError::kNotIpv4});
  {
    Bytes v6(60, 0);  // IPv6 header (payload length 20, next header TCP) + 20 bytes of TCP
    v6[0] = 0x60;
    v6[5] = 20;
    v6[6] = 6;
    v6[7] = 64;
    c.push_back({"ipv6_header", v6, ParseError::kNotIpv4});
  }

  // IHL.
  for (unsigned w : {0u, 1u, 4u}) {
    c.push_back({"ihl_" + std::to_string(w), with(pureAck(), [w](Bytes& p) { setIhlWords(p, w); }),
                 ParseError::kBadIhl});
  }
  c.push_back({"ihl_15_beyond_40_byte_buffer",
               with(pureAck(), [](Bytes& p) { setIhlWords(p, 15); }), ParseError::kBadIhl});
  c.push_back({"ihl_6_beyond_20_byte_buffer", with(prefix(pureAck(), 20),
                                                   [](Bytes& p) { setIhlWords(p, 6); }),
               ParseError::kBadIhl});

  // Total length.
  c.push_back({"total_length_one_beyond_buffer",
               with(pureAck(), [](Bytes& p) { setTotalLen(p, p.size() + 1); }),
               ParseError::kBadTotalLength});
  c.push_back({"total_length_65535_small_buffer",
               with(pureAck(), [](Bytes& p) { setTotalLen(p, 65535); }),
               ParseError::kBadTotalLength});
  c.push_back({"total_length_below_ip_header",
               with(pureAck(), [](Bytes& p) { setTotalLen(p, 19); }),
               ParseError::kBadTotalLength});
  c.push_back({"total_length_below_ip_header_with_options",
               with(withIpOptions(8), [](Bytes& p) { setTotalLen(p, 28); }),
               ParseError::kBadTotalLength});
  c.push_back({"total_length_one", with(pureAck(), [](Bytes& p) { setTotalLen(p, 1); }),
               ParseError::kBadTotalLength});

  // Fragments.
  c.push_back({"more_fragments", with(pureAck(), [](Bytes& p) { p[6] = 0x20; }),
               ParseError::kFragment});
  c.push_back({"fragment_offset_1", with(pureAck(), [](Bytes& p) { store16(&p[6], 0x0001); }),
               ParseError::kFragment});
  c.push_back({"fragment_offset_max", with(pureAck(), [](Bytes& p) { store16(&p[6], 0x1fff); }),
               ParseError::kFragment});
  c.push_back({"df_and_offset", with(pureAck(), [](Bytes& p) { store16(&p[6], 0x4010); }),
               ParseError::kFragment});

  // Protocol.
  for (int proto : {0, 1, 17, 41, 132, 255}) {
    c.push_back({"protocol_" + std::to_string(proto),
                 with(pureAck(), [proto](Bytes& p) { p[9] = static_cast<uint8_t>(proto); }),
                 ParseError::kNotTcp});
  }

  // TCP header length.
  c.push_back({"ip_header_only", with(prefix(pureAck(), 20),
                                      [](Bytes& p) { setTotalLen(p, 20); }),
               ParseError::kTcpTooShort});
  c.push_back({"tcp_19_bytes", with(prefix(pureAck(), 39),
                                    [](Bytes& p) { setTotalLen(p, 39); }),
               ParseError::kTcpTooShort});
  c.push_back({"tcp_19_bytes_after_ip_options",
               with(withIpOptions(6), [](Bytes& p) { setTotalLen(p, 24 + 19); }),
               ParseError::kTcpTooShort});
  c.push_back({"tcp_short_by_total_length_though_buffer_is_long",
               with(pureAck(), [](Bytes& p) { setTotalLen(p, 30); }), ParseError::kTcpTooShort});

  // Data offset.
  for (unsigned w : {0u, 1u, 4u}) {
    c.push_back({"data_offset_" + std::to_string(w),
                 with(pureAck(), [w](Bytes& p) { setDoffWords(p, 20, w); }),
                 ParseError::kBadDataOffset});
  }
  c.push_back({"data_offset_15_beyond_segment",
               with(pureAck(), [](Bytes& p) { setDoffWords(p, 20, 15); }),
               ParseError::kBadDataOffset});
  c.push_back({"data_offset_6_beyond_segment",
               with(pureAck(), [](Bytes& p) { setDoffWords(p, 20, 6); }),
               ParseError::kBadDataOffset});
  c.push_back({"data_offset_beyond_total_length_within_padding", with(pureAck(), [](Bytes& p) {
                 p.resize(p.size() + 8, 0);
                 setDoffWords(p, 20, 7);
               }),
               ParseError::kBadDataOffset});
  c.push_back({"data_offset_beyond_segment_after_ip_options",
               with(withIpOptions(7), [](Bytes& p) { setDoffWords(p, 28, 6); }),
               ParseError::kBadDataOffset});
  return c;
}

// Keeps gtest from hex-dumping the whole fixture in failure messages.
void PrintTo(const ParseCase& c, std::ostream* os) { *os << c.description; }

class ParseGolden : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ParseGolden, ReturnsExpectedError) {
  const ParseCase& c = GetParam();
  Parsed p(c.bytes);
  EXPECT_EQ(p.error, c.expected) << c.description << ": got " << parseErrorName(p.error)
                                 << ", want " << parseErrorName(c.expected);
  if (p.error == ParseError::kNone) {
    // The view stays inside the buffer and the lengths add up.
    EXPECT_GE(p.pkt.ipHeaderLen(), 20u);
    EXPECT_LE(p.pkt.totalLen(), p.buf.size());
    EXPECT_GE(p.pkt.tcpHeaderLen(), 20u);
    EXPECT_EQ(p.pkt.ipHeaderLen() + p.pkt.tcpHeaderLen() + p.pkt.payloadLen(), p.pkt.totalLen());
    EXPECT_EQ(p.pkt.tcpLen(), p.pkt.tcpHeaderLen() + p.pkt.payloadLen());
    EXPECT_EQ(p.pkt.ip(), p.buf.data());
    EXPECT_EQ(p.pkt.tcp(), p.buf.data() + p.pkt.ipHeaderLen());
    EXPECT_EQ(p.pkt.options(), p.pkt.tcp() + 20);
    EXPECT_EQ(p.pkt.optionsLen(), p.pkt.tcpHeaderLen() - 20);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParseGolden, ::testing::ValuesIn(goldenCases()),
                         [](const auto& tp) { return tp.param.description; });

TEST(ParseGoldenTable, DescriptionsAreUnique) {
  std::set<std::string> seen;
  for (const auto& c : goldenCases()) {
    EXPECT_TRUE(seen.insert(c.description).second) << c.description;
  }
}

// ---- Truncation at every length ----

TEST(ParseTruncated, EveryPrefixWithOriginalTotalLengthIsRefused) {
  for (const Bytes& full : {synWithOptions(), pureAck(), dataSegment(), withIpOptions(9)}) {
    for (size_t len = 0; len < full.size(); ++len) {
      Parsed p(prefix(full, len));
      const size_t ihl = (full[0] & 0x0fu) * 4;
      const ParseError want = len < 20   ? ParseError::kTooShort
                              : len < ihl ? ParseError::kBadIhl
                                          : ParseError::kBadTotalLength;
      EXPECT_EQ(p.error, want) << "len=" << len << " of " << full.size();
    }
  }
}

TEST(ParseTruncated, EveryPrefixWithMatchingTotalLength) {
  // As if a middlebox had cut the datagram and fixed the length: errors follow the first layer
  // that no longer fits; accepted prefixes cut only payload.
  for (const Bytes& full : {synWithOptions(), pureAck(), dataSegment(), withIpOptions(9)}) {
    const size_t ihl = (full[0] & 0x0fu) * 4;
    const size_t doff = (full[ihl + 12] >> 4) * 4u;
    for (size_t len = 0; len <= full.size(); ++len) {
      Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
      if (len >= 4) setTotalLen(cut, len);
      Parsed p(cut);
      ParseError want = ParseError::kNone;
      if (len < 20) {
        want = ParseError::kTooShort;
      } else if (len < ihl) {
        want = ParseError::kBadIhl;
      } else if (len - ihl < 20) {
        want = ParseError::kTcpTooShort;
      } else if (len - ihl < doff) {
        want = ParseError::kBadDataOffset;
      }
      EXPECT_EQ(p.error, want) << "len=" << len << " of " << full.size();
      if (p.error == ParseError::kNone) {
        EXPECT_EQ(p.pkt.payloadLen(), len - ihl - doff);
      }
    }
  }
}

// ---- Accessors ----

TEST(ParseAccessors, ReturnFieldsOfABuiltPacket) {
  Bytes b = PacketBuilder()
                .src("192.0.2.1:40001")
                .dst("198.51.100.7:443")
                .flags(tcpflag::kSyn | tcpflag::kAck | tcpflag::kEce)
                .seq(0xfedcba98)
                .ack(0x01234567)
                .window(29200)
                .mss(1400)
                .timestamp(7, 8)
                .payload("xyz")
                .build();
  b[1] = 0x10;  // TOS
  b[8] = 57;    // TTL
  Parsed p(b);
  ASSERT_EQ(p.error, ParseError::kNone);
  const TcpPacket& t = p.pkt;
  EXPECT_EQ(t.ipHeaderLen(), 20u);
  EXPECT_EQ(t.totalLen(), b.size());
  EXPECT_EQ(t.saddr(), 0xc0000201u);
  EXPECT_EQ(t.daddr(), 0xc6336407u);
  EXPECT_EQ(t.tos(), 0x10);
  EXPECT_EQ(t.ttl(), 57);
  EXPECT_EQ(t.ipCheck(), load16(&b[10]));
  EXPECT_EQ(t.sport(), 40001);
  EXPECT_EQ(t.dport(), 443);
  EXPECT_EQ(t.seq(), 0xfedcba98u);
  EXPECT_EQ(t.ack(), 0x01234567u);
  EXPECT_EQ(t.flags(), tcpflag::kSyn | tcpflag::kAck | tcpflag::kEce);
  EXPECT_TRUE(t.has(tcpflag::kSyn));
  EXPECT_TRUE(t.has(tcpflag::kAck));
  EXPECT_TRUE(t.has(tcpflag::kEce));
  EXPECT_FALSE(t.has(tcpflag::kFin));
  EXPECT_FALSE(t.has(tcpflag::kRst));
  EXPECT_FALSE(t.has(tcpflag::kCwr));
  EXPECT_EQ(t.window(), 29200);
  EXPECT_EQ(t.tcpCheck(), load16(&b[36]));
  EXPECT_EQ(t.tcpHeaderLen(), 20u + 4 + 12);  // MSS, NOP NOP TS
  EXPECT_EQ(t.optionsLen(), 16u);
  EXPECT_EQ(t.payloadLen(), 3u);
  EXPECT_EQ(t.tcpLen(), 39u);
  EXPECT_EQ(t.seqLen(), 4u);  // SYN + 3 bytes
  EXPECT_EQ(t.src().toString(), "192.0.2.1:40001");
  EXPECT_EQ(t.dst().toString(), "198.51.100.7:443");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.tcp() + t.tcpHeaderLen()), 3), "xyz");

  TcpOptions o;
  ASSERT_EQ(parseTcpOptions(t.options(), t.optionsLen(), o), OptionError::kNone);
  EXPECT_EQ(o.mss, 1400);
  EXPECT_EQ(o.ts_val, 7u);
  EXPECT_EQ(o.ts_ecr, 8u);
}

TEST(ParseAccessors, SeqLenCountsSynFinAndPayload) {
  struct Case {
    uint8_t flags;
    size_t payload;
    uint32_t want;
  };
  for (const Case& c : {Case{tcpflag::kAck, 0, 0}, Case{tcpflag::kSyn, 0, 1},
                        Case{tcpflag::kFin | tcpflag::kAck, 0, 1},
                        Case{tcpflag::kSyn | tcpflag::kFin, 0, 2},
                        Case{tcpflag::kAck, 1000, 1000},
                        Case{tcpflag::kFin | tcpflag::kAck, 10, 11},
                        Case{tcpflag::kRst, 0, 0}}) {
    Parsed p(PacketBuilder().flags(c.flags).payloadSize(c.payload).build());
    ASSERT_EQ(p.error, ParseError::kNone);
    EXPECT_EQ(p.pkt.seqLen(), c.want) << "flags=" << int{c.flags} << " payload=" << c.payload;
  }
}

TEST(ParseAccessors, OffsetsFollowIpOptions) {
  Bytes b = withIpOptions(11);
  Parsed p(b);
  ASSERT_EQ(p.error, ParseError::kNone);
  EXPECT_EQ(p.pkt.ipHeaderLen(), 44u);
  EXPECT_EQ(p.pkt.tcp(), p.buf.data() + 44);
  EXPECT_EQ(p.pkt.seq(), 5000u);
  EXPECT_EQ(p.pkt.ack(), 7000u);
  EXPECT_EQ(p.pkt.payloadLen(), 0u);
}

TEST(ParseAccessors, TotalLengthZeroMeansWholeBufferBeyond64KiB) {
  // GSO / BIG TCP: a super-packet above 64 KiB has no representable total length.
  Bytes b = PacketBuilder().ack(1).payloadSize(70000).build();
  setTotalLen(b, 0);
  Parsed p(b);
  ASSERT_EQ(p.error, ParseError::kNone);
  EXPECT_EQ(p.pkt.totalLen(), b.size());
  EXPECT_EQ(p.pkt.payloadLen(), 70000u);
}

TEST(ParseAccessors, PaddingBeyondTotalLengthIsNotPayload) {
  Bytes b = PacketBuilder().payload("ab").build();
  const size_t real = b.size();
  b.resize(real + 10, 0xee);
  Parsed p(b);
  ASSERT_EQ(p.error, ParseError::kNone);
  EXPECT_EQ(p.pkt.totalLen(), real);
  EXPECT_EQ(p.pkt.payloadLen(), 2u);
}

TEST(ParseAccessors, SettersWriteOnlyTheirField) {
  const Bytes orig = dataSegment();
  Parsed p(orig);
  ASSERT_EQ(p.error, ParseError::kNone);
  TcpPacket& t = p.pkt;
  t.setSaddrRaw(0x01020304);
  t.setDaddrRaw(0x05060708);
  t.setIpCheck(0xabcd);
  t.setSportRaw(1111);
  t.setDportRaw(2222);
  t.setSeqRaw(0xdeadbeef);
  t.setAckRaw(0xcafef00d);
  t.setWindowRaw(0x1357);
  t.setTcpCheck(0x2468);
  EXPECT_EQ(t.saddr(), 0x01020304u);
  EXPECT_EQ(t.daddr(), 0x05060708u);
  EXPECT_EQ(t.ipCheck(), 0xabcd);
  EXPECT_EQ(t.sport(), 1111);
  EXPECT_EQ(t.dport(), 2222);
  EXPECT_EQ(t.seq(), 0xdeadbeefu);
  EXPECT_EQ(t.ack(), 0xcafef00du);
  EXPECT_EQ(t.window(), 0x1357);
  EXPECT_EQ(t.tcpCheck(), 0x2468);
  // Everything else is untouched (no implicit checksum fix-ups).
  const std::set<size_t> written = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                                    24, 25, 26, 27, 28, 29, 30, 31, 34, 35, 36, 37};
  for (size_t i = 0; i < orig.size(); ++i) {
    if (written.count(i) == 0) {
      EXPECT_EQ(p.buf[i], orig[i]) << "byte " << i;
    }
  }
  EXPECT_EQ(t.flags(), tcpflag::kAck | tcpflag::kPsh);
}

TEST(ParseErrorNames, AreDistinctAndKnown) {
  std::set<std::string> names;
  for (auto e : {ParseError::kNone, ParseError::kTooShort, ParseError::kNotIpv4,
                 ParseError::kBadIhl, ParseError::kBadTotalLength, ParseError::kFragment,
                 ParseError::kNotTcp, ParseError::kTcpTooShort, ParseError::kBadDataOffset}) {
    const std::string n = parseErrorName(e);
    EXPECT_NE(n, "unknown");
    EXPECT_TRUE(names.insert(n).second) << n;
  }
  EXPECT_STREQ(parseErrorName(static_cast<ParseError>(200)), "unknown");
}

// ---- Random inputs: no out-of-bounds access (meaningful under the asan preset) ----

void touchEverything(const TcpPacket& t) {
  volatile uint64_t sink = 0;
  sink = sink + t.saddr() + t.daddr() + t.ipCheck() + t.ttl() + t.tos() + t.sport() + t.dport() +
         t.seq() + t.ack() + t.flags() + t.window() + t.tcpCheck() + t.seqLen();
  for (size_t i = 0; i < t.optionsLen(); ++i) sink = sink + t.options()[i];
  const uint8_t* payload = t.tcp() + t.tcpHeaderLen();
  for (size_t i = 0; i < t.payloadLen(); ++i) sink = sink + payload[i];
  sink = sink + tcpChecksumV4(t.saddr(), t.daddr(), t.tcp(), t.tcpLen());
  sink = sink + ipv4HeaderChecksum(t.ip(), t.ipHeaderLen());
  TcpOptions o;
  sink = sink + static_cast<uint8_t>(parseTcpOptions(t.options(), t.optionsLen(), o));
}

TEST(ParseRandom, MutatedPacketsNeverReadOutOfBounds) {
  std::mt19937 rng(12345);
  const std::vector<Bytes> seeds = {synWithOptions(), pureAck(), dataSegment(), withIpOptions(7)};
  int accepted = 0;
  for (int rep = 0; rep < 20000; ++rep) {
    Bytes b = seeds[rep % seeds.size()];
    const int edits = static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 4) {
        case 0: b[rng() % b.size()] = static_cast<uint8_t>(rng()); break;
        case 1: b[rng() % 4 == 0 ? 0 : 20 + 12] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 2: b.resize(rng() % (b.size() + 1)); break;
        case 3: store16(&b[2], static_cast<uint16_t>(rng() % (b.size() + 8))); break;
      }
      if (b.size() < 40) b.resize(40, static_cast<uint8_t>(rng()));
    }
    if (rng() % 4 == 0) b.resize(rng() % (b.size() + 1));  // a cut to any length
    Parsed p(b);
    if (p.error == ParseError::kNone) {
      ++accepted;
      touchEverything(p.pkt);
    }
  }
  EXPECT_GT(accepted, 2000);  // the mutations do not only produce garbage
}

}  // namespace
}  // namespace tandem
