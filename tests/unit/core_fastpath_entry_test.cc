// fastPathEntry: the kernel fast path's map entries carry the translation translateSegment()
// applies (tuples in wire order, seq/ack/timestamp additions, window rescale), and refuse flows
// whose adjustment still depends on a correction position. Pure (no BPF); the golden
// comparison with the kernel's translation is in fastpath_bpf_test.cc.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include "proxy/core/fastpath_entry.h"

namespace tandem {
namespace {

Flow makeFlow() {
  Flow f;
  f.client_addr = *IpAddr::parse("10.0.0.2");
  f.client_port = 40000;
  f.vip_addr = *IpAddr::parse("10.0.0.100");
  f.vip_port = 80;
  f.backend_addr = *IpAddr::parse("10.1.0.2");
  f.backend_port = 8080;
  f.source_addr = *IpAddr::parse("10.1.0.1");
  f.source_port = 30000;
  f.in_use = true;
  return f;
}

uint32_t wire(const char* a) { return inet_addr(a); }

TEST(FastPathEntry, TuplesInWireOrderBothDirections) {
  const Flow f = makeFlow();
  tandem_fp_key k;
  tandem_fp_rewrite v;
  ASSERT_TRUE(fastPathEntry(f, Direction::kFromClient, k, v));
  EXPECT_EQ(k.saddr, wire("10.0.0.2"));
  EXPECT_EQ(k.daddr, wire("10.0.0.100"));
  EXPECT_EQ(k.sport, htons(40000));
  EXPECT_EQ(k.dport, htons(80));
  EXPECT_EQ(v.saddr, wire("10.1.0.1"));
  EXPECT_EQ(v.daddr, wire("10.1.0.2"));
  EXPECT_EQ(v.sport, htons(30000));
  EXPECT_EQ(v.dport, htons(8080));
  EXPECT_EQ(v.flags, 0u);
  EXPECT_EQ(v.dir, 0u);

  ASSERT_TRUE(fastPathEntry(f, Direction::kFromBackend, k, v));
  EXPECT_EQ(k.saddr, wire("10.1.0.2"));
  EXPECT_EQ(k.daddr, wire("10.1.0.1"));
  EXPECT_EQ(k.sport, htons(8080));
  EXPECT_EQ(k.dport, htons(30000));
  EXPECT_EQ(v.saddr, wire("10.0.0.100"));
  EXPECT_EQ(v.daddr, wire("10.0.0.2"));
  EXPECT_EQ(v.sport, htons(80));
  EXPECT_EQ(v.dport, htons(40000));
  EXPECT_EQ(v.dir, 1u);
  EXPECT_EQ(v.flow_id, 0u);
  EXPECT_EQ(v.last_ns, 0u);
}

TEST(FastPathEntry, SpliceOffsetsTimestampsAndWindow) {
  Flow f = makeFlow();
  f.has_seqadj = true;
  f.adj[dirIndex(Direction::kFromBackend)] = {123, -0x1000, -0x1000};
  f.has_ts_adj = true;
  f.ts_offset = 0xfffffff0u;
  f.rescale_window = true;
  f.backend_wscale = 9;
  f.client_view_wscale = 7;
  tandem_fp_key k;
  tandem_fp_rewrite v;
  ASSERT_TRUE(fastPathEntry(f, Direction::kFromBackend, k, v));
  EXPECT_EQ(v.flags, TANDEM_FP_SEQ | TANDEM_FP_TS | TANDEM_FP_WIN);
  EXPECT_EQ(v.seq_add, static_cast<uint32_t>(-0x1000));
  EXPECT_EQ(v.ack_add, 0u);
  EXPECT_EQ(v.tsval_add, 0xfffffff0u);
  EXPECT_EQ(v.tsecr_add, 0u);
  EXPECT_EQ(v.win_shift_in, 9u);
  EXPECT_EQ(v.win_shift_out, 7u);

  ASSERT_TRUE(fastPathEntry(f, Direction::kFromClient, k, v));
  EXPECT_EQ(v.flags, TANDEM_FP_SEQ | TANDEM_FP_TS);  // windows are rescaled backend->client only
  EXPECT_EQ(v.seq_add, 0u);
  EXPECT_EQ(v.ack_add, 0x1000u);  // acks of backend bytes map back into the backend's space
  EXPECT_EQ(v.tsval_add, 0u);
  EXPECT_EQ(v.tsecr_add, 0x10u);
}

TEST(FastPathEntry, RefusesPositionDependentOffsetsAndIpv6) {
  Flow f = makeFlow();
  f.has_seqadj = true;
  f.adj[dirIndex(Direction::kFromClient)] = {1000, 0, 50};
  tandem_fp_key k;
  tandem_fp_rewrite v;
  EXPECT_FALSE(fastPathEntry(f, Direction::kFromClient, k, v));   // its seq
  EXPECT_FALSE(fastPathEntry(f, Direction::kFromBackend, k, v));  // its ack
  f.adj[dirIndex(Direction::kFromClient)] = {1000, 50, 50};
  EXPECT_TRUE(fastPathEntry(f, Direction::kFromBackend, k, v));
  f = makeFlow();
  f.backend_addr = *IpAddr::parse("fd00::2");
  EXPECT_FALSE(fastPathEntry(f, Direction::kFromClient, k, v));
}

}  // namespace
}  // namespace tandem
