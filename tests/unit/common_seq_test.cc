// Wrap-safe sequence comparisons (RFC 793 section 3.3, RFC 1982).

#include "common/seq.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace tandem {
namespace {

// The functions are constexpr: the key facts also hold at compile time.
static_assert(seqBefore(0xffffffffu, 0));
static_assert(seqAfter(0, 0xffffffffu));
static_assert(seqBetween(0, 0xfffffff0u, 0x10));
static_assert(seqMax(0xffffffffu, 1) == 1);
static_assert(seqMin(0xffffffffu, 1) == 0xffffffffu);

struct OrderCase {
  uint32_t a;
  uint32_t b;
  bool before;  ///< seqBefore(a, b)
  bool after;   ///< seqAfter(a, b)
};

TEST(SeqOrder, TableAcrossTheWrap) {
  const std::vector<OrderCase> cases = {
      {0, 0, false, false},
      {1, 2, true, false},
      {2, 1, false, true},
      {0xffffffff, 0, true, false},           // wrap: -1 is just before 0
      {0, 0xffffffff, false, true},
      {0xfffffff0, 0x10, true, false},        // 32 apart across the wrap
      {0x10, 0xfffffff0, false, true},
      {0, 0x7fffffff, true, false},           // the largest forward distance
      {0x7fffffff, 0, false, true},
      {0x80000000, 0xffffffff, true, false},
      {0x7fffffff, 0x80000000, true, false},
      {0xffffffff, 0xffffffff, false, false},
      {0x80000001, 0, true, false},           // 2^31 - 1 back from 0 (via the wrap)
  };
  for (const auto& c : cases) {
    EXPECT_EQ(seqBefore(c.a, c.b), c.before) << std::hex << c.a << " vs " << c.b;
    EXPECT_EQ(seqAfter(c.a, c.b), c.after) << std::hex << c.a << " vs " << c.b;
    EXPECT_EQ(seqBeforeEq(c.a, c.b), c.before || c.a == c.b) << std::hex << c.a << " " << c.b;
    EXPECT_EQ(seqAfterEq(c.a, c.b), c.after || c.a == c.b) << std::hex << c.a << " " << c.b;
  }
}

TEST(SeqOrder, AntipodalPointsAreBothBeforeEachOther) {
  // Exactly 2^31 apart the order is undefined (RFC 1982 section 3.2); like Linux's before(),
  // each is "before" (and so also "after") the other. Pinned so a change is deliberate.
  EXPECT_TRUE(seqBefore(0, 0x80000000));
  EXPECT_TRUE(seqBefore(0x80000000, 0));
  EXPECT_TRUE(seqAfter(0, 0x80000000));
  EXPECT_TRUE(seqAfter(0x80000000, 0));
}

TEST(SeqOrder, RandomForwardDistancesFromEveryRegion) {
  std::mt19937 rng(42);
  for (int rep = 0; rep < 100000; ++rep) {
    const uint32_t a = rep % 4 == 0 ? 0xffffffffu - static_cast<uint32_t>(rng() % 64)
                                    : static_cast<uint32_t>(rng());
    const uint32_t d = 1 + static_cast<uint32_t>(rng() % 0x7fffffffu);  // 1 .. 2^31 - 1
    const uint32_t b = a + d;
    ASSERT_TRUE(seqBefore(a, b)) << a << " " << d;
    ASSERT_TRUE(seqAfter(b, a)) << a << " " << d;
    ASSERT_FALSE(seqBefore(b, a)) << a << " " << d;
    ASSERT_FALSE(seqAfter(a, b)) << a << " " << d;
    ASSERT_EQ(seqMax(a, b), b);
    ASSERT_EQ(seqMax(b, a), b);
    ASSERT_EQ(seqMin(a, b), a);
    ASSERT_EQ(seqMin(b, a), a);
  }
}

struct BetweenCase {
  uint32_t x;
  uint32_t lo;
  uint32_t hi;
  bool want;
};

TEST(SeqBetween, TableAcrossTheWrap) {
  const std::vector<BetweenCase> cases = {
      {5, 1, 10, true},
      {1, 1, 10, true},                        // inclusive low edge
      {10, 1, 10, true},                       // inclusive high edge
      {0, 1, 10, false},
      {11, 1, 10, false},
      {0, 0xfffffff0, 0x10, true},             // window straddling the wrap
      {0xfffffff0, 0xfffffff0, 0x10, true},
      {0x10, 0xfffffff0, 0x10, true},
      {0xffffffff, 0xfffffff0, 0x10, true},
      {0x11, 0xfffffff0, 0x10, false},
      {0xffffffef, 0xfffffff0, 0x10, false},
      {7, 7, 7, true},                         // empty-width window holds only its point
      {8, 7, 7, false},
      {6, 7, 7, false},
      {0, 0xffffffff, 0, true},
      {0x80000000, 0, 0xffffffff, true},       // a window of the whole space holds everything
  };
  for (const auto& c : cases) {
    EXPECT_EQ(seqBetween(c.x, c.lo, c.hi), c.want)
        << std::hex << c.x << " in [" << c.lo << ", " << c.hi << "]";
  }
}

TEST(SeqBetween, RandomWindowsAgreeWithBeforeAndAfter) {
  std::mt19937 rng(7);
  for (int rep = 0; rep < 100000; ++rep) {
    const auto lo = static_cast<uint32_t>(rng());
    const uint32_t width = static_cast<uint32_t>(rng() % 0x7fffffffu);
    const uint32_t hi = lo + width;
    const uint32_t inside = lo + (width == 0 ? 0 : static_cast<uint32_t>(rng() % (width + 1)));
    ASSERT_TRUE(seqBetween(inside, lo, hi));
    ASSERT_TRUE(seqAfterEq(inside, lo) && seqBeforeEq(inside, hi));
    ASSERT_FALSE(seqBetween(lo - 1, lo, hi));
    ASSERT_FALSE(seqBetween(hi + 1, lo, hi));
  }
}

}  // namespace
}  // namespace tandem
