#pragma once
/// @file The one place where the engine's flow state (proxy/core/flow.h) becomes the sync wire
/// record (sync/wire.h FlowRecord) and back. Pure: no I/O, time is an argument.

#include <cstdint>

#include "proxy/core/flow.h"
#include "sync/wire.h"

namespace tandem {

/// The client-leg key of the core ({client, vip}, source first) as the sync key, and back.
sync::FlowKey toSyncKey(const FlowKey& k) noexcept;
FlowKey toCoreKey(const sync::FlowKey& k) noexcept;

/// The hard state of `f` for a checkpoint; idle_ms is measured from `now_ns`.
sync::FlowRecord flowToRecord(const Flow& f, uint64_t now_ns) noexcept;

/// And back, into a fresh Flow (last_seen_ns 0: the installer sets it). False for a record this
/// node cannot translate: a bad state or mode code, or a spliced flow from a revision-1.0 sender
/// (no splice fields).
bool recordToFlow(const sync::FlowRecord& r, Flow& f) noexcept;

}  // namespace tandem
