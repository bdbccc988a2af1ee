// The engine's side of the kernel fast path (proxy/core/fastpath.cc) against a fake map: when
// flows go on it and leave it, what the engine takes back from what the "kernel" saw, and the
// close events it reports.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <vector>

#include "common/bytes.h"
#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/fastpath_entry.h"
#include "proxy/core/fastpath_port.h"
#include "tests/unit/engine_run.h"
#include "tests/unit/packet_builder.h"

namespace tandem {
namespace {

using test::PacketBuilder;
constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;
constexpr uint64_t kSec = 1'000'000'000ull;

const char* const kClient = "10.0.0.2:40000";
const char* const kVip = "10.0.0.100:80";
const char* const kBackend = "10.1.0.2:8080";

struct KeyLess {
  bool operator()(const tandem_fp_key& a, const tandem_fp_key& b) const {
    return std::memcmp(&a, &b, sizeof a) < 0;
  }
};

tandem_fp_key keyOf(const std::string& src, const std::string& dst) {
  const Endpoint s = *Endpoint::parse(src), d = *Endpoint::parse(dst);
  tandem_fp_key k{};
  store32(reinterpret_cast<uint8_t*>(&k.saddr), s.addr.v4());
  store32(reinterpret_cast<uint8_t*>(&k.daddr), d.addr.v4());
  store16(reinterpret_cast<uint8_t*>(&k.sport), s.port);
  store16(reinterpret_cast<uint8_t*>(&k.dport), d.port);
  return k;
}

/// The map, as the kernel fast path's would hold it; records every call.
class FakeFastPathPort : public FastPathPort {
 public:
  bool put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept override {
    ++puts;
    if (map.count(key) == 0 && map.size() >= capacity) return false;
    map[key] = value;
    return true;
  }
  bool get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept override {
    ++gets;
    const auto it = map.find(key);
    if (it == map.end()) return false;
    value = it->second;
    return true;
  }
  bool install(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept override {
    installed.push_back(key);  // a deferring port would write it after the verdict
    return put(key, value);
  }
  bool erase(const tandem_fp_key& key) noexcept override {
    ++erases;
    return map.erase(key) > 0;
  }
  void clear() noexcept override {
    ++clears;
    map.clear();
  }

  /// What the program writes when it translates a packet with this key; false if no entry.
  bool forward(const tandem_fp_key& key, uint64_t ns, uint32_t seq, uint32_t ack,
               uint16_t payload, uint8_t flags, uint16_t window = 65535) {
    const auto it = map.find(key);
    if (it == map.end()) return false;
    tandem_fp_rewrite& r = it->second;
    r.last_ns = ns;
    r.seq_end = seq + payload + ((flags & kFin) ? 1 : 0);
    if (flags & kAck) r.ack = ack;
    r.window = window;
    r.tcp_flags = flags;
    return true;
  }
  /// forward() of a FIN or RST with TANDEM_FP_CLOSE_FAST: the event the program submits.
  tandem_fp_event close(const tandem_fp_key& key, uint64_t ns, uint32_t seq, uint32_t ack,
                        uint8_t flags, uint16_t payload = 0, uint16_t window = 65535) {
    EXPECT_TRUE(forward(key, ns, seq, ack, payload, flags, window));
    const tandem_fp_rewrite& r = map.at(key);
    EXPECT_NE(r.flags & TANDEM_FP_CLOSE_FAST, 0u);
    tandem_fp_event ev{};
    ev.ns = ns;
    ev.flow_id = r.flow_id;
    ev.generation = r.generation;
    ev.seq = seq;
    ev.ack = ack;
    ev.payload_len = payload;
    ev.window = window;
    ev.tcp_flags = flags;
    ev.dir = r.dir;
    return ev;
  }

  std::map<tandem_fp_key, tandem_fp_rewrite, KeyLess> map;
  size_t capacity = SIZE_MAX;
  std::vector<tandem_fp_key> installed;  ///< keys written through install() (also in puts)
  int puts = 0, erases = 0, clears = 0;
  mutable int gets = 0;
};

EngineConfig config(Mode mode, bool resplice = false) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(kBackend)};
  s.mode = mode;
  s.resplice = resplice;
  c.services.push_back(s);
  c.max_flows = 64;
  c.hash_seed = 7;
  c.timeouts.established_ns = 100 * kSec;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  return c;
}

struct Out {
  Decision d;
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
};

Out run(Engine& e, std::vector<uint8_t> p, uint64_t now = kSec, PacketMeta meta = {}) {
  Out o;
  const size_t len = p.size();
  p.resize(len + 64);
  o.d = e.process(p.data(), len, p.size(), meta, now);
  if (o.d.verdict == Verdict::kAccept) {
    p.resize(o.d.len);
    o.bytes = p;
    EXPECT_EQ(parseTcpPacket(o.bytes.data(), o.bytes.size(), o.pkt), ParseError::kNone);
  }
  return o;
}

TcpState stateOf(const Engine& e) {
  TcpState st = TcpState::kNone;
  e.forEachFlow([&](const FlowInfo& f) { st = f.state; }, kSec);
  return st;
}

Flow flowOf(const Engine& e) {
  Flow out{};
  e.forEachLiveFlow(0, 1, [&](const Flow& f) { out = f; });
  return out;
}

uint32_t slotOf(const Engine& e) {
  uint32_t id = 0;
  Direction dir;
  bool adjusted;
  EXPECT_TRUE(e.classify({IpAddr::fromV4(0x0a000002), IpAddr::fromV4(0x0a000064), 40000, 80},
                         id, dir, adjusted));
  return id;
}

const tandem_fp_key kClientKey = keyOf(kClient, kVip);
const tandem_fp_key kBackendKey = keyOf(kBackend, kClient);  // transparent: source = client

/// A passthrough connection: client ISN 1000, backend ISN 5000 (both legs the same space).
struct Passthrough {
  Engine& e;
  Out syn(uint64_t now = kSec) {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(1000).mss(1460)
                      .wscale(7).sackPermitted().build(), now);
  }
  Out synack(uint64_t now = kSec) {
    return run(e, PacketBuilder().src(kBackend).dst(kClient).flags(kSyn | kAck).seq(5000)
                      .ack(1001).mss(1460).wscale(7).sackPermitted().build(), now);
  }
  Out client(uint8_t flags, uint32_t seq, uint32_t ack, size_t len = 0, uint64_t now = kSec) {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(flags).seq(seq).ack(ack)
                      .payloadSize(len).build(), now);
  }
  Out backend(uint8_t flags, uint32_t seq, uint32_t ack, size_t len = 0, uint64_t now = kSec) {
    return run(e, PacketBuilder().src(kBackend).dst(kClient).flags(flags).seq(seq).ack(ack)
                      .payloadSize(len).build(), now);
  }
  /// SYN, SYN-ACK, ACK: established, both directions seen.
  void open(uint64_t now = kSec) {
    ASSERT_EQ(syn(now).d.verdict, Verdict::kAccept);
    ASSERT_EQ(synack(now).d.verdict, Verdict::kAccept);
    ASSERT_EQ(client(kAck, 1001, 5001, 0, now).d.verdict, Verdict::kAccept);
  }
};

