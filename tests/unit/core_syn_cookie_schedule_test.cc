// SYN cookie key schedule (the engine's mode): the key rotates every period by itself, derived
// from the configured secret and the period, so two proxies with the same secret agree; a
// cookie lives in its period and the next; older ones are stale, forged ones bad. Fake clock.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/core/syn_cookie.h"

namespace tandem {
namespace {

constexpr uint64_t kSec = 1'000'000'000ull;
constexpr uint64_t kPeriod = 64 * kSec;
// A wall clock in the middle of a period.
constexpr uint64_t kWall = 1'790'000'000ull * kSec / kPeriod * kPeriod + 30 * kSec;

std::vector<uint8_t> secretOf(const std::string& s) { return {s.begin(), s.end()}; }
const std::vector<uint8_t> kSecret = secretOf("tandem-schedule-secret-0123456789");
const std::vector<uint8_t> kOther = secretOf("tandem-schedule-secret-abcdefghij");

CookieInput input(uint32_t isn = 77) {
  CookieInput in;
  in.client = *Endpoint::parse("10.0.0.2:40000");
  in.vip = *Endpoint::parse("10.0.0.100:443");
  in.client_isn = isn;
  in.offer.mss = 1460;
  in.offer.ts_ok = true;
  in.offer.has_wscale = true;
  in.offer.wscale = 7;
  in.offer.sack_ok = true;
  return in;
}

CookieCheck check(SynCookie& sc, const CookieIssue& issue, uint64_t now,
                  const CookieInput& in = input()) {
  return sc.check(in, issue.isn, issue.tsval, issue.options.ts_ok, now);
}

TEST(SynCookieSchedule, LivesInItsPeriodAndTheNextThenStale) {
  SynCookie sc({}, std::span<const uint8_t>(kSecret));
  ASSERT_TRUE(sc.scheduled());
  const CookieIssue issue = sc.make(input(), kWall);
  ASSERT_TRUE(issue.ok);
  struct Case {
    const char* what;
    uint64_t at;
    bool ok;
    CookieReject reason;
  };
  const Case cases[] = {
      {"same instant", kWall, true, CookieReject::kNone},
      {"end of its period", kWall + 33 * kSec, true, CookieReject::kNone},
      {"next period (previous key still accepted)", kWall + kPeriod, true, CookieReject::kNone},
      {"end of the next period", kWall + kPeriod + 33 * kSec, true, CookieReject::kNone},
      {"two periods on: stale", kWall + 2 * kPeriod, false, CookieReject::kStale},
      {"three periods on: stale", kWall + 3 * kPeriod, false, CookieReject::kStale},
      {"four periods on: its key is gone, indistinguishable from forged", kWall + 4 * kPeriod,
       false, CookieReject::kBadHash},
  };
  for (const Case& c : cases) {
    const CookieCheck r = check(sc, issue, c.at);
    EXPECT_EQ(r.ok, c.ok) << c.what;
    EXPECT_EQ(r.reason, c.reason) << c.what;
  }
  // The clock going back to the issue period (or a checker behind by one) finds the key again.
  EXPECT_TRUE(check(sc, issue, kWall).ok);
}

TEST(SynCookieSchedule, TheKeyReallyRotates) {
  // The same connection in consecutive periods gets unrelated MACs: the key changed, not only
  // the period counter in the cookie's low bits.
  SynCookie sc({}, std::span<const uint8_t>(kSecret));
  const CookieIssue a = sc.make(input(), kWall);
  const CookieIssue b = sc.make(input(), kWall + kPeriod);
  const CookieIssue c = sc.make(input(), kWall + 4 * kPeriod);  // same count bits as a
  EXPECT_EQ(a.isn & 0xc, c.isn & 0xc);
  EXPECT_NE(a.isn >> 4, b.isn >> 4);
  EXPECT_NE(a.isn >> 4, c.isn >> 4);
  // And a scheduled key is not the fixed key of the same secret.
  SynCookie fixed({}, CookieSecrets(kSecret));
  EXPECT_NE(fixed.make(input(), kWall).isn >> 4, a.isn >> 4);
  EXPECT_FALSE(fixed.check(input(), a.isn, a.tsval, true, kWall).ok);
}

TEST(SynCookieSchedule, StandbyWithTheSameSecretAndClockValidates) {
  SynCookie active({}, std::span<const uint8_t>(kSecret));
  SynCookie standby({}, std::span<const uint8_t>(kSecret));
  SynCookie stranger({}, std::span<const uint8_t>(kOther));
  // The standby never made a cookie and has seen no tick: it derives the keys on demand.
  const CookieIssue issue = active.make(input(), kWall);
  EXPECT_TRUE(check(standby, issue, kWall + 2 * kSec).ok);
  // Clock skew: a standby ahead of the active accepts across a period boundary (the cookie is
  // one period old to it). One behind refuses a cookie made just after the boundary, which it
  // sees as from the future: the documented limit (skew e loses the cookies made within e
  // after a boundary; the client's retransmitted SYN gets a fresh one).
  const uint64_t boundary = kWall - 30 * kSec + kPeriod;  // start of the next period
  const CookieIssue early = active.make(input(), boundary - kSec / 2);
  EXPECT_TRUE(check(standby, early, boundary + kSec / 2).ok);
  const CookieIssue late = active.make(input(), boundary + kSec / 2);
  EXPECT_FALSE(check(standby, late, boundary - kSec / 2).ok);
  // A takeover one period later: the active's cookie of the previous period still validates.
  EXPECT_TRUE(check(standby, issue, kWall + kPeriod).ok);
  EXPECT_EQ(check(stranger, issue, kWall).reason, CookieReject::kBadHash);
}

TEST(SynCookieSchedule, ForgedCookiesAreBadHash) {
  SynCookie sc({}, std::span<const uint8_t>(kSecret));
  const CookieIssue issue = sc.make(input(), kWall);
  // Every MAC bit flipped alone is refused.
  for (unsigned bit = SynCookie::kMssIndexBits + SynCookie::kCountBits; bit < 32; ++bit) {
    const CookieCheck r = sc.check(input(), issue.isn ^ (1u << bit), issue.tsval, true, kWall);
    EXPECT_FALSE(r.ok) << bit;
    EXPECT_EQ(r.reason, CookieReject::kBadHash) << bit;
  }
  // Another connection's cookie, or the right cookie for another client ISN.
  EXPECT_EQ(check(sc, issue, kWall, input(78)).reason, CookieReject::kBadHash);
  // Options altered in the echoed timestamp.
  EXPECT_EQ(sc.check(input(), issue.isn, issue.tsval ^ 0x10, true, kWall).reason,
            CookieReject::kBadHash);
  // A clock near its start: a cookie naming a period before 0 is bad, not a wrap-around.
  SynCookie young({}, std::span<const uint8_t>(kSecret));
  const CookieIssue first = young.make(input(), kSec);
  EXPECT_TRUE(check(young, first, kSec).ok);
  EXPECT_EQ(young.check(input(), first.isn ^ 0x4, first.tsval, true, kSec).reason,
            CookieReject::kBadHash);
}

TEST(SynCookieSchedule, AdvanceAheadOfTimeChangesNothingVisible) {
  SynCookie ticked({}, std::span<const uint8_t>(kSecret));
  SynCookie lazy({}, std::span<const uint8_t>(kSecret));
  for (uint64_t t = kWall; t < kWall + 10 * kPeriod; t += kPeriod / 4) {
    ticked.advance(t);
    const CookieIssue a = ticked.make(input(), t);
    const CookieIssue b = lazy.make(input(), t);
    EXPECT_EQ(a.isn, b.isn);
    EXPECT_TRUE(check(lazy, a, t + kPeriod).ok);
  }
  EXPECT_THROW(SynCookie({}, std::span<const uint8_t>(secretOf("short"))), std::invalid_argument);
}

}  // namespace
}  // namespace tandem
