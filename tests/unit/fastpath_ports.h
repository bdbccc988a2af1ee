#pragma once
/// FastPathPort implementations for the BPF tests: an in-memory map (a twin engine's) and the
/// loaded program's own map (as the daemon's port, without its deferral of writes).

#include <cstring>
#include <map>

#include "proxy/core/fastpath_port.h"
#include "proxy/fastpath/kernel_fastpath.h"

namespace tandem::test {

struct FpKeyLess {
  bool operator()(const tandem_fp_key& a, const tandem_fp_key& b) const {
    return std::memcmp(&a, &b, sizeof a) < 0;
  }
};

/// A twin engine's map.
class MemoryPort : public FastPathPort {
 public:
  bool put(const tandem_fp_key& k, const tandem_fp_rewrite& v) noexcept override {
    map[k] = v;
    return true;
  }
  bool get(const tandem_fp_key& k, tandem_fp_rewrite& v) const noexcept override {
    const auto it = map.find(k);
    if (it == map.end()) return false;
    v = it->second;
    return true;
  }
  bool erase(const tandem_fp_key& k) noexcept override { return map.erase(k) > 0; }
  void clear() noexcept override { map.clear(); }
  std::map<tandem_fp_key, tandem_fp_rewrite, FpKeyLess> map;
};

/// The engine's port over the loaded program's map.
class KernelPort : public FastPathPort {
 public:
  explicit KernelPort(KernelFastPath& k) : k_(k) {}
  bool put(const tandem_fp_key& k, const tandem_fp_rewrite& v) noexcept override {
    return k_.update(k, v);
  }
  bool putPair(const tandem_fp_key* k, const tandem_fp_rewrite* v) noexcept override {
    return k_.updateBatch(k, v, 2) == 2;
  }
  bool get(const tandem_fp_key& k, tandem_fp_rewrite& v) const noexcept override {
    return k_.lookup(k, v);
  }
  bool erase(const tandem_fp_key& k) noexcept override { return k_.erase(k); }
  void clear() noexcept override { k_.clear(); }

 private:
  KernelFastPath& k_;
};

}  // namespace tandem::test
