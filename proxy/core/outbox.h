#pragma once
/// @file Packets the engine originates without an incoming packet to rewrite (the SYN of a
/// re-spliced backend leg, the RSTs that end a flow whose backend died). The engine writes them
/// here; the I/O layer drains them to a raw socket (proxy/io/raw_sender). Bounded: a full outbox
/// refuses the packet and counts it, never allocates on the packet path.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace tandem {

class Outbox {
 public:
  /// Largest packet: IPv4 and TCP headers with 40 bytes of options.
  static constexpr size_t kMaxPacket = 100;

  explicit Outbox(size_t capacity);

  /// Copies the IPv4 packet data[0, len). False (counted in dropped()) when full or too long.
  bool push(const uint8_t* data, size_t len) noexcept;
  /// Hands every queued packet to `fn` in order and empties the outbox; returns how many.
  size_t drain(const std::function<void(const uint8_t*, size_t)>& fn);

  size_t size() const noexcept { return count_; }
  uint64_t dropped() const noexcept { return dropped_; }

 private:
  struct Slot {
    uint8_t len = 0;
    uint8_t bytes[kMaxPacket];
  };
  std::vector<Slot> slots_;  ///< sized once at construction
  size_t count_ = 0;
  uint64_t dropped_ = 0;
};

}  // namespace tandem
