// FastPathAdapter's deferred writes against the real map (root, BPF): an install waits for
// commit() (after the verdicts of the batch that made the flow qualify), a put is written at
// once unless its key's install is still kept, erase drops a kept entry, take reads and
// erases one (kept or written), a refused commit is counted. The program is attached to the
// loopback of a network namespace of the test's own.
#include <bpf/bpf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <string>

#include "proxy/tandemd/fastpath_adapter.h"

namespace tandem {
namespace {

tandem_fp_key key(uint16_t port) {
  tandem_fp_key k{};
  k.saddr = 0x0200000a;
  k.daddr = 0x6400000a;
  k.sport = port;
  k.dport = 80;
  return k;
}

tandem_fp_rewrite value(uint32_t flow_id) {
  tandem_fp_rewrite v{};
  v.saddr = 0x0200000a;
  v.daddr = 0x0200010a;
  v.sport = 1;
  v.dport = 8080;
  v.flow_id = flow_id;
  v.generation = 3;
  return v;
}

class FastPathAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0)
      GTEST_SKIP() << "SKIPPED LOUDLY: the fast-path adapter tests need root (CI runs them as root)";
    home_ = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(home_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare: " << errno;
  }
  void TearDown() override {
    adapter_.reset();  // detaches
    if (home_ >= 0) {
      EXPECT_EQ(setns(home_, CLONE_NEWNET), 0);
      close(home_);
    }
  }
  void start(uint32_t max_entries) {
    FastPathConfig c;
    c.enabled = true;
    c.interfaces = {"lo"};
    c.max_entries = max_entries;
    try {
      adapter_ = std::make_unique<FastPathAdapter>(c);
    } catch (const std::runtime_error& e) {
      if (errno == EPERM || errno == ENOSYS) GTEST_SKIP() << "SKIPPED LOUDLY: no BPF: " << e.what();
      FAIL() << e.what();
    }
  }
  bool inKernel(const tandem_fp_key& k, tandem_fp_rewrite& v) const {
    return bpf_map_lookup_elem(adapter_->flowsMapFd(), &k, &v) == 0;
  }

  int home_ = -1;
  std::unique_ptr<FastPathAdapter> adapter_;
};

TEST_F(FastPathAdapterTest, InstallsWaitForCommitPutsDoNotUnlessTheirInstallIsKept) {
  start(64);
  ASSERT_NE(adapter_, nullptr);
  FastPathAdapter& a = *adapter_;
  const tandem_fp_key k1 = key(1), k2 = key(2);
  tandem_fp_rewrite got{};
  EXPECT_TRUE(a.install(k1, value(41)));
  EXPECT_EQ(a.uncommitted(), 1u);
  EXPECT_FALSE(inKernel(k1, got));  // not before the batch's verdicts are sent
  ASSERT_TRUE(a.get(k1, got));      // but the engine reads what it wrote
  EXPECT_EQ(got.flow_id, 41u);
  EXPECT_EQ(got.last_ns, 0u);
  // A change to the kept entry (a FIN through NFQUEUE in the same batch) stays with it.
  tandem_fp_rewrite fin = value(41);
  fin.fin_state = TANDEM_FP_PEER_FIN;
  fin.peer_fin_ack = 777;
  EXPECT_TRUE(a.put(k1, fin));
  EXPECT_EQ(a.uncommitted(), 1u);
  EXPECT_FALSE(inKernel(k1, got));
  // A put of a key not kept is written at once (the other direction of an install).
  EXPECT_TRUE(a.put(k2, value(42)));
  ASSERT_TRUE(inKernel(k2, got));
  EXPECT_EQ(got.flow_id, 42u);
  a.commit();
  EXPECT_EQ(a.uncommitted(), 0u);
  ASSERT_TRUE(inKernel(k1, got));
  EXPECT_EQ(got.fin_state, TANDEM_FP_PEER_FIN);
  EXPECT_EQ(got.peer_fin_ack, 777u);
  // Written now: a put goes straight to the kernel.
  EXPECT_TRUE(a.put(k1, value(43)));
  EXPECT_EQ(a.uncommitted(), 0u);
  ASSERT_TRUE(inKernel(k1, got));
  EXPECT_EQ(got.flow_id, 43u);
}

TEST_F(FastPathAdapterTest, EraseDropsAKeptInstallAndClearDropsAll) {
  start(64);
  ASSERT_NE(adapter_, nullptr);
  FastPathAdapter& a = *adapter_;
  tandem_fp_rewrite got{};
  ASSERT_TRUE(a.install(key(1), value(41)));
  ASSERT_TRUE(a.install(key(2), value(42)));
  EXPECT_TRUE(a.erase(key(1)));
  EXPECT_FALSE(a.get(key(1), got));
  EXPECT_EQ(a.uncommitted(), 1u);
  a.commit();
  EXPECT_FALSE(inKernel(key(1), got));
  EXPECT_TRUE(inKernel(key(2), got));
  ASSERT_TRUE(a.install(key(3), value(43)));
  a.clear();
  EXPECT_EQ(a.uncommitted(), 0u);
  a.commit();
  EXPECT_FALSE(inKernel(key(2), got));
  EXPECT_FALSE(inKernel(key(3), got));
}

