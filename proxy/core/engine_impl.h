#pragma once
/// @file Engine internals shared by engine.cc (classification, passthrough) and splice.cc.

#include <memory>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "proxy/core/flow_table.h"
#include "proxy/core/outbox.h"
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
  // Backend health and re-splicing (resplice.cc).
  /// An UP backend of the service for a new flow by its scheduler; -1 when none is UP.
  int pickBackend(size_t svc, const FlowKey& key) noexcept;
  /// The flow may move to another backend now (resplice.h: quiescent and settled, or replayable).
  bool canMoveNow(const Flow& f, uint64_t now_ns) const noexcept;
  bool leaving(const Flow& f) const noexcept {
    return any_leaving && backends[f.service][f.backend].state != BackendState::kUp;
  }
  /// A client segment arrived for a flow whose backend is not UP: moves the flow if it is
  /// quiescent, resets it if its backend is gone. Returns the flow's index afterwards
  /// (it may change), or FlowTable::kNone if the flow was reset.
  uint32_t beforeClientSegment(uint32_t index, uint64_t now_ns) noexcept;
  /// After a forwarded segment of a splice flow: who spoke last, the quiescent point.
  void afterSegment(uint32_t index, Direction dir, bool payload, uint64_t now_ns) noexcept;
  /// A payload-less FIN or RST from the backend of an idle flow of a resplice service (a backend
  /// that died or closed an idle keep-alive connection): moves the flow instead. 1: moved,
  /// 0: untouched (process the segment), -1: the flow was reset instead.
  int absorbBackendClose(uint32_t index, bool payload, uint64_t now_ns) noexcept;
  /// Records the TSval a backend segment carried to the client (the client's clock).
  void noteToClient(Flow& f, const TcpOptions& opts) noexcept;
  uint32_t moveFlow(uint32_t index, uint64_t now_ns) noexcept;
  void resetFlow(uint32_t index, uint64_t& reason_counter) noexcept;
  bool emitOut(const struct SegmentSpec& spec) noexcept;
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

  std::vector<std::vector<BackendStats>> backends;  // [service][backend]
  bool any_leaving = false;  // some backend is not UP: flows check on every segment
  int avoid_backend = -1;    // while a flow moves: its old backend, chosen only if alone UP
  Outbox outbox{16384};
};

}  // namespace tandem
