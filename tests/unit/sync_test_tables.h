#pragma once
// Test tables shared by the sync unit tests: a standby's mirror of the active's flow table, fed
// by the reliable receiver's updates, that hands BULK_END to a BulkReceiver when one is set.
#include <unordered_map>

#include "sync/bulk.h"
#include "sync/reliable.h"

namespace tandem::sync {

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
