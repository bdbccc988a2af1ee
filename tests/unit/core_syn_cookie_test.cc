// SYN cookie tests: golden vectors, option round trips through real packets, forgery, time,
// rotation, sequence wrap and the SYN-ACK builder.
#include "proxy/core/syn_cookie.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <random>
#include <string>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::checksumsValid;
using test::PacketBuilder;

constexpr uint8_t kSyn = 0x02, kAck = 0x10, kEce = 0x40, kCwr = 0x80;
constexpr uint64_t kSec = 1'000'000'000ull;
constexpr uint64_t kPeriod = 64 * kSec;
// Well inside a period, so that +/- a few seconds stays in it.
constexpr uint64_t kNow = 1'700'000'000ull * kSec + 10 * kSec;

std::vector<uint8_t> secretOf(const std::string& s) { return {s.begin(), s.end()}; }
const std::vector<uint8_t> kSecretA = secretOf("tandem-test-secret-A-0123456789ab");
const std::vector<uint8_t> kSecretB = secretOf("tandem-test-secret-B-0123456789ab");
const std::vector<uint8_t> kSecretC = secretOf("tandem-test-secret-C-0123456789ab");

SynCookie makeCookie(SynCookieConfig cfg = {}, const std::vector<uint8_t>& s = kSecretA) {
  return SynCookie(std::move(cfg), CookieSecrets(s));
}

CookieInput input(uint32_t isn = 1000, const std::string& client = "10.0.0.2:40000",
                  const std::string& vip = "10.0.0.100:80") {
  CookieInput in;
  in.client = *Endpoint::parse(client);
  in.vip = *Endpoint::parse(vip);
  in.client_isn = isn;
  in.offer.mss = 1460;
  in.offer.ts_ok = true;
  in.offer.has_wscale = true;
  in.offer.wscale = 7;
  in.offer.sack_ok = true;
  return in;
}

/// check() as an engine would call it for the pure ACK of `issue`.
CookieCheck checkAck(SynCookie& sc, const CookieInput& in, const CookieIssue& issue,
                     uint64_t now) {
  return sc.check(in, issue.isn, issue.tsval, issue.options.ts_ok, now);
}

struct Parsed {
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
  TcpOptions opts;
};

Parsed parse(std::vector<uint8_t> bytes) {
  Parsed p{std::move(bytes), {}, {}};
  EXPECT_EQ(parseTcpPacket(p.bytes.data(), p.bytes.size(), p.pkt), ParseError::kNone);
  EXPECT_EQ(parseTcpOptions(p.pkt.options(), p.pkt.optionsLen(), p.opts), OptionError::kNone);
  return p;
}

// ---- The primitive and the wire format ----------------------------------------------------

TEST(SynCookie, OpenSslSipHashMatchesReferenceVector) {
  // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e -> a129ca6149be45e5.
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  ASSERT_NE(mac, nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  uint8_t key[16], msg[15], out[8];
  for (uint8_t i = 0; i < 16; ++i) key[i] = i;
  for (uint8_t i = 0; i < 15; ++i) msg[i] = i;
  size_t size = 8, out_len = 0;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                               OSSL_PARAM_construct_end()};
  ASSERT_EQ(EVP_MAC_init(ctx, key, sizeof key, params), 1);
  ASSERT_EQ(EVP_MAC_update(ctx, msg, sizeof msg), 1);
  ASSERT_EQ(EVP_MAC_final(ctx, out, &out_len, sizeof out), 1);
  const uint8_t expected[8] = {0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1};
  EXPECT_EQ(out_len, 8u);
  EXPECT_EQ(std::vector<uint8_t>(out, out + 8), std::vector<uint8_t>(expected, expected + 8));
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
}