/// The entries fastPathEntry makes of the engine's flow, with the engine's ids.
void expectEntries(const Engine& e, const FakeFastPathPort& port, uint32_t generation,
                   bool close_fast) {
  const Flow f = flowOf(e);
  ASSERT_EQ(port.map.size(), 2u);
  for (Direction d : {Direction::kFromClient, Direction::kFromBackend}) {
    tandem_fp_key k;
    tandem_fp_rewrite v;
    ASSERT_TRUE(fastPathEntry(f, d, k, v));
    v.flow_id = slotOf(e);
    v.generation = generation;
    if (close_fast) v.flags |= TANDEM_FP_CLOSE_FAST;
    const auto it = port.map.find(k);
    ASSERT_NE(it, port.map.end()) << "no entry for direction " << static_cast<int>(d);
    EXPECT_EQ(std::memcmp(&it->second, &v, sizeof v), 0)
        << "entry of direction " << static_cast<int>(d) << " differs from fastPathEntry's";
  }
  EXPECT_EQ(port.map.count(kClientKey), 1u);
}

/// An engine on the fake port with one passthrough connection open (on the fast path).
class OpenPassthrough : public ::testing::Test {
 protected:
  void open(bool close_fast) {
    e.setFastPath(&port, close_fast);
    c.open();
  }
  Engine e{config(Mode::kPassthrough)};
  FakeFastPathPort port;
  Passthrough c{e};
};

TEST(FastPath, PassthroughInstallsAtTheFirstOrdinarySegmentOnceEstablished) {
  for (bool close_fast : {false, true}) {
    Engine e(config(Mode::kPassthrough));
    FakeFastPathPort port;
    e.setFastPath(&port, close_fast);
    Passthrough c{e};
    ASSERT_EQ(c.syn().d.verdict, Verdict::kAccept);
    ASSERT_EQ(c.synack().d.verdict, Verdict::kAccept);
    EXPECT_EQ(port.puts, 0);  // SYN and SYN-ACK: not yet
    ASSERT_EQ(c.client(kAck, 1001, 5001).d.verdict, Verdict::kAccept);
    EXPECT_EQ(port.puts, 2);
    EXPECT_EQ(e.counters().fastpath_installs, 1u);
    expectEntries(e, port, 1, close_fast);
    bool listed_fast = false;
    e.forEachFlow([&](const FlowInfo& f) { listed_fast = f.fast_path; }, kSec);
    EXPECT_TRUE(listed_fast);
    EXPECT_EQ(port.map.at(kBackendKey).dir, 1);
    // Packets the kernel left to NFQUEUE (in flight while the entries were written): handled,
    // counted, nothing written again.
    ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10).d.verdict, Verdict::kAccept);
    EXPECT_EQ(e.counters().fastpath_slow_packets, 1u);
    EXPECT_EQ(port.puts, 2);
    EXPECT_EQ(port.map.size(), 2u);
  }
}

TEST_F(OpenPassthrough, NotWithoutAPortAndNotAfterItIsTurnedOff) {
  open(/*close_fast=*/false);
  ASSERT_EQ(port.map.size(), 2u);
  e.setFastPath(nullptr, false);  // flows forget the port, which is not touched
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  EXPECT_EQ(port.erases + port.clears, 0);
  ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10).d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().fastpath_slow_packets, 0u);
  EXPECT_EQ(port.puts, 2);
}

/// A splice connection up to the backend's SYN-ACK; returns the client's first data segment.
struct Splice {
  Engine& e;
  uint32_t cookie = 0, proxy_ts = 0;
  Endpoint source;
  void open() {
    Out sa = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kSyn).seq(1000).mss(1460)
                        .wscale(6).sackPermitted().timestamp(111, 0).build());
    ASSERT_EQ(sa.d.verdict, Verdict::kAccept);
    TcpOptions o;
    ASSERT_EQ(parseTcpOptions(sa.pkt.options(), sa.pkt.optionsLen(), o), OptionError::kNone);
    cookie = sa.pkt.seq();
    proxy_ts = o.ts_val;
    Out syn = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck).seq(1001)
                         .ack(cookie + 1).timestamp(112, proxy_ts).build());
    ASSERT_EQ(syn.d.verdict, Verdict::kAccept);
    source = syn.pkt.src();
  }
  std::vector<uint8_t> synackPacket() const {
    return PacketBuilder().src(kBackend).dst(source.toString()).flags(kSyn | kAck).seq(7000)
        .ack(1001).mss(1400).wscale(9).sackPermitted().timestamp(5000, 112).build();
  }
  Out synack() { return run(e, synackPacket()); }
  /// An 18-byte request the client sends before the backend leg is up (one that ignores the
  /// zero window), from NFQUEUE, which can hold it.
  Out earlyData() {
    PacketMeta hold;
    hold.can_hold = true;
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(1001)
                      .ack(cookie + 1).timestamp(113, proxy_ts).payloadSize(18).build(),
               kSec, hold);
  }
  Out data(uint32_t seq = 1001, size_t len = 18) {
    return run(e, PacketBuilder().src(kClient).dst(kVip).flags(kAck | kPsh).seq(seq)
                      .ack(cookie + 1).timestamp(114, proxy_ts).payloadSize(len).build());
  }
  /// open(), the backend's SYN-ACK and an 18-byte request, which puts the flow on.
  void openFast() {
    open();
    ASSERT_EQ(synack().d.verdict, Verdict::kAccept);
    ASSERT_EQ(data(1001, 18).d.verdict, Verdict::kAccept);
  }
  /// A RST of the backend at `seq` (acknowledging the request).
  Out backendRst(uint32_t seq, uint64_t now) {
    return run(e, PacketBuilder().src(kBackend).dst(source.toString()).flags(kRst | kAck)
                      .seq(seq).ack(1019).build(), now);
  }
};

TEST(FastPath, SpliceInstallsAfterTheBackendHandshakeNotWhilePending) {
  Engine e(config(Mode::kSplice));
  FakeFastPathPort port;
  e.setFastPath(&port, true);
  Splice s{e, 0, 0, {}};
  s.open();
  EXPECT_EQ(port.puts, 0);  // pending: the backend leg is not up
  EXPECT_EQ(s.data().d.reason, DropReason::kSplicePending);
  EXPECT_EQ(port.puts, 0);
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_EQ(port.puts, 0);  // the SYN-ACK became the ACK: not an ordinary segment
  ASSERT_EQ(s.data().d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  expectEntries(e, port, 1, true);
}

/// A splice service with the zero-window handshake, on the fake port; the client's cookie ACK
/// has opened the backend leg.
class ZeroWindowSplice : public ::testing::Test {
 protected:
  static EngineConfig zeroWindow() {
    EngineConfig c = config(Mode::kSplice);
    c.services[0].zero_window_handshake = true;
    return c;
  }
  void SetUp() override {
    e.setFastPath(&port, true);
    s.open();
  }
  Engine e{zeroWindow()};
  FakeFastPathPort port;
  Splice s{e, 0, 0, {}};
};

TEST_F(ZeroWindowSplice, GoesOnAtTheBackendHandshakeBothEntriesAfterItsVerdict) {
  EXPECT_EQ(port.puts, 0);
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  // The client sends nothing before the window opens: its first data must find the entries,
  // which are written (one batch) after this segment's verdict and before the outbox.
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  ASSERT_EQ(port.installed.size(), 2u);
  EXPECT_EQ(std::memcmp(&port.installed[0], &kBackendKey, sizeof kBackendKey), 0);
  EXPECT_EQ(std::memcmp(&port.installed[1], &kClientKey, sizeof kClientKey), 0);
  expectEntries(e, port, 1, true);
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);
}

