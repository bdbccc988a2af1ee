#pragma once
/// @file The flow table: a fixed-capacity pool of flows and one open-addressing hash index over
/// both legs' tuples, so a packet from either side finds its flow and direction in O(1).
///
/// The index is sized at construction (load factor <= 0.5 at the cap) and never rehashes on the
/// packet path; buckets are 8 bytes (a hash tag and the flow index with the direction bit), and
/// deletion uses backward shifting, so no tombstones accumulate. The pool grows in chunks, so
/// flows never move and memory follows the live count up to the cap.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "proxy/core/flow.h"

namespace tandem {

class FlowTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  /// `seed` keys the hash (0 picks a random one), so remote peers cannot aim at one chain.
  explicit FlowTable(size_t max_flows, uint64_t seed = 0);
  ~FlowTable();
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;

  struct Hit {
    uint32_t index = kNone;
    Direction dir = Direction::kFromClient;
    explicit operator bool() const noexcept { return index != kNone; }
  };

  Hit find(const FlowKey& key) const noexcept { return find(key, hashKey(key)); }
  /// The same with the key's hash already computed (see prefetch()).
  Hit find(const FlowKey& key, uint64_t hash) const noexcept;

  /// Keyed hash of a tuple.
  uint64_t hashKey(const FlowKey& key) const noexcept;
  /// Batched lookups hide memory latency: prefetch the buckets of a whole batch first, then
  /// (prefetchFlow) the flows they point at, then find() each. At a million flows a lookup is
  /// two cache misses; a batch overlaps them.
  void prefetch(uint64_t hash) const noexcept {
    __builtin_prefetch(&buckets_[hash & bucket_mask_]);
  }
  void prefetchFlow(uint64_t hash) const noexcept;

  /// Takes a free flow slot; kNone when the cap is reached. The flow is value-initialised and
  /// marked in use, but not indexed until insert().
  uint32_t allocate() noexcept;
  /// Indexes both legs of an allocated flow whose addresses are filled in.
  void insert(uint32_t index) noexcept;
  /// Unindexes and frees a flow.
  void remove(uint32_t index) noexcept;

  Flow& at(uint32_t index) noexcept { return chunk(index)[index & kChunkMask]; }
  const Flow& at(uint32_t index) const noexcept { return chunk(index)[index & kChunkMask]; }

  size_t size() const noexcept { return live_; }
  size_t capacity() const noexcept { return max_flows_; }
  /// One past the highest slot ever allocated: iteration bound for scans.
  uint32_t highWater() const noexcept { return high_water_; }
  /// Bytes held by the index and the pool, for the memory-per-flow figure.
  size_t memoryBytes() const noexcept;

  static FlowKey clientKey(const Flow& f) noexcept {
    return {f.client_addr, f.vip_addr, f.client_port, f.vip_port};
  }
  static FlowKey backendKey(const Flow& f) noexcept {
    return {f.backend_addr, f.source_addr, f.backend_port, f.source_port};
  }

 private:
  /// A mapped, value-initialised chunk of kChunkSize flows; nullptr when out of memory.
  static Flow* newChunk() noexcept;
  static constexpr uint32_t kChunkBits = 14;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint32_t kChunkMask = kChunkSize - 1;

  struct Bucket {
    uint32_t tag;    ///< high hash bits | 1 (0 = empty)
    uint32_t entry;  ///< flow index << 1 | direction
  };

  bool keyMatches(uint32_t entry, const FlowKey& key) const noexcept;
  void indexInsert(const FlowKey& key, uint32_t entry) noexcept;
  void indexErase(const FlowKey& key, uint32_t entry) noexcept;
  Flow* chunk(uint32_t index) const noexcept { return chunks_[index >> kChunkBits]; }

  size_t max_flows_;
  uint64_t seed_;
  size_t bucket_mask_;
  size_t bucket_bytes_ = 0;
  Bucket* buckets_ = nullptr;  // anonymous mapping: pages are touched only as they are used
  std::vector<Flow*> chunks_;  // each an anonymous mapping of kChunkSize flows
  std::vector<uint32_t> free_;
  uint32_t high_water_ = 0;
  size_t live_ = 0;
};

}  // namespace tandem