TEST(SynCookie, GoldenVectorsPinTheWireFormat) {
  // An active and a standby must compute identical cookies: these values change only with a
  // deliberate format change (and the key label "tandem syn-cookie v1" with it).
  struct Case {
    const char* description;
    CookieInput in;
    uint64_t now;
    uint32_t isn;
    uint32_t tsval;
  };
  CookieInput no_ts = input(0x01020304);
  no_ts.offer = {};
  no_ts.offer.mss = 1300;
  const Case cases[] = {
      {"all options, client isn 1000", input(1000), kNow, 0x3ad1fb43u, 0x67606d17u},
      {"no timestamps, mss 1300", no_ts, kNow, 0x00553091u, 0u},
      {"wrapped client isn", input(0xffffffffu), kNow + kPeriod, 0x63ef01f7u, 0x839fdd57u},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto sc = makeCookie();
    sc.make(input(42), kNow);  // the context is re-initialised per MAC: reuse must not matter
    const CookieIssue got = sc.make(c.in, c.now);
    ASSERT_TRUE(got.ok);
    EXPECT_EQ(sc.make(c.in, c.now).isn, got.isn);
    EXPECT_EQ(got.isn, c.isn) << std::hex << got.isn;
    EXPECT_EQ(got.tsval, c.tsval) << std::hex << got.tsval;
  }
}

TEST(SynCookie, CookieFollowsTheDocumentedLayout) {
  // Recomputes the cookie from syn_cookie.h's file comment alone, with OpenSSL directly:
  // key = SHA-256("tandem syn-cookie v1\0" | secret)[0..16), SipHash-2-4 over the fixed message.
  std::vector<uint8_t> keyed(std::begin("tandem syn-cookie v1"), std::end("tandem syn-cookie v1"));
  keyed.insert(keyed.end(), kSecretA.begin(), kSecretA.end());
  uint8_t digest[32];
  unsigned digest_len = 0;
  ASSERT_EQ(EVP_Digest(keyed.data(), keyed.size(), digest, &digest_len, EVP_sha256(), nullptr), 1);

  const CookieInput in = input(0xdeadbeefu, "198.51.100.9:61000", "203.0.113.5:443");
  const uint64_t count = kNow / kPeriod;
  std::vector<uint8_t> msg(50, 0);
  std::copy_n(in.client.addr.bytes().begin(), 16, msg.begin());
  std::copy_n(in.vip.addr.bytes().begin(), 16, msg.begin() + 16);
  store16(&msg[32], 61000);
  store16(&msg[34], 443);
  store32(&msg[36], 0xdeadbeefu);
  store32(&msg[40], static_cast<uint32_t>(count >> 32));
  store32(&msg[44], static_cast<uint32_t>(count));
  msg[48] = 3;                                                   // 1460
  msg[49] = static_cast<uint8_t>(0x80 | 7 | SynCookie::kTsSack);  // timestamps, wscale 7, SACK

  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  size_t size = 8, out_len = 0;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                               OSSL_PARAM_construct_end()};
  uint8_t out[8];
  ASSERT_EQ(EVP_MAC_init(ctx, digest, 16, params), 1);
  ASSERT_EQ(EVP_MAC_update(ctx, msg.data(), msg.size()), 1);
  ASSERT_EQ(EVP_MAC_final(ctx, out, &out_len, sizeof out), 1);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  uint64_t h = 0;
  for (int i = 7; i >= 0; --i) h = (h << 8) | out[i];

  const uint32_t isn = ((static_cast<uint32_t>(h) & 0x0fffffffu) << 4) |
                       ((static_cast<uint32_t>(count) & 3u) << 2) | 3u;
  const uint32_t clock = static_cast<uint32_t>(kNow / 1'000'000) + static_cast<uint32_t>(h >> 32);
  uint32_t tsval = (clock & ~0x3fu) | 7u | SynCookie::kTsSack;
  if (static_cast<int32_t>(tsval - clock) > 0) tsval -= 64;

  auto sc = makeCookie();
  const CookieIssue got = sc.make(in, kNow);
  EXPECT_EQ(got.isn, isn);
  EXPECT_EQ(got.tsval, tsval);
}

// ---- Round trips through packets ----------------------------------------------------------

struct Offer {
  uint16_t mss;       // 0: no MSS option
  int wscale;         // -1: no window scale option
  bool sack;
  bool ecn;
  bool ts;
};

std::string describe(const Offer& o) {
  return "mss=" + std::to_string(o.mss) + " wscale=" + std::to_string(o.wscale) +
         " sack=" + std::to_string(o.sack) + " ecn=" + std::to_string(o.ecn) +
         " ts=" + std::to_string(o.ts);
}

