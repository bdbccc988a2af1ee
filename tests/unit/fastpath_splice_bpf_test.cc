// The kernel completing a zero-window splice (TANDEM_FP_SYNACK, fastpath_abi.h) against the
// engine completing it: two engines open the same splice, one over the real BPF map (its entries
// armed there), the other over an in-memory map. The backend's SYN-ACK goes through the loaded
// program (BPF_PROG_TEST_RUN) for the first and through the engine for the second. Compared
// byte for byte: the ACK to the backend (captured on loopback, where the program sends its copy
// in test mode, and the twin's verdict), the ACK that opens the client's window (the program's
// output and the twin's outbox), both map entries (and the twin's install), and the flow the event leaves
// in the first engine (and the twin's).
//
// Needs root and a kernel with BPF: skipped loudly otherwise (CI runs it as root).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/fastpath/kernel_fastpath.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/fastpath_ports.h"
#include "tests/unit/kernel_fastpath_fixture.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kSyn = 0x02, kAck = 0x10;
constexpr uint64_t kSec = 1'000'000'000ull;
// Addresses only the test's packets carry (TEST-NET-2). The program sends the ACK to the
// backend to loopback in test mode, where the capture below finds it by the backend's port,
// which is this process's (ctest runs the cases in parallel processes); so is the client's.
constexpr const char* kVip = "198.51.100.100:80";
uint16_t processPort() { return static_cast<uint16_t>(10000 + getpid() % 50000); }
std::string backendEp() { return "198.51.100.200:" + std::to_string(processPort()); }
std::string clientEp() { return "198.51.100.2:" + std::to_string(processPort()); }

using test::KernelPort;
using test::MemoryPort;

/// What the client and the backend offer in their SYN and SYN-ACK.
struct Variant {
  const char* name;
  bool client_ts;
  int client_wscale;   // -1: none
  bool backend_ts;
  int backend_wscale;  // -1: none
  bool snat;
};

EngineConfig spliceConfig(bool snat) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(backendEp())};
  s.mode = Mode::kSplice;
  s.zero_window_handshake = true;
  if (snat) {
    s.addressing = Addressing::kSnat;
    s.snat_addr = *IpAddr::parse("198.51.100.1");
  }
  c.services.push_back(s);
  c.max_flows = 64;
  c.hash_seed = 7;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  return c;
}

/// An AF_PACKET socket on loopback: what the program sends there.
class LoopbackCapture {
 public:
  LoopbackCapture() {
    fd_ = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd_ < 0) throw std::runtime_error(std::string("AF_PACKET: ") + std::strerror(errno));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(if_nametoindex("lo"));
    if (bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0)
      throw std::runtime_error(std::string("bind lo: ") + std::strerror(errno));
  }
  ~LoopbackCapture() { close(fd_); }
  /// The first IPv4/TCP packet to `daddr`:`dport` (an outgoing copy counts once), without its
  /// Ethernet header; empty after 500 ms.
  std::vector<uint8_t> next(uint32_t daddr, uint16_t dport) {
    for (int waited = 0; waited < 500; waited += 10) {
      uint8_t buf[2048];
      sockaddr_ll from{};
      socklen_t len = sizeof from;
      const ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) {
        pollfd p{fd_, POLLIN, 0};
        poll(&p, 1, 10);
        continue;
      }
      if (n < ETH_HLEN + 40 || buf[12] != 0x08 || buf[13] != 0x00) continue;
      if (load32(buf + ETH_HLEN + 16) != daddr || load16(buf + ETH_HLEN + 22) != dport) continue;
      return {buf + ETH_HLEN, buf + n};
    }
    return {};
  }

 private:
  int fd_ = -1;
};

class FastPathSpliceBpf : public test::KernelFastPathFixture<::testing::TestWithParam<Variant>> {
 protected:
  void SetUp() override {
    KernelFastPathFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ASSERT_TRUE(fp_->setTestNoRoute(true));
    client_ = clientEp();
    port_ = std::make_unique<KernelPort>(*fp_);
    kernel_.setFastPath(port_.get(), true);
    kernel_.setFastPathSplice(true);
    twin_.setFastPath(&twin_port_, true);
    twin_.setFastPathSplice(true);
    open(kernel_);
    open(twin_);
  }

