#pragma once
/// @file The sync frame format: one versioned header, typed sections, a MAC trailer.
///
/// Every integer is big-endian (network byte order) and written field by field by the encoders in
/// wire.cc: no struct is ever copied to or from the wire, so padding, alignment and host byte
/// order cannot leak into the protocol. After OpenBSD's if_pfsync.h (header, then sections of
/// `{action, length, count}`), with the times made relative so the two clocks need not agree.
///
/// ```
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-------------------------------+---------------+---------------+
/// |        magic 0x5453 "TS"      |  version (1)  |     flags     |  header, 24 bytes
/// +-------------------------------+---------------+---------------+
/// |            key id             |        payload length         |
/// +-------------------------------+-------------------------------+
/// |                 counter (64 bits, per sender,                 |
/// +            strictly increasing; the replay sequence)          +
/// |                                                               |
/// +---------------------------------------------------------------+
/// |                        sender node id                         |
/// +---------------------------------------------------------------+
/// |                  epoch (sender's view, see roles.h)           |
/// +===============================================================+
/// |    action     |  item length  |          item count           |  section header, 4 bytes
/// +---------------+---------------+-------------------------------+
/// |      count items of (item length * 4) bytes each ...          |
/// +===============================================================+
/// |                   ... more sections ...                       |  payload length bytes
/// +===============================================================+
/// |        MAC: HMAC-SHA256 over all bytes above, first 16        |  trailer, see auth.h
/// +---------------------------------------------------------------+
/// ```
///
/// The item length is in 32-bit words and may exceed the length this version knows: a decoder
/// reads the fields it knows and skips the rest, so a later minor revision can append fields to
/// an item without a version bump. An item may also be shorter than this version's, down to the
/// action's first revision (its minimum length): the appended fields then read as absent. Below
/// the minimum, an unknown action, a count above kMaxItemsPerSection or a section running past
/// the payload rejects the whole frame, before any handler is called.
///
/// Revisions of version 1: 1.0 had FLOW_UPSERT items of 168 bytes (kFlowUpsertMinLen); 1.1
/// appends the splice fields (24 bytes, SpliceRecord). A 1.1 node reads a 1.0 upsert with
/// FlowRecord::splice_fields false (its installer refuses a spliced flow without them); a 1.0
/// node reads a 1.1 upsert and skips the splice fields. 1.2 appends to HEARTBEAT the sender's
/// send time (8 bytes, diagnostics only, see Heartbeat::sent_ns); a 1.1 node skips it, a 1.2
/// node reads a 16-byte heartbeat with sent_ns 0.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/ip_addr.h"

