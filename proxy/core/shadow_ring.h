#pragma once
/// @file The standby's shadow ring (zero-loss takeover, virtual MAC mode) and the replay plan.
///
/// The standby captures the IPv4/TCP frames sent to the virtual MAC (proxy/io/shadow.h) and keeps
/// the last moments of them here: a bounded, time-windowed ring of packets (IP header onwards).
/// At takeover the frames of the outage window are handed to Engine::process() and forwarded
/// (proxy/tandemd/vmac_takeover.h). Pure: no I/O, no clock; times are passed in.
///
/// Storage: one byte arena used circularly (a frame never straddles its end) and a ring of frame
/// records. A push evicts frames older than the window first; if the frame still does not fit,
/// the oldest frames are dropped (counted as dropped_full): the newest frames are the ones a
/// takeover needs. No allocation after construction.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "proxy/core/counters.h"
#include "proxy/core/flow.h"

namespace tandem {

/// The interface a shadowed frame came in on.
enum class ShadowSide : uint8_t { kFront = 0, kBack = 1 };

struct ShadowRingConfig {
  size_t bytes = 16u << 20;   ///< arena size: bounds the ring's memory
  size_t frames = 65536;      ///< frame records: bounds the count of (small) frames
  uint64_t window_ns = 0;     ///< frames older than this are expired; 0 = keep until evicted
};

struct ShadowRingCounters {
  uint64_t stored = 0;         ///< frames taken into the ring
  uint64_t expired = 0;        ///< left the ring by age (normal)
  uint64_t dropped_full = 0;   ///< oldest frames evicted inside the window: ring too small
  uint64_t too_big = 0;        ///< frames larger than the whole arena, refused
};

/// One stored frame.
struct ShadowFrame {
  std::span<const uint8_t> packet;  ///< IPv4 header onwards
  uint64_t ts_ns = 0;               ///< capture time (monotonic clock of the caller)
  uint64_t id = 0;                  ///< push order, from 1, never reused
  ShadowSide side = ShadowSide::kFront;
  bool csum_not_ready = false;      ///< the TCP checksum field holds only the pseudo-header sum
};

class ShadowRing {
 public:
  /// Allocates the arena and the records (startup). Throws std::invalid_argument on zero sizes.
  explicit ShadowRing(const ShadowRingConfig& config);

  /// Stores a copy of `packet`. Expires by age relative to `now_ns` first. False if the frame
  /// could not be stored (larger than the arena).
  bool push(std::span<const uint8_t> packet, ShadowSide side, bool csum_not_ready, uint64_t ts_ns,
            uint64_t now_ns) noexcept;
  /// Drops frames whose capture time is older than now_ns - window_ns.
  void expire(uint64_t now_ns) noexcept;
  void clear() noexcept;

  size_t size() const noexcept { return count_; }
  size_t bytesUsed() const noexcept { return used_; }
  /// The i-th frame, oldest first (i < size()).
  ShadowFrame at(size_t i) const noexcept;
  /// The id the next pushed frame will get.
  uint64_t nextId() const noexcept { return next_id_; }
  const ShadowRingCounters& counters() const noexcept { return counters_; }
  const ShadowRingConfig& config() const noexcept { return config_; }

 private:
  struct Record {
    size_t offset = 0;
    uint32_t len = 0;
    bool csum_not_ready = false;
    ShadowSide side = ShadowSide::kFront;
    uint64_t ts_ns = 0;
    uint64_t id = 0;
  };
  void popOldest() noexcept;
  /// Where `len` bytes fit without evicting, or SIZE_MAX.
  size_t placement(size_t len) const noexcept;