std::vector<uint8_t> synPacket(const Offer& o, uint32_t isn, const std::string& client) {
  PacketBuilder b;
  b.src(client).dst("10.0.0.100:80").seq(isn);
  b.flags(static_cast<uint8_t>(kSyn | (o.ecn ? kEce | kCwr : 0)));
  if (o.mss != 0) b.mss(o.mss);
  if (o.wscale >= 0) b.wscale(static_cast<uint8_t>(o.wscale));
  if (o.sack) b.sackPermitted();
  if (o.ts) b.timestamp(0x11223344, 0);
  return b.build();
}

/// The options a connection ends up with, by the rules of syn_cookie.h, written independently.
CookieOptions expectedOptions(const Offer& o, const std::vector<uint16_t>& table) {
  CookieOptions e;
  const uint16_t mss = o.mss == 0 ? 536 : o.mss;
  e.mss = table[0];
  for (uint16_t t : table)
    if (mss >= t) e.mss = t;
  e.ts_ok = o.ts;
  if (o.ts) {
    e.wscale_ok = o.wscale >= 0;
    e.wscale = e.wscale_ok ? static_cast<uint8_t>(std::min(o.wscale, 14)) : 0;
    e.sack_ok = o.sack;
    e.ecn_ok = o.ecn;
  }
  return e;
}

/// SYN -> make -> SYN-ACK bytes -> the client's ACK bytes -> check, all through the parsers.
void roundTrip(const Offer& o, uint32_t client_isn, const std::string& client = "10.0.0.2:40000") {
  SCOPED_TRACE(describe(o) + " isn=" + std::to_string(client_isn));
  auto sc = makeCookie();
  const CookieOptions expected = expectedOptions(o, sc.config().mss_table);
  Parsed syn = parse(synPacket(o, client_isn, client));
  const CookieInput in = cookieInputFromSyn(syn.pkt, syn.opts);
  const CookieIssue issue = sc.make(in, kNow);
  ASSERT_TRUE(issue.ok);
  EXPECT_EQ(issue.options, expected);

  SynAckParams params;
  params.mss = 1400;
  params.wscale = 9;
  params.window = 29200;
  std::vector<uint8_t> buf(kMaxSynAckLen);
  const size_t n = buildSynAck(syn.pkt, syn.opts, issue, params, buf.data(), buf.size());
  ASSERT_GT(n, 0u);
  buf.resize(n);
  EXPECT_TRUE(checksumsValid(buf));
  Parsed sa = parse(buf);
  EXPECT_EQ(sa.pkt.src(), syn.pkt.dst());
  EXPECT_EQ(sa.pkt.dst(), syn.pkt.src());
  EXPECT_EQ(sa.pkt.seq(), issue.isn);
  EXPECT_EQ(sa.pkt.ack(), client_isn + 1);
  EXPECT_EQ(sa.pkt.flags(), kSyn | kAck | (expected.ecn_ok ? kEce : 0));
  EXPECT_EQ(sa.pkt.window(), 29200);
  EXPECT_TRUE(sa.opts.has_mss);
  EXPECT_EQ(sa.opts.mss, 1400);
  EXPECT_EQ(sa.opts.has_timestamp, expected.ts_ok);
  if (expected.ts_ok) {
    EXPECT_EQ(sa.opts.ts_val, issue.tsval);
    EXPECT_EQ(sa.opts.ts_ecr, 0x11223344u);
  }
  EXPECT_EQ(sa.opts.sack_permitted, expected.sack_ok);
  EXPECT_EQ(sa.opts.has_wscale, expected.wscale_ok);
  if (expected.wscale_ok) { EXPECT_EQ(sa.opts.wscale, 9); }

  // The client's ACK: seq = isn + 1 (wrapping), ack = cookie + 1, TSecr = our TSval.
  PacketBuilder ack;
  ack.src(client).dst("10.0.0.100:80").flags(kAck).seq(client_isn + 1).ack(sa.pkt.seq() + 1);
  if (sa.opts.has_timestamp) ack.timestamp(0x11223345, sa.opts.ts_val);
  Parsed a = parse(ack.build());
  const CookieCheck r = sc.check(cookieInputFromAck(a.pkt), a.pkt.ack() - 1, a.opts.ts_ecr,
                                 a.opts.has_timestamp, kNow + 5 * kSec);
  EXPECT_TRUE(r.ok) << cookieRejectName(r.reason);
  EXPECT_EQ(r.options, expected);
}

