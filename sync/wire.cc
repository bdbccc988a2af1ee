#include "sync/wire.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "common/bytes.h"

namespace tandem::sync {

const char* wireErrorName(WireError e) noexcept {
  switch (e) {
    case WireError::kNone: return "none";
    case WireError::kBadMagic: return "bad_magic";
    case WireError::kBadVersion: return "bad_version";
    case WireError::kBadLength: return "bad_length";
    case WireError::kTruncatedSection: return "truncated_section";
    case WireError::kUnknownSection: return "unknown_section";
    case WireError::kTooManyItems: return "too_many_items";
    case WireError::kBadItemLength: return "bad_item_length";
    case WireError::kBadValue: return "bad_value";
    case WireError::kCount: break;
  }
  return "?";
}

const char* roleName(Role r) noexcept {
  switch (r) {
    case Role::kStandby: return "standby";
    case Role::kActive: return "active";
    case Role::kFault: return "fault";
  }
  return "?";
}

size_t FlowKeyHash::operator()(const FlowKey& k) const noexcept {
  // FNV-1a over the key's fields: the table is local and its keys come from our own peer after
  // authentication, so a keyed hash buys nothing here.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](uint8_t b) {
    h ^= b;
    h *= 0x100000001b3ull;
  };
  for (uint8_t b : k.client_addr.bytes()) mix(b);
  for (uint8_t b : k.vip_addr.bytes()) mix(b);
  mix(static_cast<uint8_t>(k.client_port >> 8));
  mix(static_cast<uint8_t>(k.client_port));
  mix(static_cast<uint8_t>(k.vip_port >> 8));
  mix(static_cast<uint8_t>(k.vip_port));
  return static_cast<size_t>(h);
}

namespace {

// ---- The one place where in-memory state becomes wire bytes and back. ----

/// Sequential big-endian writer over a buffer the caller sized exactly.
class Put {
 public:
  explicit Put(uint8_t* p) noexcept : p_(p) {}
  void u8(uint8_t v) noexcept { *p_++ = v; }
  void u16(uint16_t v) noexcept {
    store16(p_, v);
    p_ += 2;
  }
  void u32(uint32_t v) noexcept {
    store32(p_, v);
    p_ += 4;
  }
  void i32(int32_t v) noexcept { u32(static_cast<uint32_t>(v)); }
  void u64(uint64_t v) noexcept {
    u32(static_cast<uint32_t>(v >> 32));
    u32(static_cast<uint32_t>(v));
  }
  void addr(const IpAddr& a) noexcept {
    std::copy(a.bytes().begin(), a.bytes().end(), p_);
    p_ += 16;
  }
  void zero(size_t n) noexcept {
    std::fill_n(p_, n, uint8_t{0});
    p_ += n;
  }

 private:
  uint8_t* p_;
};

/// Sequential big-endian reader; callers have checked the item length first.
class Get {
 public:
  explicit Get(const uint8_t* p) noexcept : p_(p) {}
  uint8_t u8() noexcept { return *p_++; }
  uint16_t u16() noexcept {
    const uint16_t v = load16(p_);
    p_ += 2;
    return v;
  }
  uint32_t u32() noexcept {
    const uint32_t v = load32(p_);
    p_ += 4;
    return v;
  }
  int32_t i32() noexcept { return static_cast<int32_t>(u32()); }
  uint64_t u64() noexcept {
    const uint64_t hi = u32();
    return (hi << 32) | u32();
  }
  IpAddr addr() noexcept {
    const IpAddr a = IpAddr::fromV6(p_);
    p_ += 16;
    return a;
  }
  void skip(size_t n) noexcept { p_ += n; }

