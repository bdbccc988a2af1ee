#pragma once
/// @file Reliable, ordered delivery of flow updates between the pair, apart from the frame format
/// and the transport (after conntrack-tools' sync-ftfw.c, without its globals).
///
/// Sender: every update gets the next sequence number of the sender's session and waits in a
/// bounded queue until the peer acknowledges it. Updates not yet transmitted coalesce by flow
/// key: a newer upsert replaces the pending one in place, a delete replaces a pending upsert (so
/// the receiver still drops the flow if an earlier upsert of it had arrived). A transmitted
/// message is never altered: a later update of the same flow is a new message.
///
/// Flow control (a send window, as TCP's receive window): at most `window` messages are in
/// flight, counted from the oldest unacknowledged one (seqs [base, base + window)); poll()
/// transmits nothing new past that edge, so the peer's socket buffer and reorder ring never
/// hold more than one window. Each acknowledgement that advances the base opens the window
/// again: the caller polls on acks (ack-clocked), not on a timer.
///
/// Loss detection (after RACK, RFC 8985, with no reordering allowance: the sync link is one
/// UDP path, which keeps order): every transmission gets an increasing number; a message not
/// yet acknowledged whose last transmission is older than one the peer has acknowledged since
/// (cumulatively or by range) was lost, and is resent at the next poll(). A resent message
/// counts, once acknowledged, as of its first transmission: the ack may be the first copy's
/// (Karn's ambiguity), and taking it for the resend's would mark the whole window sent in
/// between lost (a stalled peer's ack of a probed message; one wrong guess would cascade,
/// each round of resends marking the next window lost). Only when no acknowledgement makes
/// progress for `resend_after_ns` (the tail of the stream was lost, or the peer stalled) does
/// a timeout resend the oldest unacknowledged messages, at most
/// kTimeoutProbe of them, backing off (x2, up to x32) while nothing moves, and enter
/// recovery: while acks cover resent messages only, each such ack lets twice as many of the
/// messages sent before the timeout go again, oldest first (as TCP's slow start after a
/// timeout), so a lost tail of any length is resent in a few round trips; the first ack that
/// covers a message never resent ends it (the peer had only stalled, or the rule above takes
/// over). A stalled peer thus gets a few duplicates, not the whole window again.
///
/// Receiver: delivers **in order** (a bounded reorder buffer holds what arrives early), so a
/// reordered delete can never be overtaken by an older upsert; acknowledges cumulatively plus up
/// to four received ranges above the cumulative point (as TCP SACK, RFC 2018), so the sender
/// resends only the holes. Applying an update is also idempotent by flow key (an upsert
/// overwrites, a delete of an unknown key is a no-op), which makes a resync harmless.
///
/// Sessions: a sender picks a session id at start (CLOCK_REALTIME ns: increasing across
/// restarts) and tags each frame's updates with {session, base}; base is the lowest seq it may
/// still resend. A receiver follows the newest session and ignores older ones.
///
/// Bounded everything: a full queue refuses the update and raises resyncNeeded() (the owner then
/// re-sends the table with a bulk transfer, bulk.h); the reorder buffer drops what lies beyond
/// it, and the sender resends it later.
///
/// Time is an argument (`now_ns`, monotonic); nothing here reads a clock.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "sync/wire.h"

namespace tandem::sync {

enum class UpdateKind : uint8_t { kUpsert, kDelete, kBulkEnd };

/// One reliable message. Maps 1:1 to FLOW_UPSERT, FLOW_DELETE or BULK_END items.
struct Update {
  UpdateKind kind = UpdateKind::kUpsert;
  uint64_t seq = 0;
  FlowRecord flow;          ///< kUpsert: the state; kDelete: only flow.key is meaningful
  uint32_t request_id = 0;  ///< kBulkEnd
  uint32_t bulk_flows = 0;  ///< kBulkEnd
};

struct ReliableConfig {
  size_t max_pending = 65536;              ///< queued + unacknowledged messages, at most
  uint64_t resend_after_ns = 30'000'000;   ///< no ack progress this long: probe (see above)
  /// Messages in flight at most (from the oldest unacknowledged one). At most the peer's
  /// reorder window (ReliableReceiver, kMaxSendWindow); sized so that one window of frames
  /// fits the peer's socket receive buffer (8192 upserts: about 1,200 datagrams of 1.4 kB).
  size_t window = 8192;
};

/// The largest send window: the receiver's default reorder window.
inline constexpr size_t kMaxSendWindow = 65536;
/// Messages a resend timeout retransmits at most (one frame's worth of upserts).
inline constexpr size_t kTimeoutProbe = 8;

/// The sending half, owned by the node that produces updates (the active).
class ReliableSender {
 public:
  struct Counters {
    uint64_t queued = 0;     ///< messages given a seq
    uint64_t sent = 0;       ///< first transmissions
    uint64_t resent = 0;
    uint64_t acked = 0;
    uint64_t coalesced = 0;  ///< updates folded into a pending message
    uint64_t overflow = 0;   ///< updates refused because the queue was full
    uint64_t bad_acks = 0;   ///< acks of another session or of unsent seqs
    uint64_t lost = 0;       ///< resends of messages found lost (a later one was acked)
    uint64_t timeouts = 0;   ///< resend timeouts (no ack progress for resend_after_ns)
    uint64_t window_full = 0;  ///< polls that left messages unsent: the window was full
  };

