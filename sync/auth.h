#pragma once
/// @file Frame authentication: HMAC-SHA256 (RFC 2104, via OpenSSL 3 EVP_MAC), a key ring for
/// rotation, and a per-peer anti-replay window over the header's 64-bit counter.
///
/// The MAC is HMAC-SHA256 over header + sections, truncated to its first 16 bytes
/// (HMAC-SHA-256-128, as IPsec uses it: RFC 4868 section 2.6; RFC 2104 section 5 allows
/// truncation to half the hash length). 128 bits leave a forger a 2^-128 chance per try, and the
/// 16 bytes saved per frame matter at 10 ms heartbeats on two paths.
///
/// Receive order (Verifier::open): header sanity, key lookup, replay pre-check, MAC (constant
/// time, CRYPTO_memcmp), epoch, payload validation, and only then the replay window moves and the
/// handler sees the items. A frame rejected at any step changes nothing but one counter.
///
/// Counters must never repeat under one key: the daemon starts its counter from CLOCK_REALTIME
/// in nanoseconds (see Sealer), so a restarted sender is still above its peer's window.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "sync/wire.h"

namespace tandem::sync {

inline constexpr size_t kHmacSha256Len = 32;
inline constexpr size_t kMinKeyLen = 16;  ///< RFC 2104 section 3: not less than L/2 (16 bytes)
inline constexpr size_t kMaxKeyLen = 64;  ///< one SHA-256 block; longer keys would be hashed

/// Full HMAC-SHA256 of `data` under `key` through EVP_MAC. False if OpenSSL fails.
bool hmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data,
                std::span<uint8_t, kHmacSha256Len> out) noexcept;

/// Keys by id. Rotation: add the new key on both nodes (both accept it), switch the send key on
/// both, then remove the old one. Frames name their key, so the two steps need no coordination.
class KeyRing {
 public:
  KeyRing();
  ~KeyRing();
  KeyRing(const KeyRing&) = delete;
  KeyRing& operator=(const KeyRing&) = delete;

  /// Adds or replaces key `id`. Throws std::invalid_argument if the key is not kMinKeyLen to
  /// kMaxKeyLen bytes, std::runtime_error if OpenSSL cannot set it up (configuration time only).
  void add(uint16_t id, std::span<const uint8_t> key);
  void remove(uint16_t id) noexcept;
  bool has(uint16_t id) const noexcept;
  size_t size() const noexcept;
  /// Selects the key frames are sealed with. Throws std::invalid_argument if unknown.
  void setSendKey(uint16_t id);
  uint16_t sendKey() const noexcept { return send_key_; }

  /// The truncated MAC of `data` under key `id`. False if there is no such key.
  bool mac(uint16_t id, std::span<const uint8_t> data,
           std::span<uint8_t, kMacLen> out) const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t send_key_ = 0;
};

/// Sliding anti-replay window of the last kBits counters above the highest accepted one
/// (RFC 4303 section 3.4.3; a plain bitmap, as WireGuard's and RFC 6479's in spirit).
class ReplayWindow {
 public:
  static constexpr uint64_t kBits = 1024;
  /// Would `counter` be accepted? Does not change the window.
  bool check(uint64_t counter) const noexcept;
  /// Records `counter` as seen; call only after check() and authentication passed.
  void update(uint64_t counter) noexcept;
  uint64_t top() const noexcept { return top_; }

 private:
  bool testBit(uint64_t c) const noexcept { return (bits_[(c / 64) % kWords] >> (c % 64)) & 1; }
  void setBit(uint64_t c) noexcept { bits_[(c / 64) % kWords] |= uint64_t{1} << (c % 64); }
  void clearBit(uint64_t c) noexcept { bits_[(c / 64) % kWords] &= ~(uint64_t{1} << (c % 64)); }
  static constexpr size_t kWords = kBits / 64;
  std::array<uint64_t, kWords> bits_{};
  uint64_t top_ = 0;
  bool any_ = false;
};

/// Why a received frame was dropped. Each has a counter in Verifier::Counters.
enum class Reject : uint8_t {
  kNone,
  kBadMagic,
  kBadVersion,
  kBadLength,
  kUnknownKey,
  kBadMac,
  kReplay,
  kStaleEpoch,
  kBadPayload,    ///< authenticated but malformed sections (a peer bug, not an attack)
  kTooManyPeers,  ///< authenticated sender beyond the peer table (a misconfiguration)
  kCount
};
const char* rejectName(Reject r) noexcept;

/// Seals outgoing frames: key id and counter into the header, then the MAC trailer.
///
/// The counter is atomic so that two threads can seal frames of one sender: the second thread
/// gets its own Sealer over its own KeyRing (its own MAC contexts) that shares the first one's
/// counter (the sharing constructor). Counters then stay unique and increasing in the order
/// they were taken; frames can still leave (and arrive) slightly out of that order, which the
/// receiver's ReplayWindow accepts within its kBits.
class Sealer {
 public:
  /// `first_counter`: e.g. CLOCK_REALTIME in ns at startup, so counters never repeat.
  Sealer(const KeyRing& keys, uint64_t first_counter) noexcept
      : keys_(keys), own_(first_counter), counter_(&own_) {}
  /// Seals with `keys` but takes its counters from `share`'s counter space, which must outlive
  /// this sealer. seal() may then run on two threads at once (one per Sealer).
  Sealer(const KeyRing& keys, Sealer& share) noexcept : keys_(keys), counter_(share.counter_) {}
  Sealer(const Sealer&) = delete;
  Sealer& operator=(const Sealer&) = delete;
  /// Finishes `writer`'s frame with `header` (key id and counter overwritten) and writes its
  /// MAC. False if the send key is missing (the frame must then not be sent).
  bool seal(FrameWriter& writer, FrameHeader header) noexcept;
  uint64_t lastCounter() const noexcept { return counter_->load(std::memory_order_relaxed); }

 private:
  const KeyRing& keys_;
  std::atomic<uint64_t> own_{0};
  std::atomic<uint64_t>* counter_;
};

/// Authenticates received frames and dispatches their items.
class Verifier {
 public:
  using Counters = std::array<uint64_t, static_cast<size_t>(Reject::kCount)>;
  struct Result {
    Reject reject = Reject::kNone;
    WireError wire = WireError::kNone;  ///< detail of kBadMagic/kBadVersion/kBadLength/kBadPayload
    FrameHeader header;                 ///< valid when reject == kNone
  };

  explicit Verifier(const KeyRing& keys, size_t max_peers = 4) noexcept
      : keys_(keys), max_peers_(max_peers < kMaxPeers ? max_peers : kMaxPeers) {}

  /// Checks `frame` and, if it is authentic, fresh and well formed, hands its items to
  /// `handler`. Frames whose header epoch is below `min_epoch` are rejected as stale.
  Result open(std::span<const uint8_t> frame, SectionHandler& handler,
              uint32_t min_epoch = 0) noexcept;

  const Counters& counters() const noexcept { return counters_; }
  uint64_t count(Reject r) const noexcept { return counters_[static_cast<size_t>(r)]; }
  uint64_t accepted() const noexcept { return accepted_; }

 private:
  static constexpr size_t kMaxPeers = 16;
  struct Peer {
    uint32_t node_id = 0;
    bool used = false;
    ReplayWindow window;
  };
  Result reject(Reject r, WireError w = WireError::kNone) noexcept;

  const KeyRing& keys_;
  size_t max_peers_;
  std::array<Peer, kMaxPeers> peers_{};
  Counters counters_{};
  uint64_t accepted_ = 0;
};

}  // namespace tandem::sync