TEST(SynCookie, RoundTripEveryOptionCombination) {
  // Every MSS class (at, and just above, each entry) x window scale absent/0..14 (and a
  // clamped 15) x SACK x ECN x timestamps.
  const uint16_t msses[] = {0, 536, 900, 1300, 1400, 1440, 1459, 1460, 9000};
  size_t cases = 0;
  for (uint16_t mss : msses)
    for (int ws = -1; ws <= 15; ++ws)
      for (int bits = 0; bits < 8; ++bits) {
        // Client ISNs spread over the whole sequence space (Fibonacci hashing of the index).
        const auto isn = static_cast<uint32_t>(cases * 0x9e3779b9u);
        roundTrip({mss, ws, (bits & 1) != 0, (bits & 2) != 0, (bits & 4) != 0}, isn);
        ++cases;
      }
  EXPECT_EQ(cases, 9u * 17u * 8u);
}

TEST(SynCookie, MssRoundsDownToTheTable) {
  struct Case {
    const char* description;
    uint16_t offered;  // 0: option absent
    uint16_t expected;
  };
  const Case cases[] = {
      {"absent: RFC 9293 default 536", 0, 536}, {"below the smallest class", 100, 536},
      {"exactly 536", 536, 536},                {"just below 1300", 1299, 536},
      {"exactly 1300", 1300, 1300},             {"just below 1440", 1439, 1300},
      {"exactly 1440", 1440, 1440},             {"just below 1460", 1459, 1440},
      {"exactly 1460", 1460, 1460},             {"jumbo", 8960, 1460},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    roundTrip({c.offered, -1, false, false, false}, 7);
    auto sc = makeCookie();
    CookieInput in = input();
    in.offer.mss = c.offered == 0 ? 536 : c.offered;
    const CookieIssue issue = sc.make(in, kNow);
    EXPECT_EQ(issue.options.mss, c.expected);
    EXPECT_EQ(checkAck(sc, in, issue, kNow).options.mss, c.expected);
  }
}

TEST(SynCookie, SequenceWrapOfTheClientIsn) {
  const uint32_t isns[] = {0u, 1u, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
  for (uint32_t isn : isns) roundTrip({1460, 7, true, false, true}, isn);
  // ISN 0xffffffff: the SYN-ACK acks 0 and the ACK's seq is 0; seq - 1 must wrap back.
  Parsed a = parse(PacketBuilder().flags(kAck).seq(0).ack(1).build());
  EXPECT_EQ(cookieInputFromAck(a.pkt).client_isn, 0xffffffffu);
}

TEST(SynCookie, CookieIsnNearTheTopOfSequenceSpace) {
  // A cookie in the top 1/4096 of sequence space: the ACK's ack field is isn + 1 computed in
  // 32 bits; search client ISNs until one lands there (deterministic, ~4k MACs).
  auto sc = makeCookie();
  CookieInput in = input(0);
  CookieIssue issue;
  for (uint32_t isn = 0; isn < (1u << 20); ++isn) {
    in.client_isn = isn;
    issue = sc.make(in, kNow);
    if (issue.isn >= 0xfff00000u) break;
  }
  ASSERT_GE(issue.isn, 0xfff00000u);
  const uint32_t ack_field = issue.isn + 1;
  EXPECT_TRUE(sc.check(in, ack_field - 1, issue.tsval, true, kNow).ok);
}

// ---- Forgery ------------------------------------------------------------------------------

TEST(SynCookie, RandomForgeriesAreRejectedAsBadHash) {
  // A random guess passes with probability 2^-kMacBits per live secret, times 1/2 for the count
  // field (current or previous): 2^-29 here. 2^20 guesses expect 0.002 accepts; the seed is
  // fixed, so the outcome is deterministic.
  auto sc = makeCookie();
  const CookieInput in = input();
  std::mt19937 rng(12345);
  constexpr int kTrials = 1 << 20;
  int accepted = 0, bad_hash = 0;
  for (int i = 0; i < kTrials; ++i) {
    const CookieCheck r = sc.check(in, static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng()),
                                   (i & 1) != 0, kNow);
    accepted += r.ok;
    bad_hash += r.reason == CookieReject::kBadHash;
  }
  EXPECT_EQ(accepted, 0);
  EXPECT_EQ(bad_hash, kTrials);
}

