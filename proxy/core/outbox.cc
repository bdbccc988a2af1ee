#include "proxy/core/outbox.h"

#include <cstring>

namespace tandem {

Outbox::Outbox(size_t capacity) : slots_(capacity) {}

bool Outbox::push(const uint8_t* data, size_t len) noexcept {
  if (count_ >= slots_.size() || len == 0 || len > kMaxPacket) {
    ++dropped_;
    return false;
  }
  Slot& s = slots_[count_++];
  s.len = static_cast<uint8_t>(len);
  std::memcpy(s.bytes, data, len);
  return true;
}

size_t Outbox::drain(const std::function<void(const uint8_t*, size_t)>& fn) {
  const size_t n = count_;
  for (size_t i = 0; i < n; ++i) fn(slots_[i].bytes, slots_[i].len);
  count_ = 0;
  return n;
}

}  // namespace tandem
