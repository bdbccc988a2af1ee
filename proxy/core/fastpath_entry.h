#pragma once
/// @file The kernel fast path's map entry for one direction of a flow: the same translation
/// translateSegment() applies, in the form proxy/fastpath/fastpath.bpf.c applies it (constant
/// additions, no correction position). Pure.

#include "proxy/core/flow.h"
#include "proxy/fastpath/fastpath_abi.h"

namespace tandem {

/// Fills `key` (the tuple packets of `dir` arrive with) and `value` (the tuple they leave with,
/// seq/ack/timestamp additions, window rescale, dir) for flow `f`. flow_id, generation and
/// TANDEM_FP_CLOSE_FAST are the caller's (left 0); the "seen" fields are zeroed.
///
/// Returns false (the flow cannot go on the fast path) when an address is not IPv4 or a
/// direction's sequence adjustment still depends on the correction position
/// (offset_before != offset_after for either direction: seq uses this direction's, ack and SACK
/// the other's).
bool fastPathEntry(const Flow& f, Direction dir, tandem_fp_key& key,
                   tandem_fp_rewrite& value) noexcept;

/// The map key alone: the tuple packets of `dir` arrive with (IPv4 flows).
tandem_fp_key fastPathKey(const Flow& f, Direction dir) noexcept;

}  // namespace tandem