TEST(SynCookie, ShortMssTableRefusesSpareIndicesBeforeHashing) {
  SynCookieConfig cfg;
  cfg.mss_table = {536, 1220, 1460};
  auto sc = makeCookie(cfg);
  const CookieInput in = input();
  std::mt19937 rng(7);
  constexpr int kTrials = 1 << 16;
  int invalid = 0, bad_hash = 0;
  for (int i = 0; i < kTrials; ++i) {
    const CookieCheck r = sc.check(in, static_cast<uint32_t>(rng()), 0, false, kNow);
    EXPECT_FALSE(r.ok);
    invalid += r.reason == CookieReject::kMssIndexInvalid;
    bad_hash += r.reason == CookieReject::kBadHash;
  }
  EXPECT_EQ(invalid + bad_hash, kTrials);
  EXPECT_NEAR(static_cast<double>(invalid) / kTrials, 0.25, 0.01);  // index 3 of 0..3
  // A genuine cookie from a 3-entry table still validates.
  const CookieIssue issue = sc.make(in, kNow);
  EXPECT_EQ(issue.options.mss, 1460);
  EXPECT_TRUE(checkAck(sc, in, issue, kNow).ok);
}

TEST(SynCookie, EveryFlippedBitIsRejected) {
  auto sc = makeCookie();
  CookieInput in = input();
  in.offer.ecn_ok = true;
  const CookieIssue issue = sc.make(in, kNow);
  ASSERT_TRUE(checkAck(sc, in, issue, kNow).ok);
  for (unsigned bit = 0; bit < 32; ++bit) {
    SCOPED_TRACE("isn bit " + std::to_string(bit));
    const CookieCheck r = sc.check(in, issue.isn ^ (1u << bit), issue.tsval, true, kNow);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.reason, CookieReject::kBadHash);
  }
  // The option bits of TSecr are authenticated (unlike Linux)...
  for (unsigned bit = 0; bit < SynCookie::kTsOptionBits; ++bit) {
    SCOPED_TRACE("tsecr bit " + std::to_string(bit));
    const CookieCheck r = sc.check(in, issue.isn, issue.tsval ^ (1u << bit), true, kNow);
    EXPECT_EQ(r.reason, CookieReject::kBadHash);
  }
  // ...its clock bits are not (as Linux): they only carry the TS clock, not identity.
  EXPECT_TRUE(sc.check(in, issue.isn, issue.tsval ^ 0x80000000u, true, kNow).ok);
}

TEST(SynCookie, TimestampsMustStayAsNegotiated) {
  struct Case {
    const char* description;
    bool syn_ts;
    bool ack_ts;
    CookieReject expected;
  };
  const Case cases[] = {
      {"both with timestamps", true, true, CookieReject::kNone},
      {"neither", false, false, CookieReject::kNone},
      {"ACK drops negotiated timestamps (RFC 7323 3.2)", true, false, CookieReject::kBadHash},
      {"ACK invents timestamps", false, true, CookieReject::kBadHash},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto sc = makeCookie();
    CookieInput in = input();
    in.offer.ts_ok = c.syn_ts;
    const CookieIssue issue = sc.make(in, kNow);
    const CookieCheck r = sc.check(in, issue.isn, c.syn_ts ? issue.tsval : 0x12345678, c.ack_ts,
                                   kNow);
    EXPECT_EQ(r.reason, c.expected);
    EXPECT_EQ(r.ok, c.expected == CookieReject::kNone);
  }
}

TEST(SynCookie, CookieIsBoundToTheConnection) {
  struct Case {
    const char* description;
    CookieInput ack;
    bool ok;
  };
  const CookieInput syn = input(5000);
  const Case cases[] = {
      {"same connection", input(5000), true},
      {"other client port", input(5000, "10.0.0.2:40001"), false},
      {"other client address", input(5000, "10.0.0.3:40000"), false},
      {"other VIP port", input(5000, "10.0.0.2:40000", "10.0.0.100:443"), false},
      {"other VIP address", input(5000, "10.0.0.2:40000", "10.0.0.101:80"), false},
      {"other client ISN", input(5001), false},
      {"ports swapped", input(5000, "10.0.0.2:80", "10.0.0.100:40000"), false},
  };
  auto sc = makeCookie();
  const CookieIssue issue = sc.make(syn, kNow);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    const CookieCheck r = checkAck(sc, c.ack, issue, kNow);
    EXPECT_EQ(r.ok, c.ok);
    if (!c.ok) { EXPECT_EQ(r.reason, CookieReject::kBadHash); }
  }
}

