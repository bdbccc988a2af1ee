#include "proxy/core/shadow_ring.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/packet.h"
#include "common/seq.h"
#include "proxy/core/translator.h"

namespace tandem {

ShadowRing::ShadowRing(const ShadowRingConfig& config) : config_(config) {
  if (config.bytes == 0 || config.frames == 0) {
    throw std::invalid_argument("shadow ring: bytes and frames must be positive");
  }
  arena_.resize(config.bytes);
  records_.resize(config.frames);
}

void ShadowRing::clear() noexcept {
  head_ = count_ = tail_ = used_ = 0;
  wrapped_ = false;
}

void ShadowRing::popOldest() noexcept {
  const Record& r = records_[head_];
  used_ -= r.len;
  const size_t old_offset = r.offset;
  head_ = (head_ + 1) % records_.size();
  --count_;
  if (count_ == 0) {
    clear();
    return;
  }
  // Crossing the arena's end: every remaining frame now lies in [0, tail_).
  if (records_[head_].offset < old_offset) wrapped_ = false;
}

size_t ShadowRing::placement(size_t len) const noexcept {
  if (count_ == records_.size()) return SIZE_MAX;
  if (count_ == 0) return len <= arena_.size() ? 0 : SIZE_MAX;
  const size_t head_off = records_[head_].offset;
  if (!wrapped_) {
    if (arena_.size() - tail_ >= len) return tail_;
    if (head_off >= len) return 0;
    return SIZE_MAX;
  }
  return head_off - tail_ >= len ? tail_ : SIZE_MAX;
}

void ShadowRing::expire(uint64_t now_ns) noexcept {
  if (config_.window_ns == 0 || now_ns < config_.window_ns) return;
  const uint64_t oldest = now_ns - config_.window_ns;
  while (count_ > 0 && records_[head_].ts_ns < oldest) {
    popOldest();
    ++counters_.expired;
  }
}

bool ShadowRing::push(std::span<const uint8_t> packet, ShadowSide side, bool csum_not_ready,
                      uint64_t ts_ns, uint64_t now_ns) noexcept {
  if (packet.empty()) return false;
  if (packet.size() > arena_.size() || packet.size() > UINT32_MAX) {
    ++counters_.too_big;
    return false;
  }
  expire(now_ns);
  size_t at = placement(packet.size());
  while (at == SIZE_MAX) {
    popOldest();  // count_ > 0 here: an empty ring places any frame that fits the arena
    ++counters_.dropped_full;
    at = placement(packet.size());
  }
  if (count_ > 0 && !wrapped_ && at == 0) wrapped_ = true;
  std::memcpy(arena_.data() + at, packet.data(), packet.size());
  Record& r = records_[(head_ + count_) % records_.size()];
  r.offset = at;
  r.len = static_cast<uint32_t>(packet.size());
  r.csum_not_ready = csum_not_ready;
  r.side = side;
  r.ts_ns = ts_ns;
  r.id = next_id_++;
  ++count_;
  tail_ = at + packet.size();
  used_ += packet.size();
  ++counters_.stored;
  return true;
}

ShadowFrame ShadowRing::at(size_t i) const noexcept {
  const Record& r = records_[(head_ + i) % records_.size()];
  ShadowFrame f;
  f.packet = std::span<const uint8_t>(arena_.data() + r.offset, r.len);
  f.ts_ns = r.ts_ns;
  f.id = r.id;
  f.side = r.side;
  f.csum_not_ready = r.csum_not_ready;
  return f;
}

namespace {

/// The TCP fields planReplay needs, read without modifying the frame.
struct TcpSummary {
  uint32_t saddr = 0;
  uint32_t daddr = 0;
  uint16_t sport = 0;
  uint16_t dport = 0;
  uint8_t flags = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint32_t payload = 0;
};

bool summarize(std::span<const uint8_t> p, TcpSummary& out) noexcept {
  // parseTcpPacket() takes a mutable view; the checks are the same, on a const buffer.
  if (p.size() < 20 || (p[0] >> 4) != 4) return false;
  const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  const size_t total = load16(p.data() + 2);
  if (ihl < 20 || total < ihl + 20 || total > p.size()) return false;
  const size_t doff = static_cast<size_t>(p[ihl + 12] >> 4) * 4;
  if (doff < 20 || ihl + doff > total) return false;
  if (p[9] != 6) return false;
  if ((load16(p.data() + 6) & 0x3fff) != 0) return false;  // a fragment
  const uint8_t* t = p.data() + ihl;
  out.saddr = load32(p.data() + 12);
  out.daddr = load32(p.data() + 16);
  out.sport = load16(t);
  out.dport = load16(t + 2);
  out.flags = t[13];
  out.seq = load32(t + 4);
  out.ack = load32(t + 8);
  out.payload = static_cast<uint32_t>(total - ihl - doff);
  return true;
}

struct Close {
  uint64_t endpoint;  ///< address << 16 | port
  uint64_t ts_ns;
};

uint64_t endpointKey(uint32_t addr, uint16_t port) noexcept {
  return (static_cast<uint64_t>(addr) << 16) | port;
}

}  // namespace

/// Per flow and sender: the acknowledgement of its latest ACK-carrying frame, and the capture
/// time of its latest frame.
struct SenderState {
  uint64_t key;  ///< flow_id << 1 | from_client
  uint64_t ts_ns;
  uint32_t ack;
  bool has_ack;
};

namespace {

uint64_t senderKey(uint32_t flow_id, bool from_client) noexcept {
  return (static_cast<uint64_t>(flow_id) << 1) | (from_client ? 1u : 0u);
}

/// A backend ISN seen in a backend SYN-ACK of a splice flow whose checkpoint lacks it.
struct LearntIsn {
  uint32_t isn;
  bool conflict;  ///< two different ISNs: the flow's offset stays unknown
};

/// A kept frame's sequence range, to recognise a later copy of the same bytes.
struct KeptRange {
  uint32_t seq;
  uint32_t end;
};

/// How many of a sender's latest kept ranges a later frame is compared with: retransmissions
/// during an outage repeat the last flight, and the check stays linear in the ring's size.
constexpr size_t kCopyLookback = 64;

}  // namespace

ReplayFlowRef replayFlowRef(const Flow& f, uint32_t flow_id, Direction dir) noexcept {
  ReplayFlowRef r;
  r.flow_id = flow_id;
  r.from_client = dir == Direction::kFromClient;
  r.same_seq_space = !f.splice && !f.has_seqadj;
  if (r.same_seq_space) return r;
  const size_t c = dirIndex(Direction::kFromClient);
  const size_t b = dirIndex(Direction::kFromBackend);
  r.adj[c] = f.adj[c];
  r.adj_known[c] = true;  // never changes once the flow exists (zero for splice flows)
  r.adj[b] = f.adj[b];
  r.adj_known[b] = f.has_seqadj && !(f.splice && f.splice_pending);
  r.proxy_isn_known = f.splice;
  r.proxy_isn = f.proxy_isn;
  return r;
}

void planReplay(const ShadowRing& ring, uint64_t from_ns, uint64_t until_ns, uint64_t min_id,
                std::vector<uint32_t>& out, ReplayPlanStats& stats,
                const ReplayClassifier& classify) {
  out.clear();
  // With a classifier: each frame's flow, and each sender's latest state, over the whole ring.
  std::vector<ReplayFlowRef> refs;
  std::vector<bool> classified;
  std::vector<SenderState> senders;
  std::unordered_map<uint32_t, LearntIsn> learnt;  ///< by flow_id
  if (classify) {
    refs.resize(ring.size());
    classified.resize(ring.size(), false);
    for (size_t i = 0; i < ring.size(); ++i) {
      TcpSummary s;
      if (!summarize(ring.at(i).packet, s)) continue;
      ReplayFlowRef& r = refs[i];
      if (!classify(s.saddr, s.daddr, s.sport, s.dport, r)) continue;
      classified[i] = true;
      senders.push_back({senderKey(r.flow_id, r.from_client), ring.at(i).ts_ns, s.ack,
                         (s.flags & tcpflag::kAck) != 0});
      // A splice checkpoint taken before the backend's SYN-ACK: the SYN-ACK gives the offset.
      const size_t b = dirIndex(Direction::kFromBackend);
      if (!r.from_client && !r.same_seq_space && !r.adj_known[b] && r.proxy_isn_known &&
          (s.flags & (tcpflag::kSyn | tcpflag::kAck | tcpflag::kRst)) ==
              (tcpflag::kSyn | tcpflag::kAck)) {
        auto [it, fresh] = learnt.try_emplace(r.flow_id, LearntIsn{s.seq, false});
        if (!fresh && it->second.isn != s.seq) it->second.conflict = true;
      }
    }
    for (const auto& [flow_id, l] : learnt) {
      if (!l.conflict) ++stats.offsets_learnt;
    }
    for (size_t i = 0; i < ring.size() && !learnt.empty(); ++i) {
      ReplayFlowRef& r = refs[i];
      const size_t b = dirIndex(Direction::kFromBackend);
      if (!classified[i] || r.same_seq_space || r.adj_known[b]) continue;
      auto it = learnt.find(r.flow_id);
      if (it == learnt.end() || it->second.conflict) continue;
      const uint32_t isn = it->second.isn;
      const int32_t off = static_cast<int32_t>(r.proxy_isn - isn);  // as splice.cc sets it
      r.adj[b] = SeqAdj{isn, off, off};
      r.adj_known[b] = true;
    }
    // Latest per key: sort by key then time; for acks, the latest ACK-carrying frame.
    std::stable_sort(senders.begin(), senders.end(), [](const SenderState& a, const SenderState& b) {
      return std::tie(a.key, a.ts_ns) < std::tie(b.key, b.ts_ns);
    });
    std::vector<SenderState> latest;
    for (size_t i = 0; i < senders.size(); ++i) {
      if (!latest.empty() && latest.back().key == senders[i].key) {
        latest.back().ts_ns = senders[i].ts_ns;
        if (senders[i].has_ack) {
          latest.back().ack = senders[i].ack;
          latest.back().has_ack = true;
        }
      } else {
        latest.push_back(senders[i]);
      }
    }
    senders.swap(latest);
  }
  auto sender = [&](uint32_t flow_id, bool from_client) -> const SenderState* {
    const uint64_t key = senderKey(flow_id, from_client);
    auto it = std::lower_bound(senders.begin(), senders.end(), key,
                               [](const SenderState& s, uint64_t k) { return s.key < k; });
    return it != senders.end() && it->key == key ? &*it : nullptr;
  };
  // Closing segments anywhere in the ring (also after the window: a RST captured after
  // until_ns still means the connection is gone), by endpoint and, classified, by flow.
  std::vector<Close> closes;
  constexpr uint64_t kFlowKeyBit = uint64_t{1} << 63;  // endpoint keys use 48 bits
  for (size_t i = 0; i < ring.size(); ++i) {
    TcpSummary s;
    if (!summarize(ring.at(i).packet, s)) continue;
    if ((s.flags & (tcpflag::kRst | tcpflag::kFin)) == 0) continue;
    const uint64_t ts = ring.at(i).ts_ns;
    closes.push_back({endpointKey(s.saddr, s.sport), ts});
    closes.push_back({endpointKey(s.daddr, s.dport), ts});
    if (classify && classified[i]) closes.push_back({kFlowKeyBit | refs[i].flow_id, ts});
  }
  std::sort(closes.begin(), closes.end(), [](const Close& a, const Close& b) {
    return std::tie(a.endpoint, a.ts_ns) < std::tie(b.endpoint, b.ts_ns);
  });
  auto closedAfter = [&](uint64_t endpoint, uint64_t ts) {
    // The latest close of this endpoint: the last element of its equal range.
    auto it = std::upper_bound(closes.begin(), closes.end(), endpoint,
                               [](uint64_t e, const Close& c) { return e < c.endpoint; });
    return it != closes.begin() && std::prev(it)->endpoint == endpoint &&
           std::prev(it)->ts_ns >= ts;
  };
  // Per sender: the ranges of the data frames kept so far (a side's frames come in capture
  // order from one socket, so a retransmission comes after what it repeats).
  std::unordered_map<uint64_t, std::vector<KeptRange>> kept;

  for (const ShadowSide side : {ShadowSide::kFront, ShadowSide::kBack}) {
    const size_t first = out.size();
    const size_t leg = static_cast<size_t>(side);
    kept.clear();
    for (size_t i = 0; i < ring.size(); ++i) {
      const ShadowFrame f = ring.at(i);
      if (f.side != side || f.id < min_id || f.ts_ns < from_ns || f.ts_ns >= until_ns) continue;
      ++stats.considered;
      TcpSummary s;
      if (!summarize(f.packet, s)) {
        ++stats.not_tcp;
        continue;
      }
      const bool opening_syn =
          (s.flags & (tcpflag::kSyn | tcpflag::kAck | tcpflag::kRst)) == tcpflag::kSyn;
      if (opening_syn && (closedAfter(endpointKey(s.saddr, s.sport), f.ts_ns) ||
                          (classify && classified[i] &&
                           closedAfter(kFlowKeyBit | refs[i].flow_id, f.ts_ns)))) {
        ++stats.skipped_closed;
        ++stats.pruned[static_cast<size_t>(ReplayPrune::kClosedSyn)][leg];
        continue;
      }
      const bool syn = (s.flags & tcpflag::kSyn) != 0;
      if (classify && classified[i] && (s.flags & (tcpflag::kRst | tcpflag::kFin)) == 0) {
        const ReplayFlowRef& r = refs[i];
        const uint32_t consumed = s.payload + (syn ? 1 : 0);
        const uint64_t key = senderKey(r.flow_id, r.from_client);
        if (consumed > 0) {
          // The other end acknowledged the segment's end: it arrived there. Splice: the end as
          // the other leg numbers it; a SYN there ends at the proxy and proves nothing.
          const size_t d = dirIndex(r.from_client ? Direction::kFromClient
                                                  : Direction::kFromBackend);
          bool judge = true;
          uint32_t end = s.seq + consumed;
          if (!r.same_seq_space) {
            if (syn) {
              judge = false;
            } else if (!r.adj_known[d]) {
              judge = false;
              ++stats.offset_unknown[leg];
            } else {
              end = seqForward(r.adj[d], end);
            }
          }
          const SenderState* peer = judge ? sender(r.flow_id, !r.from_client) : nullptr;
          if (peer != nullptr && peer->has_ack && seqAfterEq(peer->ack, end)) {
            ++stats.skipped_delivered;
            ++stats.pruned[static_cast<size_t>(ReplayPrune::kDelivered)][leg];
            continue;
          }
          if (s.payload > 0 && !syn) {
            // A copy of bytes an earlier kept frame of this sender replays (its own leg, its
            // own space: no translation).
            const uint32_t seq_end = s.seq + s.payload;
            std::vector<KeptRange>& mine = kept[key];
            const size_t from = mine.size() > kCopyLookback ? mine.size() - kCopyLookback : 0;
            const bool copy = std::any_of(
                mine.begin() + static_cast<std::ptrdiff_t>(from), mine.end(),
                [&](const KeptRange& k) {
                  return seqBeforeEq(k.seq, s.seq) && seqAfterEq(k.end, seq_end);
                });
            if (copy) {
              ++stats.skipped_copies;
              ++stats.pruned[static_cast<size_t>(ReplayPrune::kReplayedCopy)][leg];
              continue;
            }
            mine.push_back(KeptRange{s.seq, seq_end});
          }
        } else {
          const SenderState* self = sender(r.flow_id, r.from_client);
          if (self != nullptr && self->ts_ns > f.ts_ns) {
            ++stats.skipped_superseded;
            ++stats.pruned[static_cast<size_t>(ReplayPrune::kSupersededAck)][leg];
            continue;
          }
        }
      }
      out.push_back(static_cast<uint32_t>(i));
    }
    // Two capture sockets are drained one after the other: order each side by capture time.
    std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
                     [&](uint32_t a, uint32_t b) { return ring.at(a).ts_ns < ring.at(b).ts_ns; });
  }
}

