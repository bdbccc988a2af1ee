#pragma once
/// @file Bulk resync: a standby that (re)starts, or whose update stream broke, asks for the
/// whole table; the active streams it in bounded chunks while incremental updates keep flowing.
///
/// The bulk flows travel as ordinary upserts through the same ReliableSender as the incremental
/// updates, followed by a BULK_END message, so one ordered stream carries both: a flow deleted
/// after the cursor passed it is deleted by the later delete message; one created behind the
/// cursor arrives by its own upsert; one deleted before the cursor reached it is simply not in
/// the bulk. When BULK_END is delivered, every flow that existed for the whole transfer has
/// arrived, so the standby reports ready only then.
///
/// Flow control: step() queues bulk flows only into the sender's open window
/// (ReliableSender::windowSpace()), less a share kept for incremental updates (`reserve`, at
/// most an eighth of the window), and never closer than `reserve` to a full queue. So the bulk
/// never builds a backlog: what it queues goes out at once, a live update queued meanwhile is
/// next in line behind at most one window, and the transfer advances exactly as fast as the
/// standby's acknowledgements open the window (the caller steps it when an ack arrives; a step
/// waits for kBulkMinBurst free slots, so that frames stay full).
///
/// Not covered: a flow the standby still holds but the active no longer has (its delete was lost
/// to a queue overflow) is not swept by the bulk; it ages out by its idle timeout.

#include <cstddef>
#include <cstdint>
#include <optional>

#include "sync/reliable.h"
#include "sync/wire.h"

namespace tandem::sync {

/// A bulk step waits until the window has this much room (a quarter of the window at most):
/// acks that free a few slots each would otherwise make frames of a few flows each.
inline constexpr size_t kBulkMinBurst = 64;

/// The active's flow table, walked by an opaque cursor (e.g. a slot index of the flow table).
class FlowSource {
 public:
  virtual ~FlowSource() = default;
  /// Writes the first flow at or after `cursor` into `out`, sets `cursor` just past it and
  /// returns true; false when no flow is left. Flows added or removed meanwhile may or may not
  /// be visited (the incremental stream covers them).
  virtual bool next(uint64_t& cursor, FlowRecord& out) noexcept = 0;
};

/// The active side of bulk transfers.
class BulkSender {
 public:
  struct Counters {
    uint64_t requests = 0;     ///< transfers started
    uint64_t duplicates = 0;   ///< repeated requests for the current or last transfer, ignored
    uint64_t completed = 0;
    uint64_t flows = 0;        ///< flows streamed, all transfers
  };

  /// `reserve`: queue and window space left free for incremental updates (window share capped
  /// at an eighth of the sender's window).
  explicit BulkSender(size_t reserve = 1024) noexcept : reserve_(reserve) {}

  /// A BULK_REQUEST arrived. A new request id (re)starts the transfer from the beginning.
  void onRequest(const BulkRequest& request) noexcept;
  /// Streams up to `max_flows` flows into `sender` (fewer if its queue is near full), then the
  /// BULK_END once the table is exhausted. Returns the number of flows queued. Call it every
  /// event-loop turn while active() is true.
  size_t step(FlowSource& source, ReliableSender& sender, size_t max_flows) noexcept;
  /// Abandons any transfer (e.g. this node is no longer active).
  void cancel() noexcept { active_ = false; }

  bool active() const noexcept { return active_; }
  uint32_t requestId() const noexcept { return request_id_; }
  const Counters& counters() const noexcept { return counters_; }

 private:
  size_t reserve_;
  bool active_ = false;
  bool has_request_ = false;
  uint32_t request_id_ = 0;
  uint64_t cursor_ = 0;
  uint32_t sent_ = 0;
  Counters counters_;
};

/// The standby side: asks until the transfer completes, then reports ready.
class BulkReceiver {
 public:
  /// `retry_ns`: resend the request this often until the transfer's BULK_END is delivered
  /// (requests travel outside the reliable stream; the transfer itself is reliable).
  explicit BulkReceiver(uint64_t retry_ns = 1'000'000'000) noexcept : retry_ns_(retry_ns) {}

  /// Starts asking for the table. `request_id` must differ from the previous one the active
  /// saw (e.g. low bits of CLOCK_REALTIME at the call): the active ignores a repeated id.
  void start(uint32_t request_id, uint64_t now_ns) noexcept;
  /// The request to send now, if one is due.
  std::optional<BulkRequest> poll(uint64_t now_ns) noexcept;
  /// A BULK_END was delivered (in order) by the reliable receiver. True if it completed the
  /// current request: ready() is now true.
  bool onBulkEnd(uint32_t request_id, uint32_t flows) noexcept;

  /// The table is known complete without a transfer (a clean planned handover): stop asking.
  void markComplete() noexcept {
    waiting_ = false;
    ready_ = true;
  }
  bool ready() const noexcept { return ready_; }
  bool waiting() const noexcept { return waiting_; }
  uint32_t lastFlows() const noexcept { return last_flows_; }

 private:
  uint64_t retry_ns_;
  bool waiting_ = false;
  bool ready_ = false;
  uint32_t request_id_ = 0;
  uint64_t next_request_ns_ = 0;
  uint32_t last_flows_ = 0;
};

}  // namespace tandem::sync