 private:
  const uint8_t* p_;
};

constexpr uint8_t kHbReady = 0x01;
constexpr uint8_t kHbHandover = 0x02;

void put(Put& w, const Heartbeat& v) noexcept {
  w.u8(static_cast<uint8_t>(v.role));
  w.u8(v.priority);
  w.u8(static_cast<uint8_t>((v.ready ? kHbReady : 0) | (v.handover ? kHbHandover : 0)));
  w.u8(0);
  w.u32(v.epoch);
  w.u32(v.flows);
  w.u32(v.interval_ms);
  w.u64(v.sent_ns);
}
bool get(Get& r, Heartbeat& v, size_t item_len) noexcept {
  const uint8_t role = r.u8();
  v.priority = r.u8();
  const uint8_t flags = r.u8();
  r.skip(1);
  v.epoch = r.u32();
  v.flows = r.u32();
  v.interval_ms = r.u32();
  v.sent_ns = item_len >= kHeartbeatLen ? r.u64() : 0;  // revision 1.2
  v.ready = (flags & kHbReady) != 0;
  v.handover = (flags & kHbHandover) != 0;
  v.role = static_cast<Role>(role);
  return role <= kRoleMax;
}

void put(Put& w, const SeqBase& v) noexcept {
  w.u64(v.session);
  w.u64(v.base);
}
bool get(Get& r, SeqBase& v) noexcept {
  v.session = r.u64();
  v.base = r.u64();
  return true;
}

void putKey(Put& w, const FlowKey& k) noexcept {
  w.addr(k.client_addr);
  w.addr(k.vip_addr);
  w.u16(k.client_port);
  w.u16(k.vip_port);
}
void getKey(Get& r, FlowKey& k) noexcept {
  k.client_addr = r.addr();
  k.vip_addr = r.addr();
  k.client_port = r.u16();
  k.vip_port = r.u16();
}

void put(Put& w, const FlowUpsert& v) noexcept {
  const FlowRecord& f = v.flow;
  w.u64(v.seq);
  putKey(w, f.key);                                   // 36
  w.addr(f.backend_addr);
  w.addr(f.source_addr);
  w.u16(f.backend_port);
  w.u16(f.source_port);                               // 36
  w.u16(f.service);
  w.u16(f.backend);
  w.u8(f.mode);
  w.u8(f.tcp_state);
  w.u8(f.flags);
  w.u8(0);                                            // 8
  w.u32(f.idle_ms);
  w.u32(f.expires_ms);                                // 8
  for (const WindowRecord& win : f.win) {             // 2 x 24
    w.u32(win.td_end);
    w.u32(win.td_maxend);
    w.u32(win.td_maxwin);
    w.u32(win.last_ack);
    w.u32(win.fin_end);
    w.u8(win.scale);
    w.u8(win.flags);
    w.zero(2);
  }
  for (const SeqAdjRecord& adj : f.adj) {             // 2 x 12
    w.u32(adj.correction_pos);
    w.i32(adj.offset_before);
    w.i32(adj.offset_after);
  }                                                   // revision 1.0 ends here: 168
  const SpliceRecord& sp = f.splice;                  // 24
  w.u8(sp.flags);
  w.u8(sp.backend_wscale);
  w.u8(sp.client_view_wscale);
  w.u8(sp.syn_retries);
  w.u32(sp.ts_offset);
  w.u32(sp.proxy_isn);
  w.u32(sp.client_tsval);
  w.u32(sp.proxy_tsval);
  w.u16(sp.client_window);
  w.u16(sp.syn_mss);
}
bool get(Get& r, FlowUpsert& v, size_t item_len) noexcept {
  FlowRecord& f = v.flow;
  v.seq = r.u64();
  getKey(r, f.key);
  f.backend_addr = r.addr();
  f.source_addr = r.addr();
  f.backend_port = r.u16();
  f.source_port = r.u16();
  f.service = r.u16();
  f.backend = r.u16();
  f.mode = r.u8();
  f.tcp_state = r.u8();
  f.flags = r.u8();
  r.skip(1);
  f.idle_ms = r.u32();
  f.expires_ms = r.u32();
  bool ok = f.mode < kModeCount && f.tcp_state < kTcpStateCount;
  for (WindowRecord& win : f.win) {
    win.td_end = r.u32();
    win.td_maxend = r.u32();
    win.td_maxwin = r.u32();
    win.last_ack = r.u32();
    win.fin_end = r.u32();
    win.scale = r.u8();
    win.flags = r.u8();
    r.skip(2);
    ok = ok && win.scale <= 14;  // RFC 7323 section 2.3: a larger shift is never in use
  }
  for (SeqAdjRecord& adj : f.adj) {
    adj.correction_pos = r.u32();
    adj.offset_before = r.i32();
    adj.offset_after = r.i32();
  }
  f.splice_fields = item_len >= kFlowUpsertLen;
  if (!f.splice_fields) return ok;  // revision 1.0: no splice fields
  SpliceRecord& sp = f.splice;
  sp.flags = r.u8();
  sp.backend_wscale = r.u8();
  sp.client_view_wscale = r.u8();
  sp.syn_retries = r.u8();
  sp.ts_offset = r.u32();
  sp.proxy_isn = r.u32();
  sp.client_tsval = r.u32();
  sp.proxy_tsval = r.u32();
  sp.client_window = r.u16();
  sp.syn_mss = r.u16();
  return ok && sp.backend_wscale <= 14 && sp.client_view_wscale <= 14;
}

void put(Put& w, const FlowDelete& v) noexcept {
  w.u64(v.seq);
  putKey(w, v.key);
}
bool get(Get& r, FlowDelete& v) noexcept {
  v.seq = r.u64();
  getKey(r, v.key);
  return true;
}

void put(Put& w, const BulkRequest& v) noexcept { w.u32(v.request_id); }
bool get(Get& r, BulkRequest& v) noexcept {
  v.request_id = r.u32();
  return true;
}

void put(Put& w, const BulkEnd& v) noexcept {
  w.u64(v.seq);
  w.u32(v.request_id);
  w.u32(v.flows);
}
bool get(Get& r, BulkEnd& v) noexcept {
  v.seq = r.u64();
  v.request_id = r.u32();
  v.flows = r.u32();
  return true;
}

// ACK ranges travel as {start - cumulative, length}, 32 bits each: a receiver's reorder window
// is far below 2^32 messages, and this keeps the item small.
void put(Put& w, const Ack& v) noexcept {
  w.u64(v.session);
  w.u64(v.cumulative);
  uint8_t n = 0;
  uint32_t delta[kMaxAckRanges] = {};
  uint32_t len[kMaxAckRanges] = {};
  for (size_t i = 0; i < v.range_count && i < kMaxAckRanges; ++i) {
    const AckRange& a = v.ranges[i];
    const uint64_t d = a.first - v.cumulative;
    const uint64_t l = a.last - a.first + 1;
    if (a.first <= v.cumulative + 1 || a.last < a.first || d > UINT32_MAX || l > UINT32_MAX) {
      continue;  // not representable or meaningless: leave it out, the sender resends it
    }
    delta[n] = static_cast<uint32_t>(d);
    len[n] = static_cast<uint32_t>(l);
    ++n;
  }
  w.u8(n);
  w.zero(3);
  for (size_t i = 0; i < kMaxAckRanges; ++i) {
    w.u32(delta[i]);
    w.u32(len[i]);
  }
}
bool get(Get& r, Ack& v) noexcept {
  v.session = r.u64();
  v.cumulative = r.u64();
  v.range_count = r.u8();
  r.skip(3);
  bool ok = v.range_count <= kMaxAckRanges;
  for (size_t i = 0; i < kMaxAckRanges; ++i) {
    const uint32_t delta = r.u32();
    const uint32_t len = r.u32();
    if (i >= v.range_count) {
      v.ranges[i] = AckRange{};
      continue;
    }
    ok = ok && delta >= 2 && len >= 1 && v.cumulative <= UINT64_MAX - delta - len;
    v.ranges[i].first = v.cumulative + delta;
    v.ranges[i].last = v.cumulative + delta + len - 1;
  }
  return ok;
}

/// Static description of one action: the one dispatch table of the protocol.
struct ActionInfo {
  size_t len;      ///< wire length of this version's item
  size_t min_len;  ///< wire length of the action's first revision
  /// Decodes and validates one item of `item_len` >= min_len bytes; calls the handler when
  /// non-null.
  bool (*decode)(const uint8_t* item, size_t item_len, SectionHandler* handler) noexcept;
};

template <class T, void (SectionHandler::*kFn)(const T&) noexcept>
bool decodeAs(const uint8_t* item, size_t item_len, SectionHandler* handler) noexcept {
  T v{};
  Get r(item);
  bool ok = false;
  if constexpr (std::is_same_v<T, FlowUpsert> || std::is_same_v<T, Heartbeat>) {
    ok = get(r, v, item_len);
  } else {
    ok = get(r, v);
  }
  if (!ok) return false;
  if (handler != nullptr) (handler->*kFn)(v);
  return true;
}

constexpr ActionInfo kActions[kActionMax + 1] = {
    {0, 0, nullptr},
    {kHeartbeatLen, kHeartbeatMinLen, &decodeAs<Heartbeat, &SectionHandler::onHeartbeat>},
    {kSeqBaseLen, kSeqBaseLen, &decodeAs<SeqBase, &SectionHandler::onSeqBase>},
    {kFlowUpsertLen, kFlowUpsertMinLen, &decodeAs<FlowUpsert, &SectionHandler::onFlowUpsert>},
    {kFlowDeleteLen, kFlowDeleteLen, &decodeAs<FlowDelete, &SectionHandler::onFlowDelete>},
    {kBulkRequestLen, kBulkRequestLen, &decodeAs<BulkRequest, &SectionHandler::onBulkRequest>},
    {kBulkEndLen, kBulkEndLen, &decodeAs<BulkEnd, &SectionHandler::onBulkEnd>},
    {kAckLen, kAckLen, &decodeAs<Ack, &SectionHandler::onAck>},
};

static_assert(kHeartbeatLen % 4 == 0 && kSeqBaseLen % 4 == 0 && kFlowUpsertLen % 4 == 0 &&
              kFlowDeleteLen % 4 == 0 && kBulkRequestLen % 4 == 0 && kBulkEndLen % 4 == 0 &&
              kAckLen % 4 == 0 && kFlowUpsertLen / 4 <= 255 && kFlowUpsertMinLen % 4 == 0 &&
              kHeartbeatMinLen % 4 == 0);

/// One pass over the sections; handler == nullptr validates only.
PayloadResult walk(std::span<const uint8_t> payload, SectionHandler* handler) noexcept {
  PayloadResult res;
  size_t off = 0;
  while (off < payload.size()) {
    res.error_offset = off;
    if (payload.size() - off < kSectionHeaderLen) {
      res.error = WireError::kTruncatedSection;
      return res;
    }
    const uint8_t* sh = payload.data() + off;
    const uint8_t action = sh[0];
    const size_t item_len = size_t{sh[1]} * 4;
    const uint16_t count = load16(sh + 2);
    off += kSectionHeaderLen;
    if (action == 0 || action > kActionMax) {
      res.error = WireError::kUnknownSection;
      return res;
    }
    const ActionInfo& info = kActions[action];
    if (count == 0 || count > kMaxItemsPerSection) {
      res.error = WireError::kTooManyItems;
      return res;
    }
    if (item_len < info.min_len || item_len == 0) {
      res.error = WireError::kBadItemLength;
      return res;
    }
    if ((payload.size() - off) / item_len < count) {
      res.error = WireError::kTruncatedSection;
      return res;
    }
    for (size_t i = 0; i < count; ++i) {
      if (!info.decode(payload.data() + off, item_len, handler)) {
        res.error = WireError::kBadValue;
        return res;
      }
      off += item_len;  // a longer item than known: skip the fields a later revision appended
    }
    ++res.sections;
    res.items += count;
  }
  res.error_offset = 0;
  return res;
}

size_t itemLen(Action a) noexcept { return kActions[static_cast<uint8_t>(a)].len; }

}  // namespace