namespace {

struct SegmentGeometry {
  size_t headers = 0;  ///< IP + TCP header bytes
  size_t payload = 0;
  size_t per_segment = 0;
};

bool geometry(std::span<const uint8_t> p, size_t mtu, SegmentGeometry& g) noexcept {
  TcpSummary s;
  if (!summarize(p, s)) return false;
  const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  const size_t doff = static_cast<size_t>(p[ihl + 12] >> 4) * 4;
  const size_t total = load16(p.data() + 2);
  if (doff < 20 || ihl + doff > total) return false;
  g.headers = ihl + doff;
  g.payload = total - g.headers;
  if (mtu <= g.headers) return false;
  g.per_segment = mtu - g.headers;
  return true;
}

}  // namespace

size_t tcpSegmentCount(std::span<const uint8_t> packet, size_t mtu) noexcept {
  SegmentGeometry g;
  if (!geometry(packet, mtu, g)) return 0;
  if (g.headers + g.payload <= mtu) return 1;
  return (g.payload + g.per_segment - 1) / g.per_segment;
}

size_t writeTcpSegmentOf(std::span<const uint8_t> packet, size_t mtu, size_t index, uint8_t* out,
                         size_t cap) noexcept {
  SegmentGeometry g;
  const size_t count = tcpSegmentCount(packet, mtu);
  if (index >= count || !geometry(packet, mtu, g)) return 0;
  const size_t offset = index * g.per_segment;
  const size_t len = std::min(g.per_segment, g.payload - offset);
  if (count == 1) {
    if (cap < g.headers + g.payload) return 0;
    std::memcpy(out, packet.data(), g.headers + g.payload);
  } else {
    if (cap < g.headers + len) return 0;
    std::memcpy(out, packet.data(), g.headers);
    std::memcpy(out + g.headers, packet.data() + g.headers + offset, len);
  }
  const size_t ihl = static_cast<size_t>(out[0] & 0x0f) * 4;
  uint8_t* t = out + ihl;
  const size_t total = g.headers + (count == 1 ? g.payload : len);
  store16(out + 2, static_cast<uint16_t>(total));
  store16(out + 4, static_cast<uint16_t>(load16(out + 4) + index));
  store16(out + 10, 0);
  store16(out + 10, ipv4HeaderChecksum(out, ihl));
  store32(t + 4, load32(t + 4) + static_cast<uint32_t>(offset));
  if (index > 0) t[13] = static_cast<uint8_t>(t[13] & ~tcpflag::kCwr);
  if (index + 1 < count) t[13] = static_cast<uint8_t>(t[13] & ~(tcpflag::kFin | tcpflag::kPsh));
  store16(t + 16, 0);
  store16(t + 16, tcpChecksumV4(load32(out + 12), load32(out + 16), t, total - ihl));
  return total;
}

}  // namespace tandem
