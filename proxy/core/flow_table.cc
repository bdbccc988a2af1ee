#include "proxy/core/flow_table.h"

#include <sys/mman.h>

#include <cstring>
#include <memory>
#include <new>
#include <random>
#include <stdexcept>

namespace tandem {
namespace {

inline uint64_t mix(uint64_t v) noexcept {
  v ^= v >> 31;
  v *= 0x9e3779b97f4a7c15ull;
  v ^= v >> 29;
  return v;
}

inline uint64_t word(const IpAddr& a, size_t half) noexcept {
  uint64_t w;
  std::memcpy(&w, a.bytes().data() + 8 * half, 8);
  return w;
}

/// Zeroed anonymous memory, backed by transparent huge pages where the kernel allows: at a
/// million flows a lookup is two cache misses, and 4 KiB pages would add TLB misses to both.
void* mapLarge(size_t bytes) noexcept {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failure only costs speed
  return p;
}

/// Faults a whole mapping in now, at start-up, instead of page by page on the packet path: the
/// first touch of a huge page zeroes 2 MiB and, on a busy or virtualised host, takes from 0.1 to
/// several ms; the first connections after a start (on both nodes of a pair at once: the
/// active creates their flows while the standby installs them) would otherwise stall the loop
/// for tens of ms. MADV_POPULATE_WRITE (Linux 5.14) keeps the huge pages; else one write a page.
void populate(void* p, size_t bytes) noexcept {
#ifdef MADV_POPULATE_WRITE
  if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
  volatile char* c = static_cast<volatile char*>(p);
  for (size_t off = 0; off < bytes; off += 4096) c[off] = 0;
}

size_t roundUpPow2(size_t v) {
  size_t p = 16;
  while (p < v) p <<= 1;
  return p;
}

}  // namespace

FlowTable::FlowTable(size_t max_flows, uint64_t seed) : max_flows_(max_flows), seed_(seed) {
  if (max_flows == 0 || max_flows > (1u << 30)) throw std::invalid_argument("max_flows out of range");
  if (seed_ == 0) {
    std::random_device rd;
    seed_ = (uint64_t{rd()} << 32) | rd();
  }
  // Two keys per flow, load factor <= 0.5.
  const size_t buckets = roundUpPow2(max_flows * 4);
  bucket_mask_ = buckets - 1;
  bucket_bytes_ = buckets * sizeof(Bucket);
  buckets_ = static_cast<Bucket*>(mapLarge(bucket_bytes_));
  if (buckets_ == nullptr) throw std::bad_alloc();
  populate(buckets_, bucket_bytes_);
  chunks_.resize((max_flows + kChunkSize - 1) / kChunkSize, nullptr);
  free_.reserve(max_flows);
  // The first chunk now too (the others are built as the table grows, one mapping at a time).
  chunks_[0] = newChunk();
  if (chunks_[0] == nullptr) throw std::bad_alloc();
}

Flow* FlowTable::newChunk() noexcept {
  void* mem = mapLarge(kChunkSize * sizeof(Flow));
  if (mem == nullptr) return nullptr;
  Flow* c = static_cast<Flow*>(mem);
  std::uninitialized_default_construct_n(c, kChunkSize);  // Flow is trivially destructible
  return c;
}

FlowTable::~FlowTable() {
  munmap(buckets_, bucket_bytes_);
  for (Flow* c : chunks_)
    if (c != nullptr) munmap(c, kChunkSize * sizeof(Flow));
}

uint64_t FlowTable::hashKey(const FlowKey& k) const noexcept {
  uint64_t h = seed_;
  h = mix(h ^ word(k.saddr, 0));
  h = mix(h ^ word(k.saddr, 1));
  h = mix(h ^ word(k.daddr, 0));
  h = mix(h ^ word(k.daddr, 1));
  h = mix(h ^ ((uint64_t{k.sport} << 16) | k.dport));
  return h;
}

bool FlowTable::keyMatches(uint32_t entry, const FlowKey& k) const noexcept {
  const Flow& f = at(entry >> 1);
  if ((entry & 1) == 0) {
    return f.client_port == k.sport && f.vip_port == k.dport && f.client_addr == k.saddr &&
           f.vip_addr == k.daddr;
  }
  return f.backend_port == k.sport && f.source_port == k.dport && f.backend_addr == k.saddr &&
         f.source_addr == k.daddr;
}

void FlowTable::prefetchFlow(uint64_t h) const noexcept {
  const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;
  for (size_t i = h & bucket_mask_;; i = (i + 1) & bucket_mask_) {
    const Bucket& b = buckets_[i];
    if (b.tag == 0) return;
    if (b.tag == tag) {
      // A flow spans three cache lines; the tracker and translator touch all of them.
      const char* f = reinterpret_cast<const char*>(&at(b.entry >> 1));
      for (size_t off = 0; off < sizeof(Flow); off += 64) __builtin_prefetch(f + off);
      return;
    }
  }
}

FlowTable::Hit FlowTable::find(const FlowKey& key, uint64_t h) const noexcept {
  const uint32_t tag = static_cast<uint32_t>(h >> 32) | 1u;
  for (size_t i = h & bucket_mask_;; i = (i + 1) & bucket_mask_) {
    const Bucket& b = buckets_[i];
    if (b.tag == 0) return {};
    if (b.tag == tag && keyMatches(b.entry, key))
      return {b.entry >> 1, static_cast<Direction>(b.entry & 1)};
  }
}

void FlowTable::indexInsert(const FlowKey& key, uint32_t entry) noexcept {
  const uint64_t h = hashKey(key);
  size_t i = h & bucket_mask_;
  while (buckets_[i].tag != 0) i = (i + 1) & bucket_mask_;
  buckets_[i] = {static_cast<uint32_t>(h >> 32) | 1u, entry};
}

void FlowTable::indexErase(const FlowKey& key, uint32_t entry) noexcept {
  size_t i = hashKey(key) & bucket_mask_;
  while (buckets_[i].tag != 0 && buckets_[i].entry != entry) i = (i + 1) & bucket_mask_;
  if (buckets_[i].tag == 0) return;  // not indexed
  // Backward-shift deletion (Knuth 6.4 algorithm R): keep every probe chain unbroken.
  size_t hole = i;
  for (size_t j = (i + 1) & bucket_mask_; buckets_[j].tag != 0; j = (j + 1) & bucket_mask_) {
    const Flow& f = at(buckets_[j].entry >> 1);
    const FlowKey k = (buckets_[j].entry & 1) ? backendKey(f) : clientKey(f);
    const size_t home = hashKey(k) & bucket_mask_;
    // Move j into the hole if its home is not cyclically within (hole, j].
    const bool home_in_range =
        hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!home_in_range) {
      buckets_[hole] = buckets_[j];
      hole = j;
    }
  }
  buckets_[hole] = {0, 0};
}

