#pragma once
/// @file Engine internals shared by engine.cc (classification, passthrough) and splice.cc.

#include <memory>
#include <vector>

#include "common/packet.h"
#include "common/segment_writer.h"
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
        snat_cursor(c.services.size(), 0) {
    outbox.reserve(kMaxOutbox);
    syn_timers.reserve(kMaxSynTimers);
  }

  int findService(const IpAddr& daddr, uint16_t dport) const noexcept;
  // Splice mode (splice.cc).
  Decision spliceOpen(size_t svc, const FlowKey& key, TcpPacket& pkt, const TcpOptions& opts,
                      uint8_t* data, size_t cap, uint64_t now_ns) noexcept;
  Decision splicePending(uint32_t index, Direction dir, TcpPacket& pkt, TcpOptions& opts,
                         uint8_t* data, size_t cap, const PacketMeta& meta,
                         uint64_t now_ns) noexcept;
  Decision spliceBindOnData(uint32_t index, TcpPacket& pkt, const TcpOptions& opts,
                            uint8_t* data, size_t cap, const PacketMeta& meta,
                            uint64_t now_ns) noexcept;
  /// Moves a flow to another backend of its service (bind = data); returns its new index.
  uint32_t spliceRebind(uint32_t index, uint16_t backend) noexcept;
  /// Timer work of splice mode, from expire(): backend SYNs sent again on their own clock.
  void spliceTick(uint64_t now_ns) noexcept;
  Decision dropped(DropReason r) noexcept {
    counters.drop(r);
    return Decision{Verdict::kDrop, r, false, 0};
  }
  bool isBackendLeg(const FlowKey& key) const noexcept;
  /// `backend` >= 0 forces that backend of the pool instead of the scheduler's choice.
  DropReason createFlow(size_t svc, const FlowKey& key, FlowTable::Hit& hit,
                        int backend = -1) noexcept;
  void retire(uint32_t index) noexcept;
  /// Records that a flow's hard state changed (change tracking on).
  void touch(uint32_t index) noexcept {
    if (!tracking) return;
    Flow& f = table.at(index);
    if (f.dirty) return;
    f.dirty = true;
    dirty_list.push_back(index);  // capacity reserved for every flow: never reallocates
  }

  /// Deferral: hold the backend's SYN-ACK of a flow the standby does not know yet.
  bool holdForSync(const Flow& f, Direction dir, uint8_t flags,
                   const PacketMeta& meta) noexcept {
    constexpr uint8_t kMask = tcpflag::kSyn | tcpflag::kAck | tcpflag::kRst;
    if (!defer || !f.sync_pending || dir != Direction::kFromBackend || !meta.can_hold ||
        (flags & kMask) != (tcpflag::kSyn | tcpflag::kAck))
      return false;
    ++counters.sync_deferred;
    return true;
  }

  const EngineConfig& config;
  Counters& counters;
  FlowTable table;
  std::vector<uint32_t> rr;           // round-robin position per service
  std::vector<uint32_t> snat_cursor;  // next SNAT port candidate per service
  uint32_t gc_cursor = 0;
  std::unique_ptr<SynCookie> cookie;  // with any splice service
  int64_t cookie_clock_offset_ns = 0;  // Engine::setCookieClockOffset

  // Change tracking for checkpointing (Engine::enableChangeTracking).
  static constexpr size_t kMaxRemovedLog = 1u << 16;
  uint64_t splice_generation = 0;  // bumped whenever a pending splice resolves
  bool standby = false;            // expiry paused (Engine::setStandby)
  bool tracking = false;
  bool defer = false;              // Engine::setSyncDeferral
  bool lost_changes = false;
  std::vector<uint32_t> dirty_list;
  std::vector<FlowKey> removed_log;

  // Packets the engine originates on its own (Engine::drainOutbox): splice SYNs sent while the
  // client's segment that caused them is held, and those of the resend timer.
  struct OutPacket {
    uint8_t len = 0;
    uint8_t bytes[60];
  };
  static constexpr size_t kMaxOutbox = 1024;
  std::vector<OutPacket> outbox;  // capacity reserved: never reallocates
  bool queueOut(const SegmentSpec& spec) noexcept;
  // Flows whose backend SYN is out, for spliceTick(); stale or duplicate entries are skipped.
  static constexpr size_t kMaxSynTimers = 4096;
  std::vector<uint32_t> syn_timers;  // capacity reserved; when full, only the client's
                                     // retransmissions resend the SYN
  void armSynTimer(uint32_t index) noexcept {
    if (syn_timers.size() < kMaxSynTimers) syn_timers.push_back(index);
  }
};

}  // namespace tandem
