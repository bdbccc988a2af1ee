// Sync authentication: RFC 4231 vectors through the EVP_MAC wrapper, a golden sealed frame
// (its MAC computed independently with Python's hmac module), key rotation, the replay window,
// and forged, replayed, stale and malformed frames each rejected, counted and without effect.
#include "sync/auth.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace tandem::sync {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes fromHex(const std::string& hex) {
  Bytes b;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    b.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  return b;
}
Bytes fromText(const std::string& s) { return Bytes(s.begin(), s.end()); }

struct Vector {
  const char* name;
  Bytes key;
  Bytes data;
  const char* mac;
};

TEST(SyncAuth, Rfc4231TestCases1To4) {
  Bytes key4;
  for (uint8_t i = 1; i <= 25; ++i) key4.push_back(i);
  const Vector vectors[] = {
      {"4.2 test case 1", Bytes(20, 0x0b), fromText("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"4.3 test case 2", fromText("Jefe"), fromText("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"4.4 test case 3", Bytes(20, 0xaa), Bytes(50, 0xdd),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"4.5 test case 4", key4, Bytes(50, 0xcd),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
  };
  for (const Vector& v : vectors) {
    uint8_t out[kHmacSha256Len];
    ASSERT_TRUE(hmacSha256(v.key, v.data, out)) << v.name;
    EXPECT_EQ(Bytes(out, out + sizeof out), fromHex(v.mac)) << v.name;
  }
}

TEST(SyncAuth, KeyRingMacIsTheTruncatedHmac) {
  KeyRing ring;
  const Bytes key(20, 0xaa);
  ring.add(3, key);
  uint8_t full[kHmacSha256Len];
  uint8_t mac[kMacLen];
  ASSERT_TRUE(hmacSha256(key, Bytes(50, 0xdd), full));
  ASSERT_TRUE(ring.mac(3, Bytes(50, 0xdd), mac));
  EXPECT_EQ(Bytes(mac, mac + kMacLen), Bytes(full, full + kMacLen));
  EXPECT_FALSE(ring.mac(4, Bytes(50, 0xdd), mac));
}

TEST(SyncAuth, KeyRingRefusesShortAndLongKeysAndUnknownSendKeys) {
  KeyRing ring;
  EXPECT_THROW(ring.add(1, Bytes(kMinKeyLen - 1, 1)), std::invalid_argument);
  EXPECT_THROW(ring.add(1, Bytes(kMaxKeyLen + 1, 1)), std::invalid_argument);
  EXPECT_THROW(ring.setSendKey(1), std::invalid_argument);
  ring.add(1, Bytes(kMinKeyLen, 1));
  EXPECT_NO_THROW(ring.setSendKey(1));
}

Bytes goldenKey() {
  Bytes k;
  for (uint8_t i = 0; i < 32; ++i) k.push_back(i);
  return k;
}

Bytes sealHeartbeat(Sealer& sealer, uint32_t node, uint32_t epoch) {
  Bytes out;
  FrameWriter w(out);
  EXPECT_TRUE(
      w.add(Heartbeat{Role::kActive, 100, true, false, epoch, 16, 10, 0x0102030405060708}));
  EXPECT_TRUE(sealer.seal(w, FrameHeader{0, 0, 0, 0, node, epoch}));
  return out;
}

TEST(SyncAuth, GoldenFrame) {
  KeyRing ring;
  ring.add(1, goldenKey());
  ring.setSendKey(1);
  Sealer sealer(ring, 1000);
  const Bytes frame = sealHeartbeat(sealer, 1, 3);
  // Header, HEARTBEAT section (revision 1.2: 24-byte item with the send time), then
  // HMAC-SHA256(key 00..1f, first 52 bytes)[0:16] computed
  // with Python's hmac module, not with this code.
  const Bytes golden = {
      0x54, 0x53, 0x01, 0x00, 0x00, 0x01, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x03, 0xe9, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03,
      0x01, 0x06, 0x00, 0x01, 0x01, 0x64, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03,
      0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x03, 0x04,
      0x05, 0x06, 0x07, 0x08, 0xdd, 0x55, 0x8e, 0xa4, 0x14, 0xaa, 0x3a, 0xf7,
      0xe0, 0xdf, 0x07, 0x28, 0x44, 0xff, 0xa4, 0x63,
  };
  EXPECT_EQ(frame, golden);
  EXPECT_EQ(sealer.lastCounter(), 1001u);
}

struct Counting : SectionHandler {
  int heartbeats = 0;
  void onHeartbeat(const Heartbeat&) noexcept override { ++heartbeats; }
};

TEST(SyncAuth, ForgedReplayedStaleAndMalformedFramesChangeNothingButACounter) {
  KeyRing ring;
  ring.add(1, goldenKey());
  ring.setSendKey(1);
  Sealer sealer(ring, 1000);
  Verifier verifier(ring);
  Counting h;

  const Bytes f1 = sealHeartbeat(sealer, 7, 5);
  const Bytes f2 = sealHeartbeat(sealer, 7, 5);
  EXPECT_EQ(verifier.open(f2, h).reject, Reject::kNone);
  EXPECT_EQ(h.heartbeats, 1);

  // Every single-bit flip anywhere in the frame is refused.
  for (size_t bit = 0; bit < f1.size() * 8; ++bit) {
    Bytes forged = f1;
    forged[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(verifier.open(forged, h).reject, Reject::kNone) << "bit " << bit;
  }
  EXPECT_EQ(h.heartbeats, 1);
  EXPECT_GT(verifier.count(Reject::kBadMac), 0u);

  // A frame sealed with a key the receiver does not hold.
  const uint64_t unknown_before = verifier.count(Reject::kUnknownKey);  // key-id bit flips
  KeyRing other;
  other.add(1, Bytes(32, 0x55));
  other.setSendKey(1);
  Sealer forger(other, 5000);
  EXPECT_EQ(verifier.open(sealHeartbeat(forger, 7, 5), h).reject, Reject::kBadMac);
  other.add(9, Bytes(32, 0x55));
  other.setSendKey(9);
  EXPECT_EQ(verifier.open(sealHeartbeat(forger, 7, 5), h).reject, Reject::kUnknownKey);

  // f1's counter is below f2's but inside the window: accepted once, then a replay.
  EXPECT_EQ(verifier.open(f1, h).reject, Reject::kNone);
  EXPECT_EQ(verifier.open(f1, h).reject, Reject::kReplay);
  EXPECT_EQ(verifier.open(f2, h).reject, Reject::kReplay);
  EXPECT_EQ(h.heartbeats, 2);

  // Stale epoch.
  EXPECT_EQ(verifier.open(sealHeartbeat(sealer, 7, 4), h, 5).reject, Reject::kStaleEpoch);
  // An authentic frame with a malformed payload (a peer bug): rejected, no items delivered.
  Bytes out;
  FrameWriter w(out);
  w.add(BulkRequest{1});
  w.finish(FrameHeader{0, 1, 0, 9999, 7, 5});
  out[kHeaderLen] = 99;  // an unknown action, then a valid MAC over it
  ASSERT_TRUE(ring.mac(1, std::span(out).first(out.size() - kMacLen),
                       std::span(out).last<kMacLen>()));
  EXPECT_EQ(verifier.open(out, h).reject, Reject::kBadPayload);

  EXPECT_EQ(verifier.count(Reject::kReplay), 2u);
  EXPECT_EQ(verifier.count(Reject::kStaleEpoch), 1u);
  EXPECT_EQ(verifier.count(Reject::kUnknownKey), unknown_before + 1);
  EXPECT_EQ(verifier.count(Reject::kBadPayload), 1u);
  EXPECT_EQ(verifier.accepted(), 2u);
  EXPECT_EQ(h.heartbeats, 2);
}

TEST(SyncAuth, RotationAcceptsOldAndNewKeysUntilTheOldIsRemoved) {
  KeyRing a, b;
  a.add(1, Bytes(32, 1));
  b.add(1, Bytes(32, 1));
  a.setSendKey(1);
  Sealer sa(a, 0);
  Verifier vb(b);
  Counting h;
  EXPECT_EQ(vb.open(sealHeartbeat(sa, 1, 1), h).reject, Reject::kNone);
  // Step 1: both nodes learn key 2; a still sends with key 1.
  a.add(2, Bytes(32, 2));
  b.add(2, Bytes(32, 2));
  const Bytes old_key_frame = sealHeartbeat(sa, 1, 1);
  // Step 2: a switches; frames under both keys are accepted.
  a.setSendKey(2);
  EXPECT_EQ(vb.open(sealHeartbeat(sa, 1, 1), h).reject, Reject::kNone);
  EXPECT_EQ(vb.open(old_key_frame, h).reject, Reject::kNone);
  // Step 3: key 1 retired.
  b.remove(1);
  a.remove(1);
  a.setSendKey(2);
  EXPECT_EQ(vb.open(old_key_frame, h).reject, Reject::kUnknownKey);
  EXPECT_EQ(vb.open(sealHeartbeat(sa, 1, 1), h).reject, Reject::kNone);
  EXPECT_EQ(h.heartbeats, 4);
}

TEST(SyncAuth, SealFailsWithoutASendKey) {
  KeyRing ring;
  ring.add(1, Bytes(32, 1));
  ring.setSendKey(1);
  ring.remove(1);
  Sealer s(ring, 0);
  Bytes out;
  FrameWriter w(out);
  w.add(BulkRequest{1});
  EXPECT_FALSE(s.seal(w, {}));
}

TEST(SyncReplayWindow, MatchesAModel) {
  // Model: every counter accepted so far, and the highest; accept iff new and within kBits.
  ReplayWindow w;
  std::vector<uint64_t> seen;
  uint64_t top = 0;
  std::mt19937_64 rng(5);
  uint64_t base = 1'000'000;
  for (int i = 0; i < 20000; ++i) {
    uint64_t c;
    switch (rng() % 4) {
      case 0: c = base + rng() % 3000; break;            // near the front, some far ahead
      case 1: c = top > 1100 ? top - rng() % 1100 : 0; break;  // around the window's edge
      case 2: c = top + 1; break;
      default: c = seen.empty() ? base : seen[rng() % seen.size()]; break;  // a replay
    }
    const bool is_new = std::find(seen.begin(), seen.end(), c) == seen.end();
    const bool model = seen.empty() || c > top || (top - c < ReplayWindow::kBits && is_new);
    ASSERT_EQ(w.check(c), model) << "i=" << i << " c=" << c << " top=" << top;
    if (model) {
      w.update(c);
      seen.push_back(c);
      if (c > top || seen.size() == 1) top = c;
    }
    if (i % 5000 == 4999) base += 10000;  // jump far ahead: the whole window resets
  }
}

}  // namespace
}  // namespace tandem::sync