uint32_t FlowTable::allocate() noexcept {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    if (high_water_ >= max_flows_) return kNone;
    index = high_water_;
    Flow*& c = chunks_[index >> kChunkBits];
    if (c == nullptr) {
      c = newChunk();
      if (c == nullptr) return kNone;
    }
    ++high_water_;
  }
  Flow& f = at(index);
  f = Flow{};
  f.in_use = true;
  ++live_;
  return index;
}

void FlowTable::insert(uint32_t index) noexcept {
  const Flow& f = at(index);
  indexInsert(clientKey(f), index << 1);
  indexInsert(backendKey(f), (index << 1) | 1);
}

void FlowTable::remove(uint32_t index) noexcept {
  Flow& f = at(index);
  if (!f.in_use) return;
  indexErase(clientKey(f), index << 1);
  indexErase(backendKey(f), (index << 1) | 1);
  f.in_use = false;
  free_.push_back(index);  // capacity reserved up front: never reallocates
  --live_;
}

size_t FlowTable::memoryBytes() const noexcept {
  size_t chunks = 0;
  for (const Flow* c : chunks_) chunks += c != nullptr ? 1 : 0;
  return (bucket_mask_ + 1) * sizeof(Bucket) + chunks * kChunkSize * sizeof(Flow) +
         free_.capacity() * sizeof(uint32_t);
}

}  // namespace tandem
