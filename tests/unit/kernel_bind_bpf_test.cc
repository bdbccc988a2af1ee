// The kernel binding a splice's cookie ACK (daemon.fastpath_bind, syncookie.bpf.c handle_ack)
// against the engine binding it. Two engines see the same client SYN; the twin takes the cookie
// ACK through NFQUEUE (Engine::process, fastpath_splice on, an in-memory map), the SYN program
// takes it for the other (BPF_PROG_TEST_RUN). Compared byte for byte: the backend SYN (the
// program's output and the twin's verdict), both armed entries (up to the flow's id), and the flow
// the bind event leaves in the first engine (Engine::fastPathBound). Then the backend's SYN-ACK
// completes both (the fast path program for one, the engine for the twin) and the flows must
// still agree: the kernel's id resolves to the engine's slot. Then what the program leaves to the
// engine (a bad IP checksum, forged and stale cookies, no UP backend, an entry already there)
// and the engine's undo of a flow it cannot take.
//
// Needs root and a kernel with BPF: skipped loudly otherwise (CI runs it as root).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/packet.h"
#include "proxy/core/engine.h"
#include "proxy/fastpath/kernel_fastpath.h"
#include "proxy/fastpath/kernel_syncookie.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/fastpath_ports.h"
#include "tests/unit/kernel_fastpath_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10;
constexpr uint64_t kSec = 1'000'000'000ull;
constexpr int64_t kOffset = 1'764'000'000'000'000'000ll;
constexpr const char* kVip = "198.51.100.100:80";
const uint8_t kClientMac[6] = {2, 0, 0, 0, 0, 1};
uint16_t processPort() { return static_cast<uint16_t>(10000 + getpid() % 50000); }
std::string backendEp(int i) {
  return "198.51.100." + std::to_string(200 + i) + ":" + std::to_string(processPort());
}
std::string clientEp() { return "198.51.100.2:" + std::to_string(processPort()); }

using test::KernelPort;
using test::MemoryPort;

struct Variant {
  const char* name;
  bool client_ts;
  int client_wscale;  // -1: none
  bool ecn;
};

EngineConfig bindConfig() {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(backendEp(0)), *Endpoint::parse(backendEp(1))};
  s.mode = Mode::kSplice;
  s.zero_window_handshake = true;
  c.services.push_back(s);
  c.max_flows = 64;
  c.hash_seed = 7;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  c.splice.mss = 1400;
  return c;
}

std::vector<uint8_t> frame(const std::vector<uint8_t>& ip) {
  std::vector<uint8_t> f(14 + ip.size(), 0);
  for (size_t i = 0; i < 6; ++i) f[6 + i] = kClientMac[i];
  f[12] = 0x08;
  for (size_t i = 0; i < ip.size(); ++i) f[14 + i] = ip[i];
  return f;
}

Flow onlyFlow(const Engine& e) {
  Flow out{};
  e.forEachLiveFlow(0, 1, [&](const Flow& f) { out = f; });
  return out;
}

class KernelBindBpf : public test::KernelFastPathFixture<::testing::TestWithParam<Variant>> {
 protected:
  void loadMore() override {
    k_ = std::make_unique<KernelSynCookie>(fp_->flowsMapFd(), fp_->eventsMapFd());
  }

  void SetUp() override {
    KernelFastPathFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(fp_->setTestNoRoute(true));
    port_ = std::make_unique<KernelPort>(*fp_);
    for (Engine* e : {&kernel_, &twin_}) e->setCookieClockOffset(kOffset);
    kernel_.setFastPath(port_.get(), true);
    kernel_.setFastPathSplice(true);
    twin_.setFastPath(&twin_port_, true);
    twin_.setFastPathSplice(true);

    tandem_syn_service s{};
    s.addr = htonl(0xc6336464);  // 198.51.100.100
    s.port = htons(80);
    ASSERT_TRUE(k_->putService(s, TANDEM_SYN_SVC_ON | TANDEM_SYN_SVC_ZERO_WINDOW |
                                      TANDEM_SYN_SVC_KBIND));
    svc_ = s;
    setUp(1, 1);
    ASSERT_TRUE(kernel_.synKernelConfig(cfg_));
    cfg_.test_now_ns = kSec + static_cast<uint64_t>(kOffset);
    cfg_.test_no_route = 1;
    cfg_.active = 1;
    ASSERT_TRUE(k_->setConfig(cfg_));
    const uint64_t count = kernel_.cookieCount(kSec);
    tandem_syn_key key{};
    ASSERT_TRUE(kernel_.synKernelKey(count, key));
    ASSERT_TRUE(k_->putKey(count, key));
  }