  ShadowRingConfig config_;
  std::vector<uint8_t> arena_;
  std::vector<Record> records_;
  size_t head_ = 0;     ///< index of the oldest record
  size_t count_ = 0;
  size_t tail_ = 0;     ///< arena offset just past the newest frame
  bool wrapped_ = false;  ///< the newest frames start again at offset 0, before the oldest
  size_t used_ = 0;
  uint64_t next_id_ = 1;
  ShadowRingCounters counters_;
};

/// What planReplay() decided, beyond the frames it chose.
struct ReplayPlanStats {
  uint64_t considered = 0;     ///< frames inside the window
  uint64_t skipped_closed = 0; ///< opening SYNs of a connection that later saw RST or FIN
  uint64_t not_tcp = 0;        ///< frames that are not a whole IPv4/TCP packet
  uint64_t skipped_delivered = 0;   ///< segments the other end has acknowledged in the ring
  uint64_t skipped_superseded = 0;  ///< pure ACKs followed by a newer frame of the same sender
  uint64_t skipped_copies = 0;      ///< retransmissions of bytes a kept frame already carries
  /// Every frame left out, by reason and leg (ShadowSide: kFront = client leg, kBack = backend).
  std::array<std::array<uint64_t, 2>, kReplayPruneCount> pruned{};
  /// Kept without judging them against the other end's acknowledgements: their splice flow's
  /// backend-leg offset was unknown (the checkpoint predates the backend's SYN-ACK, and the
  /// ring holds no SYN-ACK to learn it from), by leg.
  std::array<uint64_t, 2> offset_unknown{};
  uint64_t offsets_learnt = 0;  ///< splice flows whose backend offset came from a ring SYN-ACK
};

/// Which flow a frame belongs to: an id shared by both legs, the side it comes from, and how the
/// two legs' sequence numbers relate.
///
/// The ring holds the frames sent *to* the proxy only: the client's on the client leg, the
/// backend's on the backend leg. A segment of direction d (its sender's, on its sender's leg)
/// reaches the other end as seqForward(adj[d], seq) (translator.h); the other end's ACKs, on the
/// other leg, name it in that space. Passthrough: one space (same_seq_space). Splice: adj[client]
/// is zero (the backend leg continues the client's ISN), adj[backend] = {backend ISN, cookie -
/// backend ISN} once the backend's SYN-ACK arrived; a checkpoint taken before that lacks it
/// (adj_known[backend] false), and planReplay then learns it from a backend SYN-ACK in the ring
/// when `proxy_isn_known` (the cookie, Flow::proxy_isn), as splice.cc sets it.
struct ReplayFlowRef {
  uint32_t flow_id = 0;
  bool from_client = true;
  bool same_seq_space = true;
  SeqAdj adj[2] = {};                ///< indexed by Direction; used when !same_seq_space
  bool adj_known[2] = {false, false};
  bool proxy_isn_known = false;
  uint32_t proxy_isn = 0;
};
/// The ReplayFlowRef of a frame of `f` (table slot `flow_id`) sent from `dir`: passthrough
/// shares one space; a splice flow's backend offset is known once its splice completed
/// (!splice_pending: a re-splice in progress has the old backend's), and learnable from the
/// cookie (proxy_isn) otherwise.
ReplayFlowRef replayFlowRef(const Flow& f, uint32_t flow_id, Direction dir) noexcept;
/// Tuple (host byte order) -> flow, or false when no flow has it.
using ReplayClassifier = std::function<bool(uint32_t saddr, uint32_t daddr, uint16_t sport,
                                            uint16_t dport, ReplayFlowRef& out)>;

/// Which frames of the outage to replay, in which order (indices into the ring).
///
///  - Only frames with ts in [from_ns, until_ns) and id >= min_id (a second, tail pass after a
///    first one passes the first pass's nextId()).
///  - Client-side (front) frames first, then backend-side (back) frames, each in capture order:
///    a flow the engine knows only from the client leg (its SYN in the window) exists before its
///    backend frames arrive, which the issue asks (client->VIP before backend frames of a flow).
///  - A SYN without ACK is skipped when a frame with RST or FIN carrying its source endpoint
///    (address, port), or (with a classifier) of its flow on either leg, was captured at or
///    after it: replaying it would re-open a connection that has closed since. The source
///    endpoint counts a backend's RST on the backend leg in transparent addressing (there the
///    backend leg carries the client's endpoint); the flow counts it in SNAT addressing too.
///  - With a classifier (the flow table), frames the dead active had certainly forwarded are
///    left out: a segment carrying data or a SYN whose end the other end of its flow has
///    acknowledged in a frame captured later (the other end received it), and a pure ACK
///    followed by a newer frame of the same sender (which carries a newer acknowledgement).
///    Splice flows compare the segment's end translated to the other leg (ReplayFlowRef); their
///    SYNs and SYN-ACKs end at the proxy, not at the other end, and are never left out that way;
///    a flow whose backend offset is unknown keeps its frames (counted in offset_unknown).
///    A data segment whose bytes one kept earlier frame of the same sender already carries (a
///    retransmission captured during the outage) is left out too. Replaying those only makes
///    both ends answer with duplicate ACKs, a burst that queues ahead of the live traffic at the
///    new active. RSTs and FINs are never left out: the new active's table must see a close
///    the checkpoint may not have carried (a closed flow is never left open by the replay).
/// `out` is cleared first. Allocates (takeover time, not the packet path).
void planReplay(const ShadowRing& ring, uint64_t from_ns, uint64_t until_ns, uint64_t min_id,
                std::vector<uint32_t>& out, ReplayPlanStats& stats,
                const ReplayClassifier& classify = {});

/// A captured super-packet (GRO on the receive path, or a GSO frame a veth passes on whole) is
/// longer than the link MTU and cannot be sent as one IP packet. Pure, as the kernel segments
/// it: each segment carries the same IP and TCP headers with the total length, the IP ID (+i),
/// the sequence number (+i * payload per segment) adjusted, CWR on the first only, FIN and PSH on
/// the last only, and full checksums.

/// Segments of at most `mtu` bytes `packet` makes; 0 if it is no whole IPv4/TCP packet or the
/// MTU leaves no room for payload. 1 if it already fits.
size_t tcpSegmentCount(std::span<const uint8_t> packet, size_t mtu) noexcept;
/// Writes segment `index` of `packet` to out[0, cap); returns its length or 0.
size_t writeTcpSegmentOf(std::span<const uint8_t> packet, size_t mtu, size_t index, uint8_t* out,
                         size_t cap) noexcept;

}  // namespace tandem
