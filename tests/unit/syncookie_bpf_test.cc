// The kernel SYN answerer (proxy/fastpath/syncookie.bpf.c) against the engine: for a table of
// SYNs, the engine's SYN-ACK (Engine::process at a fixed clock) and the program's (run with
// BPF_PROG_TEST_RUN, the same clock through the config's test_now_ns, the engine's own period
// key) must be equal byte for byte, checksums included, in both addressings. Then: the BPF
// SipHash equals OpenSSL's; a cookie made in the kernel opens a flow in the engine and a forged
// one does not; what the program leaves to NFQUEUE (standby, other ports, no key, TFO data,
// odd options and flags, malformed headers), each counted under its reason.
//
// Needs root and a kernel with BPF: skipped loudly otherwise (CI runs it as root).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/pkt_cls.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/fastpath/kernel_fastpath.h"
#include "proxy/fastpath/kernel_syncookie.h"
#include "tests/unit/kernel_fastpath_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
using test::checksumsValid;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kEce = 0x40,
                  kCwr = 0x80;
// A cookie clock near today's wall clock, well inside one 64 s period.
constexpr uint64_t kNow = 5'000'000'000ull;
constexpr int64_t kOffset = 1'764'000'000'000'000'000ll;
const std::string kVip = "10.0.0.100:80";
const uint8_t kClientMac[6] = {2, 0, 0, 0, 0, 1};

EngineConfig spliceConfig(Addressing a) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "splice";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse("10.1.0.2:8080")};
  s.mode = Mode::kSplice;
  s.addressing = a;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  c.services.push_back(s);
  c.max_flows = 16;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.mss = 1400;  // the proxy's own MSS differs from every client's
  c.splice.wscale = 9;
  c.splice.window = 64240;
  return c;
}

/// The frame as it reaches tc ingress: to this host's MAC (the loopback device's, all zero, in a
/// test run), from the client's; `pad` Ethernet trailer bytes after the IP packet.
std::vector<uint8_t> frame(const std::vector<uint8_t>& ip, size_t pad = 0,
                           uint8_t dst_mac0 = 0) {
  std::vector<uint8_t> f(14, 0);
  f[0] = dst_mac0;
  std::memcpy(&f[6], kClientMac, 6);
  f[12] = 0x08;
  f.insert(f.end(), ip.begin(), ip.end());
  f.insert(f.end(), pad, 0);
  return f;
}

uint64_t opensslSipHash(const uint8_t (&key)[16], const uint8_t* msg, size_t len) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  size_t out_len = 8;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out_len),
                               OSSL_PARAM_construct_end()};
  uint8_t buf[8] = {};
  size_t n = 0;
  const bool ok = EVP_MAC_init(ctx, key, 16, params) == 1 && EVP_MAC_update(ctx, msg, len) == 1 &&
                  EVP_MAC_final(ctx, buf, &n, sizeof buf) == 1 && n == 8;
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  EXPECT_TRUE(ok);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{buf[i]} << (8 * i);
  return v;
}

class SynCookieBpf : public test::KernelFastPathFixture<::testing::TestWithParam<Addressing>> {
 protected:
  void loadMore() override { k_ = std::make_unique<KernelSynCookie>(fp_->flowsMapFd()); }

  void SetUp() override {
    KernelFastPathFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    engine_ = std::make_unique<Engine>(spliceConfig(GetParam()));
    engine_->setCookieClockOffset(kOffset);
    tandem_syn_service s{};
    s.addr = htonl(0x0a000064);
    s.port = htons(80);
    ASSERT_TRUE(k_->putService(s));
    ASSERT_TRUE(engine_->synKernelConfig(cfg_));
    cfg_.test_now_ns = kNow + static_cast<uint64_t>(kOffset);
    cfg_.test_no_route = 1;  // this process's routing table is not the test's topology
    ASSERT_TRUE(k_->setConfig(cfg_));
    const uint64_t count = engine_->cookieCount(kNow);
    ASSERT_EQ(count, cfg_.test_now_ns / cfg_.period_ns);
    tandem_syn_key key{};
    ASSERT_TRUE(engine_->synKernelKey(count, key));
    ASSERT_TRUE(k_->putKey(count, key));
  }

  /// The engine's answer to `syn` (IPv4 bytes), or empty if it answered none.
  std::vector<uint8_t> engineAnswer(std::vector<uint8_t> syn) {
    const size_t len = syn.size();
    syn.resize(256);
    const Decision d = engine_->process(syn.data(), len, syn.size(), {}, kNow);
    if (d.verdict != Verdict::kAccept || !d.modified) return {};
    syn.resize(d.len);
    return syn;
  }

