#include "proxy/core/syn_cookie.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/segment_writer.h"

namespace tandem {

namespace {

constexpr size_t kSipHashKeyLen = 16;
constexpr size_t kMacOutLen = 8;
// Domain label of the key derivation; changing it (or the message layout) changes every cookie,
// so an active and a standby of different versions would not accept each other's handshakes.
constexpr char kKeyLabel[] = "tandem syn-cookie v1";

constexpr uint32_t kMacMask = (1u << SynCookie::kMacBits) - 1;
constexpr uint32_t kCountMask = (1u << SynCookie::kCountBits) - 1;
constexpr uint32_t kMssIndexMask = (1u << SynCookie::kMssIndexBits) - 1;
constexpr unsigned kCountShift = SynCookie::kMssIndexBits;
constexpr unsigned kMacShift = SynCookie::kMssIndexBits + SynCookie::kCountBits;
static_assert(SynCookie::kMacBits + SynCookie::kCountBits + SynCookie::kMssIndexBits == 32);

// Linux accepts a cookie in its own minute and the next (MAX_SYNCOOKIE_AGE 2).
constexpr uint32_t kMaxAge = 1;

constexpr uint8_t kOptByteTs = 0x80;  // in the MAC input: "the options came via timestamps"
constexpr uint64_t kNsPerMs = 1'000'000;

// Fixed-layout MAC input; see the file comment of syn_cookie.h.
constexpr size_t kMsgLen = 16 + 16 + 2 + 2 + 4 + 8 + 1 + 1;

void buildMessage(const CookieInput& in, uint64_t count, uint8_t mss_index, uint8_t opt_byte,
                  uint8_t (&msg)[kMsgLen]) noexcept {
  std::copy(in.client.addr.bytes().begin(), in.client.addr.bytes().end(), msg);
  std::copy(in.vip.addr.bytes().begin(), in.vip.addr.bytes().end(), msg + 16);
  store16(msg + 32, in.client.port);
  store16(msg + 34, in.vip.port);
  store32(msg + 36, in.client_isn);
  store32(msg + 40, static_cast<uint32_t>(count >> 32));
  store32(msg + 44, static_cast<uint32_t>(count));
  msg[48] = mss_index;
  msg[49] = opt_byte;
}

// The 6 option bits Linux's cookie_init_timestamp puts in TSval.
uint32_t tsOptionBits(const CookieOptions& o) noexcept {
  uint32_t bits = o.wscale_ok ? o.wscale : SynCookie::kTsWscaleNone;
  if (o.sack_ok) bits |= SynCookie::kTsSack;
  if (o.ecn_ok) bits |= SynCookie::kTsEcn;
  return bits;
}

evp_mac_ctx_st* newKeyedContext(std::span<const uint8_t> secret) {
  if (secret.size() < CookieSecrets::kMinSecretLen)
    throw std::invalid_argument("syn cookie secret shorter than 16 bytes");
  std::vector<uint8_t> label_and_secret(kKeyLabel, kKeyLabel + sizeof kKeyLabel);  // with NUL
  label_and_secret.insert(label_and_secret.end(), secret.begin(), secret.end());
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned digest_len = 0;
  const int digest_ok = EVP_Digest(label_and_secret.data(), label_and_secret.size(), digest,
                                   &digest_len, EVP_sha256(), nullptr);
  OPENSSL_cleanse(label_and_secret.data(), label_and_secret.size());
  if (digest_ok != 1 || digest_len < kSipHashKeyLen) {
    OPENSSL_cleanse(digest, sizeof digest);
    throw std::runtime_error("syn cookie: SHA-256 unavailable");
  }
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
  EVP_MAC_CTX* ctx = mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr;
  EVP_MAC_free(mac);  // the context holds its own reference
  size_t out_len = kMacOutLen;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out_len),
                               OSSL_PARAM_construct_end()};
  const bool ok = ctx != nullptr && EVP_MAC_init(ctx, digest, kSipHashKeyLen, params) == 1;
  OPENSSL_cleanse(digest, sizeof digest);
  if (!ok) {
    EVP_MAC_CTX_free(ctx);
    throw std::runtime_error("syn cookie: OpenSSL SIPHASH MAC unavailable");
  }
  return ctx;
}