  /// The bind map: backends 0 and 1, up or not.
  void setUp(int up0, int up1) {
    tandem_syn_bind b{};
    b.n = 2;
    b.close_fast = 1;
    for (int i = 0; i < 2; ++i) {
      const Endpoint ep = *Endpoint::parse(backendEp(i));
      const uint32_t a = htonl(ep.addr.v4());
      std::memcpy(&b.b[i].addr, &a, 4);
      b.b[i].port = htons(ep.port);
      b.b[i].up = static_cast<uint8_t>(i == 0 ? up0 : up1);
    }
    ASSERT_TRUE(k_->putBind(svc_, b));
  }

  /// The client's SYN to both engines; its cookie ACK.
  std::vector<uint8_t> cookieAck() {
    const Variant& v = GetParam();
    PacketBuilder syn;
    syn.src(clientEp()).dst(kVip).flags(kSyn | (v.ecn ? 0xc0 : 0)).seq(1000).mss(1460)
        .sackPermitted();
    if (v.client_wscale >= 0) syn.wscale(static_cast<uint8_t>(v.client_wscale));
    if (v.client_ts) syn.timestamp(111, 0);
    const test::Seen sa = test::runPacket(twin_, syn.build(), kSec);
    EXPECT_EQ(sa.d.verdict, Verdict::kAccept);
    const test::Seen sa2 = test::runPacket(kernel_, syn.build(), kSec);
    EXPECT_EQ(sa2.bytes, sa.bytes);
    cookie_ = sa.pkt.seq();
    const uint32_t proxy_ts = sa.opts.has_timestamp ? sa.opts.ts_val : 0;
    PacketBuilder ack;
    ack.src(clientEp()).dst(kVip).flags(kAck).seq(1001).ack(cookie_ + 1).window(502);
    if (v.client_ts) ack.timestamp(112, proxy_ts);
    return ack.build();
  }

  std::vector<uint8_t> synack(const Endpoint& backend, uint32_t ack = 1001) const {
    PacketBuilder b;
    b.src(backend.toString()).dst(clientEp()).flags(kSyn | kAck).seq(0xfffffff0u).ack(ack)
        .window(64240).mss(1400).sackPermitted().wscale(5);
    if (GetParam().client_ts) b.timestamp(0xfffffff8u, 112);
    return b.build();
  }

  /// Every waiting event: closes to `close`, splices to `splice`, binds into binds_.
  size_t drain(const std::function<void(const tandem_fp_event&)>& close,
               const std::function<void(const tandem_fp_splice_event&)>& splice = nullptr) {
    return fp_->drainEvents(close, splice,
                            [this](const tandem_fp_bind_event& e) { binds_.push_back(e); });
  }

  std::unique_ptr<KernelSynCookie> k_;
  std::unique_ptr<KernelPort> port_;
  Engine kernel_{bindConfig()};
  Engine twin_{bindConfig()};
  MemoryPort twin_port_;
  tandem_syn_service svc_{};
  tandem_syn_config cfg_{};
  uint32_t cookie_ = 0;
  std::vector<tandem_fp_bind_event> binds_;
};