  /// Expects the program to answer `syn` with exactly the engine's SYN-ACK.
  void expectSame(const std::vector<uint8_t>& syn, const std::string& what, size_t pad = 0) {
    const auto want_ip = engineAnswer(syn);
    ASSERT_FALSE(want_ip.empty()) << what << ": the engine answered nothing";
    std::vector<uint8_t> want(14);
    std::memcpy(&want[0], kClientMac, 6);  // back to the client's MAC, from ours
    want[12] = 0x08;
    want.insert(want.end(), want_ip.begin(), want_ip.end());
    const auto before = k_->stats();
    auto got = frame(syn, pad);
    EXPECT_EQ(k_->testRun(got), TC_ACT_REDIRECT) << what;
    EXPECT_EQ(test::hexDump(got), test::hexDump(want)) << what;
    EXPECT_EQ(got, want) << what;
    EXPECT_TRUE(checksumsValid(std::vector<uint8_t>(got.begin() + 14, got.end()))) << what;
    const auto after = k_->stats();
    EXPECT_EQ(after[TANDEM_SYN_ST_ANSWERED] - before[TANDEM_SYN_ST_ANSWERED], 1u) << what;
  }

  /// Expects `f` (a frame) passed on untouched, the stat `idx` (or none, -1) moved by one.
  void expectPassed(std::vector<uint8_t> f, int idx, const std::string& what) {
    const auto before = k_->stats();
    const auto orig = f;
    EXPECT_EQ(k_->testRun(f), TC_ACT_UNSPEC) << what;
    EXPECT_EQ(f, orig) << what;
    const auto after = k_->stats();
    ASSERT_EQ(after.size(), static_cast<size_t>(TANDEM_SYN_ST_COUNT));
    for (int i = 0; i < TANDEM_SYN_ST_COUNT; ++i)
      EXPECT_EQ(after[i] - before[i], i == idx ? 1u : 0u) << what << ": stat " << i;
  }

  PacketBuilder syn(uint32_t isn = 1000) {
    return PacketBuilder().src("10.0.0.2:40000").dst(kVip).flags(kSyn).seq(isn);
  }

  std::unique_ptr<KernelSynCookie> k_;
  std::unique_ptr<Engine> engine_;
  tandem_syn_config cfg_{};
};

TEST_P(SynCookieBpf, SynAckEqualsTheEnginesByteForByte) {
  // A Linux client: MSS, SACK-permitted, timestamps, window scale, ECN setup.
  expectSame(syn().flags(kSyn | kEce | kCwr).mss(1460).sackPermitted().timestamp(123456, 0)
                 .wscale(7).window(64240).build(), "linux, ecn");
  expectSame(syn().mss(1460).sackPermitted().timestamp(123456, 0).wscale(7).build(), "linux");
  expectSame(syn().mss(1460).sackPermitted().wscale(7).build(), "no timestamps: MSS only");
  expectSame(syn().flags(kSyn | kEce | kCwr).mss(1460).build(), "no timestamps, ecn: none");
  expectSame(syn().mss(1460).timestamp(7, 0).build(), "timestamps only");
  expectSame(syn().mss(1460).timestamp(7, 0).sackPermitted().build(), "ts + sack");
  expectSame(syn().mss(1460).timestamp(7, 0).wscale(0).build(), "ts + wscale 0");
  expectSame(syn().mss(1460).timestamp(7, 0).wscale(14).build(), "ts + wscale 14");
  expectSame(syn().mss(1460).timestamp(7, 0).wscale(15).build(), "ts + wscale 15 (clamped)");
  expectSame(syn().flags(kSyn | kEce).mss(1460).timestamp(7, 0).build(), "ECE alone: no ECN");
  expectSame(syn().build(), "no options at all (MSS 536)");
  for (uint16_t mss : std::vector<uint16_t>{0, 100, 535, 536, 1299, 1300, 1439, 1440, 1459,
                                            1460, 1461, 9000, 65535})
    expectSame(syn(2000u + mss).mss(mss).timestamp(99, 0).sackPermitted().build(),
               "mss " + std::to_string(mss));
  expectSame(syn(0xffffffffu).mss(1460).timestamp(0xfffffff0u, 0).build(), "ISN and TSval wrap");
  expectSame(syn().src("192.168.7.9:65535").mss(1460).timestamp(1, 0).build(), "other client");
  // Option order and padding of another stack: TS first, NOPs, EOL then junk after it.
  expectSame(syn().rawOptions({8, 10, 0, 0, 0, 5, 0, 0, 0, 0, 1, 1, 2, 4, 5, 0xb4, 1, 3, 3, 2,
                               4, 2, 0, 0xee})
                 .build(),
             "reordered options, EOL");
  expectSame(syn().rawOptions({2, 4, 1, 0, 2, 4, 5, 0xb4}).build(), "repeated MSS: last wins");
  // A minimum-size Ethernet frame: the SYN padded to 60 bytes on the wire.
  expectSame(syn().build(), "ethernet padding", 6);
  expectSame(syn().mss(1460).sackPermitted().timestamp(5, 0).wscale(7).build(),
             "padding before a longer answer", 10);
}