// ---- FrameWriter ----

FrameWriter::FrameWriter(std::vector<uint8_t>& out, size_t max_frame)
    : out_(out),
      max_frame_(std::clamp<size_t>(max_frame, kHeaderLen + kMacLen + kSectionHeaderLen,
                                    kHeaderLen + 0xffff + kMacLen)) {
  out_.assign(kHeaderLen, 0);
}

bool FrameWriter::fits(Action action) const noexcept {
  const bool same = section_at_ != 0 && section_action_ == action &&
                    section_count_ < kMaxItemsPerSection;
  const size_t need = itemLen(action) + (same ? 0 : kSectionHeaderLen);
  return out_.size() + need + kMacLen <= max_frame_;
}

uint8_t* FrameWriter::beginItem(Action action, size_t len) {
  if (!fits(action)) return nullptr;
  const bool same = section_at_ != 0 && section_action_ == action &&
                    section_count_ < kMaxItemsPerSection;
  if (!same) {
    if (section_at_ != 0) store16(out_.data() + section_at_ + 2, section_count_);
    section_at_ = out_.size();
    section_action_ = action;
    section_count_ = 0;
    out_.push_back(static_cast<uint8_t>(action));
    out_.push_back(static_cast<uint8_t>(len / 4));
    out_.push_back(0);
    out_.push_back(0);
  }
  ++section_count_;
  ++items_;
  const size_t at = out_.size();
  out_.resize(at + len);
  return out_.data() + at;
}