  ReliableSender(ReliableConfig config, uint64_t session) noexcept;

  /// Queues the state of one flow. False if the queue is full (counted; resyncNeeded() set).
  /// `seq`, if given, receives the seq of the message that carries it (an earlier unsent one
  /// when it coalesced): delivered(seq) then says when the peer has it.
  bool upsert(const FlowRecord& flow, uint64_t* seq = nullptr) noexcept;
  /// The peer acknowledged message `seq` of this session (cumulatively or as a range).
  bool delivered(uint64_t seq) const noexcept;
  /// Queues the deletion of one flow. False if the queue is full.
  bool remove(const FlowKey& key) noexcept;
  /// Queues the end marker of bulk transfer `request_id`, ordered after everything before it.
  bool bulkEnd(uint32_t request_id, uint32_t flows) noexcept;

  /// Appends to `out` at most `max` messages to transmit now: resends of messages found lost,
  /// then first transmissions in seq order while the window allows, then a timeout probe if
  /// no ack made progress for resend_after_ns (backed off). Returns how many.
  size_t poll(uint64_t now_ns, size_t max, std::vector<Update>& out);
  /// The {session, base} to put in front of the updates of every frame.
  SeqBase base() const noexcept;
  /// Processes the peer's acknowledgement.
  void onAck(const Ack& ack) noexcept;
  /// Earliest time poll() has something to resend (0: at once), or UINT64_MAX; for the
  /// caller's timer. The timeout counts from the last poll() after an ack made progress.
  uint64_t nextResendNs() const noexcept;

  size_t pending() const noexcept { return queue_.size(); }
  size_t space() const noexcept { return config_.max_pending - queue_.size(); }
  /// Messages transmitted and not yet cumulatively acknowledged.
  size_t inFlight() const noexcept { return first_unsent_; }
  /// Queued messages not transmitted yet.
  size_t unsent() const noexcept { return queue_.size() - first_unsent_; }
  /// Messages that can be queued now and still go out at once: the window minus everything
  /// queued. A bulk transfer queues only into this (bulk.h), so it never builds a backlog
  /// that live updates would wait behind.
  size_t windowSpace() const noexcept {
    return queue_.size() >= config_.window ? 0 : config_.window - queue_.size();
  }
  /// poll() would transmit something now: lost messages, or unsent ones the window allows.
  bool sendable() const noexcept {
    return loss_scan_due_ || recovery_due_ || (unsent() > 0 && first_unsent_ < config_.window);
  }
  size_t window() const noexcept { return config_.window; }
  bool idle() const noexcept { return queue_.empty(); }
  bool resyncNeeded() const noexcept { return resync_needed_; }
  void clearResyncNeeded() noexcept { resync_needed_ = false; }
  /// Forgets every message and starts session `session` (e.g. the peer restarted).
  void reset(uint64_t session) noexcept;
  const Counters& counters() const noexcept { return counters_; }
  uint64_t session() const noexcept { return session_; }

 private:
  struct Entry {
    Update update;
    uint64_t last_sent_ns = 0;
    uint64_t tx = 0;  ///< number of its last transmission (increasing across all messages)
    uint64_t first_tx = 0;  ///< number of its first transmission
    bool sent = false;
    bool sacked = false;
    bool resent = false;
  };
  bool enqueue(const Update& u) noexcept;
  Entry* at(uint64_t seq) noexcept;
  void transmit(Entry& e, uint64_t now_ns, std::vector<Update>& out) noexcept;
  void noteDelivered(const Entry& e) noexcept;