TEST_F(ZeroWindowSplice, WithHeldClientDataGoesOnWithThatDataNotBefore) {
  // A client that sent data anyway (one that ignores the zero window): it is held, and the
  // segments the kernel would forward must not overtake it.
  const Out early = s.earlyData();
  EXPECT_EQ(early.d.verdict, Verdict::kHold);
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 0);
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);  // the client still needs its window
  ASSERT_EQ(s.data().d.verdict, Verdict::kAccept);    // the held request, released
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  ASSERT_EQ(port.installed.size(), 1u);  // its direction after its verdict, as before
  EXPECT_EQ(std::memcmp(&port.installed[0], &kClientKey, sizeof kClientKey), 0);
}

/// The same with daemon.fastpath_splice = on: the splice's entries are armed with the backend SYN
/// (Engine::setFastPathSplice), so that the kernel can answer the backend's SYN-ACK.
class KernelSplice : public ZeroWindowSplice {
 protected:
  void SetUp() override {
    e.setFastPathSplice(true);
    ZeroWindowSplice::SetUp();
  }
};

TEST_F(ZeroWindowSplice, NotArmedUnlessAsked) {
  EXPECT_EQ(port.puts, 0);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_splices_armed, 0u);
}

TEST_F(KernelSplice, ASynAckThroughNfqueueTakesTheArmedEntriesBackAndInstallsAgain) {
  // Armed with the backend SYN (the kernel could have answered the SYN-ACK); this one came
  // through NFQUEUE, so the engine takes the armed entries back and completes the splice itself.
  EXPECT_EQ(port.puts, 2);
  EXPECT_EQ(e.counters().fastpath_splices_armed, 1u);
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().fastpath_splices_disarmed, 1u);
  // The client sends nothing before the window opens: its first data must find the entries,
  // which are written (one batch) after this segment's verdict and before the outbox.
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  ASSERT_EQ(port.installed.size(), 2u);
  EXPECT_EQ(std::memcmp(&port.installed[0], &kBackendKey, sizeof kBackendKey), 0);
  EXPECT_EQ(std::memcmp(&port.installed[1], &kClientKey, sizeof kClientKey), 0);
  expectEntries(e, port, 2, true);  // generation 1 was the armed pair's
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);
}

TEST_F(KernelSplice, HeldClientDataTakesTheArmedEntriesBack) {
  // A client that sent data anyway (one that ignores the zero window): it is held, and the
  // segments the kernel would forward must not overtake it.
  const Out early = s.earlyData();
  EXPECT_EQ(early.d.verdict, Verdict::kHold);
  // Held: the armed entries go at once (the kernel would complete the splice and let the
  // client's next segments overtake this one).
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_splices_disarmed, 1u);
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 2);  // the armed pair's only
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);  // the client still needs its window
  ASSERT_EQ(s.data().d.verdict, Verdict::kAccept);    // the held request, released
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  ASSERT_EQ(port.installed.size(), 1u);  // its direction after its verdict, as before
  EXPECT_EQ(std::memcmp(&port.installed[0], &kClientKey, sizeof kClientKey), 0);
}

/// The event the kernel submits when it answers `synack` for the flow armed in `port`.
tandem_fp_splice_event spliceEvent(const FakeFastPathPort& port, const std::vector<uint8_t>& synack) {
  tandem_fp_splice_event ev{};
  const tandem_fp_rewrite& armed = port.map.at(kBackendKey);
  EXPECT_NE(armed.flags & TANDEM_FP_SYNACK, 0u);
  std::vector<uint8_t> copy = synack;
  TcpPacket pkt;
  EXPECT_EQ(parseTcpPacket(copy.data(), copy.size(), pkt), ParseError::kNone);
  ev.head.flow_id = armed.flow_id;
  ev.head.generation = armed.generation;
  ev.head.seq = pkt.seq();
  ev.head.ack = pkt.ack();
  ev.head.payload_len = static_cast<uint16_t>(pkt.tcpHeaderLen());
  ev.head.window = pkt.window();
  ev.head.tcp_flags = pkt.flags();
  ev.head.dir = 1;
  ev.head.kind = TANDEM_FP_EV_SPLICE;
  std::memcpy(ev.tcp_hdr, pkt.tcp(), pkt.tcpHeaderLen());
  return ev;
}

TEST_F(KernelSplice, TheArmedEntriesCarryWhatTheKernelNeedsToCompleteTheSplice) {
  ASSERT_EQ(port.map.size(), 2u);
  const Flow f = flowOf(e);
  for (const tandem_fp_key& k : {kClientKey, kBackendKey}) {
    const tandem_fp_rewrite& v = port.map.at(k);
    EXPECT_EQ(v.flags, TANDEM_FP_SYNACK | TANDEM_FP_CLOSE_FAST);  // nothing translated yet
    EXPECT_EQ(v.flow_id, slotOf(e));
    EXPECT_EQ(v.generation, 1u);
  }
  const tandem_fp_rewrite& a = port.map.at(kBackendKey);
  EXPECT_EQ(a.dir, 1u);
  EXPECT_EQ(a.arm_state, TANDEM_FP_ARM_WAITING);
  EXPECT_EQ(a.arm_ack, 1001u);  // the backend SYN's (the client's ISN) + 1
  EXPECT_EQ(a.arm_proxy_isn, s.cookie);
  EXPECT_EQ(a.arm_proxy_tsval, s.proxy_ts);
  EXPECT_EQ(a.arm_client_tsval, 112u);
  EXPECT_EQ(a.arm_client_window, f.client_window);
  EXPECT_EQ(a.arm_client_wscale, 7u);  // what the proxy offered (config.splice.wscale)
  EXPECT_EQ(a.arm_flags, TANDEM_FP_ARM_F_TS | TANDEM_FP_ARM_F_WSCALE);
  EXPECT_EQ(port.map.at(kClientKey).arm_state, 0u);
}

TEST_F(KernelSplice, AKernelCompletedSpliceLeavesTheFlowAsTheEnginesOwnWould) {
  // A twin engine takes the same SYN-ACK through NFQUEUE; this one gets the kernel's event.
  Engine twin{zeroWindow()};
  FakeFastPathPort twin_port;
  twin.setFastPath(&twin_port, true);
  twin.setFastPathSplice(true);
  Splice t{twin, 0, 0, {}};
  t.open();
  ASSERT_EQ(t.synack().d.verdict, Verdict::kAccept);

  const tandem_fp_splice_event ev = spliceEvent(port, s.synackPacket());
  // What the program writes: both entries as the twin's install (checked against the program
  // itself in fastpath_bpf_test).
  for (const tandem_fp_key& k : {kClientKey, kBackendKey}) {
    tandem_fp_rewrite v = twin_port.map.at(k);
    v.generation = ev.head.generation;
    port.map[k] = v;
  }
  const int puts = port.puts;
  e.fastPathSpliced(ev, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_kernel_splices, 1u);
  EXPECT_EQ(e.counters().splices_completed, 1u);
  EXPECT_EQ(e.counters().splice_windows_opened, 1u);
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
  EXPECT_EQ(port.puts, puts);  // the kernel wrote them
  EXPECT_EQ(port.erases, 0);
  EXPECT_EQ(test::drainOutbox(e).size(), 0u);  // the kernel sent both ACKs
  EXPECT_EQ(test::drainOutbox(twin).size(), 1u);  // the twin's window-opening ACK

  const Flow a = flowOf(e), b = flowOf(twin);
  EXPECT_EQ(a.state, TcpState::kEstablished);
  EXPECT_EQ(a.state, b.state);
  EXPECT_FALSE(a.splice_pending);
  EXPECT_TRUE(a.fast_path);
  EXPECT_FALSE(a.fast_path_armed);
  test::expectSameSplice(a, b);
  // The flow's next segments: the kernel's; a FIN event of this install applies.
  const tandem_fp_event fin = port.close(kClientKey, 3 * kSec, 1019, s.cookie + 1, kFin | kAck);
  e.fastPathClose(fin, 3 * kSec);
  EXPECT_EQ(e.counters().fastpath_events_stale, 0u);
  EXPECT_EQ(stateOf(e), TcpState::kFinWait);

  // The same event again: the flow no longer waits for it.
  e.fastPathSpliced(ev, 3 * kSec);
  EXPECT_EQ(e.counters().fastpath_splice_events_stale, 1u);
  EXPECT_EQ(e.counters().fastpath_kernel_splices, 1u);
}