// ---- Time ---------------------------------------------------------------------------------

TEST(SynCookie, AcceptedInTheCurrentAndPreviousPeriodOnly) {
  struct Case {
    const char* description;
    int64_t delta_ns;  // check time minus issue time
    CookieReject expected;
    uint8_t age;
  };
  // Issued at the very start of a period, so each delta lands in a known period.
  const uint64_t issued = (kNow / kPeriod) * kPeriod;
  const int64_t p = static_cast<int64_t>(kPeriod);
  const Case cases[] = {
      {"same instant", 0, CookieReject::kNone, 0},
      {"end of the same period", p - 1, CookieReject::kNone, 0},
      {"start of the next period", p, CookieReject::kNone, 1},
      {"end of the next period", 2 * p - 1, CookieReject::kNone, 1},
      {"two periods on: stale", 2 * p, CookieReject::kStale, 2},
      {"three periods on: stale", 3 * p + p / 2, CookieReject::kStale, 3},
      {"four periods on: count aliases, MAC fails", 4 * p, CookieReject::kBadHash, 0},
      {"a day on", 86400 * static_cast<int64_t>(kSec), CookieReject::kBadHash, 0},
      {"one period early (peer clock behind)", -p, CookieReject::kBadHash, 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto sc = makeCookie();
    const CookieInput in = input();
    const CookieIssue issue = sc.make(in, issued);
    const CookieCheck r = checkAck(sc, in, issue, issued + static_cast<uint64_t>(c.delta_ns));
    EXPECT_EQ(r.reason, c.expected) << cookieRejectName(r.reason);
    EXPECT_EQ(r.ok, c.expected == CookieReject::kNone);
    if (c.expected != CookieReject::kBadHash) { EXPECT_EQ(r.age, c.age); }
  }
}

TEST(SynCookie, PeriodIsConfigurable) {
  SynCookieConfig cfg;
  cfg.period_ns = kSec;
  auto sc = makeCookie(cfg);
  const CookieInput in = input();
  const uint64_t t0 = 5000 * kSec;
  const CookieIssue issue = sc.make(in, t0);
  EXPECT_TRUE(checkAck(sc, in, issue, t0 + kSec + kSec / 2).ok);
  EXPECT_EQ(checkAck(sc, in, issue, t0 + 2 * kSec).reason, CookieReject::kStale);
}

TEST(SynCookie, TsvalIsAKeyedMillisecondClock) {
  auto sc = makeCookie();
  const CookieInput in = input();
  const CookieIssue a = sc.make(in, kNow);
  const CookieIssue b = sc.make(in, kNow + kSec);
  // Same connection one second later: the clock advanced ~1000 ms (64 ms granularity).
  const uint32_t diff = b.tsval - a.tsval;
  EXPECT_GE(diff, 1000u - 64u);
  EXPECT_LE(diff, 1000u + 64u);
  EXPECT_EQ(a.tsval & SynCookie::kTsOptionMask, 7u | SynCookie::kTsSack);
  // Another connection at the same instant gets another offset (RFC 7323 5.4).
  const CookieIssue other = sc.make(input(1000, "10.0.0.2:40001"), kNow);
  EXPECT_GT(static_cast<uint32_t>(other.tsval - a.tsval) + 128u, 256u);
}

// ---- Secrets ------------------------------------------------------------------------------

TEST(SynCookie, RotationKeepsThePreviousSecretForOneRotation) {
  struct Case {
    const char* description;
    int rotations;
    bool ok;
  };
  const Case cases[] = {
      {"no rotation", 0, true},
      {"rotated once: previous secret still valid", 1, true},
      {"rotated twice: secret dropped", 2, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto sc = makeCookie();
    const CookieInput in = input();
    const CookieIssue issue = sc.make(in, kNow);
    if (c.rotations >= 1) sc.rotate(kSecretB);
    if (c.rotations >= 2) sc.rotate(kSecretC);
    const CookieCheck r = checkAck(sc, in, issue, kNow);
    EXPECT_EQ(r.ok, c.ok);
    if (!c.ok) { EXPECT_EQ(r.reason, CookieReject::kBadHash); }
    // New cookies always validate.
    EXPECT_TRUE(checkAck(sc, in, sc.make(in, kNow), kNow).ok);
  }
}

TEST(SynCookie, StandbyWithTheSameSecretValidates) {
  auto active = makeCookie();
  auto standby = makeCookie();
  auto stranger = makeCookie({}, kSecretB);
  const CookieInput in = input();
  const CookieIssue issue = active.make(in, kNow);
  EXPECT_TRUE(checkAck(standby, in, issue, kNow).ok);
  EXPECT_EQ(checkAck(stranger, in, issue, kNow).reason, CookieReject::kBadHash);
  // The standby rotated ahead of the active: the active's key is its previous one.
  standby.rotate(kSecretB);
  EXPECT_TRUE(checkAck(standby, in, issue, kNow).ok);
}

TEST(SynCookie, ConfigurationErrorsThrow) {
  EXPECT_THROW(CookieSecrets(secretOf("too short")), std::invalid_argument);
  EXPECT_NO_THROW(CookieSecrets(secretOf("exactly 16 bytes")));
  auto bad = [](auto mutate) {
    SynCookieConfig cfg;
    mutate(cfg);
    return [cfg] { SynCookie sc(cfg, CookieSecrets(kSecretA)); };
  };
  EXPECT_THROW(bad([](SynCookieConfig& c) { c.period_ns = 0; })(), std::invalid_argument);
  EXPECT_THROW(bad([](SynCookieConfig& c) { c.mss_table = {}; })(), std::invalid_argument);
  EXPECT_THROW(bad([](SynCookieConfig& c) { c.mss_table = {1, 2, 3, 4, 5}; })(),
               std::invalid_argument);
  EXPECT_THROW(bad([](SynCookieConfig& c) { c.mss_table = {1460, 536}; })(),
               std::invalid_argument);
  // A failed rotation changes nothing.
  auto sc = makeCookie();
  const CookieInput in = input();
  const CookieIssue issue = sc.make(in, kNow);
  EXPECT_THROW(sc.rotate(secretOf("short")), std::invalid_argument);
  EXPECT_EQ(sc.make(in, kNow).isn, issue.isn);
}

TEST(SynCookie, LocalEnablesLimitWhatIsNegotiated) {
  struct Case {
    const char* description;
    void (*configure)(SynCookieConfig&);
    CookieOptions expected;
  };
  // The client offers everything: mss 1460, wscale 7, SACK, ECN, timestamps.
  const Case cases[] = {
      {"all enabled", [](SynCookieConfig&) {}, {1460, true, true, 7, true, true}},
      {"timestamps off: MSS only", [](SynCookieConfig& c) { c.timestamps = false; },
       {1460, false, false, 0, false, false}},
      {"window scaling off", [](SynCookieConfig& c) { c.window_scaling = false; },
       {1460, true, false, 0, true, true}},
      {"sack off", [](SynCookieConfig& c) { c.sack = false; },
       {1460, true, true, 7, false, true}},
      {"ecn off", [](SynCookieConfig& c) { c.ecn = false; },
       {1460, true, true, 7, true, false}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    SynCookieConfig cfg;
    c.configure(cfg);
    auto sc = makeCookie(cfg);
    CookieInput in = input();
    in.offer.ecn_ok = true;
    const CookieIssue issue = sc.make(in, kNow);
    EXPECT_EQ(issue.options, c.expected);
    // The ACK echoes a TSecr even when we sent no timestamps: ignored, still valid.
    const CookieCheck r = sc.check(in, issue.isn, issue.tsval, true, kNow);
    EXPECT_TRUE(r.ok) << cookieRejectName(r.reason);
    EXPECT_EQ(r.options, c.expected);
  }
}

// ---- SYN-ACK builder ----------------------------------------------------------------------

TEST(SynCookie, SynAckGoldenBytes) {
  struct Case {
    const char* description;
    Offer offer;
    size_t length;
    std::vector<uint8_t> options;  // expected option bytes; TSval filled in from the cookie
    uint8_t flags;
  };
  const Case cases[] = {
      {"everything offered", {1460, 7, true, true, true}, 60,
       {2, 4, 0x05, 0x78, 4, 2, 8, 10, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 1, 3, 3, 9},
       kSyn | kAck | kEce},
      {"timestamps without SACK", {1460, 3, false, false, true}, 60,
       {2, 4, 0x05, 0x78, 1, 1, 8, 10, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 1, 3, 3, 9},
       kSyn | kAck},
      {"no timestamps: MSS only, no ECE", {1460, 7, true, true, false}, 44, {2, 4, 0x05, 0x78},
       kSyn | kAck},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto sc = makeCookie();
    Parsed syn = parse(synPacket(c.offer, 0xfffffff0u, "192.0.2.7:51000"));
    const CookieIssue issue = sc.make(cookieInputFromSyn(syn.pkt, syn.opts), kNow);
    SynAckParams params;
    params.mss = 1400;
    params.wscale = 9;
    params.ttl = 63;
    uint8_t buf[kMaxSynAckLen + 8];
    const size_t n = buildSynAck(syn.pkt, syn.opts, issue, params, buf, sizeof buf);
    ASSERT_EQ(n, c.length);
    std::vector<uint8_t> bytes(buf, buf + n);
    EXPECT_TRUE(checksumsValid(bytes));
    // IPv4: version/IHL, TOS 0, DF, TTL, TCP, addresses swapped.
    EXPECT_EQ(bytes[0], 0x45);
    EXPECT_EQ(bytes[1], 0);
    EXPECT_EQ(size_t{load16(&bytes[2])}, n);
    EXPECT_EQ(load16(&bytes[6]), 0x4000);
    EXPECT_EQ(bytes[8], 63);
    EXPECT_EQ(bytes[9], 6);
    EXPECT_EQ(load32(&bytes[12]), 0x0a000064u);
    EXPECT_EQ(load32(&bytes[16]), 0xc0000207u);
    // TCP.
    const uint8_t* t = &bytes[20];
    EXPECT_EQ(load16(t), 80);
    EXPECT_EQ(load16(t + 2), 51000);
    EXPECT_EQ(load32(t + 4), issue.isn);
    EXPECT_EQ(load32(t + 8), 0xfffffff1u);
    EXPECT_EQ(t[12] >> 4, (n - 20) / 4);
    EXPECT_EQ(t[13], c.flags);
    EXPECT_EQ(load16(t + 14), 65535);
    EXPECT_EQ(load16(t + 18), 0);  // urgent pointer
    std::vector<uint8_t> want = c.options;
    if (c.offer.ts) store32(&want[8], issue.tsval);
    EXPECT_EQ(std::vector<uint8_t>(t + 20, t + (n - 20)), want);
  }
}

TEST(SynCookie, SynAckBuilderRefusesWhatItCannotWrite) {
  auto sc = makeCookie();
  const Offer all{1460, 7, true, true, true};
  Parsed syn = parse(synPacket(all, 1, "10.0.0.2:40000"));
  const CookieIssue issue = sc.make(cookieInputFromSyn(syn.pkt, syn.opts), kNow);
  uint8_t buf[kMaxSynAckLen];
  EXPECT_EQ(buildSynAck(syn.pkt, syn.opts, issue, {}, buf, sizeof buf - 1), 0u);
  EXPECT_EQ(buildSynAck(syn.pkt, syn.opts, CookieIssue{}, {}, buf, sizeof buf), 0u);
  Parsed ack = parse(PacketBuilder().flags(kAck).seq(2).ack(3).build());
  EXPECT_EQ(buildSynAck(ack.pkt, ack.opts, issue, {}, buf, sizeof buf), 0u);
  Parsed synack = parse(PacketBuilder().flags(kSyn | kAck).seq(2).ack(3).build());
  EXPECT_EQ(buildSynAck(synack.pkt, synack.opts, issue, {}, buf, sizeof buf), 0u);
  EXPECT_EQ(buildSynAck(syn.pkt, syn.opts, issue, {}, buf, sizeof buf), kMaxSynAckLen);
}

TEST(SynCookie, RejectNamesForCounters) {
  EXPECT_STREQ(cookieRejectName(CookieReject::kBadHash), "bad_hash");
  EXPECT_STREQ(cookieRejectName(CookieReject::kStale), "stale");
  EXPECT_STREQ(cookieRejectName(CookieReject::kMssIndexInvalid), "mss_index_invalid");
  EXPECT_STREQ(cookieRejectName(CookieReject::kCryptoError), "crypto_error");
}

}  // namespace
}  // namespace tandem