TEST_F(FastPathAdapterTest, TakeReadsAndErasesAKeptOrAWrittenEntry) {
  start(64);
  ASSERT_NE(adapter_, nullptr);
  FastPathAdapter& a = *adapter_;
  tandem_fp_rewrite got{};
  ASSERT_TRUE(a.put(key(1), value(41)));  // in the kernel
  ASSERT_TRUE(a.install(key(2), value(42)));  // kept
  ASSERT_TRUE(a.take(key(1), got));
  EXPECT_EQ(got.flow_id, 41u);
  EXPECT_FALSE(inKernel(key(1), got));
  ASSERT_TRUE(a.take(key(2), got));
  EXPECT_EQ(got.flow_id, 42u);
  EXPECT_EQ(a.uncommitted(), 0u);
  a.commit();
  EXPECT_FALSE(inKernel(key(2), got));
  EXPECT_FALSE(a.take(key(1), got));  // gone
  EXPECT_FALSE(a.take(key(3), got));  // never there
}

TEST_F(FastPathAdapterTest, ArmedPairsWaitForFlushArmsWhichWritesThemAllAtOnce) {
  start(4);
  ASSERT_NE(adapter_, nullptr);
  FastPathAdapter& a = *adapter_;
  tandem_fp_rewrite got{};
  const tandem_fp_key k[2] = {key(1), key(2)};
  const tandem_fp_rewrite v[2] = {value(41), value(41)};
  const tandem_fp_key k2[2] = {key(3), key(4)};
  const tandem_fp_rewrite v2[2] = {value(42), value(42)};
  ASSERT_TRUE(a.putPair(k, v));
  ASSERT_TRUE(a.putPair(k2, v2));
  EXPECT_FALSE(inKernel(key(1), got));  // gathered until the batch's verdicts leave
  ASSERT_TRUE(a.get(key(3), got));     // but the engine reads what it wrote
  EXPECT_EQ(got.flow_id, 42u);
  // The engine takes one pair back before the verdicts (a RST in the same batch).
  EXPECT_TRUE(a.erase(key(3)));
  EXPECT_TRUE(a.take(key(4), got));
  EXPECT_EQ(got.flow_id, 42u);
  a.flushArms();
  EXPECT_TRUE(inKernel(key(1), got));
  EXPECT_TRUE(inKernel(key(2), got));
  EXPECT_FALSE(inKernel(key(3), got));
  EXPECT_FALSE(inKernel(key(4), got));
  // A map that refuses some: counted, the rest written, nothing left gathered.
  const tandem_fp_key k3[2] = {key(5), key(6)};
  const tandem_fp_key k4[2] = {key(7), key(8)};
  ASSERT_TRUE(a.putPair(k3, v));
  ASSERT_TRUE(a.putPair(k4, v2));
  a.flushArms();
  EXPECT_TRUE(inKernel(key(5), got));
  EXPECT_TRUE(inKernel(key(6), got));
  EXPECT_FALSE(inKernel(key(7), got));
  EXPECT_FALSE(inKernel(key(8), got));
  EXPECT_NE(a.metricsText(Counters{}).find("tandem_fastpath_map_put_failed_total 2"),
            std::string::npos);
  a.flushArms();  // nothing left: no write
}

TEST_F(FastPathAdapterTest, ACommitTheMapRefusesIsCountedAndTheRestStillGoIn) {
  start(2);
  ASSERT_NE(adapter_, nullptr);
  FastPathAdapter& a = *adapter_;
  tandem_fp_rewrite got{};
  ASSERT_TRUE(a.put(key(1), value(41)));  // the map holds two
  ASSERT_TRUE(a.install(key(2), value(42)));
  ASSERT_TRUE(a.install(key(3), value(43)));  // refused at commit: full
  ASSERT_TRUE(a.install(key(1), value(44)));  // replaces an entry: fits
  a.commit();
  EXPECT_EQ(a.uncommitted(), 0u);
  EXPECT_TRUE(inKernel(key(2), got));
  EXPECT_FALSE(inKernel(key(3), got));
  ASSERT_TRUE(inKernel(key(1), got));
  EXPECT_EQ(got.flow_id, 44u);
  const std::string text = a.metricsText(Counters{});
  EXPECT_NE(text.find("tandem_fastpath_map_put_failed_total 1\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace tandem