TEST_F(KernelSplice, ASynAckThroughNfqueueAfterTheKernelsMakesItsEventStale) {
  // The kernel answered; a duplicate SYN-ACK reached NFQUEUE before its event was read. The
  // engine completes the splice itself (its own install, a newer generation): the event is old.
  const tandem_fp_splice_event ev = spliceEvent(port, s.synackPacket());
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().fastpath_splices_disarmed, 1u);
  e.fastPathSpliced(ev, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_splice_events_stale, 1u);
  EXPECT_EQ(e.counters().fastpath_kernel_splices, 0u);
  EXPECT_EQ(e.counters().splices_completed, 1u);
  expectEntries(e, port, 2, true);
}

TEST_F(KernelSplice, AKernelSpliceAfterTheEngineHeldDataStillAppliesOffTheFastPath) {
  // The kernel completed the splice, then client data reached NFQUEUE before the event was
  // read: the engine held it and took the entries back. The event still applies (the kernel
  // sent both ACKs); the flow is off the fast path and the held data may go.
  const tandem_fp_splice_event ev = spliceEvent(port, s.synackPacket());
  const Out early = s.earlyData();
  ASSERT_EQ(early.d.verdict, Verdict::kHold);
  EXPECT_TRUE(port.map.empty());
  const uint64_t generation = e.spliceGeneration();
  e.fastPathSpliced(ev, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_kernel_splices, 1u);
  EXPECT_NE(e.spliceGeneration(), generation);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  EXPECT_FALSE(flowOf(e).fast_path);
  EXPECT_EQ(test::drainOutbox(e).size(), 0u);
  EXPECT_EQ(s.data().d.verdict, Verdict::kAccept);  // the held request, released
}

TEST_F(KernelSplice, AnArmedSpliceThatEndsTakesItsEntriesBack) {
  // The client gives up (RST) before the backend answers: the kernel must not complete it.
  ASSERT_EQ(port.map.size(), 2u);
  const Out rst = run(e, PacketBuilder().src(kClient).dst(kVip).flags(kRst).seq(1001).build());
  EXPECT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_splices_disarmed, 1u);
}

TEST_F(KernelSplice, NotArmedWithoutRoomForBothEntries) {
  Engine other{zeroWindow()};
  FakeFastPathPort full;
  full.capacity = 1;  // room for half a pair: all or nothing
  other.setFastPath(&full, true);
  other.setFastPathSplice(true);
  Splice t{other, 0, 0, {}};
  t.open();
  EXPECT_TRUE(full.map.empty());
  EXPECT_EQ(other.counters().fastpath_splices_armed, 0u);
  EXPECT_EQ(other.counters().fastpath_install_failed, 1u);
  ASSERT_EQ(t.synack().d.verdict, Verdict::kAccept);  // completed by the engine, as before
  EXPECT_EQ(stateOf(other), TcpState::kEstablished);
}

TEST(FastPath, NotForAReSplicingService) {
  Engine e(config(Mode::kSplice, /*resplice=*/true));
  FakeFastPathPort port;
  e.setFastPath(&port, false);
  Splice s{e, 0, 0, {}};
  s.open();
  ASSERT_EQ(s.synack().d.verdict, Verdict::kAccept);
  ASSERT_EQ(s.data().d.verdict, Verdict::kAccept);
  ASSERT_EQ(s.data(1019, 5).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 0);
  EXPECT_EQ(e.counters().fastpath_installs, 0u);
}

TEST(FastPath, NotWhileDeferredUntilTheStandbyKnowsTheFlow) {
  Engine e(config(Mode::kPassthrough));
  FakeFastPathPort port;
  e.setFastPath(&port, false);
  e.enableChangeTracking();
  e.setSyncDeferral(true);
  Passthrough c{e};
  c.open();  // the SYN-ACK passes (the caller cannot hold it), the flow stays unsynced
  ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 0);
  ASSERT_TRUE(e.markSynced({IpAddr::fromV4(0x0a000002), IpAddr::fromV4(0x0a000064), 40000, 80}));
  ASSERT_EQ(c.backend(kAck, 5001, 1011).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.map.size(), 2u);
}

TEST_F(OpenPassthrough, StandbyClearsThePortInstallsNothingAndResumesLazily) {
  open(/*close_fast=*/true);
  ASSERT_EQ(port.map.size(), 2u);
  e.setStandby(true, 2 * kSec);
  EXPECT_EQ(port.clears, 1);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  // A close event the kernel sent before it was cleared: no fast flow any more.
  tandem_fp_event ev{};
  ev.flow_id = slotOf(e);
  ev.generation = 1;
  ev.tcp_flags = kFin | kAck;
  ev.seq = 1001;
  ev.ack = 5001;
  e.fastPathClose(ev, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_events_stale, 1u);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  // Packets on a standby: handled, never put on the fast path.
  ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10, 2 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 2);
  e.setStandby(false, 3 * kSec);
  EXPECT_EQ(port.puts, 2);  // lazily: nothing at the role change
  ASSERT_EQ(c.backend(kAck, 5001, 1011, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.puts, 4);
  expectEntries(e, port, 2, true);  // a new generation
}

// When the segment that puts the flow on carries data, its direction's entry goes through
// install() (the daemon's port writes it once that segment's verdict is sent, so the flow's next
// segments, translated by the kernel, cannot overtake it) and the other direction's at once,
// through put(). A bare ACK may be overtaken (the segments after it carry its ack): both at once.
TEST(FastPath, TheTriggersDirectionIsInstalledAfterItsSegmentTheOtherAtOnce) {
  {
    Engine e(config(Mode::kPassthrough));
    FakeFastPathPort port;
    e.setFastPath(&port, true);
    Passthrough c{e};
    c.open();  // the client's bare handshake ACK puts it on
    EXPECT_TRUE(port.installed.empty());
    EXPECT_EQ(port.puts, 2);
    EXPECT_EQ(port.map.size(), 2u);
  }
  {
    Engine e(config(Mode::kSplice));
    FakeFastPathPort port;
    e.setFastPath(&port, true);
    Splice s{e, 0, 0, {}};
    s.openFast();  // the client's first request puts it on
    ASSERT_EQ(port.installed.size(), 1u);
    EXPECT_EQ(std::memcmp(&port.installed[0], &kClientKey, sizeof kClientKey), 0);
    EXPECT_EQ(port.map.size(), 2u);
  }
}