template <class T>
static bool writeItem(uint8_t* p, const T& v) noexcept {
  if (p == nullptr) return false;
  Put w(p);
  put(w, v);
  return true;
}

bool FrameWriter::add(const Heartbeat& v) {
  return writeItem(beginItem(Action::kHeartbeat, kHeartbeatLen), v);
}
bool FrameWriter::add(const SeqBase& v) {
  return writeItem(beginItem(Action::kSeqBase, kSeqBaseLen), v);
}
bool FrameWriter::add(const FlowUpsert& v) {
  return writeItem(beginItem(Action::kFlowUpsert, kFlowUpsertLen), v);
}
bool FrameWriter::add(const FlowDelete& v) {
  return writeItem(beginItem(Action::kFlowDelete, kFlowDeleteLen), v);
}
bool FrameWriter::add(const BulkRequest& v) {
  return writeItem(beginItem(Action::kBulkRequest, kBulkRequestLen), v);
}
bool FrameWriter::add(const BulkEnd& v) {
  return writeItem(beginItem(Action::kBulkEnd, kBulkEndLen), v);
}
bool FrameWriter::add(const Ack& v) {
  return writeItem(beginItem(Action::kAck, kAckLen), v);
}

void FrameWriter::finish(FrameHeader header) {
  if (section_at_ != 0) store16(out_.data() + section_at_ + 2, section_count_);
  header.payload_len = static_cast<uint16_t>(out_.size() - kHeaderLen);
  Put w(out_.data());
  w.u16(kMagic);
  w.u8(kVersion);
  w.u8(header.flags);
  w.u16(header.key_id);
  w.u16(header.payload_len);
  w.u64(header.counter);
  w.u32(header.node_id);
  w.u32(header.epoch);
  out_.resize(out_.size() + kMacLen, 0);
  section_at_ = 0;
}