namespace tandem::sync {

inline constexpr uint16_t kMagic = 0x5453;  // "TS"
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderLen = 24;
inline constexpr size_t kMacLen = 16;       ///< truncated HMAC-SHA256, see auth.h
inline constexpr size_t kSectionHeaderLen = 4;
/// Largest frame an encoder builds by default: fits a 1500-byte MTU in UDP over IPv4 or IPv6.
inline constexpr size_t kDefaultMaxFrame = 1400;
/// Upper bound on items in one section; more is a malformed (or hostile) frame.
inline constexpr uint16_t kMaxItemsPerSection = 1024;
inline constexpr size_t kMaxAckRanges = 4;

/// Section actions. Values are the protocol: never renumber, only append.
enum class Action : uint8_t {
  kHeartbeat = 1,
  kSeqBase = 2,
  kFlowUpsert = 3,
  kFlowDelete = 4,
  kBulkRequest = 5,
  kBulkEnd = 6,
  kAck = 7,
};
inline constexpr uint8_t kActionMax = 7;

/// Wire length in bytes of each item type in this version (a multiple of 4).
inline constexpr size_t kHeartbeatLen = 24;
inline constexpr size_t kHeartbeatMinLen = 16;  ///< revisions 1.0 and 1.1: no send time
inline constexpr size_t kSeqBaseLen = 16;
inline constexpr size_t kFlowUpsertLen = 192;
inline constexpr size_t kFlowUpsertMinLen = 168;  ///< revision 1.0: no splice fields
inline constexpr size_t kFlowDeleteLen = 44;
inline constexpr size_t kBulkRequestLen = 4;
inline constexpr size_t kBulkEndLen = 16;
inline constexpr size_t kAckLen = 52;

enum class WireError : uint8_t {
  kNone,
  kBadMagic,
  kBadVersion,
  kBadLength,          ///< frame length disagrees with the header's payload length
  kTruncatedSection,   ///< a section header or its items run past the payload
  kUnknownSection,     ///< an action this version does not know
  kTooManyItems,       ///< count above kMaxItemsPerSection, or zero
  kBadItemLength,      ///< item shorter than this version's item of that action
  kBadValue,           ///< a field outside its range (role, TCP state, ACK range count...)
  kCount
};
const char* wireErrorName(WireError e) noexcept;

/// Roles as they travel in heartbeats (see roles.h).
enum class Role : uint8_t { kStandby = 0, kActive = 1, kFault = 2 };
inline constexpr uint8_t kRoleMax = 2;
const char* roleName(Role r) noexcept;

struct FrameHeader {
  uint8_t flags = 0;        ///< none defined yet; sent as 0, ignored on receipt
  uint16_t key_id = 0;
  uint16_t payload_len = 0; ///< bytes of sections; set by FrameWriter::finish()
  uint64_t counter = 0;
  uint32_t node_id = 0;
  uint32_t epoch = 0;
  friend bool operator==(const FrameHeader&, const FrameHeader&) noexcept = default;
};

struct Heartbeat {
  Role role = Role::kStandby;
  uint8_t priority = 0;
  bool ready = false;       ///< holds the whole table (bulk resync finished)
  bool handover = false;    ///< an active handing over on purpose: take over now, don't wait
  uint32_t epoch = 0;
  uint32_t flows = 0;
  uint32_t interval_ms = 0; ///< the sender's heartbeat interval
  /// 1.2: the sender's CLOCK_REALTIME when it sent the frame, ns; 0 = absent. Diagnostics only
  /// (the receiver's delivery-delay metrics, exact when both nodes share a clock); no decision
  /// depends on it, so the two clocks still need not agree.
  uint64_t sent_ns = 0;
  friend bool operator==(const Heartbeat&, const Heartbeat&) noexcept = default;
};

/// Identifies a flow across the pair: its client leg (what the client sees never changes).
struct FlowKey {
  IpAddr client_addr;
  IpAddr vip_addr;
  uint16_t client_port = 0;
  uint16_t vip_port = 0;
  friend bool operator==(const FlowKey&, const FlowKey&) noexcept = default;
};
struct FlowKeyHash {
  size_t operator()(const FlowKey& k) const noexcept;
};

/// Window tracking of one direction (proxy/core/flow.h TcpWindow).
struct WindowRecord {
  uint32_t td_end = 0;
  uint32_t td_maxend = 0;
  uint32_t td_maxwin = 0;
  uint32_t last_ack = 0;
  uint32_t fin_end = 0;
  uint8_t scale = 0;
  uint8_t flags = 0;  ///< kWin* bits
  friend bool operator==(const WindowRecord&, const WindowRecord&) noexcept = default;
};
inline constexpr uint8_t kWinSeen = 0x01;
inline constexpr uint8_t kWinScaleOffered = 0x02;
inline constexpr uint8_t kWinAckSeen = 0x04;
inline constexpr uint8_t kWinFinSeen = 0x08;
inline constexpr uint8_t kWinFinAcked = 0x10;

/// Sequence adjustment of one direction, after nf_conntrack_seqadj.c.
struct SeqAdjRecord {
  uint32_t correction_pos = 0;
  int32_t offset_before = 0;
  int32_t offset_after = 0;
  friend bool operator==(const SeqAdjRecord&, const SeqAdjRecord&) noexcept = default;
};

/// Wire codes of the TCP state and mode: the values of tandem::TcpState and tandem::Mode today,
/// fixed here because they are protocol (the daemon's adapter maps them and static_asserts).
inline constexpr uint8_t kTcpStateCount = 9;
inline constexpr uint8_t kModeCount = 2;
inline constexpr uint8_t kFlowHasSeqAdj = 0x01;

/// Splice-mode state of one flow (proxy/core/flow.h): the cookie, timestamp and window-scale
/// translation between the two legs, and the backend SYN's options (to send it again).
struct SpliceRecord {
  uint8_t flags = 0;  ///< kSplice* bits
  uint8_t backend_wscale = 0;
  uint8_t client_view_wscale = 0;
  uint8_t syn_retries = 0;
  uint32_t ts_offset = 0;
  uint32_t proxy_isn = 0;
  uint32_t client_tsval = 0;
  uint32_t proxy_tsval = 0;
  uint16_t client_window = 0;
  uint16_t syn_mss = 0;
  friend bool operator==(const SpliceRecord&, const SpliceRecord&) noexcept = default;
};
inline constexpr uint8_t kSplicePending = 0x01;   ///< the backend's SYN-ACK has not arrived
inline constexpr uint8_t kSpliceTsAdj = 0x02;     ///< timestamps are translated
inline constexpr uint8_t kSpliceRescale = 0x04;   ///< backend windows are rescaled
inline constexpr uint8_t kSpliceSynSack = 0x08;   ///< the backend SYN offered SACK
inline constexpr uint8_t kSpliceSynEcn = 0x10;    ///< the backend SYN asked for ECN
inline constexpr uint8_t kSpliceMoving = 0x20;    ///< the pending handshake is a re-splice
inline constexpr uint8_t kSpliceClientLast = 0x40; ///< the last payload was the client's
inline constexpr uint8_t kSpliceAwaitData = 0x80;  ///< bind = data: no backend SYN sent yet

/// The hard state of one flow: what a standby needs to keep translating it.
struct FlowRecord {
  FlowKey key;
  IpAddr backend_addr;
  IpAddr source_addr;
  uint16_t backend_port = 0;
  uint16_t source_port = 0;
  uint16_t service = 0;
  uint16_t backend = 0;      ///< index in the service's pool
  uint8_t mode = 0;          ///< < kModeCount
  uint8_t tcp_state = 0;     ///< < kTcpStateCount
  uint8_t flags = 0;         ///< kFlow* bits
  uint32_t idle_ms = 0;      ///< time since the last packet, at the sender, when encoded
  uint32_t expires_ms = 0;   ///< time left until the sender would expire it
  WindowRecord win[2];       ///< indexed by direction: 0 from client, 1 from backend
  SeqAdjRecord adj[2];
  /// The item carried the splice fields (revision 1.1 on): set by every encoder of this
  /// version, false only for an item of revision 1.0.
  bool splice_fields = false;
  SpliceRecord splice;       ///< meaningful for mode splice
  friend bool operator==(const FlowRecord&, const FlowRecord&) noexcept = default;
};

/// A reliable update message (see reliable.h): the seq orders them per sender session.
struct SeqBase {
  uint64_t session = 0;  ///< the sender's session id (new on each start)
  uint64_t base = 0;     ///< no unacknowledged message of the session has a lower seq
  friend bool operator==(const SeqBase&, const SeqBase&) noexcept = default;
};
struct FlowUpsert {
  uint64_t seq = 0;
  FlowRecord flow;
  friend bool operator==(const FlowUpsert&, const FlowUpsert&) noexcept = default;
};
struct FlowDelete {
  uint64_t seq = 0;
  FlowKey key;
  friend bool operator==(const FlowDelete&, const FlowDelete&) noexcept = default;
};
struct BulkRequest {
  uint32_t request_id = 0;
  friend bool operator==(const BulkRequest&, const BulkRequest&) noexcept = default;
};
struct BulkEnd {
  uint64_t seq = 0;
  uint32_t request_id = 0;
  uint32_t flows = 0;  ///< flows the bulk stream carried
  friend bool operator==(const BulkEnd&, const BulkEnd&) noexcept = default;
};
/// A received seq range [first, last] above the cumulative ack, as SACK blocks (RFC 2018).
struct AckRange {
  uint64_t first = 0;
  uint64_t last = 0;
  friend bool operator==(const AckRange&, const AckRange&) noexcept = default;
};
struct Ack {
  uint64_t session = 0;     ///< the session being acknowledged
  uint64_t cumulative = 0;  ///< every seq <= this was received
  uint8_t range_count = 0;
  AckRange ranges[kMaxAckRanges];  ///< each within 2^32 of cumulative, above it
  friend bool operator==(const Ack&, const Ack&) noexcept = default;
};

/// Builds one frame in a caller's buffer. Consecutive items of the same action share a section.
/// An add*() returning false did not fit (or the section is full): finish this frame, start
/// another. The header is written by finish(), so the counter can be taken last.
class FrameWriter {
 public:
  explicit FrameWriter(std::vector<uint8_t>& out, size_t max_frame = kDefaultMaxFrame);