// A deferring port reports an install the kernel refused later: the flow leaves the fast path
// (both entries erased), counted as a failed install; a report naming another install (an
// older generation, a slot reused) changes nothing.
TEST_F(OpenPassthrough, AnInstallLostLaterTakesTheFlowOffAndPausesInstalls) {
  open(/*close_fast=*/true);
  ASSERT_EQ(port.map.size(), 2u);
  const uint32_t slot = slotOf(e);
  const uint32_t generation = port.map.at(kClientKey).generation;
  e.fastPathInstallLost(slot, generation + 1, 2 * kSec);  // not this install
  e.fastPathInstallLost(slot + 1, generation, 2 * kSec);  // no such flow
  EXPECT_EQ(port.map.size(), 2u);
  EXPECT_EQ(e.counters().fastpath_install_failed, 0u);
  port.map.erase(kClientKey);  // what the kernel refused
  e.fastPathInstallLost(slot, generation, 2 * kSec);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_install_failed, 1u);
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  bool listed_fast = true;
  e.forEachFlow([&](const FlowInfo& f) { listed_fast = f.fast_path; }, 2 * kSec);
  EXPECT_FALSE(listed_fast);
  // The flow goes on through NFQUEUE; installs pause as after a refused put.
  ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10).d.verdict, Verdict::kAccept);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_installs, 1u);
}

TEST(FastPath, ARefusedPutCountsLeavesNoHalfEntryAndIsNotRetriedAtOnce) {
  for (size_t capacity : {0u, 1u}) {
    Engine e(config(Mode::kPassthrough));
    FakeFastPathPort port;
    port.capacity = capacity;
    e.setFastPath(&port, false);
    Passthrough c{e};
    c.open();
    EXPECT_EQ(e.counters().fastpath_install_failed, 1u);
    EXPECT_EQ(e.counters().fastpath_installs, 0u);
    EXPECT_TRUE(port.map.empty()) << "capacity " << capacity;
    EXPECT_EQ(port.puts, capacity == 0 ? 1 : 2);
    const int puts = port.puts;
    for (int i = 0; i < 255; ++i) ASSERT_EQ(c.backend(kAck, 5001, 1001).d.verdict, Verdict::kAccept);
    EXPECT_EQ(port.puts, puts);  // backing off: a full map costs no syscall per packet
    port.capacity = SIZE_MAX;
    ASSERT_EQ(c.backend(kAck, 5001, 1001).d.verdict, Verdict::kAccept);
    ASSERT_EQ(c.backend(kAck, 5001, 1001).d.verdict, Verdict::kAccept);
    EXPECT_EQ(e.counters().fastpath_installs, 1u);
    EXPECT_EQ(port.map.size(), 2u);
  }
}

TEST_F(OpenPassthrough, AFinThroughTheEngineErasesTheEntriesAfterTheKernelMovedTheEdges) {
  open(/*close_fast=*/false);
  // The kernel carried 100 MB each way: far past every edge the engine knows.
  constexpr uint32_t kMoved = 100'000'000;
  port.forward(kClientKey, 50 * kSec, 1001 + kMoved - 1000, 5001 + kMoved, 1000, kAck);
  port.forward(kBackendKey, 50 * kSec, 5001 + kMoved - 1000, 1001 + kMoved, 1000, kAck);
  Out fin = c.client(kFin | kAck, 1001 + kMoved, 5001 + kMoved, 0, 51 * kSec);
  ASSERT_EQ(fin.d.verdict, Verdict::kAccept);
  EXPECT_EQ(fin.pkt.dst().toString(), kBackend);
  EXPECT_EQ(stateOf(e), TcpState::kFinWait);  // learnt afresh: the FIN counts
  EXPECT_EQ(e.counters().seq_out_of_window, 0u);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  EXPECT_EQ(e.counters().fastpath_slow_packets, 1u);
  // The close is the engine's: the backend's FIN and the last ACK through it, no re-install.
  ASSERT_EQ(c.backend(kFin | kAck, 5001 + kMoved, 1002 + kMoved, 0, 51 * kSec).d.verdict,
            Verdict::kAccept);
  ASSERT_EQ(c.client(kAck, 1002 + kMoved, 5002 + kMoved, 0, 51 * kSec).d.verdict,
            Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kTimeWait);
  EXPECT_EQ(port.puts, 2);
  EXPECT_EQ(e.counters().fastpath_slow_packets, 1u);
}

TEST(FastPath, ARstThroughTheEngineIsJudgedOnTheKernelsEdges) {
  // 50 MB, or 3 GB: more than 2^31 bytes of sequence space, which no wrapping comparison of
  // the engine's edges with the kernel's can tell from a retransmission 1.3 GB behind.
  const std::pair<uint32_t, bool> cases[] = {
      {50'000'000u, true}, {50'000'000u, false}, {3'000'000'000u, true}, {3'000'000'000u, false}};
  for (const auto& [kMoved, kernel_saw] : cases) {
    SCOPED_TRACE(kMoved);
    Engine e(config(Mode::kSplice));
    FakeFastPathPort port;
    e.setFastPath(&port, false);
    Splice s{e, 0, 0, {}};
    s.openFast();
    ASSERT_EQ(port.map.size(), 2u);
    const tandem_fp_key backend_key = keyOf(kBackend, s.source.toString());
    if (kernel_saw) {  // the kernel carried 50 MB of response, all acknowledged
      port.forward(backend_key, 20 * kSec, 7001 + kMoved - 1000, 1019, 1000, kAck);
      port.forward(kClientKey, 20 * kSec, 1019, s.cookie + 1 + kMoved, 0, kAck);
    }
    Out rst = s.backendRst(7001 + kMoved, 21 * kSec);
    if (!kernel_saw) {
      // The control: the same RST against the engine's own (stale) edges is out of window.
      EXPECT_EQ(rst.d.reason, DropReason::kRstOutOfWindow);
      continue;
    }
    ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
    EXPECT_EQ(rst.pkt.dst().toString(), kClient);
    EXPECT_EQ(rst.pkt.src().toString(), kVip);
    EXPECT_EQ(rst.pkt.seq(), s.cookie + 1 + kMoved);  // into the client's sequence space
    EXPECT_EQ(stateOf(e), TcpState::kClose);
    EXPECT_EQ(e.counters().rst_accepted, 1u);
    EXPECT_TRUE(port.map.empty());
    EXPECT_EQ(e.backendStats(0, 0).rsts, 1u);
  }
}

TEST(FastPath, ARstAheadOfTheKernelsLastSegmentButInsideTheReceiversWindowIsChallenged) {
  // The kernel carried 50 MB of response; its last backend segment ends at 7001 + 50 MB. A RST
  // 1000 bytes beyond (the backend's SND.NXT after segments still in flight) lies inside what
  // the client advertised (RCV.NXT + RCV.WND): its receiver answers with a challenge ACK (RFC
  // 5961 3.2), so the engine must pass it, not drop it on edges as old as the install.
  constexpr uint32_t kMoved = 50'000'000u;
  Engine e(config(Mode::kSplice));
  FakeFastPathPort port;
  e.setFastPath(&port, false);
  Splice s{e, 0, 0, {}};
  s.openFast();
  ASSERT_EQ(port.map.size(), 2u);
  const tandem_fp_key backend_key = keyOf(kBackend, s.source.toString());
  port.forward(backend_key, 20 * kSec, 7001 + kMoved - 1000, 1019, 1000, kAck);
  port.forward(kClientKey, 20 * kSec, 1019, s.cookie + 1 + kMoved, 0, kAck, 1000);
  Out rst = s.backendRst(7001 + kMoved + 1000, 21 * kSec);
  ASSERT_EQ(rst.d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().rst_challenged, 1u);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  // Beyond the window (1000 << 6 bytes past the client's ack): out of window.
  Out far = s.backendRst(7001 + kMoved + (1000u << 6) + 1, 21 * kSec);
  EXPECT_EQ(far.d.reason, DropReason::kRstOutOfWindow);
}