  ReliableConfig config_;
  uint64_t session_;
  uint64_t next_seq_ = 1;
  std::deque<Entry> queue_;       ///< seqs [queue_.front().update.seq, next_seq_)
  size_t first_unsent_ = 0;       ///< index in queue_; everything before it was sent once
  /// Flow key -> seq of its message not yet transmitted (the only ones that coalesce).
  std::unordered_map<FlowKey, uint64_t, FlowKeyHash> unsent_by_key_;
  bool resync_needed_ = false;
  uint64_t next_tx_ = 1;
  uint64_t delivered_tx_ = 0;    ///< highest transmission number the peer acknowledged
  bool loss_scan_due_ = false;   ///< an ack raised delivered_tx_: look for lost messages
  bool progress_ = false;        ///< an ack made progress since the last poll()
  uint64_t last_progress_ns_ = 0;  ///< poll() time of the last progress (timeout base)
  unsigned backoff_ = 0;         ///< consecutive timeouts without progress
  bool recovery_ = false;        ///< after a timeout, see above
  bool recovery_due_ = false;    ///< an ack covered resent messages only: send the next burst
  uint64_t recovery_tx_ = 0;     ///< messages last sent before this number are candidates
  size_t burst_ = 0;             ///< messages the next recovery burst resends at most
  size_t resendOld(uint64_t now_ns, size_t max, std::vector<Update>& out) noexcept;
  Counters counters_;
};

/// Receives delivered updates, in seq order, exactly once each per session.
class UpdateSink {
 public:
  virtual ~UpdateSink() = default;
  virtual void apply(const Update& u) noexcept = 0;
};

/// The receiving half, owned by the node that mirrors the table (the standby).
class ReliableReceiver {
 public:
  struct Counters {
    uint64_t delivered = 0;
    uint64_t duplicates = 0;      ///< already delivered or already buffered
    uint64_t beyond_window = 0;   ///< too far ahead to buffer; the sender will resend
    uint64_t stale_session = 0;   ///< frames of a session older than the current one
    uint64_t new_session = 0;     ///< the sender (re)started
    uint64_t lost = 0;            ///< messages the sender gave up on (base moved past them)
  };

  /// `window`: how many messages past the next expected one can be buffered.
  /// The default matches ReliableConfig::max_pending: the sender never has more messages out,
  /// so after a lost frame everything that follows is buffered instead of being dropped and
  /// resent (with 4096, a 1M-flow bulk resync lost to one overflow resent up to 1M messages).
  explicit ReliableReceiver(UpdateSink& sink, size_t window = 65536);

  /// One frame's worth: its {session, base} and its updates, in frame order. Delivers whatever
  /// became in order. Never throws, never allocates.
  void onFrame(const SeqBase& base, std::span<const Update> updates) noexcept;
  /// The acknowledgement to send now (cumulative + up to kMaxAckRanges buffered ranges).
  Ack ack() const noexcept;
  /// Something arrived since the last ackSent().
  bool ackDue() const noexcept { return ack_due_; }
  void ackSent() noexcept { ack_due_ = false; }
  /// A message was lost for good or the sender restarted: the table may miss updates.
  bool resyncNeeded() const noexcept { return resync_needed_; }
  void clearResyncNeeded() noexcept { resync_needed_ = false; }
  /// After a planned handover whose every update was acknowledged, this node's table equals the
  /// new active's: the next session it hears (the new active's) is followed from its first
  /// message without raising resyncNeeded(), provided that session starts at seq 1 (nothing of
  /// it was given up on before it reached us).
  void followNextSession() noexcept { follow_next_ = true; }
  /// Withdraws followNextSession() (the handover failed, or the table is being resynced).
  void cancelFollow() noexcept { follow_next_ = false; }
  bool hasSession() const noexcept { return has_session_; }
  uint64_t expected() const noexcept { return expected_; }
  const Counters& counters() const noexcept { return counters_; }

 private:
  struct Slot {
    bool present = false;
    Update update;
  };
  Slot& slot(uint64_t seq) noexcept { return slots_[seq % slots_.size()]; }
  const Slot& slot(uint64_t seq) const noexcept { return slots_[seq % slots_.size()]; }
  void deliverInOrder() noexcept;

  UpdateSink& sink_;
  std::vector<Slot> slots_;  ///< reorder ring, preallocated
  size_t buffered_ = 0;
  bool has_session_ = false;
  uint64_t session_ = 0;
  uint64_t expected_ = 0;    ///< next seq to deliver
  bool ack_due_ = false;
  bool resync_needed_ = false;
  bool follow_next_ = false;  ///< followNextSession(): adopt the next session without a resync
  Counters counters_;
};

}  // namespace tandem::sync