TEST_P(KernelBindBpf, TheKernelBindsExactlyAsTheEngine) {
  const std::vector<uint8_t> ack = cookieAck();
  // The twin: through NFQUEUE. Its scheduler's first pick is backend 0, as the program's.
  const test::Seen want = test::runPacket(twin_, ack, kSec);
  ASSERT_EQ(want.d.verdict, Verdict::kAccept);
  ASSERT_EQ(twin_.counters().fastpath_splices_armed, 1u);

  const auto before = k_->stats();
  std::vector<uint8_t> got = frame(ack);
  ASSERT_EQ(k_->testRun(got), TC_ACT_REDIRECT);
  ASSERT_GE(got.size(), 14u);
  std::vector<uint8_t> got_ip;
  for (size_t i = 14; i < got.size(); ++i) got_ip.push_back(got[i]);
  EXPECT_EQ(test::hexDump(got_ip), test::hexDump(want.bytes))
      << "the backend SYN";
  EXPECT_EQ(std::memcmp(&got[0], kClientMac, 6), 0);  // test mode: back to the sender's MAC
  const auto after = k_->stats();
  EXPECT_EQ(after[TANDEM_SYN_ST_BOUND] - before[TANDEM_SYN_ST_BOUND], 1u);

  // Both entries as the twin armed them, up to the flow's id.
  ASSERT_EQ(twin_port_.map.size(), 2u);
  uint32_t kid = 0;
  for (const auto& [key, w] : twin_port_.map) {
    tandem_fp_rewrite v;
    ASSERT_TRUE(fp_->lookup(key, v)) << "direction " << int{w.dir};
    EXPECT_NE(v.flow_id & 0x80000000u, 0u);
    kid = v.flow_id;
    v.flow_id = w.flow_id;
    v.generation = w.generation;
    EXPECT_EQ(test::hexDump({reinterpret_cast<uint8_t*>(&v),
                             reinterpret_cast<uint8_t*>(&v) + sizeof v}),
              test::hexDump({reinterpret_cast<const uint8_t*>(&w),
                             reinterpret_cast<const uint8_t*>(&w) + sizeof w}))
        << "direction " << int{w.dir};
  }

  // The event, into the first engine: the same flow, nothing sent.
  EXPECT_EQ(drain([](const tandem_fp_event&) { ADD_FAILURE() << "a close event"; },
                             [](const tandem_fp_splice_event&) { ADD_FAILURE() << "a splice"; }),
            1u);
  ASSERT_EQ(binds_.size(), 1u);
  EXPECT_EQ(binds_[0].head.flow_id, kid);
  EXPECT_EQ(binds_[0].backend, 0u);
  kernel_.fastPathBound(binds_[0], kSec);
  EXPECT_EQ(kernel_.counters().fastpath_bound, 1u);
  EXPECT_EQ(kernel_.counters().fastpath_bind_undone, 0u);
  EXPECT_EQ(test::drainOutbox(kernel_).size(), 0u);
  {
    const Flow a = onlyFlow(kernel_), b = onlyFlow(twin_);
    EXPECT_EQ(a.state, b.state);
    EXPECT_EQ(a.backend, b.backend);
    EXPECT_TRUE(a.fast_path_armed);
    EXPECT_TRUE(a.splice_pending);
    test::expectSameSplice(a, b);
  }

  // The backend's SYN-ACK: the fast path program completes the kernel's, the engine the twin's.
  const Endpoint be = *Endpoint::parse(backendEp(0));
  const test::Seen twin_ack = test::runPacket(twin_, synack(be), 2 * kSec);
  ASSERT_EQ(twin_ack.d.verdict, Verdict::kAccept);
  std::vector<uint8_t> sa = synack(be);
  EXPECT_EQ(fp_->testRun(sa), TC_ACT_REDIRECT);
  std::vector<tandem_fp_splice_event> evs;
  EXPECT_EQ(drain([](const tandem_fp_event&) { ADD_FAILURE() << "a close event"; },
                             [&](const tandem_fp_splice_event& e) { evs.push_back(e); }),
            1u);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].head.flow_id, kid);  // the kernel's id, resolved by the engine
  kernel_.fastPathSpliced(evs[0], 2 * kSec);
  EXPECT_EQ(kernel_.counters().fastpath_kernel_splices, 1u);
  EXPECT_EQ(kernel_.counters().fastpath_splice_events_stale, 0u);
  const Flow a = onlyFlow(kernel_), b = onlyFlow(twin_);
  EXPECT_EQ(a.state, TcpState::kEstablished);
  EXPECT_EQ(a.state, b.state);
  test::expectSameSplice(a, b);
}

TEST_P(KernelBindBpf, WhatTheProgramLeavesToTheEngine) {
  const std::vector<uint8_t> ack = cookieAck();
  auto expectPassed = [&](std::vector<uint8_t> p, const std::string& what) {
    const auto before = k_->stats();
    std::vector<uint8_t> f = frame(p);
    const auto orig = f;
    EXPECT_EQ(k_->testRun(f), TC_ACT_UNSPEC) << what;
    EXPECT_EQ(f, orig) << what;
    const auto after = k_->stats();
    EXPECT_EQ(after[TANDEM_SYN_ST_BOUND], before[TANDEM_SYN_ST_BOUND]) << what;
    EXPECT_EQ(drain([](const tandem_fp_event&) {}), 0u) << what;
    EXPECT_TRUE(binds_.empty()) << what;
  };
  // A bad IPv4 header checksum (the stack would drop it before the engine).
  std::vector<uint8_t> bad_ip = ack;
  bad_ip[10] ^= 0x01;
  expectPassed(bad_ip, "bad IP header checksum");
  // A forged cookie: one bit of the MAC part flipped.
  std::vector<uint8_t> forged = ack;
  store32(forged.data() + 28, load32(forged.data() + 28) ^ 0x100);
  expectPassed(forged, "forged cookie");
  // A cookie of a period the kernel has no key for (two periods on).
  cfg_.test_now_ns += 2 * cfg_.period_ns;
  ASSERT_TRUE(k_->setConfig(cfg_));
  expectPassed(ack, "stale cookie");
  cfg_.test_now_ns -= 2 * cfg_.period_ns;
  ASSERT_TRUE(k_->setConfig(cfg_));
  // No UP backend.
  setUp(0, 0);
  expectPassed(ack, "no UP backend");
  // The second backend when the first is down.
  setUp(0, 1);
  std::vector<uint8_t> f = frame(ack);
  ASSERT_EQ(k_->testRun(f), TC_ACT_REDIRECT);
  const Endpoint be1 = *Endpoint::parse(backendEp(1));
  EXPECT_EQ(load32(f.data() + 14 + 16), be1.addr.v4());
  EXPECT_EQ(load16(f.data() + 14 + 22), be1.port);
  EXPECT_EQ(drain([](const tandem_fp_event&) {}), 1u);
  ASSERT_EQ(binds_.size(), 1u);
  EXPECT_EQ(binds_[0].backend, 1u);
  binds_.clear();
  // The same ACK again: its entries are there now.
  expectPassed(ack, "entries already there");
}