/// The SipHash key of one period of the schedule: SHA-256 over a label, the secret and the
/// count. False on failure.
bool derivePeriodKey(std::span<const uint8_t> secret, uint64_t count,
                     uint8_t (&key)[kSipHashKeyLen]) noexcept {
  static constexpr char kPeriodLabel[] = "tandem syn-cookie period key v1";
  uint8_t be_count[8];
  for (int i = 0; i < 8; ++i) be_count[i] = static_cast<uint8_t>(count >> (56 - 8 * i));
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned digest_len = 0;
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const bool digest_ok =
      md != nullptr && EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1 &&
      EVP_DigestUpdate(md, kPeriodLabel, sizeof kPeriodLabel) == 1 &&  // with its NUL
      EVP_DigestUpdate(md, secret.data(), secret.size()) == 1 &&
      EVP_DigestUpdate(md, be_count, sizeof be_count) == 1 &&
      EVP_DigestFinal_ex(md, digest, &digest_len) == 1 && digest_len >= kSipHashKeyLen;
  EVP_MD_CTX_free(md);
  if (digest_ok) std::copy(digest, digest + kSipHashKeyLen, key);
  OPENSSL_cleanse(digest, sizeof digest);
  return digest_ok;
}

/// The key of one period of the schedule; nullptr on failure. Allocation-free apart from
/// OpenSSL's own contexts, and noexcept: it may run on the packet path.
evp_mac_ctx_st* newPeriodContext(std::span<const uint8_t> secret, uint64_t count) noexcept {
  uint8_t key[kSipHashKeyLen];
  const bool key_ok = derivePeriodKey(secret, count, key);
  EVP_MAC* mac = key_ok ? EVP_MAC_fetch(nullptr, "SIPHASH", nullptr) : nullptr;
  EVP_MAC_CTX* ctx = mac != nullptr ? EVP_MAC_CTX_new(mac) : nullptr;
  EVP_MAC_free(mac);
  size_t out_len = kMacOutLen;
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &out_len),
                               OSSL_PARAM_construct_end()};
  const bool ok = ctx != nullptr && EVP_MAC_init(ctx, key, kSipHashKeyLen, params) == 1;
  OPENSSL_cleanse(key, sizeof key);
  if (!ok) {
    EVP_MAC_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

/// One 64-bit SipHash under a keyed context, little-endian as OpenSSL outputs it.
bool macWith(EVP_MAC_CTX* ctx, const uint8_t* msg, size_t len, uint64_t& out) noexcept {
  if (ctx == nullptr) return false;
  // A NULL key re-initialises the context with the key it already holds, without allocating
  // (defined for every provided MAC since openssl/openssl#18100, in 3.0 and later).
  uint8_t buf[kMacOutLen];
  size_t out_len = 0;
  if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1 || EVP_MAC_update(ctx, msg, len) != 1 ||
      EVP_MAC_final(ctx, buf, &out_len, sizeof buf) != 1 || out_len != kMacOutLen)
    return false;
  out = 0;
  for (size_t i = 0; i < kMacOutLen; ++i) out |= uint64_t{buf[i]} << (8 * i);
  return true;
}

}  // namespace

const char* cookieRejectName(CookieReject r) noexcept {
  switch (r) {
    case CookieReject::kNone: return "none";
    case CookieReject::kBadHash: return "bad_hash";
    case CookieReject::kStale: return "stale";
    case CookieReject::kMssIndexInvalid: return "mss_index_invalid";
    case CookieReject::kCryptoError: return "crypto_error";
    case CookieReject::kCount: break;
  }
  return "unknown";
}

// ---- CookieSecrets ------------------------------------------------------------------------

CookieSecrets::CookieSecrets(std::span<const uint8_t> secret)
    : current_(newKeyedContext(secret)) {}

