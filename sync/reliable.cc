#include "sync/reliable.h"

#include <algorithm>

namespace tandem::sync {

// ---- ReliableSender ----

ReliableSender::ReliableSender(ReliableConfig config, uint64_t session) noexcept
    : config_(config), session_(session) {
  if (config_.max_pending == 0) config_.max_pending = 1;
  config_.window = std::clamp<size_t>(config_.window, 1, kMaxSendWindow);
}

ReliableSender::Entry* ReliableSender::at(uint64_t seq) noexcept {
  if (queue_.empty() || seq < queue_.front().update.seq) return nullptr;
  const uint64_t i = seq - queue_.front().update.seq;
  return i < queue_.size() ? &queue_[static_cast<size_t>(i)] : nullptr;
}

bool ReliableSender::enqueue(const Update& u) noexcept {
  if (queue_.size() >= config_.max_pending) {
    ++counters_.overflow;
    resync_needed_ = true;
    return false;
  }
  Entry e;
  e.update = u;
  e.update.seq = next_seq_++;
  // deque growth may allocate; an allocation failure here is fatal anyway (as elsewhere in the
  // daemon), and the queue is bounded by max_pending.
  queue_.push_back(e);
  ++counters_.queued;
  return true;
}

bool ReliableSender::upsert(const FlowRecord& flow, uint64_t* seq) noexcept {
  if (auto it = unsent_by_key_.find(flow.key); it != unsent_by_key_.end()) {
    if (Entry* e = at(it->second); e != nullptr && !e->sent) {
      e->update.kind = UpdateKind::kUpsert;
      e->update.flow = flow;
      ++counters_.coalesced;
      if (seq != nullptr) *seq = e->update.seq;
      return true;
    }
  }
  Update u;
  u.kind = UpdateKind::kUpsert;
  u.flow = flow;
  if (!enqueue(u)) return false;
  unsent_by_key_[flow.key] = next_seq_ - 1;
  if (seq != nullptr) *seq = next_seq_ - 1;
  return true;
}

bool ReliableSender::delivered(uint64_t seq) const noexcept {
  if (seq >= next_seq_) return false;
  if (queue_.empty() || seq < queue_.front().update.seq) return true;  // acked and popped
  const uint64_t i = seq - queue_.front().update.seq;
  return i < queue_.size() && queue_[static_cast<size_t>(i)].sacked;
}

bool ReliableSender::remove(const FlowKey& key) noexcept {
  if (auto it = unsent_by_key_.find(key); it != unsent_by_key_.end()) {
    if (Entry* e = at(it->second); e != nullptr && !e->sent) {
      // The delete takes the pending upsert's place: the peer may hold an older version.
      e->update.kind = UpdateKind::kDelete;
      e->update.flow = FlowRecord{};
      e->update.flow.key = key;
      ++counters_.coalesced;
      return true;
    }
  }
  Update u;
  u.kind = UpdateKind::kDelete;
  u.flow.key = key;
  if (!enqueue(u)) return false;
  unsent_by_key_[key] = next_seq_ - 1;
  return true;
}

bool ReliableSender::bulkEnd(uint32_t request_id, uint32_t flows) noexcept {
  Update u;
  u.kind = UpdateKind::kBulkEnd;
  u.request_id = request_id;
  u.bulk_flows = flows;
  return enqueue(u);
}

void ReliableSender::transmit(Entry& e, uint64_t now_ns, std::vector<Update>& out) noexcept {
  e.last_sent_ns = now_ns;
  e.tx = next_tx_++;
  // Reserved by the caller (at most `max`); an allocation failure here is fatal anyway.
  out.push_back(e.update);
}

size_t ReliableSender::poll(uint64_t now_ns, size_t max, std::vector<Update>& out) {
  if (progress_) {
    progress_ = false;
    last_progress_ns_ = now_ns;
    backoff_ = 0;
  }
  size_t n = 0;
  // 1. Messages found lost: unacknowledged, last sent before one the peer acknowledged since.
  // Oldest first, so the cumulative ack (and the window) can advance.
  if (loss_scan_due_) {
    bool complete = true;
    for (size_t i = 0; i < first_unsent_; ++i) {
      Entry& e = queue_[i];
      if (e.sacked) continue;
      if (e.tx >= delivered_tx_) {
        // First transmissions go in seq order: no later message that was never resent can
        // have been sent before delivered_tx_ either.
        if (!e.resent) break;
        continue;
      }
      if (n == max) {
        complete = false;
        break;
      }
      e.resent = true;
      transmit(e, now_ns, out);
      ++counters_.lost;
      ++counters_.resent;
      ++n;
    }
    if (complete) loss_scan_due_ = false;
  }
  // 2. First transmissions, in seq order, up to the window's edge.
  if (first_unsent_ == 0 && first_unsent_ < queue_.size()) {
    last_progress_ns_ = now_ns;  // nothing was in flight: the timeout starts now
    backoff_ = 0;
  }
  while (first_unsent_ < queue_.size() && n < max && first_unsent_ < config_.window) {
    Entry& e = queue_[first_unsent_++];
    e.sent = true;
    if (e.update.kind != UpdateKind::kBulkEnd) {
      auto it = unsent_by_key_.find(e.update.flow.key);
      if (it != unsent_by_key_.end() && it->second == e.update.seq) unsent_by_key_.erase(it);
    }
    transmit(e, now_ns, out);
    e.first_tx = e.tx;
    ++counters_.sent;
    ++n;
  }
  if (first_unsent_ < queue_.size() && first_unsent_ >= config_.window) ++counters_.window_full;
  // 3. The timeout: nothing acknowledged for a while (the tail was lost, or the peer
  // stalled). Probe with the oldest unacknowledged messages and enter recovery.
  const uint64_t timeout = config_.resend_after_ns << backoff_;
  if (first_unsent_ > 0 && n < max && now_ns - last_progress_ns_ >= timeout) {
    recovery_ = true;
    recovery_tx_ = next_tx_;
    burst_ = kTimeoutProbe;
    const size_t probed = resendOld(now_ns, max - n, out);
    n += probed;
    if (probed > 0) {
      ++counters_.timeouts;
      last_progress_ns_ = now_ns;
      if (backoff_ < 5) ++backoff_;
    } else {
      recovery_ = false;
    }
  } else if (recovery_due_ && n < max) {
    // 4. Recovery: the last ack covered resent messages only; the next, larger burst.
    recovery_due_ = false;
    const size_t sent = resendOld(now_ns, max - n, out);
    n += sent;
    if (sent == 0) recovery_ = false;  // nothing sent before the timeout is left
  }
  return n;
}

size_t ReliableSender::resendOld(uint64_t now_ns, size_t max, std::vector<Update>& out) noexcept {
  size_t n = 0;
  for (size_t i = 0; i < first_unsent_ && n < max && n < burst_; ++i) {
    Entry& e = queue_[i];
    if (e.sacked || e.tx >= recovery_tx_) continue;  // acknowledged, or sent since
    e.resent = true;
    transmit(e, now_ns, out);
    ++counters_.resent;
    ++n;
  }
  return n;
}

uint64_t ReliableSender::nextResendNs() const noexcept {
  if (loss_scan_due_ || recovery_due_) return 0;
  if (first_unsent_ == 0) return UINT64_MAX;
  // Before the next poll() notes an ack's progress, the timeout may look due early: harmless,
  // poll() checks again.
  return last_progress_ns_ + (config_.resend_after_ns << backoff_);
}

SeqBase ReliableSender::base() const noexcept {
  return {session_, queue_.empty() ? next_seq_ : queue_.front().update.seq};
}

void ReliableSender::noteDelivered(const Entry& e) noexcept {
  progress_ = true;
  const uint64_t tx = e.resent ? e.first_tx : e.tx;  // Karn: see reliable.h
  if (tx > delivered_tx_) {
    delivered_tx_ = tx;
    loss_scan_due_ = true;
  }
}

void ReliableSender::onAck(const Ack& ack) noexcept {
  if (ack.session != session_) {
    ++counters_.bad_acks;
    return;
  }
  // Highest seq ever transmitted; acknowledging beyond it is a bug or a forgery.
  const uint64_t sent_below =
      queue_.empty() ? next_seq_ : queue_.front().update.seq + first_unsent_;
  if (ack.cumulative >= sent_below) {
    ++counters_.bad_acks;
    return;
  }
  // Recovery: does this ack cover resent messages only, or also one sent once?
  bool any = false;
  bool original = false;
  auto deliveredOne = [&](const Entry& e) {
    noteDelivered(e);
    any = true;
    if (!e.resent) original = true;
  };
  while (!queue_.empty() && queue_.front().update.seq <= ack.cumulative) {
    if (!queue_.front().sacked) deliveredOne(queue_.front());
    queue_.pop_front();
    --first_unsent_;  // popped entries were all sent: cumulative < sent_below
    ++counters_.acked;
  }
  for (size_t r = 0; r < ack.range_count && r < kMaxAckRanges; ++r) {
    const AckRange& range = ack.ranges[r];
    if (queue_.empty()) break;
    const uint64_t lo = std::max(range.first, queue_.front().update.seq);
    const uint64_t hi = std::min(range.last, sent_below - 1);
    for (uint64_t s = lo; s <= hi && hi != UINT64_MAX; ++s) {
      Entry* e = at(s);
      if (e == nullptr || e->sacked) continue;
      e->sacked = true;
      deliveredOne(*e);
    }
  }
  if (recovery_ && any) {
    if (original) {
      recovery_ = false;  // the peer had stalled, or new data flows: loss detection takes over
      recovery_due_ = false;
    } else {
      burst_ = std::min(burst_ * 2, config_.window);
      recovery_due_ = true;
    }
  }
  // Nothing left in flight: nothing can be lost.
  if (first_unsent_ == 0) {
    loss_scan_due_ = false;
    recovery_ = false;
    recovery_due_ = false;
  }
}

void ReliableSender::reset(uint64_t session) noexcept {
  queue_.clear();
  unsent_by_key_.clear();
  first_unsent_ = 0;
  session_ = session;
  next_seq_ = 1;
  delivered_tx_ = next_tx_ - 1;  // earlier transmissions are gone with their messages
  loss_scan_due_ = false;
  progress_ = false;
  backoff_ = 0;
  recovery_ = false;
  recovery_due_ = false;
}

// ---- ReliableReceiver ----

ReliableReceiver::ReliableReceiver(UpdateSink& sink, size_t window)
    : sink_(sink), slots_(std::max<size_t>(window, 1)) {}

void ReliableReceiver::deliverInOrder() noexcept {
  while (buffered_ > 0) {
    Slot& s = slot(expected_);
    if (!s.present) break;
    s.present = false;
    --buffered_;
    ++expected_;
    ++counters_.delivered;
    sink_.apply(s.update);
  }
}

void ReliableReceiver::onFrame(const SeqBase& base, std::span<const Update> updates) noexcept {
  if (has_session_ && base.session < session_) {
    ++counters_.stale_session;
    return;
  }
  // The active's heartbeats carry its {session, base} without updates: acknowledge those only
  // when they change something (a new session), not every heartbeat.
  if (!updates.empty()) ack_due_ = true;
  if (!has_session_ || base.session > session_) {
    ack_due_ = true;
    // The sender restarted: it may have lost state. Unless this node handed over cleanly and
    // the new session starts at its beginning: then nothing can be missing.
    const bool followed = follow_next_ && base.base <= 1;
    follow_next_ = false;
    if (has_session_ && !followed) resync_needed_ = true;
    ++counters_.new_session;
    for (Slot& s : slots_) s.present = false;
    buffered_ = 0;
    has_session_ = true;
    session_ = base.session;
    expected_ = std::max<uint64_t>(base.base, 1);
  }
  if (base.base > expected_) {
    ack_due_ = true;
    // The sender no longer holds [expected_, base): deliver what we buffered of it, in order,
    // and count the rest as lost.
    const uint64_t end = std::min<uint64_t>(base.base, expected_ + slots_.size());
    for (uint64_t s = expected_; s < end; ++s) {
      Slot& sl = slot(s);
      if (sl.present) {
        sl.present = false;
        --buffered_;
        ++counters_.delivered;
        sink_.apply(sl.update);
      } else {
        ++counters_.lost;
      }
    }
    counters_.lost += base.base - end;
    resync_needed_ = true;
    expected_ = base.base;
  }
  for (const Update& u : updates) {
    if (u.seq < expected_) {
      ++counters_.duplicates;
      continue;
    }
    if (u.seq - expected_ >= slots_.size()) {
      ++counters_.beyond_window;
      continue;
    }
    Slot& s = slot(u.seq);
    if (s.present) {
      ++counters_.duplicates;
      continue;
    }
    s.present = true;
    s.update = u;
    ++buffered_;
  }
  deliverInOrder();
}

Ack ReliableReceiver::ack() const noexcept {
  Ack a;
  if (!has_session_) return a;
  a.session = session_;
  a.cumulative = expected_ - 1;
  size_t seen = 0;
  bool in_range = false;
  for (uint64_t s = expected_ + 1; s < expected_ + slots_.size() && seen < buffered_; ++s) {
    const bool present = slot(s).present;
    if (present) {
      ++seen;
      if (!in_range) {
        if (a.range_count == kMaxAckRanges) break;
        a.ranges[a.range_count++] = {s, s};
        in_range = true;
      } else {
        a.ranges[a.range_count - 1].last = s;
      }
    } else {
      in_range = false;
    }
  }
  return a;
}

}  // namespace tandem::sync
