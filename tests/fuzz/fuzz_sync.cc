// libFuzzer harness for the sync frame parsers (sync/wire.h, sync/auth.h). The raw input goes
// through decodeHeader() and decodePayload() directly (a fuzzer cannot forge a MAC, so this is
// how it reaches the section decoders), and through Verifier::open() with a fixed key. Invariants:
// a rejected payload delivers nothing, an accepted one delivers exactly its item count.
//
// Build: tests/fuzz/CMakeLists.txt (replay binary always, libFuzzer binary with TANDEM_FUZZ=ON).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "sync/auth.h"
#include "sync/wire.h"

namespace tandem::sync {
namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_sync: invariant violated: %s\n", what);
    std::abort();
  }
}

struct Counting final : SectionHandler {
  size_t items = 0;
  void onHeartbeat(const Heartbeat& v) noexcept override {
    check(static_cast<uint8_t>(v.role) <= kRoleMax, "role in range");
    ++items;
  }
  void onSeqBase(const SeqBase&) noexcept override { ++items; }
  void onFlowUpsert(const FlowUpsert& v) noexcept override {
    check(v.flow.tcp_state < kTcpStateCount && v.flow.mode < kModeCount, "upsert in range");
    ++items;
  }
  void onFlowDelete(const FlowDelete&) noexcept override { ++items; }
  void onBulkRequest(const BulkRequest&) noexcept override { ++items; }
  void onBulkEnd(const BulkEnd&) noexcept override { ++items; }
  void onAck(const Ack& v) noexcept override {
    check(v.range_count <= kMaxAckRanges, "ack ranges bounded");
    for (size_t i = 0; i < v.range_count; ++i) {
      check(v.ranges[i].first > v.cumulative + 1 && v.ranges[i].last >= v.ranges[i].first,
            "ack ranges above the cumulative point");
    }
    ++items;
  }
};

void checkPayload(std::span<const uint8_t> payload) {
  Counting c;
  const PayloadResult r = decodePayload(payload, c);
  if (r.error == WireError::kNone) {
    check(c.items == r.items, "accepted payload delivers every item");
  } else {
    check(c.items == 0, "rejected payload delivers nothing");
  }
}

}  // namespace
}  // namespace tandem::sync

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem::sync;
  const std::vector<uint8_t> buf(data, data + size);  // exact size: ASan sees any overread
  const std::span<const uint8_t> in(buf);
  checkPayload(in);
  const HeaderResult h = decodeHeader(in);
  if (h.error == WireError::kNone) {
    check(h.payload.size() + kHeaderLen + kMacLen == size, "lengths add up");
    checkPayload(h.payload);
  }
  static KeyRing* keys = [] {
    auto* k = new KeyRing;
    std::vector<uint8_t> key;
    for (uint8_t i = 0; i < 32; ++i) key.push_back(i);
    k->add(1, key);
    return k;
  }();
  Verifier verifier(*keys);
  Counting c;
  const Verifier::Result r = verifier.open(in, c);
  check(r.reject != Reject::kNone || verifier.accepted() == 1, "accepted frames are counted");
  if (r.reject != Reject::kNone) check(c.items == 0, "rejected frame delivers nothing");
  return 0;
}