CookieSecrets::~CookieSecrets() {
  EVP_MAC_CTX_free(current_);  // frees (and OpenSSL cleanses) the keyed state
  EVP_MAC_CTX_free(previous_);
}

CookieSecrets::CookieSecrets(CookieSecrets&& other) noexcept
    : current_(std::exchange(other.current_, nullptr)),
      previous_(std::exchange(other.previous_, nullptr)) {}

CookieSecrets& CookieSecrets::operator=(CookieSecrets&& other) noexcept {
  if (this != &other) {
    std::swap(current_, other.current_);
    std::swap(previous_, other.previous_);
  }
  return *this;
}

void CookieSecrets::rotate(std::span<const uint8_t> secret) {
  evp_mac_ctx_st* next = newKeyedContext(secret);  // may throw: nothing changed yet
  EVP_MAC_CTX_free(previous_);
  previous_ = current_;
  current_ = next;
}

bool CookieSecrets::mac(size_t slot, const uint8_t* msg, size_t len, uint64_t& out) noexcept {
  return macWith(slot == 0 ? current_ : slot == 1 ? previous_ : nullptr, msg, len, out);
}

// ---- SynCookie ----------------------------------------------------------------------------

SynCookie::SynCookie(SynCookieConfig config, CookieSecrets secrets)
    : config_(std::move(config)), secrets_(std::move(secrets)) {
  if (config_.period_ns == 0) throw std::invalid_argument("syn cookie period must be > 0");
  const auto& t = config_.mss_table;
  if (t.empty() || t.size() > mss_table_.size())
    throw std::invalid_argument("syn cookie MSS table needs 1 to 4 entries");
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == 0 || (i > 0 && t[i] <= t[i - 1]))
      throw std::invalid_argument("syn cookie MSS table must be positive and ascending");
    mss_table_[i] = t[i];
  }
  mss_table_size_ = static_cast<uint8_t>(t.size());
}

SynCookie::SynCookie(SynCookieConfig config, std::span<const uint8_t> secret)
    : SynCookie(std::move(config), CookieSecrets(secret)) {
  master_ = Secret(secret);
}

SynCookie::Secret::~Secret() { OPENSSL_cleanse(bytes.data(), bytes.size()); }

void SynCookie::MacCtxFree::operator()(evp_mac_ctx_st* ctx) const noexcept {
  EVP_MAC_CTX_free(ctx);
}

void SynCookie::advance(uint64_t now_ns) noexcept {
  if (!scheduled()) return;
  const uint64_t now_count = now_ns / config_.period_ns;
  for (uint64_t back = 0; back < 4 && back <= now_count; ++back) {
    const uint64_t c = now_count - back;
    auto& slot = ring_[c & 3];
    if (slot != nullptr && ring_count_[c & 3] == c) continue;
    slot.reset(newPeriodContext(master_.bytes, c));
    ring_count_[c & 3] = c;
  }
}

bool SynCookie::periodKeyBytes(uint64_t count, uint8_t (&out)[16]) const noexcept {
  static_assert(sizeof out == kSipHashKeyLen);
  return scheduled() && derivePeriodKey(master_.bytes, count, out);
}

evp_mac_ctx_st* SynCookie::periodKey(uint64_t count) const noexcept {
  return ring_count_[count & 3] == count ? ring_[count & 3].get() : nullptr;
}

uint8_t SynCookie::mssIndex(uint16_t mss) const noexcept {
  // Linux: the largest class not above the client's MSS; below the smallest, the smallest (an
  // MSS under 536 is below the RFC 9293 minimum and not worth a cookie bit).
  uint8_t i = static_cast<uint8_t>(mss_table_size_ - 1);
  while (i > 0 && mss < mss_table_[i]) --i;
  return i;
}

