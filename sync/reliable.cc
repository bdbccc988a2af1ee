#include "sync/reliable.h"

#include <algorithm>

namespace tandem::sync {

// ---- ReliableSender ----

ReliableSender::ReliableSender(ReliableConfig config, uint64_t session) noexcept
    : config_(config), session_(session) {
  if (config_.max_pending == 0) config_.max_pending = 1;
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

size_t ReliableSender::poll(uint64_t now_ns, size_t max, std::vector<Update>& out) {
  size_t n = 0;
  while (first_unsent_ < queue_.size() && n < max) {
    Entry& e = queue_[first_unsent_++];
    e.sent = true;
    e.last_sent_ns = now_ns;
    if (e.update.kind != UpdateKind::kBulkEnd) {
      auto it = unsent_by_key_.find(e.update.flow.key);
      if (it != unsent_by_key_.end() && it->second == e.update.seq) unsent_by_key_.erase(it);
    }
    out.push_back(e.update);
    ++counters_.sent;
    ++n;
  }
  // Resends: oldest first, so the cumulative ack can advance. Linear in the messages in flight,
  // which the queue bound keeps finite; fine at the sizes a pair runs with.
  for (size_t i = 0; i < first_unsent_ && n < max; ++i) {
    Entry& e = queue_[i];
    if (e.sacked || now_ns - e.last_sent_ns < config_.resend_after_ns) continue;
    e.last_sent_ns = now_ns;
    out.push_back(e.update);
    ++counters_.resent;
    ++n;
  }
  return n;
}

uint64_t ReliableSender::nextResendNs() const noexcept {
  uint64_t t = UINT64_MAX;
  for (size_t i = 0; i < first_unsent_; ++i) {
    const Entry& e = queue_[i];
    if (!e.sacked) t = std::min(t, e.last_sent_ns + config_.resend_after_ns);
  }
  return t;
}

SeqBase ReliableSender::base() const noexcept {
  return {session_, queue_.empty() ? next_seq_ : queue_.front().update.seq};
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
  while (!queue_.empty() && queue_.front().update.seq <= ack.cumulative) {
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
      if (Entry* e = at(s); e != nullptr) e->sacked = true;
    }
  }
}

void ReliableSender::reset(uint64_t session) noexcept {
  queue_.clear();
  unsent_by_key_.clear();
  first_unsent_ = 0;
  session_ = session;
  next_seq_ = 1;
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
