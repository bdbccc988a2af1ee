#pragma once
/// @file Engine internals shared by engine.cc (classification, passthrough) and splice.cc.

#include <memory>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/flow_table.h"
#include "proxy/core/syn_cookie.h"

namespace tandem {

bool isOpeningSyn(uint8_t flags) noexcept;

struct Engine::Impl {
  Impl(const EngineConfig& c, Counters& k)
      : config(c),
        counters(k),
        table(c.max_flows, c.hash_seed),
        rr(c.services.size(), 0),
        snat_cursor(c.services.size(), 0) {}

  int findService(const IpAddr& daddr, uint16_t dport) const noexcept;
  // Splice mode (splice.cc).
  Decision spliceOpen(size_t svc, const FlowKey& key, TcpPacket& pkt, const TcpOptions& opts,
                      uint8_t* data, size_t cap, uint64_t now_ns) noexcept;
  Decision splicePending(uint32_t index, Direction dir, TcpPacket& pkt, TcpOptions& opts,
                         uint8_t* data, size_t cap, const PacketMeta& meta,
                         uint64_t now_ns) noexcept;
  Decision dropped(DropReason r) noexcept {
    counters.drop(r);
    return Decision{Verdict::kDrop, r, false, 0};
  }
  bool isBackendLeg(const FlowKey& key) const noexcept;
  DropReason createFlow(size_t svc, const FlowKey& key, FlowTable::Hit& hit) noexcept;
  void retire(uint32_t index) noexcept;
  /// Records that a flow's hard state changed (change tracking on).
  void touch(uint32_t index) noexcept {
    if (!tracking) return;
    Flow& f = table.at(index);
    if (f.dirty) return;
    f.dirty = true;
    dirty_list.push_back(index);  // capacity reserved for every flow: never reallocates
  }

  const EngineConfig& config;
  Counters& counters;
  FlowTable table;
  std::vector<uint32_t> rr;           // round-robin position per service
  std::vector<uint32_t> snat_cursor;  // next SNAT port candidate per service
  uint32_t gc_cursor = 0;
  std::unique_ptr<SynCookie> cookie;  // with any splice service

  // Change tracking for checkpointing (Engine::enableChangeTracking).
  static constexpr size_t kMaxRemovedLog = 1u << 16;
  uint64_t splice_generation = 0;  // bumped whenever a pending splice resolves
  bool standby = false;            // expiry paused (Engine::setStandby)
  bool tracking = false;
  bool lost_changes = false;
  std::vector<uint32_t> dirty_list;
  std::vector<FlowKey> removed_log;
  // A standby passing unknown client packets to the active (Engine::setPassUnknownToActive).
  bool pass_unknown = false;
  uint64_t passed_to_active = 0;
};

}  // namespace tandem