CookieIssue SynCookie::make(const CookieInput& in, uint64_t now_ns) noexcept {
  CookieIssue issue;
  const SynOffer& o = in.offer;
  const uint8_t index = mssIndex(o.mss);
  CookieOptions& opts = issue.options;
  opts.mss = mss_table_[index];
  // Without timestamps nothing but the MSS can come back, so nothing else is offered.
  opts.ts_ok = o.ts_ok && config_.timestamps;
  opts.wscale_ok = opts.ts_ok && o.has_wscale && config_.window_scaling;
  opts.wscale = opts.wscale_ok ? std::min<uint8_t>(o.wscale, tcpopt::kMaxWindowScale) : 0;
  opts.sack_ok = opts.ts_ok && o.sack_ok && config_.sack;
  opts.ecn_ok = opts.ts_ok && o.ecn_ok && config_.ecn;
  const uint32_t ts_bits = tsOptionBits(opts);

  const uint64_t count = now_ns / config_.period_ns;
  uint8_t msg[kMsgLen];
  buildMessage(in, count, index,
               static_cast<uint8_t>(opts.ts_ok ? (kOptByteTs | ts_bits) : 0), msg);
  uint64_t mac = 0;
  if (scheduled()) {
    advance(now_ns);
    if (!macWith(periodKey(count), msg, sizeof msg, mac)) return CookieIssue{};
  } else if (!secrets_.mac(0, msg, sizeof msg, mac)) {
    return CookieIssue{};
  }

  issue.isn = ((static_cast<uint32_t>(mac) & kMacMask) << kMacShift) |
              ((static_cast<uint32_t>(count) & kCountMask) << kCountShift) | index;
  if (opts.ts_ok) {
    // Unused MAC bits give the per-connection clock offset (RFC 7323 5.4), so TSval reveals
    // neither the caller's clock nor the other connections' values.
    const uint32_t clock = static_cast<uint32_t>(now_ns / kNsPerMs) +
                           static_cast<uint32_t>(mac >> 32);
    uint32_t ts = (clock & ~kTsOptionMask) | ts_bits;
    // Never ahead of the clock the later segments continue (Linux cookie_init_timestamp).
    if (static_cast<int32_t>(ts - clock) > 0) ts -= kTsOptionMask + 1;
    issue.tsval = ts;
  }
  issue.ok = true;
  return issue;
}

CookieCheck SynCookie::check(const CookieInput& from_ack, uint32_t ack_seq_minus_1,
                             uint32_t tsecr, bool has_ts, uint64_t now_ns) noexcept {
  CookieCheck result;
  const uint8_t index = static_cast<uint8_t>(ack_seq_minus_1 & kMssIndexMask);
  if (index >= mss_table_size_) {  // cheap refusal before any MAC work
    result.reason = CookieReject::kMssIndexInvalid;
    return result;
  }
  // The count field names the latest period <= now with those low bits: age 0..3.
  const uint64_t now_count = now_ns / config_.period_ns;
  const uint32_t field = (ack_seq_minus_1 >> kCountShift) & kCountMask;
  const uint32_t age = (static_cast<uint32_t>(now_count) - field) & kCountMask;
  const uint64_t count = now_count - age;

  const bool ts = has_ts && config_.timestamps;
  const uint32_t ts_bits = tsecr & kTsOptionMask;
  uint8_t msg[kMsgLen];
  buildMessage(from_ack, count, index, static_cast<uint8_t>(ts ? (kOptByteTs | ts_bits) : 0),
               msg);

  const uint32_t want = ack_seq_minus_1 >> kMacShift;
  bool matched = false;
  if (scheduled()) {
    // One MAC, under the key of the period the cookie names.
    advance(now_ns);
    uint64_t mac = 0;
    if (age > now_count) {
      result.reason = CookieReject::kBadHash;  // names a period before the clock's start
      return result;
    }
    if (!macWith(periodKey(count), msg, sizeof msg, mac)) {
      result.reason = CookieReject::kCryptoError;
      return result;
    }
    matched = (static_cast<uint32_t>(mac) & kMacMask) == want;
  }
  for (size_t slot = 0; slot < 2 && !matched && !scheduled(); ++slot) {
    uint64_t mac = 0;
    if (!secrets_.mac(slot, msg, sizeof msg, mac)) {
      if (slot == 0) {
        result.reason = CookieReject::kCryptoError;
        return result;
      }
      break;  // no previous secret
    }
    matched = (static_cast<uint32_t>(mac) & kMacMask) == want;
  }
  if (!matched) {
    result.reason = CookieReject::kBadHash;
    return result;
  }
  result.age = static_cast<uint8_t>(age);
  if (age > kMaxAge) {
    result.reason = CookieReject::kStale;
    return result;
  }
  CookieOptions& o = result.options;
  o.mss = mss_table_[index];
  o.ts_ok = ts;
  if (ts) {
    const uint32_t ws = ts_bits & kTsWscaleNone;
    o.wscale_ok = ws != kTsWscaleNone;
    o.wscale = o.wscale_ok ? static_cast<uint8_t>(ws) : 0;
    o.sack_ok = (ts_bits & kTsSack) != 0;
    o.ecn_ok = (ts_bits & kTsEcn) != 0;
  }
  result.ok = true;
  return result;
}

