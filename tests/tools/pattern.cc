#include "pattern.h"

#include <algorithm>
#include <cstring>

namespace tandem::tools {

void Pattern::fill(uint64_t offset, uint8_t* out, size_t n) const noexcept {
  // Head up to a block boundary, whole blocks, tail.
  while (n > 0 && (offset & 7) != 0) {
    *out++ = at(offset++);
    --n;
  }
  for (; n >= 8; n -= 8, offset += 8, out += 8) {
    const uint64_t v = block(offset >> 3);
    for (unsigned k = 0; k < 8; ++k) out[k] = static_cast<uint8_t>(v >> (8 * k));
  }
  while (n > 0) {
    *out++ = at(offset++);
    --n;
  }
}

size_t Pattern::firstMismatch(uint64_t offset, const uint8_t* data, size_t n) const noexcept {
  uint8_t expected[4096];
  size_t done = 0;
  while (done < n) {
    const size_t len = std::min(n - done, sizeof expected);
    fill(offset + done, expected, len);
    if (std::memcmp(expected, data + done, len) != 0) {
      for (size_t i = 0; i < len; ++i) {
        if (expected[i] != data[done + i]) return done + i;
      }
    }
    done += len;
  }
  return n;
}

}  // namespace tandem::tools
