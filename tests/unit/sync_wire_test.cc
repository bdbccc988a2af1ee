// Sync frame format: round trips of every section type, byte layout of the header and sections
// against the diagram in sync/wire.h, and a table of malformed frames with their named errors.
#include "sync/wire.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "common/bytes.h"

namespace tandem::sync {
namespace {

using Bytes = std::vector<uint8_t>;

/// Records every item it is handed.
struct Recorder : SectionHandler {
  std::vector<Heartbeat> hb;
  std::vector<SeqBase> base;
  std::vector<FlowUpsert> up;
  std::vector<FlowDelete> del;
  std::vector<BulkRequest> breq;
  std::vector<BulkEnd> bend;
  std::vector<Ack> ack;
  void onHeartbeat(const Heartbeat& v) noexcept override { hb.push_back(v); }
  void onSeqBase(const SeqBase& v) noexcept override { base.push_back(v); }
  void onFlowUpsert(const FlowUpsert& v) noexcept override { up.push_back(v); }
  void onFlowDelete(const FlowDelete& v) noexcept override { del.push_back(v); }
  void onBulkRequest(const BulkRequest& v) noexcept override { breq.push_back(v); }
  void onBulkEnd(const BulkEnd& v) noexcept override { bend.push_back(v); }
  void onAck(const Ack& v) noexcept override { ack.push_back(v); }
  size_t total() const {
    return hb.size() + base.size() + up.size() + del.size() + breq.size() + bend.size() +
           ack.size();
  }
};

FlowRecord sampleFlow(uint32_t i) {
  FlowRecord f;
  f.key.client_addr = IpAddr::fromV4(0x0a000001u + i);
  f.key.vip_addr = IpAddr::fromV4(0xc0a80001u);
  f.key.client_port = static_cast<uint16_t>(40000 + i);
  f.key.vip_port = 443;
  uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7};
  f.backend_addr = IpAddr::fromV6(v6);
  f.source_addr = IpAddr::fromV4(0x0b000001u);
  f.backend_port = 8443;
  f.source_port = static_cast<uint16_t>(20000 + i);
  f.service = 3;
  f.backend = static_cast<uint16_t>(i % 5);
  f.mode = 1;
  f.tcp_state = 3;
  f.flags = kFlowHasSeqAdj;
  f.idle_ms = 1234;
  f.expires_ms = 7'199'000;
  f.win[0] = {0x11111111u, 0x22222222u, 65535u << 7, 0x33333333u, 0, 7,
              kWinSeen | kWinScaleOffered | kWinAckSeen};
  f.win[1] = {0xfffffff0u, 0x00000010u, 29200, 0x44444444u, 0xfffffff1u, 14,
              kWinSeen | kWinFinSeen | kWinFinAcked};
  f.adj[0] = {0x80000000u, -5, 123456};
  f.adj[1] = {0x7fffffffu, 0, -2147483647 - 1};
  f.splice_fields = true;
  f.splice = {kSpliceTsAdj | kSpliceRescale | kSpliceSynSack, 9, 7, 2, 0xfedcba98u + i,
              0x01020304u, 0xa0b0c0d0u, 0x0badf00du, 501, 1460};
  return f;
}

Bytes buildAll() {
  Bytes out;
  FrameWriter w(out, 4096);
  EXPECT_TRUE(w.add(Heartbeat{Role::kActive, 200, true, true, 9, 100000, 10, 0x1789abcdef012345}));
  EXPECT_TRUE(w.add(SeqBase{0x0102030405060708ull, 77}));
  EXPECT_TRUE(w.add(FlowUpsert{78, sampleFlow(1)}));
  EXPECT_TRUE(w.add(FlowUpsert{79, sampleFlow(2)}));
  EXPECT_TRUE(w.add(FlowDelete{80, sampleFlow(3).key}));
  EXPECT_TRUE(w.add(BulkRequest{42}));
  EXPECT_TRUE(w.add(BulkEnd{81, 42, 1000000}));
  Ack a{5, 100, 2, {{102, 110}, {200, 200}, {}, {}}};
  EXPECT_TRUE(w.add(a));
  w.finish(FrameHeader{0, 7, 0, 0x1122334455667788ull, 0xabcdef01u, 9});
  return out;
}

TEST(SyncWire, RoundTripsEverySectionType) {
  const Bytes frame = buildAll();
  const HeaderResult h = decodeHeader(frame);
  ASSERT_EQ(h.error, WireError::kNone);
  EXPECT_EQ(h.header.key_id, 7);
  EXPECT_EQ(h.header.counter, 0x1122334455667788ull);
  EXPECT_EQ(h.header.node_id, 0xabcdef01u);
  EXPECT_EQ(h.header.epoch, 9u);
  EXPECT_EQ(h.payload.size(), frame.size() - kHeaderLen - kMacLen);

  Recorder r;
  const PayloadResult p = decodePayload(h.payload, r);
  ASSERT_EQ(p.error, WireError::kNone) << wireErrorName(p.error);
  EXPECT_EQ(p.sections, 7u);  // the two upserts share one section
  EXPECT_EQ(p.items, 8u);
  ASSERT_EQ(r.hb.size(), 1u);
  EXPECT_EQ(r.hb[0],
            (Heartbeat{Role::kActive, 200, true, true, 9, 100000, 10, 0x1789abcdef012345}));
  EXPECT_EQ(r.base.at(0), (SeqBase{0x0102030405060708ull, 77}));
  ASSERT_EQ(r.up.size(), 2u);
  EXPECT_EQ(r.up[0], (FlowUpsert{78, sampleFlow(1)}));
  EXPECT_EQ(r.up[1], (FlowUpsert{79, sampleFlow(2)}));
  EXPECT_EQ(r.del.at(0), (FlowDelete{80, sampleFlow(3).key}));
  EXPECT_EQ(r.breq.at(0).request_id, 42u);
  EXPECT_EQ(r.bend.at(0), (BulkEnd{81, 42, 1000000}));
  EXPECT_EQ(r.ack.at(0), (Ack{5, 100, 2, {{102, 110}, {200, 200}, {}, {}}}));
}

TEST(SyncWire, HeaderAndSectionBytesFollowTheDiagram) {
  Bytes out;
  FrameWriter w(out);
  ASSERT_TRUE(w.add(BulkRequest{0xdeadbeef}));
  w.finish(FrameHeader{0, 0x0102, 0, 0x0a0b0c0d0e0f1011ull, 0x21222324u, 0x31323334u});
  const Bytes expect = {
      0x54, 0x53, 0x01, 0x00,                          // magic "TS", version 1, flags
      0x01, 0x02, 0x00, 0x08,                          // key id, payload length 8
      0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11,  // counter
      0x21, 0x22, 0x23, 0x24,                          // node id
      0x31, 0x32, 0x33, 0x34,                          // epoch
      0x05, 0x01, 0x00, 0x01,                          // BULK_REQUEST, 1 word, 1 item
      0xde, 0xad, 0xbe, 0xef,                          // request id
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  // MAC slot, zero until sealed
  };
  EXPECT_EQ(out, expect);
}

TEST(SyncWire, WriterStopsAtTheFrameLimitAndStartsNewSections) {
  Bytes out;
  FrameWriter w(out);  // 1400 bytes
  size_t n = 0;
  while (w.add(FlowUpsert{n, sampleFlow(static_cast<uint32_t>(n))})) ++n;
  EXPECT_EQ(n, (kDefaultMaxFrame - kHeaderLen - kMacLen - kSectionHeaderLen) / kFlowUpsertLen);
  w.finish({});
  EXPECT_LE(out.size(), kDefaultMaxFrame);
  Recorder r;
  ASSERT_EQ(decodePayload(decodeHeader(out).payload, r).error, WireError::kNone);
  EXPECT_EQ(r.up.size(), n);
}

TEST(SyncWire, LongerItemsFromALaterRevisionAreReadAndTheTailSkipped) {
  // A BULK_REQUEST item of 2 words: this version knows the first.
  Bytes payload = {0x05, 0x02, 0x00, 0x02, 0, 0, 0, 1, 9, 9, 9, 9, 0, 0, 0, 2, 9, 9, 9, 9};
  Recorder r;
  const PayloadResult p = decodePayload(payload, r);
  ASSERT_EQ(p.error, WireError::kNone);
  ASSERT_EQ(r.breq.size(), 2u);
  EXPECT_EQ(r.breq[1].request_id, 2u);
}

TEST(SyncWire, UpsertOfRevision10IsReadWithoutSpliceFields) {
  // Encode a 1.1 upsert, then cut its item to the 168 bytes of revision 1.0.
  Bytes out;
  FrameWriter w(out, 4096);
  ASSERT_TRUE(w.add(FlowUpsert{5, sampleFlow(4)}));
  w.finish({});
  Bytes payload(decodeHeader(out).payload.begin(), decodeHeader(out).payload.end());
  ASSERT_EQ(payload.size(), kSectionHeaderLen + kFlowUpsertLen);
  EXPECT_EQ(payload[1], kFlowUpsertLen / 4);
  payload.resize(kSectionHeaderLen + kFlowUpsertMinLen);
  payload[1] = kFlowUpsertMinLen / 4;
  Recorder r;
  ASSERT_EQ(decodePayload(payload, r).error, WireError::kNone);
  ASSERT_EQ(r.up.size(), 1u);
  FlowRecord expect = sampleFlow(4);
  expect.splice_fields = false;
  expect.splice = {};
  EXPECT_EQ(r.up[0], (FlowUpsert{5, expect}));
  // One word less than revision 1.0 is malformed.
  payload.resize(kSectionHeaderLen + kFlowUpsertMinLen - 4);
  payload[1] = kFlowUpsertMinLen / 4 - 1;
  EXPECT_EQ(decodePayload(payload, r).error, WireError::kBadItemLength);
}

TEST(SyncWire, HeartbeatOfRevision11IsReadWithoutSendTime) {
  // Encode a 1.2 heartbeat, then cut its item to the 16 bytes of revisions 1.0 and 1.1.
  Bytes out;
  FrameWriter w(out);
  ASSERT_TRUE(w.add(Heartbeat{Role::kStandby, 100, true, false, 4, 7, 10, 123456789}));
  w.finish({});
  Bytes payload(decodeHeader(out).payload.begin(), decodeHeader(out).payload.end());
  ASSERT_EQ(payload.size(), kSectionHeaderLen + kHeartbeatLen);
  EXPECT_EQ(payload[1], kHeartbeatLen / 4);
  Recorder full;
  ASSERT_EQ(decodePayload(payload, full).error, WireError::kNone);
  EXPECT_EQ(full.hb.at(0).sent_ns, 123456789u);
  payload.resize(kSectionHeaderLen + kHeartbeatMinLen);
  payload[1] = kHeartbeatMinLen / 4;
  Recorder r;
  ASSERT_EQ(decodePayload(payload, r).error, WireError::kNone);
  EXPECT_EQ(r.hb.at(0), (Heartbeat{Role::kStandby, 100, true, false, 4, 7, 10, 0}));
  // One word less than revision 1.0 is malformed.
  payload.resize(kSectionHeaderLen + kHeartbeatMinLen - 4);
  payload[1] = kHeartbeatMinLen / 4 - 1;
  EXPECT_EQ(decodePayload(payload, r).error, WireError::kBadItemLength);
}

TEST(SyncWire, SpliceFieldsRoundTripAndAreRangeChecked) {
  FlowRecord f = sampleFlow(9);
  f.splice = {kSplicePending | kSpliceSynEcn, 14, 0, 255, UINT32_MAX, 0, 1, UINT32_MAX - 1,
              UINT16_MAX, 536};
  Bytes out;
  FrameWriter w(out);
  ASSERT_TRUE(w.add(FlowUpsert{6, f}));
  w.finish({});
  Recorder r;
  ASSERT_EQ(decodePayload(decodeHeader(out).payload, r).error, WireError::kNone);
  ASSERT_EQ(r.up.size(), 1u);
  EXPECT_EQ(r.up[0].flow, f);
  // The backend's window shift sits at item offset 168 + 1: 15 is not a valid shift.
  out[kHeaderLen + kSectionHeaderLen + kFlowUpsertMinLen + 1] = 15;
  Recorder r2;
  EXPECT_EQ(decodePayload(decodeHeader(out).payload, r2).error, WireError::kBadValue);
  EXPECT_EQ(r2.total(), 0u);
}

struct BadCase {
  const char* description;
  Bytes payload;
  WireError expected;
};

TEST(SyncWire, MalformedPayloadsAreRejectedWithANamedErrorAndNoItems) {
  Bytes upsert_bad_state(4 + kFlowUpsertLen, 0);
  upsert_bad_state[0] = 3;
  upsert_bad_state[1] = kFlowUpsertLen / 4;
  upsert_bad_state[3] = 1;
  upsert_bad_state[4 + 8 + 72 + 5] = kTcpStateCount;  // tcp_state byte
  Bytes ack_bad = Bytes(4 + kAckLen, 0);
  ack_bad[0] = 7;
  ack_bad[1] = kAckLen / 4;
  ack_bad[3] = 1;
  ack_bad[4 + 16] = kMaxAckRanges + 1;
  const BadCase cases[] = {
      {"section header cut short", {0x05, 0x01, 0x00}, WireError::kTruncatedSection},
      {"items run past the payload", {0x05, 0x01, 0x00, 0x02, 0, 0, 0, 1},
       WireError::kTruncatedSection},
      {"action 0", {0x00, 0x01, 0x00, 0x01, 0, 0, 0, 0}, WireError::kUnknownSection},
      {"action 200", {200, 0x01, 0x00, 0x01, 0, 0, 0, 0}, WireError::kUnknownSection},
      {"zero items", {0x05, 0x01, 0x00, 0x00}, WireError::kTooManyItems},
      {"count above the limit", {0x05, 0x01, 0x04, 0x01}, WireError::kTooManyItems},
      {"item shorter than known", {0x06, 0x01, 0x00, 0x01, 0, 0, 0, 0}, WireError::kBadItemLength},
      {"zero item length", {0x05, 0x00, 0x00, 0x01}, WireError::kBadItemLength},
      {"heartbeat role 3",
       {0x01, 0x04, 0x00, 0x01, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
       WireError::kBadValue},
      {"upsert TCP state out of range", upsert_bad_state, WireError::kBadValue},
      {"ack with 5 ranges", ack_bad, WireError::kBadValue},
      // A valid section first: the frame is still rejected, and nothing is delivered.
      {"valid section, then garbage", {0x05, 0x01, 0x00, 0x01, 0, 0, 0, 1, 0x09},
       WireError::kTruncatedSection},
  };
  for (const BadCase& c : cases) {
    Recorder r;
    const PayloadResult p = decodePayload(c.payload, r);
    EXPECT_EQ(p.error, c.expected) << c.description << ": got " << wireErrorName(p.error);
    EXPECT_EQ(r.total(), 0u) << c.description;
  }
}

TEST(SyncWire, MalformedHeadersAreRejected) {
  const Bytes good = buildAll();
  struct Case {
    const char* description;
    Bytes frame;
    WireError expected;
  };
  Bytes bad_magic = good;
  bad_magic[0] = 0x55;
  Bytes bad_version = good;
  bad_version[2] = 2;
  Bytes longer = good;
  longer.push_back(0);
  Bytes shorter(good.begin(), good.end() - 1);
  const Case cases[] = {
      {"empty", {}, WireError::kBadLength},
      {"header only", Bytes(good.begin(), good.begin() + kHeaderLen), WireError::kBadLength},
      {"bad magic", bad_magic, WireError::kBadMagic},
      {"bad version", bad_version, WireError::kBadVersion},
      {"one byte more", longer, WireError::kBadLength},
      {"one byte less", shorter, WireError::kBadLength},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(decodeHeader(c.frame).error, c.expected) << c.description;
  }
}

TEST(SyncWire, RandomBytesNeverCrashAndTruncationsAreAlwaysRejected) {
  const Bytes good = buildAll();
  const HeaderResult h = decodeHeader(good);
  const Bytes payload(h.payload.begin(), h.payload.end());
  for (size_t cut = 1; cut < payload.size(); ++cut) {
    Recorder r;
    const Bytes part(payload.begin(), payload.begin() + static_cast<ptrdiff_t>(cut));
    const PayloadResult p = decodePayload(part, r);
    // Cutting at a section boundary leaves a valid shorter frame; anywhere else must fail.
    if (p.error == WireError::kNone) {
      EXPECT_EQ(r.total(), p.items);
    } else {
      EXPECT_EQ(r.total(), 0u);
    }
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 20000; ++i) {
    Bytes b = payload;
    for (int k = 0; k < 4; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    b.resize(rng() % (b.size() + 1));
    Recorder r;
    const PayloadResult p = decodePayload(b, r);
    EXPECT_EQ(r.total(), p.error == WireError::kNone ? p.items : 0u);
  }
}

}  // namespace
}  // namespace tandem::sync