// ---- Packets ------------------------------------------------------------------------------

CookieInput cookieInputFromSyn(const TcpPacket& syn, const TcpOptions& opts) noexcept {
  CookieInput in;
  in.client = syn.src();
  in.vip = syn.dst();
  in.client_isn = syn.seq();
  SynOffer& o = in.offer;
  if (opts.has_mss) o.mss = opts.mss;
  o.has_wscale = opts.has_wscale;
  o.wscale = opts.wscale;
  o.sack_ok = opts.sack_permitted;
  o.ts_ok = opts.has_timestamp;
  // RFC 3168 6.1.1: an ECN-setup SYN carries both ECE and CWR. (An AccECN SYN also sets AE;
  // AccECN specifies that a SYN-ACK with ECE alone selects classic ECN.)
  o.ecn_ok = syn.has(tcpflag::kEce) && syn.has(tcpflag::kCwr);
  return in;
}

CookieInput cookieInputFromAck(const TcpPacket& ack) noexcept {
  CookieInput in;
  in.client = ack.src();
  in.vip = ack.dst();
  in.client_isn = ack.seq() - 1;  // wraps: a client ISN of 0xffffffff acks with seq 0
  return in;
}

size_t buildSynAck(const TcpPacket& syn, const TcpOptions& syn_opts, const CookieIssue& cookie,
                   const SynAckParams& params, uint8_t* out, size_t cap) noexcept {
  if (!cookie.ok || out == nullptr || !syn.has(tcpflag::kSyn) || syn.has(tcpflag::kAck))
    return 0;
  const CookieOptions& n = cookie.options;
  TcpOptions o;
  o.has_mss = true;
  o.mss = params.mss;
  o.has_timestamp = n.ts_ok;
  o.ts_val = cookie.tsval;
  o.ts_ecr = syn_opts.ts_val;
  o.sack_permitted = n.sack_ok;
  // RFC 7323 2.2: send a shift only if the client sent one (wscale_ok implies it did).
  o.has_wscale = n.wscale_ok;
  o.wscale = std::min<uint8_t>(params.wscale, tcpopt::kMaxWindowScale);
  uint8_t opts[40];
  const size_t opt_len = buildSynOptions(o, opts, sizeof opts);
  if (opt_len == 0) return 0;
  SegmentSpec seg;
  seg.saddr = syn.daddr();
  seg.daddr = syn.saddr();
  seg.sport = syn.dport();
  seg.dport = syn.sport();
  seg.seq = cookie.isn;
  seg.ack = syn.seq() + 1;  // any SYN payload (TFO) is not acknowledged: resent later
  seg.flags = static_cast<uint8_t>(tcpflag::kSyn | tcpflag::kAck | (n.ecn_ok ? tcpflag::kEce : 0));
  seg.window = params.window;
  seg.ttl = params.ttl;
  seg.options = opts;
  seg.options_len = opt_len;
  const size_t total = writeTcpSegment(seg, out, cap);
  return total;
}

}  // namespace tandem