TEST_P(SynCookieBpf, AZeroWindowServicesSynAckEqualsTheEngines) {
  EngineConfig c = spliceConfig(GetParam());
  c.services[0].zero_window_handshake = true;
  engine_ = std::make_unique<Engine>(c);
  engine_->setCookieClockOffset(kOffset);
  tandem_syn_service s{};
  s.addr = htonl(0x0a000064);
  s.port = htons(80);
  ASSERT_TRUE(k_->putService(s, TANDEM_SYN_SVC_ON | TANDEM_SYN_SVC_ZERO_WINDOW));
  const auto linux_syn = syn().mss(1460).sackPermitted().timestamp(123456, 0).wscale(7).build();
  const auto want = engineAnswer(linux_syn);
  ASSERT_GE(want.size(), 40u);
  EXPECT_EQ(want[34], 0);  // the TCP window field
  EXPECT_EQ(want[35], 0);
  expectSame(linux_syn, "linux, zero window");
  expectSame(syn().build(), "no options at all, zero window");
}

TEST_P(SynCookieBpf, KernelCookieOpensAFlowInTheEngineAndAForgedOneDoesNot) {
  auto f = frame(syn(4242).mss(1460).sackPermitted().timestamp(777, 0).wscale(7).build());
  ASSERT_EQ(k_->testRun(f), TC_ACT_REDIRECT);
  std::vector<uint8_t> ip(f.begin() + 14, f.end());
  TcpPacket sa;
  ASSERT_EQ(parseTcpPacket(ip.data(), ip.size(), sa), ParseError::kNone);
  TcpOptions o;
  ASSERT_EQ(parseTcpOptions(sa.options(), sa.optionsLen(), o), OptionError::kNone);
  const uint32_t cookie = sa.seq();
  // The engine's decision and what it wrote (the TcpPacket view needs the bytes alive).
  auto ack = [&](uint32_t ackno) {
    auto p = syn(4243).flags(kAck).ack(ackno).timestamp(778, o.ts_val).build();
    const size_t len = p.size();
    p.resize(256);
    const Decision d = engine_->process(p.data(), len, p.size(), {}, kNow + 1'000'000);
    p.resize(d.verdict == Verdict::kAccept ? d.len : 0);
    return std::make_pair(d, p);
  };
  const auto forged = ack(cookie + 2);
  EXPECT_EQ(forged.first.reason, DropReason::kBadCookie);
  EXPECT_EQ(engine_->activeFlows(), 0u);
  auto good = ack(cookie + 1);
  ASSERT_EQ(good.first.verdict, Verdict::kAccept);
  TcpPacket out;
  ASSERT_EQ(parseTcpPacket(good.second.data(), good.second.size(), out), ParseError::kNone);
  EXPECT_EQ(out.flags(), kSyn);  // the backend leg's SYN
  EXPECT_EQ(out.seq(), 4242u);
  EXPECT_EQ(out.dst().toString(), "10.1.0.2:8080");
  EXPECT_EQ(engine_->activeFlows(), 1u);
  EXPECT_EQ(engine_->counters().syncookies_sent, 0u);  // the engine sent no SYN-ACK
}

