#pragma once
/// @file What the engine needs of a kernel fast path (pure interface; the daemon implements it
/// over KernelFastPath, the unit tests with a fake map). The engine decides which flows go on
/// the fast path and when they leave it; the port only stores and returns map entries.
///
/// Contract (the engine's side):
///  - A flow goes on the fast path lazily: on an ordinary segment (no SYN/FIN/RST) the engine
///    forwards for an established flow whose both directions were seen, nothing pending (splice
///    handshake, deferral), its service not re-splicing, its backend UP, the node not a standby;
///    a zero-window splice (ServiceConfig::zero_window_handshake) already when its backend
///    handshake completes. Such a splice's entries are written armed (TANDEM_FP_SYNACK) with
///    the backend SYN, through putPair(), so that the kernel can complete the handshake itself
///    (Engine::fastPathSpliced); the engine takes them back (erase) if a packet of the flow
///    needs it first: the SYN-ACK or a RST through NFQUEUE, client data it holds.
///    It then writes two entries, one per direction, keyed by the tuple each direction arrives
///    with, carrying exactly the translation translateSegment() applies.
///  - A flow leaves the fast path whenever the engine must see its packets again or it goes
///    away: retired, reset, moved, backend no longer UP, node becomes standby. Its entries are
///    erased; what the kernel saw (tandem_fp_rewrite's "seen" fields) refreshes the flow's idle
///    time, and its window tracking restarts liberal (as after a takeover).
///  - A packet of a fast flow can still reach the engine through NFQUEUE (SYN, FIN/RST without
///    TANDEM_FP_CLOSE_FAST, anything the program could not parse, packets in flight while the
///    entry was written): the engine handles it as a packet of that flow.
///  - Idle expiry of a fast flow asks the port for the kernel's last_ns first.

#include <cstddef>
#include <cstdint>

#include "proxy/fastpath/fastpath_abi.h"

namespace tandem {

class FastPathPort {
 public:
  virtual ~FastPathPort() = default;
  /// Writes (or replaces) one direction's entry now; false when the map refused it (full).
  /// For an entry already written whose change must be in place before the packet the engine
  /// is handling goes on (the FIN state of fastPathAfterFin: the answer to that FIN may reach
  /// the kernel before the engine's next call returns).
  virtual bool put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept = 0;
  /// Writes a new entry of a flow going on the fast path. A port may write it only once the
  /// packet being handled (and the others handled with it) are on their way, so that the
  /// flow's next packets, translated by the kernel, cannot overtake them; put() and erase()
  /// of the same key before then apply to the kept entry, get() returns it. A port that defers
  /// reports a write that fails later through Engine::fastPathInstallLost. By default: put().
  virtual bool install(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
    return put(key, value);
  }
  /// Writes both entries of an armed splice (TANDEM_FP_SYNACK) no later than the verdicts of the
  /// packets handled so far are sent: the backend SYN is among them, and its SYN-ACK must find
  /// the entries. A port may gather them and write a batch's in one system call; put(), erase()
  /// and get() of the same keys before then apply to the gathered entries. A write that fails
  /// later costs nothing but the kernel's help: the SYN-ACK comes through NFQUEUE, and the
  /// engine, erasing what is left, completes the splice itself. False when the map refused
  /// either now (none is left). By default: two put()s.
  virtual bool putPair(const tandem_fp_key* keys, const tandem_fp_rewrite* values) noexcept {
    if (!put(keys[0], values[0])) return false;
    if (put(keys[1], values[1])) return true;
    erase(keys[0]);
    return false;
  }
  /// Reads one direction's entry (with what the kernel saw); false if absent.
  virtual bool get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept = 0;
  /// Erases one direction's entry; false if absent.
  virtual bool erase(const tandem_fp_key& key) noexcept = 0;
  /// Reads and erases one direction's entry (a flow leaving for good); false if absent. By
  /// default get() then erase(); the daemon's port does both in one system call.
  virtual bool take(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept {
    if (!get(key, value)) return false;
    erase(key);
    return true;
  }
  /// Erases every entry.
  virtual void clear() noexcept = 0;
};

}  // namespace tandem