/// Two engines, one with the fast path and one without, given the same connection: the first
/// through the fake kernel and close events, the second packet by packet.
struct Pair {
  Engine fast{config(Mode::kPassthrough)};
  Engine slow{config(Mode::kPassthrough)};
  FakeFastPathPort port;
  Passthrough f{fast}, s{slow};
  Pair() {
    fast.setFastPath(&port, true);
    fast.enableChangeTracking();
    slow.enableChangeTracking();
    f.open();
    s.open();
    EXPECT_EQ(port.map.size(), 2u);
    // Request and response: the slow engine sees them, the fast one does not.
    port.forward(kClientKey, 2 * kSec, 1001, 5001, 100, kAck | kPsh);
    EXPECT_EQ(s.client(kAck | kPsh, 1001, 5001, 100, 2 * kSec).d.verdict, Verdict::kAccept);
    port.forward(kBackendKey, 2 * kSec, 5001, 1101, 200, kAck | kPsh);
    EXPECT_EQ(s.backend(kAck | kPsh, 5001, 1101, 200, 2 * kSec).d.verdict, Verdict::kAccept);
    port.forward(kClientKey, 2 * kSec, 1101, 5201, 0, kAck);
    EXPECT_EQ(s.client(kAck, 1101, 5201, 0, 2 * kSec).d.verdict, Verdict::kAccept);
    expectSame("after the request and response");
  }
  struct Changes {
    std::vector<TcpState> changed;
    size_t removed = 0;
  };
  static Changes drain(Engine& e) {
    Changes c;
    e.drainChanges([&](const FlowKey&) { ++c.removed; },
                   [&](const Flow& fl) { c.changed.push_back(fl.state); });
    return c;
  }
  void expectSame(const char* when) {
    SCOPED_TRACE(when);
    EXPECT_EQ(stateOf(fast), stateOf(slow));
    const Changes a = drain(fast), b = drain(slow);
    EXPECT_EQ(a.changed, b.changed);
    EXPECT_EQ(a.removed, b.removed);
    EXPECT_EQ(fast.activeFlows(), slow.activeFlows());
  }
};