TEST_P(SynCookieBpf, WhatItLeavesToNfqueue) {
  const auto plain = syn().mss(1460).timestamp(1, 0).build();
  // Not SYNs, or not for this host: not counted at all.
  expectPassed(frame(syn().flags(kAck).ack(5).build()), -1, "ack");
  expectPassed(frame(syn().flags(kSyn | kAck).ack(5).build()), -1, "syn-ack");
  expectPassed(frame(syn().flags(kSyn | kRst).build()), -1, "syn+rst");
  expectPassed(frame(syn().flags(kSyn | kFin).build()), -1, "syn+fin");
  expectPassed(frame(plain, 0, 0x02), -1, "another host's frame");
  // SYNs it leaves, by reason.
  expectPassed(frame(syn().dst("10.0.0.100:81").build()), TANDEM_SYN_ST_PASS_NO_SERVICE, "port");
  expectPassed(frame(syn().dst("10.0.0.101:80").build()), TANDEM_SYN_ST_PASS_NO_SERVICE, "addr");
  expectPassed(frame(syn().mss(1460).payload("GET / HTTP/1.0\r\n\r\n").build()),
               TANDEM_SYN_ST_PASS_ODD, "TFO-style data");
  expectPassed(frame(syn().rawOptions({2, 4, 5, 0xb4, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8}).build()),
               TANDEM_SYN_ST_PASS_ODD, "TFO cookie option");
  expectPassed(frame(syn().rawOptions({2, 4, 5, 0xb4, 19, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       0, 0, 0, 0, 0})
                         .build()),
               TANDEM_SYN_ST_PASS_ODD, "MD5 option");
  expectPassed(frame(syn().flags(kSyn | kPsh).build()), TANDEM_SYN_ST_PASS_ODD, "SYN+PSH");
  expectPassed(frame(syn().rawOptions({1, 1, 1, 2}).build()), TANDEM_SYN_ST_PASS_UNPARSED,
               "truncated MSS");
  expectPassed(frame(syn().rawOptions({3, 4, 7, 0}).build()), TANDEM_SYN_ST_PASS_UNPARSED,
               "bad wscale length");
  {
    auto p = plain;
    p[10] ^= 0x01;  // IP header checksum
    expectPassed(frame(p), TANDEM_SYN_ST_PASS_UNPARSED, "bad IP checksum");
    p = plain;
    p[6] = 0x20;  // more fragments
    p[10] = p[11] = 0;
    store16(&p[10], ipv4HeaderChecksum(p.data(), 20));
    expectPassed(frame(p), TANDEM_SYN_ST_PASS_UNPARSED, "fragment");
  }
  // The tuple of a flow on the fast path (the map shared with it): the engine's.
  {
    tandem_fp_key key{};
    key.saddr = htonl(0x0a000002);
    key.daddr = htonl(0x0a000064);
    key.sport = htons(40000);
    key.dport = htons(80);
    ASSERT_TRUE(fp_->update(key, tandem_fp_rewrite{}));
    expectPassed(frame(plain), TANDEM_SYN_ST_PASS_FAST_FLOW, "SYN on a fast flow");
    ASSERT_TRUE(fp_->erase(key));
  }
  // Standby: never answers, whatever else.
  cfg_.active = 0;
  ASSERT_TRUE(k_->setConfig(cfg_));
  expectPassed(frame(plain), TANDEM_SYN_ST_PASS_STANDBY, "standby");
  cfg_.active = 1;
  // No key for the clock's period (the next period, never pushed).
  cfg_.test_now_ns += cfg_.period_ns;
  ASSERT_TRUE(k_->setConfig(cfg_));
  expectPassed(frame(plain), TANDEM_SYN_ST_PASS_NO_KEY, "no key");
  cfg_.test_now_ns -= cfg_.period_ns;
  ASSERT_TRUE(k_->setConfig(cfg_));
  auto f = frame(plain);
  EXPECT_EQ(k_->testRun(f), TC_ACT_REDIRECT) << "answers again";
}

INSTANTIATE_TEST_SUITE_P(Addressing, SynCookieBpf,
                         ::testing::Values(Addressing::kTransparent, Addressing::kSnat));

TEST(SipHashBpf, EqualsOpenSslOnVectors) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIPPED LOUDLY: needs root (CI runs it as root)";
  std::unique_ptr<SipHashTestProgram> prog;
  try {
    prog = std::make_unique<SipHashTestProgram>();
  } catch (const std::runtime_error& e) {
    FAIL() << e.what();
  }
  // The reference vector of the SipHash paper (appendix A): key 00..0f, message 00..0e.
  uint8_t key[16];
  uint8_t msg[64];
  for (int i = 0; i < 16; ++i) key[i] = static_cast<uint8_t>(i);
  for (int i = 0; i < 64; ++i) msg[i] = static_cast<uint8_t>(i);
  uint64_t h = 0;
  ASSERT_TRUE(prog->hash(key, msg, 15, h));
  EXPECT_EQ(h, 0xa129ca6149be45e5ull);
  // Every length 0..64, and random keys and messages, against OpenSSL.
  std::mt19937 rng(7);
  for (size_t len = 0; len <= 64; ++len) {
    for (int round = 0; round < 3; ++round) {
      if (round > 0) {
        for (auto& b : key) b = static_cast<uint8_t>(rng());
        for (auto& b : msg) b = static_cast<uint8_t>(rng());
      }
      ASSERT_TRUE(prog->hash(key, msg, len, h));
      EXPECT_EQ(h, opensslSipHash(key, msg, len)) << "len " << len << " round " << round;
    }
  }
}

}  // namespace
}  // namespace tandem
