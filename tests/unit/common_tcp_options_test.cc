// TCP option parsing and building: golden fixtures {description, bytes, expected error, expected
// options}, offsets for in-place rewriting, and buildSynOptions round trips.

#include "common/tcp_options.h"

#include <gtest/gtest.h>

#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/bytes.h"

namespace tandem {
namespace {

using Bytes = std::vector<uint8_t>;

void expectSameOptions(const TcpOptions& got, const TcpOptions& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.has_mss, want.has_mss);
  EXPECT_EQ(got.mss, want.mss);
  EXPECT_EQ(got.has_wscale, want.has_wscale);
  EXPECT_EQ(got.wscale, want.wscale);
  EXPECT_EQ(got.wscale_clamped, want.wscale_clamped);
  EXPECT_EQ(got.sack_permitted, want.sack_permitted);
  EXPECT_EQ(got.has_timestamp, want.has_timestamp);
  EXPECT_EQ(got.ts_val, want.ts_val);
  EXPECT_EQ(got.ts_ecr, want.ts_ecr);
  EXPECT_EQ(got.sack_count, want.sack_count);
  for (size_t i = 0; i < tcpopt::kMaxSackBlocks; ++i) {
    if (i < want.sack_count) {
      EXPECT_EQ(got.sack[i], want.sack[i]) << "block " << i;
    }
  }
  EXPECT_EQ(got.unknown_count, want.unknown_count);
  EXPECT_EQ(got.mss_offset, want.mss_offset);
  EXPECT_EQ(got.ts_offset, want.ts_offset);
  EXPECT_EQ(got.sack_offset, want.sack_offset);
}

/// SACK option with `n` blocks {1000*i+1, 1000*i+2}.
Bytes sackOption(size_t n) {
  Bytes b = {tcpopt::kSack, static_cast<uint8_t>(2 + 8 * n)};
  for (size_t i = 0; i < n; ++i) {
    const auto base = static_cast<uint32_t>(1000 * (i + 1));
    b.resize(b.size() + 8);
    store32(&b[b.size() - 8], base + 1);
    store32(&b[b.size() - 4], base + 2);
  }
  return b;
}

TcpOptions sackExpectation(size_t n, uint16_t offset) {
  TcpOptions o;
  o.sack_count = static_cast<uint8_t>(n);
  o.sack_offset = offset;
  for (size_t i = 0; i < n; ++i) {
    const auto base = static_cast<uint32_t>(1000 * (i + 1));
    o.sack[i] = {base + 1, base + 2};
  }
  return o;
}

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const Bytes kMss1460 = {2, 4, 0x05, 0xb4};
const Bytes kTs = {8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88};

struct OptionCase {
  std::string description;
  Bytes bytes;
  OptionError expected;
  TcpOptions want;  ///< checked only when expected == kNone
};

std::vector<OptionCase> goldenCases() {
  using E = OptionError;
  std::vector<OptionCase> c;
  // ---- Valid ----
  c.push_back({"empty", {}, E::kNone, {}});
  c.push_back({"mss", kMss1460, E::kNone, {.has_mss = true, .mss = 1460, .mss_offset = 2}});
  c.push_back({"nop_nop_mss", concat({{1, 1}, kMss1460}), E::kNone,
               {.has_mss = true, .mss = 1460, .mss_offset = 4}});
  c.push_back({"mss_zero_and_max", concat({{2, 4, 0, 0}, {2, 4, 0xff, 0xff}}), E::kNone,
               {.has_mss = true, .mss = 0xffff, .mss_offset = 6}});  // the last one wins
  c.push_back({"window_scale_0", {3, 3, 0}, E::kNone, {.has_wscale = true, .wscale = 0}});
  c.push_back({"window_scale_7", {1, 3, 3, 7}, E::kNone, {.has_wscale = true, .wscale = 7}});
  c.push_back({"window_scale_14", {3, 3, 14}, E::kNone, {.has_wscale = true, .wscale = 14}});
  c.push_back({"window_scale_15_clamped", {3, 3, 15}, E::kNone,
               {.has_wscale = true, .wscale = 14, .wscale_clamped = true}});
  c.push_back({"window_scale_255_clamped", {3, 3, 255}, E::kNone,
               {.has_wscale = true, .wscale = 14, .wscale_clamped = true}});
  // Repeated options: the last one wins, whole (found by fuzz_packet: the clamp flag of an
  // earlier window scale used to survive a later, valid one).
  c.push_back({"window_scale_clamped_then_valid", {3, 3, 45, 3, 3, 3}, E::kNone,
               {.has_wscale = true, .wscale = 3, .wscale_clamped = false}});
  c.push_back({"window_scale_valid_then_clamped", {3, 3, 3, 3, 3, 45}, E::kNone,
               {.has_wscale = true, .wscale = 14, .wscale_clamped = true}});
  c.push_back({"sack_repeated_last_wins", concat({sackOption(3), sackOption(1)}), E::kNone,
               sackExpectation(1, 28)});
  c.push_back({"sack_permitted", {4, 2}, E::kNone, {.sack_permitted = true}});
  c.push_back({"nop_nop_sack_permitted", {1, 1, 4, 2}, E::kNone, {.sack_permitted = true}});
  c.push_back({"timestamp", kTs, E::kNone,
               {.has_timestamp = true, .ts_val = 0x11223344, .ts_ecr = 0x55667788,
                .ts_offset = 2}});
  c.push_back({"nop_nop_timestamp", concat({{1, 1}, kTs}), E::kNone,
               {.has_timestamp = true, .ts_val = 0x11223344, .ts_ecr = 0x55667788,
                .ts_offset = 4}});
  c.push_back({"unaligned_nop_timestamp", concat({{1}, kTs}), E::kNone,
               {.has_timestamp = true, .ts_val = 0x11223344, .ts_ecr = 0x55667788,
                .ts_offset = 3}});
  for (size_t n = 1; n <= 4; ++n) {
    c.push_back({"sack_" + std::to_string(n) + "_blocks", concat({{1, 1}, sackOption(n)}), E::kNone,
                 sackExpectation(n, 4)});
  }
  {
    TcpOptions want = sackExpectation(3, 16);
    want.has_timestamp = true;
    want.ts_val = 0x11223344;
    want.ts_ecr = 0x55667788;
    want.ts_offset = 4;
    c.push_back({"nop_nop_ts_nop_nop_sack_3", concat({{1, 1}, kTs, {1, 1}, sackOption(3)}),
                 E::kNone, want});
  }
  c.push_back({"linux_syn",
               concat({kMss1460, {4, 2}, kTs, {1, 3, 3, 7}}), E::kNone,
               {.has_mss = true, .mss = 1460, .has_wscale = true, .wscale = 7,
                .sack_permitted = true, .has_timestamp = true, .ts_val = 0x11223344,
                .ts_ecr = 0x55667788, .mss_offset = 2, .ts_offset = 8}});
  c.push_back({"unknown_kind_skipped", concat({{30, 4, 0xaa, 0xbb}, kMss1460}), E::kNone,
               {.has_mss = true, .mss = 1460, .unknown_count = 1, .mss_offset = 6}});
  c.push_back({"unknown_kinds_counted",
               concat({{34, 2}, {30, 3, 0}, {253, 6, 1, 2, 3, 4}, {1}, {99, 2}}), E::kNone,
               {.unknown_count = 4}});
  c.push_back({"unknown_with_known_kind_bytes_inside", concat({{30, 6, 2, 4, 5, 0xb4}, {4, 2}}),
               E::kNone, {.sack_permitted = true, .unknown_count = 1}});
  c.push_back({"only_nops", Bytes(40, 1), E::kNone, {}});
  c.push_back({"eol_only", {0}, E::kNone, {}});
  c.push_back({"eol_stops_parsing_before_malformed_bytes", concat({kMss1460, {0, 2, 1, 8}}),
               E::kNone, {.has_mss = true, .mss = 1460, .mss_offset = 2}});
  c.push_back({"eol_first_hides_everything", concat({{0}, kMss1460}), E::kNone, {}});
  c.push_back({"eol_padding", concat({kMss1460, {4, 2, 0, 0}}), E::kNone,
               {.has_mss = true, .mss = 1460, .sack_permitted = true, .mss_offset = 2}});

  // ---- Truncated: kind or length byte, or body, runs past the area ----
  c.push_back({"mss_kind_at_last_byte", {2}, E::kTruncated, {}});
  c.push_back({"ts_kind_at_last_byte_after_nops", {1, 1, 1, 8}, E::kTruncated, {}});
  c.push_back({"unknown_kind_at_last_byte", concat({kMss1460, {30}}), E::kTruncated, {}});
  c.push_back({"mss_body_past_end", {2, 4, 5}, E::kTruncated, {}});
  c.push_back({"ts_body_past_end", {8, 10, 0, 0, 0, 0, 0, 0}, E::kTruncated, {}});
  c.push_back({"sack_body_past_end", {5, 10, 0, 0, 0, 1, 0, 0, 0}, E::kTruncated, {}});
  c.push_back({"unknown_length_past_end", {30, 10, 0, 0}, E::kTruncated, {}});
  c.push_back({"unknown_length_255", concat({{30, 255}, Bytes(38, 0)}), E::kTruncated, {}});
  c.push_back({"wrong_length_and_past_end_reports_truncation", {2, 5, 0, 0}, E::kTruncated, {}});

  // ---- Bad length: below 2, or not what the option's RFC allows ----
  c.push_back({"mss_length_0", {2, 0, 0, 0}, E::kBadLength, {}});
  c.push_back({"mss_length_1", {2, 1, 0, 0}, E::kBadLength, {}});
  c.push_back({"unknown_length_0", {30, 0, 1, 1}, E::kBadLength, {}});
  c.push_back({"unknown_length_1", {30, 1, 1, 1}, E::kBadLength, {}});
  c.push_back({"length_0_after_valid_option", concat({kMss1460, {30, 0}}), E::kBadLength, {}});
  c.push_back({"mss_length_3", {2, 3, 5, 1}, E::kBadLength, {}});
  c.push_back({"mss_length_5", {2, 5, 5, 0xb4, 0}, E::kBadLength, {}});
  c.push_back({"mss_length_2", {2, 2, 1, 1}, E::kBadLength, {}});
  c.push_back({"window_scale_length_2", {3, 2, 1, 1}, E::kBadLength, {}});
  c.push_back({"window_scale_length_4", {3, 4, 7, 1}, E::kBadLength, {}});
  c.push_back({"sack_permitted_length_3", {4, 3, 0, 1}, E::kBadLength, {}});
  c.push_back({"sack_permitted_length_4", {4, 4, 0, 0}, E::kBadLength, {}});
  c.push_back({"timestamp_length_8", {8, 8, 0, 0, 0, 0, 0, 0}, E::kBadLength, {}});
  c.push_back({"timestamp_length_12", {8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, E::kBadLength, {}});
  c.push_back({"sack_no_blocks", {5, 2, 1, 1}, E::kBadLength, {}});
  c.push_back({"sack_partial_block_9", {5, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, E::kBadLength, {}});
  c.push_back({"sack_partial_block_14", concat({{5, 14}, Bytes(12, 0), {1, 1}}), E::kBadLength,
               {}});
  c.push_back({"sack_5_blocks_refused", sackOption(5), E::kBadLength, {}});
  c.push_back({"malformed_after_valid_timestamp", concat({{1, 1}, kTs, {3, 2}}), E::kBadLength,
               {}});
  return c;
}

// Keeps gtest from hex-dumping the whole fixture in failure messages.
void PrintTo(const OptionCase& c, std::ostream* os) { *os << c.description; }

class OptionGolden : public ::testing::TestWithParam<OptionCase> {};

TEST_P(OptionGolden, ParsesAsExpected) {
  const OptionCase& c = GetParam();
  const Bytes buf = c.bytes;  // exact-size heap copy: ASan sees any read past the area
  TcpOptions got;
  const OptionError err = parseTcpOptions(buf.data(), buf.size(), got);
  ASSERT_EQ(err, c.expected) << c.description << ": got " << optionErrorName(err) << ", want "
                             << optionErrorName(c.expected);
  if (err == OptionError::kNone) expectSameOptions(got, c.want, c.description);
}

TEST_P(OptionGolden, OffsetsPointAtTheFields) {
  const OptionCase& c = GetParam();
  if (c.expected != OptionError::kNone) return;
  TcpOptions o;
  ASSERT_EQ(parseTcpOptions(c.bytes.data(), c.bytes.size(), o), OptionError::kNone);
  const uint8_t* b = c.bytes.data();
  if (o.has_mss) {
    ASSERT_LE(o.mss_offset + 2u, c.bytes.size());
    EXPECT_EQ(b[o.mss_offset - 2], tcpopt::kMss);
    EXPECT_EQ(load16(b + o.mss_offset), o.mss);
  }
  if (o.has_timestamp) {
    ASSERT_LE(o.ts_offset + 8u, c.bytes.size());
    EXPECT_EQ(b[o.ts_offset - 2], tcpopt::kTimestamp);
    EXPECT_EQ(load32(b + o.ts_offset), o.ts_val);
    EXPECT_EQ(load32(b + o.ts_offset + 4), o.ts_ecr);
  }
  if (o.sack_count > 0) {
    ASSERT_LE(o.sack_offset + 8u * o.sack_count, c.bytes.size());
    EXPECT_EQ(b[o.sack_offset - 2], tcpopt::kSack);
    for (size_t i = 0; i < o.sack_count; ++i) {
      EXPECT_EQ(load32(b + o.sack_offset + 8 * i), o.sack[i].left);
      EXPECT_EQ(load32(b + o.sack_offset + 8 * i + 4), o.sack[i].right);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OptionGolden, ::testing::ValuesIn(goldenCases()),
                         [](const auto& tp) { return tp.param.description; });

TEST(OptionGoldenTable, DescriptionsAreUnique) {
  std::set<std::string> seen;
  for (const auto& c : goldenCases()) {
    EXPECT_TRUE(seen.insert(c.description).second) << c.description;
  }
}

TEST(OptionParse, ResetsOutputOnEachCall) {
  TcpOptions o;
  const Bytes full = concat({kMss1460, {4, 2}, kTs, {1, 3, 3, 15}});
  ASSERT_EQ(parseTcpOptions(full.data(), full.size(), o), OptionError::kNone);
  ASSERT_TRUE(o.has_mss && o.wscale_clamped);
  ASSERT_EQ(parseTcpOptions(nullptr, 0, o), OptionError::kNone);
  expectSameOptions(o, TcpOptions{}, "after empty parse");
}

TEST(OptionParse, EveryPrefixOfAValidAreaIsRefusedOrAcceptedWholeOptionsOnly) {
  // Cutting a valid SYN option area anywhere: a cut inside an option is kTruncated, a cut on a
  // boundary parses, and nothing is read past the cut.
  const Bytes full = concat({kMss1460, {1, 1, 4, 2}, kTs, {1, 3, 3, 7}});
  const std::set<size_t> boundaries = {0, 4, 5, 6, 8, 18, 19, 22};
  for (size_t len = 0; len <= full.size(); ++len) {
    const Bytes cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
    TcpOptions o;
    const OptionError want = boundaries.count(len) ? OptionError::kNone : OptionError::kTruncated;
    EXPECT_EQ(parseTcpOptions(cut.data(), cut.size(), o), want) << "len=" << len;
  }
}

TEST(OptionParse, RandomAreasNeverReadOutOfBounds) {
  std::mt19937 rng(777);
  int ok = 0;
  for (int rep = 0; rep < 50000; ++rep) {
    Bytes b(rng() % 41);
    // Bias bytes towards small kinds and lengths so that valid options appear.
    for (auto& x : b) x = static_cast<uint8_t>(rng() % 3 == 0 ? rng() : rng() % 12);
    TcpOptions o;
    if (parseTcpOptions(b.data(), b.size(), o) != OptionError::kNone) continue;
    ++ok;
    EXPECT_LE(o.wscale, tcpopt::kMaxWindowScale);
    EXPECT_LE(o.sack_count, tcpopt::kMaxSackBlocks);
    if (o.has_mss) {
      EXPECT_LE(o.mss_offset + 2u, b.size());
    }
    if (o.has_timestamp) {
      EXPECT_LE(o.ts_offset + 8u, b.size());
    }
    if (o.sack_count) {
      EXPECT_LE(o.sack_offset + 8u * o.sack_count, b.size());
    }
  }
  EXPECT_GT(ok, 1000);
}

TEST(OptionErrorNames, AreDistinctAndKnown) {
  EXPECT_STREQ(optionErrorName(OptionError::kNone), "none");
  EXPECT_STRNE(optionErrorName(OptionError::kTruncated), optionErrorName(OptionError::kBadLength));
  EXPECT_STRNE(optionErrorName(OptionError::kTruncated), "unknown");
  EXPECT_STRNE(optionErrorName(OptionError::kBadLength), "unknown");
  EXPECT_STREQ(optionErrorName(static_cast<OptionError>(99)), "unknown");
}

// ---- buildSynOptions ----

struct BuildGolden {
  std::string description;
  TcpOptions in;
  Bytes bytes;
};

TEST(OptionBuild, GoldenBytesInLinuxOrder) {
  const std::vector<BuildGolden> cases = {
      {"nothing", {}, {}},
      {"mss_only", {.has_mss = true, .mss = 1460}, {2, 4, 0x05, 0xb4}},
      {"sack_permitted_only", {.sack_permitted = true}, {1, 1, 4, 2}},
      {"timestamp_only",
       {.has_timestamp = true, .ts_val = 0x01020304, .ts_ecr = 0x05060708},
       {1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}},
      {"wscale_only", {.has_wscale = true, .wscale = 9}, {1, 3, 3, 9}},
      {"mss_wscale", {.has_mss = true, .mss = 536, .has_wscale = true, .wscale = 0},
       {2, 4, 0x02, 0x18, 1, 3, 3, 0}},
      {"linux_full_syn",
       {.has_mss = true, .mss = 1460, .has_wscale = true, .wscale = 7, .sack_permitted = true,
        .has_timestamp = true, .ts_val = 0xaabbccdd, .ts_ecr = 0},
       {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 1, 3, 3, 7}},
  };
  for (const auto& c : cases) {
    uint8_t out[40] = {};
    const size_t n = buildSynOptions(c.in, out, sizeof out);
    EXPECT_EQ(Bytes(out, out + n), c.bytes) << c.description;
  }
}

TEST(OptionBuild, AllCombinationsRoundTripAndRefuseSmallCaps) {
  for (unsigned mask = 0; mask < 16; ++mask) {
    TcpOptions in;
    in.has_mss = (mask & 1) != 0;
    in.mss = in.has_mss ? 1380 : 0;
    in.has_wscale = (mask & 2) != 0;
    in.wscale = in.has_wscale ? 14 : 0;
    in.sack_permitted = (mask & 4) != 0;
    in.has_timestamp = (mask & 8) != 0;
    in.ts_val = in.has_timestamp ? 0xfffffffe : 0;
    in.ts_ecr = in.has_timestamp ? 0x80000001 : 0;
    const std::string what = "mask=" + std::to_string(mask);

    Bytes out(40, 0xee);
    const size_t n = buildSynOptions(in, out.data(), out.size());
    const size_t want_len = (in.has_mss ? 4 : 0) + (in.has_timestamp ? 12 : 0) +
                            (in.sack_permitted && !in.has_timestamp ? 4 : 0) +
                            (in.has_wscale ? 4 : 0);
    EXPECT_EQ(n, want_len) << what;
    EXPECT_EQ(n % 4, 0u) << what;
    for (size_t i = n; i < out.size(); ++i) EXPECT_EQ(out[i], 0xee) << what << " byte " << i;

    TcpOptions back;
    ASSERT_EQ(parseTcpOptions(out.data(), n, back), OptionError::kNone) << what;
    EXPECT_EQ(back.has_mss, in.has_mss) << what;
    EXPECT_EQ(back.mss, in.mss) << what;
    EXPECT_EQ(back.has_wscale, in.has_wscale) << what;
    EXPECT_EQ(back.wscale, in.wscale) << what;
    EXPECT_FALSE(back.wscale_clamped) << what;
    EXPECT_EQ(back.sack_permitted, in.sack_permitted) << what;
    EXPECT_EQ(back.has_timestamp, in.has_timestamp) << what;
    EXPECT_EQ(back.ts_val, in.ts_val) << what;
    EXPECT_EQ(back.ts_ecr, in.ts_ecr) << what;
    EXPECT_EQ(back.sack_count, 0) << what;
    EXPECT_EQ(back.unknown_count, 0) << what;
    // In-place rewriting relies on 4-byte alignment of TSval in what we build (the 32-bit
    // checksum update then needs no byte swap).
    if (in.has_timestamp) {
      EXPECT_EQ(back.ts_offset % 2, 0) << what;
    }

    // Too small a cap: nothing is built and nothing is written past the cap.
    for (size_t cap = 0; cap < n; ++cap) {
      Bytes small(cap, 0xee);
      EXPECT_EQ(buildSynOptions(in, small.data(), cap), 0u) << what << " cap=" << cap;
      Bytes canary(40, 0xee);
      EXPECT_EQ(buildSynOptions(in, canary.data(), cap), 0u) << what << " cap=" << cap;
      for (size_t i = cap; i < canary.size(); ++i) {
        EXPECT_EQ(canary[i], 0xee) << what << " cap=" << cap << " byte " << i;
      }
    }
    // An exact cap suffices.
    Bytes exact(n);
    EXPECT_EQ(buildSynOptions(in, exact.data(), n), n) << what;
    EXPECT_EQ(exact, Bytes(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n))) << what;
  }
}

TEST(OptionBuild, IgnoresNonSynFields) {
  TcpOptions in;
  in.has_mss = true;
  in.mss = 1000;
  in.sack_count = 2;
  in.unknown_count = 5;
  in.mss_offset = 30;
  uint8_t out[40];
  const size_t n = buildSynOptions(in, out, sizeof out);
  EXPECT_EQ(Bytes(out, out + n), (Bytes{2, 4, 0x03, 0xe8}));
}

}  // namespace
}  // namespace tandem