  /// Client SYN, then its cookie ACK: the backend SYN leaves, the flow's entries are armed.
  void open(Engine& e) {
    const Variant& v = GetParam();
    PacketBuilder syn;
    syn.src(client_).dst(kVip).flags(kSyn).seq(1000).mss(1460).sackPermitted();
    if (v.client_wscale >= 0) syn.wscale(static_cast<uint8_t>(v.client_wscale));
    if (v.client_ts) syn.timestamp(111, 0);
    const test::Seen sa = test::runPacket(e, syn.build(), kSec);
    ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
    cookie_ = sa.pkt.seq();
    proxy_ts_ = sa.opts.has_timestamp ? sa.opts.ts_val : 0;
    PacketBuilder ack;
    ack.src(client_).dst(kVip).flags(kAck).seq(1001).ack(cookie_ + 1).window(502);
    if (v.client_ts) ack.timestamp(112, proxy_ts_);
    const test::Seen bsyn = test::runPacket(e, ack.build(), kSec);
    ASSERT_EQ(bsyn.d.verdict, Verdict::kAccept);
    source_ = bsyn.pkt.src();
  }

  std::vector<uint8_t> synack(uint32_t ack = 1001) const {
    const Variant& v = GetParam();
    PacketBuilder b;
    b.src(backendEp()).dst(source_.toString()).flags(kSyn | kAck).seq(0xfffffff0u).ack(ack)
        .window(64240).mss(1400).sackPermitted();
    if (v.backend_wscale >= 0) b.wscale(static_cast<uint8_t>(v.backend_wscale));
    if (v.backend_ts) b.timestamp(0xfffffff8u, 112);
    return b.build();
  }

  std::unique_ptr<KernelPort> port_;
  Engine kernel_{spliceConfig(GetParam().snat)};
  Engine twin_{spliceConfig(GetParam().snat)};
  MemoryPort twin_port_;
  uint32_t cookie_ = 0, proxy_ts_ = 0;
  std::string client_;
  Endpoint source_;
};

Flow onlyFlow(const Engine& e) {
  Flow out{};
  e.forEachLiveFlow(0, 1, [&](const Flow& f) { out = f; });
  return out;
}

TEST_P(FastPathSpliceBpf, TheKernelCompletesTheSpliceExactlyAsTheEngine) {
  ASSERT_EQ(kernel_.counters().fastpath_splices_armed, 1u);
  LoopbackCapture capture;

  // The twin: through the engine.
  const test::Seen want_backend = test::runPacket(twin_, synack(), 2 * kSec);
  ASSERT_EQ(want_backend.d.verdict, Verdict::kAccept);
  const auto twin_out = test::drainOutbox(twin_);
  ASSERT_EQ(twin_out.size(), 1u);
  const std::vector<uint8_t>& want_client = twin_out[0].bytes;

  // The kernel: the ACK to the backend sent first (a copy), the packet itself becomes the ACK
  // that opens the client's window.
  const auto before = fp_->stats();
  std::vector<uint8_t> got = synack();
  EXPECT_EQ(fp_->testRun(got), TC_ACT_REDIRECT);
  EXPECT_EQ(test::hexDump(got), test::hexDump(want_client))
      << "the ACK that opens the client's window";
  const std::vector<uint8_t> got_backend = capture.next(load32(want_backend.bytes.data() + 16),
                                                        load16(want_backend.bytes.data() + 22));
  EXPECT_EQ(test::hexDump(got_backend), test::hexDump(want_backend.bytes))
      << "the ACK to the backend";
  const auto after = fp_->stats();
  EXPECT_EQ(after[TANDEM_FP_ST_SPLICED] - before[TANDEM_FP_ST_SPLICED], 1u);
  EXPECT_EQ(after[TANDEM_FP_ST_PASS_FAILED] - before[TANDEM_FP_ST_PASS_FAILED], 0u);

  // Both entries as the twin installed them (up to the generation: the twin's is its second).
  ASSERT_EQ(twin_port_.map.size(), 2u);
  for (const auto& [key, want] : twin_port_.map) {
    tandem_fp_rewrite v;
    ASSERT_TRUE(fp_->lookup(key, v)) << "direction " << int{want.dir};
    EXPECT_EQ(std::memcmp(&v, &want, offsetof(tandem_fp_rewrite, generation)), 0)
        << "direction " << int{want.dir} << ": flags " << int{v.flags} << " vs "
        << int{want.flags};
    EXPECT_EQ(v.last_ns, 0u);  // nothing translated with it yet
  }

  // The event, into the first engine: the flow as the twin's.
  std::vector<tandem_fp_splice_event> evs;
  EXPECT_EQ(fp_->drainEvents([](const tandem_fp_event&) { ADD_FAILURE() << "a close event"; },
                             [&](const tandem_fp_splice_event& e) { evs.push_back(e); }),
            1u);
  ASSERT_EQ(evs.size(), 1u);
  kernel_.fastPathSpliced(evs[0], 2 * kSec);
  EXPECT_EQ(kernel_.counters().fastpath_kernel_splices, 1u);
  EXPECT_EQ(test::drainOutbox(kernel_).size(), 0u);
  const Flow a = onlyFlow(kernel_), b = onlyFlow(twin_);
  EXPECT_EQ(a.state, TcpState::kEstablished);
  EXPECT_EQ(a.state, b.state);
  EXPECT_TRUE(a.fast_path);
  test::expectSameSplice(a, b);

  // A duplicate of the SYN-ACK finds the entries active: a SYN, the engine's.
  std::vector<uint8_t> dup = synack();
  const auto orig = dup;
  EXPECT_EQ(fp_->testRun(dup), TC_ACT_OK);
  EXPECT_EQ(dup, orig);
}