TEST(FastPath, CloseEventsMoveTheTrackerAsThePacketsWould) {
  // The kernel reports both FINs and the last ACK (it acknowledges the backend's FIN); or the
  // event ring was full for the last ACK, which then reached the engine through NFQUEUE.
  for (bool last_ack_event : {true, false}) {
    SCOPED_TRACE(last_ack_event ? "last ACK reported by the kernel" : "last ACK through the engine");
    Pair p;
    const int gets = p.port.gets, erases = p.port.erases;
    p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1101, 5201, kFin | kAck), 3 * kSec);
    ASSERT_EQ(p.s.client(kFin | kAck, 1101, 5201, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    EXPECT_EQ(stateOf(p.fast), TcpState::kFinWait);
    p.expectSame("client FIN");
    EXPECT_EQ(p.port.map.size(), 2u);  // half-closed: the response direction stays fast
    EXPECT_EQ(p.port.gets, gets);      // and it cost no port call

    p.fast.fastPathClose(p.port.close(kBackendKey, 3 * kSec, 5201, 1102, kFin | kAck), 3 * kSec);
    ASSERT_EQ(p.s.backend(kFin | kAck, 5201, 1102, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    EXPECT_EQ(stateOf(p.fast), TcpState::kLastAck);
    p.expectSame("backend FIN");
    EXPECT_EQ(p.port.map.size(), 2u);  // the last ACK is the kernel's to forward and report
    EXPECT_EQ(p.port.gets, gets);
    EXPECT_EQ(p.port.erases, erases);

    if (last_ack_event) {
      p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1102, 5202, kAck), 3 * kSec);
    } else {
      ASSERT_EQ(p.f.client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    }
    ASSERT_EQ(p.s.client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    EXPECT_EQ(stateOf(p.fast), TcpState::kTimeWait);
    p.expectSame("last ACK");
    EXPECT_TRUE(p.port.map.empty());  // closed: off the fast path, one erase per direction
    EXPECT_EQ(p.port.erases, erases + 2);
    EXPECT_EQ(p.fast.counters().fastpath_events, last_ack_event ? 3u : 2u);
    EXPECT_EQ(p.fast.counters().fastpath_events_stale, 0u);
    // The events produced no verdict: only the handshake (and a last ACK through NFQUEUE).
    EXPECT_EQ(p.fast.counters().packets[0], last_ack_event ? 2u : 3u);
    EXPECT_EQ(p.fast.counters().packets[1], 1u);
    // Both linger and go the same way, the same removal for the standby.
    p.fast.expire(200 * kSec);
    p.slow.expire(200 * kSec);
    EXPECT_EQ(p.fast.activeFlows(), 0u);
    p.expectSame("expired");
    EXPECT_EQ(p.fast.counters().flows_closed, 1u);
  }
}

TEST(FastPath, AfterAFastCloseRstsAreJudgedOnExactEdgesAsWithoutIt) {
  // A flow that reaches TIME_WAIT on close events leaves the fast path with the kernel's edges
  // taken as exact, not with a liberal restart: the backend's RST at the end of its stream
  // closes the flow, and one at a stale seq (a closed socket answering a late duplicate) is
  // dropped as after the close, as on the engine that saw every packet. With a liberal
  // restart both drew a challenge and the flow lingered in TIME_WAIT.
  for (bool stale : {false, true}) {
    SCOPED_TRACE(stale ? "RST at the backend's ISN + 1" : "RST at the backend's FIN + 1");
    Pair p;
    p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1101, 5201, kFin | kAck), 3 * kSec);
    ASSERT_EQ(p.s.client(kFin | kAck, 1101, 5201, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    p.fast.fastPathClose(p.port.close(kBackendKey, 3 * kSec, 5201, 1102, kFin | kAck), 3 * kSec);
    ASSERT_EQ(p.s.backend(kFin | kAck, 5201, 1102, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1102, 5202, kAck), 3 * kSec);
    ASSERT_EQ(p.s.client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    ASSERT_EQ(stateOf(p.fast), TcpState::kTimeWait);
    ASSERT_TRUE(p.port.map.empty());
    const uint32_t seq = stale ? 5001 : 5202;
    for (Passthrough* c : {&p.f, &p.s}) {
      const Out rst = c->backend(kRst, seq, 0, 0, 3 * kSec);
      if (stale) {
        EXPECT_EQ(rst.d.verdict, Verdict::kDrop);
        EXPECT_EQ(rst.d.reason, DropReason::kRstAfterClose);
      } else {
        EXPECT_EQ(rst.d.verdict, Verdict::kAccept);
      }
      EXPECT_EQ(c->e.counters().rst_challenged, 0u);
    }
    EXPECT_EQ(stateOf(p.fast), stale ? TcpState::kTimeWait : TcpState::kClose);
    p.expectSame("after the RST");
  }
}

TEST(FastPath, ABackendRstAfterTheCloseIsNoPassiveHealthSignal) {
  // After a close the backend's socket is gone; a duplicate of the close reaching it (a FIN
  // it retransmitted, acknowledged twice by the client in TIME_WAIT: common with the fast path
  // and fastpath_close = off, where the FIN waits in NFQUEUE while the backend's RTT estimate
  // is the kernel's microseconds) draws a RST naming the end of its stream. The tracker accepts
  // it (TIME_WAIT to CLOSE, as the client does), but it says nothing about the backend's health.
  Pair p;
  for (Passthrough* c : {&p.f, &p.s}) {
    ASSERT_EQ(c->client(kFin | kAck, 1101, 5201, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    ASSERT_EQ(c->backend(kFin | kAck, 5201, 1102, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    ASSERT_EQ(c->client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    ASSERT_EQ(c->client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);  // again
    ASSERT_EQ(stateOf(c->e), TcpState::kTimeWait);
    ASSERT_EQ(c->backend(kRst, 5202, 0, 0, 3 * kSec).d.verdict, Verdict::kAccept);
    EXPECT_EQ(stateOf(c->e), TcpState::kClose);
    EXPECT_EQ(c->e.counters().rst_accepted, 1u);
    EXPECT_EQ(c->e.backendStats(0, 0).rsts, 0u);
  }
  EXPECT_TRUE(p.port.map.empty());
}

TEST(FastPath, AFinThroughTheEngineStaysFastAndTellsTheKernelWhatAcksIt) {
  // A short request and its FIN arrive together while the backend leg opens, so the FIN comes
  // through the engine after the request put the flow on the fast path.
  Pair p;
  ASSERT_EQ(p.f.client(kFin | kAck, 1101, 5201, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  ASSERT_EQ(p.s.client(kFin | kAck, 1101, 5201, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(p.fast), TcpState::kFinWait);
  p.expectSame("client FIN through the engine");
  ASSERT_EQ(p.port.map.size(), 2u);  // still on the fast path
  // The backend's entry now carries the FIN's end as the backend acks it (passthrough: no
  // sequence offset).
  const tandem_fp_rewrite& b = p.port.map.at(kBackendKey);
  EXPECT_EQ(b.fin_state, TANDEM_FP_PEER_FIN);
  EXPECT_NE(b.flags & TANDEM_FP_CLOSE_FAST, 0u);
  EXPECT_EQ(b.peer_fin_ack, 1102u);
  EXPECT_EQ(p.port.map.at(kClientKey).fin_state, 0u);
  // The rest of the close in the kernel: the backend's FIN (acking the client's) and the last
  // ACK, reported.
  p.fast.fastPathClose(p.port.close(kBackendKey, 3 * kSec, 5201, 1102, kFin | kAck), 3 * kSec);
  ASSERT_EQ(p.s.backend(kFin | kAck, 5201, 1102, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1102, 5202, kAck), 3 * kSec);
  ASSERT_EQ(p.s.client(kAck, 1102, 5202, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(p.fast), TcpState::kTimeWait);
  p.expectSame("closed in the kernel");
  EXPECT_TRUE(p.port.map.empty());
}

TEST(FastPath, ARstEventClosesTheFlowAsThePacketWould) {
  Pair p;
  p.fast.fastPathClose(p.port.close(kBackendKey, 3 * kSec, 5201, 1101, kRst | kAck), 3 * kSec);
  ASSERT_EQ(p.s.backend(kRst | kAck, 5201, 1101, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(p.fast), TcpState::kClose);
  p.expectSame("backend RST");
  EXPECT_TRUE(p.port.map.empty());
  EXPECT_EQ(p.fast.backendStats(0, 0).rsts, p.slow.backendStats(0, 0).rsts);
  EXPECT_EQ(p.fast.counters().rst_accepted, 1u);
}

TEST(FastPath, AFinEventWithPayloadEndsWhereThePacketsFinEnds) {
  Pair p;
  // The client's last request bytes and its FIN in one segment.
  p.fast.fastPathClose(p.port.close(kClientKey, 3 * kSec, 1101, 5201, kFin | kAck | kPsh, 300),
                       3 * kSec);
  ASSERT_EQ(p.s.client(kFin | kAck | kPsh, 1101, 5201, 300, 3 * kSec).d.verdict,
            Verdict::kAccept);
  p.expectSame("client FIN with data");
  // The backend's ACKs (through NFQUEUE on both): its data but not the FIN, then the FIN. Only
  // the FIN's exact end moves either engine to CLOSE_WAIT.
  ASSERT_EQ(p.f.backend(kAck, 5201, 1401, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  ASSERT_EQ(p.s.backend(kAck, 5201, 1401, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(p.fast), TcpState::kFinWait);
  p.expectSame("data acknowledged");
  ASSERT_EQ(p.f.backend(kAck, 5201, 1402, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  ASSERT_EQ(p.s.backend(kAck, 5201, 1402, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(p.fast), TcpState::kCloseWait);
  p.expectSame("FIN acknowledged");
}

TEST_F(OpenPassthrough, StaleEventsAreIgnoredAndCounted) {
  open(/*close_fast=*/true);
  tandem_fp_event ev = port.close(kClientKey, 2 * kSec, 1001, 5001, kFin | kAck);
  tandem_fp_event old = ev;
  old.generation = ev.generation + 1;  // not this install
  e.fastPathClose(old, 2 * kSec);
  tandem_fp_event nowhere = ev;
  nowhere.flow_id = 1000;  // beyond the table
  e.fastPathClose(nowhere, 2 * kSec);
  tandem_fp_event bad_dir = ev;
  bad_dir.dir = 2;
  e.fastPathClose(bad_dir, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_events, 3u);
  EXPECT_EQ(e.counters().fastpath_events_stale, 3u);
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  e.fastPathClose(ev, 2 * kSec);
  EXPECT_EQ(stateOf(e), TcpState::kFinWait);
  EXPECT_EQ(e.counters().fastpath_events_stale, 3u);
  // After the flow left the fast path (the backend's RST through the engine), an event of its
  // own generation still counts: the kernel forwarded that packet before the entries went.
  ASSERT_EQ(c.backend(kRst | kAck, 5001, 1002, 0, 2 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  EXPECT_TRUE(port.map.empty());
  const tandem_fp_event late = ev;
  e.fastPathClose(late, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_events_stale, 3u);
  EXPECT_EQ(stateOf(e), TcpState::kClose);
  // Once the flow is gone (its slot freed, maybe reused), nothing of its generation applies.
  e.expire(500 * kSec);
  EXPECT_EQ(e.activeFlows(), 0u);
  e.fastPathClose(late, 500 * kSec);
  EXPECT_EQ(e.counters().fastpath_events_stale, 4u);
}

TEST(FastPath, AFinReportedAfterAQueuedPacketTookTheFlowOffStillMovesTheTracker) {
  // The client's FIN went through the kernel and into the ring; before the ring was read, the
  // flow left the fast path (here: its backend leaving UP).
  Engine e(config(Mode::kPassthrough));
  FakeFastPathPort port;
  e.setFastPath(&port, true);
  Passthrough c{e};
  c.open();
  ASSERT_EQ(port.map.size(), 2u);
  const tandem_fp_event fin = port.close(kClientKey, 2 * kSec, 1001, 5001, kFin | kAck);
  e.setBackendState(0, 0, BackendState::kDraining, 2 * kSec);  // off the fast path, flow lives
  ASSERT_TRUE(port.map.empty());
  EXPECT_EQ(stateOf(e), TcpState::kEstablished);
  e.fastPathClose(fin, 2 * kSec);
  EXPECT_EQ(e.counters().fastpath_events_stale, 0u);
  EXPECT_EQ(stateOf(e), TcpState::kFinWait);  // not stuck ESTABLISHED / CLOSE_WAIT
}

// A bare ACK that waited in NFQUEUE while a newer one of the same side crossed the kernel is
// dropped (ack_overtaken): its receiver would ignore it, or answer with a RST once closed. A
// duplicate of the newest ack, data, and a flow never on the fast path are not affected.
TEST_F(OpenPassthrough, ABareAckOvertakenThroughTheKernelIsDropped) {
  open(/*close_fast=*/true);
  // The backend sent 300 bytes; the client's ACK of all of them crossed the kernel.
  port.forward(kBackendKey, 2 * kSec, 5001, 1001, 300, kAck | kPsh);
  port.forward(kClientKey, 2 * kSec, 1001, 5301, 0, kAck);
  // Its older ACK of the first 100, queued for tandemd meanwhile: dropped.
  Out stale = c.client(kAck, 1001, 5101, 0, 3 * kSec);
  EXPECT_EQ(stale.d.verdict, Verdict::kDrop);
  EXPECT_EQ(stale.d.reason, DropReason::kAckOvertaken);
  EXPECT_EQ(e.counters().drops[static_cast<size_t>(DropReason::kAckOvertaken)], 1u);
  // A duplicate of the newest ack (a duplicate ACK means something) and data with an old ack
  // go on.
  EXPECT_EQ(c.client(kAck, 1001, 5301, 0, 3 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(c.client(kAck | kPsh, 1001, 5101, 10, 3 * kSec).d.verdict, Verdict::kAccept);
  // Without the fast path an old ACK is the receiver's business, as before.
  Engine plain(config(Mode::kPassthrough));
  Passthrough p{plain};
  p.open();
  ASSERT_EQ(p.backend(kAck | kPsh, 5001, 1001, 300).d.verdict, Verdict::kAccept);
  ASSERT_EQ(p.client(kAck, 1001, 5301).d.verdict, Verdict::kAccept);
  EXPECT_EQ(p.client(kAck, 1001, 5101).d.verdict, Verdict::kAccept);
}

TEST_F(OpenPassthrough, ExpiryAsksTheKernelWhenTheFlowWasLastSeen) {
  // Established flows expire after 100 s idle (config()).
  open(/*close_fast=*/false);
  port.forward(kClientKey, 90 * kSec, 1001, 5001, 100, kAck);
  e.expire(102 * kSec);  // idle 101 s by the engine's clock, 12 s by the kernel's
  EXPECT_EQ(e.activeFlows(), 1u);
  EXPECT_EQ(port.map.size(), 2u);
  EXPECT_GT(port.gets, 0);
  // A kernel clock read after the caller's now is taken as now, not as 2^64 ns ago.
  port.forward(kBackendKey, 195 * kSec, 5001, 1101, 0, kAck);
  e.expire(191 * kSec);
  EXPECT_EQ(e.activeFlows(), 1u);
  e.expire(290 * kSec);  // idle 99 s by the engine's clock: not asked
  EXPECT_EQ(e.activeFlows(), 1u);
  e.expire(296 * kSec);  // idle 101 s since the kernel's 195 s: really idle
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  EXPECT_EQ(e.counters().flows_expired, 1u);
}

TEST_F(OpenPassthrough, APacketAfterLongKernelActivityDoesNotExpireTheFlow) {
  open(/*close_fast=*/false);
  port.forward(kClientKey, 150 * kSec, 1001, 5001, 100, kAck);
  ASSERT_EQ(c.client(kAck | kPsh, 1101, 5001, 10, 160 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().flows_expired, 0u);
  EXPECT_EQ(e.counters().fastpath_slow_packets, 1u);
  EXPECT_EQ(port.map.size(), 2u);
}

TEST_F(OpenPassthrough, BackendDownResetsWithTheKernelsEdgesAndErases) {
  open(/*close_fast=*/false);
  // The kernel carried 3000 response bytes and 40 request bytes, all acknowledged.
  port.forward(kBackendKey, 5 * kSec, 5001, 1041, 3000, kAck);
  port.forward(kClientKey, 5 * kSec, 1001, 8001, 40, kAck);
  e.setBackendState(0, 0, BackendState::kDown, 6 * kSec);
  EXPECT_EQ(e.activeFlows(), 0u);
  EXPECT_TRUE(port.map.empty());
  EXPECT_EQ(e.counters().fastpath_removals, 1u);
  std::vector<std::pair<std::string, uint32_t>> rsts;  // destination, seq
  e.drainOutbox([&](const uint8_t* d, size_t n) {
    std::vector<uint8_t> copy(d, d + n);
    TcpPacket p;
    ASSERT_EQ(parseTcpPacket(copy.data(), n, p), ParseError::kNone);
    rsts.emplace_back(p.dst().toString(), p.seq());
  });
  // Each side's RCV.NXT as the kernel saw it, not as the engine last did.
  EXPECT_EQ(rsts, (std::vector<std::pair<std::string, uint32_t>>{{kClient, 8001},
                                                                  {kBackend, 1041}}));
}

TEST_F(OpenPassthrough, ADrainingBackendsFlowLeavesAndStaysOffUntilItIsUpAgain) {
  open(/*close_fast=*/false);
  port.forward(kClientKey, 5 * kSec, 1001, 5001, 40, kAck);
  e.setBackendState(0, 0, BackendState::kDraining, 6 * kSec);
  EXPECT_EQ(e.activeFlows(), 1u);  // busy, with nowhere to go: carries on through the engine
  EXPECT_TRUE(port.map.empty());
  // It carries on through the engine, from where the kernel left it.
  ASSERT_EQ(c.client(kAck | kPsh, 1041, 5001, 10, 7 * kSec).d.verdict, Verdict::kAccept);
  ASSERT_EQ(c.backend(kAck, 5001, 1051, 0, 7 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(e.counters().seq_out_of_window, 0u);
  EXPECT_EQ(port.puts, 2);  // not while draining
  e.setBackendState(0, 0, BackendState::kUp, 8 * kSec);
  ASSERT_EQ(c.client(kAck, 1051, 5001, 0, 8 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(port.map.size(), 2u);
  EXPECT_EQ(e.counters().fastpath_installs, 2u);
}

TEST(FastPath, AFlowFromACheckpointIsNeverOnTheStandbysFastPath) {
  Engine active(config(Mode::kPassthrough));
  FakeFastPathPort port;
  active.setFastPath(&port, false);
  Passthrough{active}.open();
  const Flow fast = flowOf(active);
  ASSERT_TRUE(fast.fast_path);

  Engine standby(config(Mode::kPassthrough));
  FakeFastPathPort standby_port;
  standby.setFastPath(&standby_port, false);
  standby.setStandby(true, kSec);
  ASSERT_EQ(standby.installFlow(fast, kSec), DropReason::kNone);
  EXPECT_FALSE(flowOf(standby).fast_path);
  standby.setStandby(false, 2 * kSec);
  Passthrough c{standby};
  ASSERT_EQ(c.client(kAck | kPsh, 1001, 5001, 10, 2 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(standby_port.puts, 0);  // the backend direction not seen yet since the takeover
  ASSERT_EQ(c.backend(kAck, 5001, 1011, 0, 2 * kSec).d.verdict, Verdict::kAccept);
  EXPECT_EQ(standby_port.map.size(), 2u);
  EXPECT_EQ(standby_port.map.at(kClientKey).generation, 1u);
}

}  // namespace
}  // namespace tandem