TEST_P(KernelBindBpf, TheEngineUndoesAFlowItCannotTake) {
  // The engine has no room: the kernel's entries go and both legs are reset.
  EngineConfig c = bindConfig();
  c.max_flows = 1;
  Engine full(c);
  full.setCookieClockOffset(kOffset);
  full.setFastPath(port_.get(), true);
  const std::vector<uint8_t> ack = cookieAck();
  // Fill its one slot with another client's flow.
  PacketBuilder other;
  other.src("198.51.100.3:4000").dst(kVip).flags(kSyn).seq(5).mss(1460);
  const test::Seen osa = test::runPacket(full, other.build(), kSec);
  PacketBuilder oack;
  oack.src("198.51.100.3:4000").dst(kVip).flags(kAck).seq(6).ack(osa.pkt.seq() + 1);
  ASSERT_EQ(test::runPacket(full, oack.build(), kSec).d.verdict, Verdict::kAccept);
  (void)test::drainOutbox(full);

  std::vector<uint8_t> f = frame(ack);
  ASSERT_EQ(k_->testRun(f), TC_ACT_REDIRECT);
  EXPECT_EQ(drain([](const tandem_fp_event&) {}), 1u);
  ASSERT_EQ(binds_.size(), 1u);
  full.fastPathBound(binds_[0], kSec);
  EXPECT_EQ(full.counters().fastpath_bound, 0u);
  EXPECT_EQ(full.counters().fastpath_bind_undone, 1u);
  // The kernel's entries are gone.
  tandem_fp_key ck{};
  ck.saddr = binds_[0].saddr;
  ck.daddr = binds_[0].daddr;
  std::memcpy(&ck.sport, &binds_[0].tcp_hdr[0], 2);
  std::memcpy(&ck.dport, &binds_[0].tcp_hdr[2], 2);
  tandem_fp_rewrite v;
  EXPECT_FALSE(fp_->lookup(ck, v));
  // Two RSTs: the backend's (the SYN's seq + 1) and the client's (the cookie + 1).
  auto out = test::drainOutbox(full);
  ASSERT_EQ(out.size(), 2u);
  TcpPacket be, cl;
  ASSERT_EQ(parseTcpPacket(out[0].bytes.data(), out[0].bytes.size(), be), ParseError::kNone);
  ASSERT_EQ(parseTcpPacket(out[1].bytes.data(), out[1].bytes.size(), cl), ParseError::kNone);
  EXPECT_EQ(be.flags(), 0x04);
  EXPECT_EQ(be.seq(), 1001u);
  EXPECT_EQ(be.dst(), *Endpoint::parse(backendEp(0)));
  EXPECT_EQ(cl.flags(), 0x14);
  EXPECT_EQ(cl.seq(), cookie_ + 1);
  EXPECT_EQ(cl.dst(), *Endpoint::parse(clientEp()));
}

const Variant kVariants[] = {
    {"TsWscale", true, 7, false},
    {"TsNoWscale", true, -1, false},
    {"TsEcn", true, 2, true},
    {"NoTs", false, 7, false},
};

INSTANTIATE_TEST_SUITE_P(Options, KernelBindBpf, ::testing::ValuesIn(kVariants),
                         [](const ::testing::TestParamInfo<Variant>& p) {
                           return std::string(p.param.name);
                         });

}  // namespace
}  // namespace tandem
