#pragma once
// Test tables shared by the sync unit tests: a standby's mirror of the active's flow table, fed
// by the reliable receiver's updates, that hands BULK_END to a BulkReceiver when one is set; and
// the flow record those tests checkpoint.
#include <cstdint>
#include <unordered_map>

#include "sync/bulk.h"
#include "sync/reliable.h"

namespace tandem::sync {

/// Flow `id` of a test table: client 10.0.0.0 + id, a port from it, VIP 192.168.0.1:80, one of
/// three backends; tcp_state 3 (ESTABLISHED) unless given.
inline FlowRecord testFlow(uint32_t id, uint8_t state = 3) {
  FlowRecord f;
  f.key.client_addr = IpAddr::fromV4(0x0a000000u + id);
  f.key.vip_addr = IpAddr::fromV4(0xc0a80001u);
  f.key.client_port = static_cast<uint16_t>(1024 + id % 60000);
  f.key.vip_port = 80;
  f.backend_addr = IpAddr::fromV4(0x0b000000u + id % 3);
  f.backend_port = 8080;
  f.backend = static_cast<uint16_t>(id % 3);
  f.tcp_state = state;
  f.splice_fields = true;  // as every encoder of this revision sends it
  return f;
}

struct MirrorTable : UpdateSink {
  std::unordered_map<FlowKey, FlowRecord, FlowKeyHash> flows;
  BulkReceiver* bulk = nullptr;
  void apply(const Update& u) noexcept override {
    switch (u.kind) {
      case UpdateKind::kUpsert: flows[u.flow.key] = u.flow; break;
      case UpdateKind::kDelete: flows.erase(u.flow.key); break;
      case UpdateKind::kBulkEnd:
        if (bulk != nullptr) bulk->onBulkEnd(u.request_id, u.bulk_flows);
        break;
    }
  }
};

}  // namespace tandem::sync