TEST_P(FastPathSpliceBpf, WhatAnArmedFlowLeavesToTheEngine) {
  auto expectPassed = [&](std::vector<uint8_t> p, const std::string& what) {
    const auto before = fp_->stats();
    const auto orig = p;
    EXPECT_EQ(fp_->testRun(p), TC_ACT_OK) << what;
    EXPECT_EQ(p, orig) << what;
    const auto after = fp_->stats();
    EXPECT_EQ(after[TANDEM_FP_ST_PASS_ARMED] - before[TANDEM_FP_ST_PASS_ARMED], 1u) << what;
    EXPECT_EQ(after[TANDEM_FP_ST_SPLICED] - before[TANDEM_FP_ST_SPLICED], 0u) << what;
  };
  expectPassed(synack(1002), "a SYN-ACK acknowledging something else");
  expectPassed(PacketBuilder().src(client_).dst(kVip).flags(kAck).seq(1000).ack(cookie_ + 1)
                   .build(),
               "the client's zero-window probe");
  expectPassed(PacketBuilder().src(client_).dst(kVip).flags(kAck).seq(1001).ack(cookie_ + 1)
                   .payloadSize(10).build(),
               "client data");
  expectPassed(PacketBuilder().src(backendEp()).dst(source_.toString()).flags(0x04).seq(1).build(),
               "the backend's RST");
  expectPassed(PacketBuilder().src(backendEp()).dst(source_.toString()).flags(kSyn | kAck)
                   .seq(0xfffffff0u).ack(1001).payloadSize(4).build(),
               "a SYN-ACK with data");
  // Nothing was taken: the right SYN-ACK still completes it.
  std::vector<uint8_t> p = synack();
  EXPECT_EQ(fp_->testRun(p), TC_ACT_REDIRECT);
  fp_->drainEvents([](const tandem_fp_event&) {});
}

INSTANTIATE_TEST_SUITE_P(
    Options, FastPathSpliceBpf,
    ::testing::Values(Variant{"TimestampsAndRescale", true, 6, true, 9, false},
                      Variant{"SameScale", true, 6, true, 7, false},
                      Variant{"BackendWithoutTimestamps", true, 6, false, 9, false},
                      Variant{"ClientWithoutTimestampsOrScale", false, -1, true, 9, false},
                      Variant{"Snat", true, 6, true, 9, true}),
    [](const ::testing::TestParamInfo<Variant>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace tandem