  bool add(const Heartbeat& v);
  bool add(const SeqBase& v);
  bool add(const FlowUpsert& v);
  bool add(const FlowDelete& v);
  bool add(const BulkRequest& v);
  bool add(const BulkEnd& v);
  bool add(const Ack& v);

  /// Bytes a frame would take after adding one more item of `action` (header + MAC included).
  bool fits(Action action) const noexcept;
  size_t items() const noexcept { return items_; }
  bool empty() const noexcept { return items_ == 0; }
  /// The frame built so far; after finish(), the whole frame including the MAC trailer.
  std::span<uint8_t> frame() noexcept { return {out_.data(), out_.size()}; }

  /// Writes the header (payload length filled in) and reserves the MAC trailer, zeroed; the
  /// frame is then out[0, out.size()) and ready for auth.h's seal().
  void finish(FrameHeader header);

 private:
  uint8_t* beginItem(Action action, size_t len);

  std::vector<uint8_t>& out_;
  size_t max_frame_;
  size_t section_at_ = 0;  ///< offset of the open section's header; 0 = none open
  Action section_action_ = Action::kHeartbeat;
  uint16_t section_count_ = 0;
  size_t items_ = 0;
};

/// Decoded header plus a view of the sections.
struct HeaderResult {
  WireError error = WireError::kNone;
  FrameHeader header;
  std::span<const uint8_t> payload;  ///< the sections
  std::span<const uint8_t> signed_bytes;  ///< header + sections: what the MAC covers
  std::span<const uint8_t> mac;
};

/// Checks magic, version and lengths of a whole frame (header + payload + MAC).
HeaderResult decodeHeader(std::span<const uint8_t> frame) noexcept;

/// Receives decoded items, one call per item, in frame order. The dispatch table in wire.cc
/// calls these only after the whole payload validated.
class SectionHandler {
 public:
  virtual ~SectionHandler() = default;
  virtual void onHeartbeat(const Heartbeat&) noexcept {}
  virtual void onSeqBase(const SeqBase&) noexcept {}
  virtual void onFlowUpsert(const FlowUpsert&) noexcept {}
  virtual void onFlowDelete(const FlowDelete&) noexcept {}
  virtual void onBulkRequest(const BulkRequest&) noexcept {}
  virtual void onBulkEnd(const BulkEnd&) noexcept {}
  virtual void onAck(const Ack&) noexcept {}
};

struct PayloadResult {
  WireError error = WireError::kNone;
  size_t sections = 0;
  size_t items = 0;
  size_t error_offset = 0;  ///< payload offset of the offending section, on error
};

/// Validates every section of `payload`, then (only if all are valid) decodes each item and
/// hands it to `handler`. Never reads outside `payload`, never throws, never allocates.
PayloadResult decodePayload(std::span<const uint8_t> payload, SectionHandler& handler) noexcept;

}  // namespace tandem::sync