// ---- Decoding ----

HeaderResult decodeHeader(std::span<const uint8_t> frame) noexcept {
  HeaderResult res;
  if (frame.size() < kHeaderLen + kMacLen) {
    res.error = frame.size() >= 2 && load16(frame.data()) != kMagic ? WireError::kBadMagic
                                                                     : WireError::kBadLength;
    return res;
  }
  Get r(frame.data());
  if (r.u16() != kMagic) {
    res.error = WireError::kBadMagic;
    return res;
  }
  if (r.u8() != kVersion) {
    res.error = WireError::kBadVersion;
    return res;
  }
  FrameHeader& h = res.header;
  h.flags = r.u8();
  h.key_id = r.u16();
  h.payload_len = r.u16();
  h.counter = r.u64();
  h.node_id = r.u32();
  h.epoch = r.u32();
  if (frame.size() != kHeaderLen + size_t{h.payload_len} + kMacLen) {
    res.error = WireError::kBadLength;
    return res;
  }
  res.payload = frame.subspan(kHeaderLen, h.payload_len);
  res.signed_bytes = frame.first(kHeaderLen + h.payload_len);
  res.mac = frame.last(kMacLen);
  return res;
}

PayloadResult decodePayload(std::span<const uint8_t> payload, SectionHandler& handler) noexcept {
  PayloadResult res = walk(payload, nullptr);
  if (res.error != WireError::kNone) return res;
  return walk(payload, &handler);
}

}  // namespace tandem::sync
