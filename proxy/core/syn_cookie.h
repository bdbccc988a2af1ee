#pragma once
/// @file Stateless SYN cookies for splice mode (RFC 4987 section 3.6), after Linux's
/// net/ipv4/syncookies.c: the proxy answers a client SYN with a SYN-ACK whose ISN authenticates
/// the connection, and keeps no state until the client's ACK echoes it back.
///
/// Cookie ISN (32 bits, big-endian bit numbering as on the wire):
///
///     31                                               4 3     2 1     0
///    +--------------------------------------------------+-------+-------+
///    |   MAC, truncated to kMacBits = 28 bits           | count | mss   |
///    |                                                  | mod 4 | index |
///    +--------------------------------------------------+-------+-------+
///
///   MAC = SipHash-2-4 (OpenSSL EVP_MAC "SIPHASH", 64-bit output) keyed with the secret, over
///         client addr (16 bytes, v4-mapped) | vip addr (16) | client port (2) | vip port (2) |
///         client ISN (4) | full time counter (8) | mss index (1) | option byte (1).
///   count = now_ns / period_ns; a cookie is accepted in its own period and the next one
///         (Linux's MAX_SYNCOOKIE_AGE = 2), and reported stale up to 3 periods later.
///   mss index = the largest entry of the MSS table not above the client's MSS (Linux msstab).
///
/// When the client sent timestamps, its other SYN options ride in the low 6 bits of our TSval
/// and come back in the ACK's TSecr (Linux cookie_init_timestamp / cookie_decode_options):
///
///      5     4     3 2 1 0
///    +-----+-----+---------+
///    | ECN | SACK| wscale  |   wscale 15 = "the client sent no window scale"
///    +-----+-----+---------+
///
/// Unlike Linux, the option byte (0x80 | these 6 bits, or 0 without timestamps) is covered by the
/// MAC, so a TSecr altered in flight fails as bad_hash instead of changing the options, and an ACK
/// that drops the timestamps a SYN negotiated is refused (RFC 7323 section 3.2 lets a receiver
/// drop a non-RST segment without TSopt once timestamps are in use).
///
/// Without client timestamps only the MSS survives: the SYN-ACK then offers no window scale,
/// SACK-permitted or ECN (Linux clears them the same way in tcp_conn_request), so the connection
/// runs unscaled (64 KiB window), without SACK and without ECN. The client-side limit is the
/// same as Linux's: the first segment after the SYN-ACK must be the ACK of it (or data at
/// client ISN + 1); a later segment alone does not validate.
///
/// Everything here is pure: no clock (the caller passes now_ns), no I/O, no allocation after
/// construction. make/check/buildSynAck never throw.
///
/// Clock: a cookie made on one machine validates on another only if both pass the same clock.
/// Pass a wall clock (CLOCK_REALTIME / CLOCK_TAI, NTP-synchronised) when a standby shares the
/// secret; CLOCK_MONOTONIC is fine for a single proxy. A skew of e makes cookies issued within e
/// of a period boundary fail at the peer.
///
/// Key schedule (the engine's mode): constructed from a configured secret instead of a
/// CookieSecrets, the cookie key rotates every period by itself. The key of period c is derived
/// from the secret and c alone (SHA-256 over a label, the secret and c, as the SipHash key), so
/// every proxy configured with the same secret derives the same key for the same period, and a
/// standby with a sane clock validates the active's cookies with no key exchange. A cookie is
/// made under the key of its period and accepted in that period and the next (the previous key
/// stays valid one period); the keys of the two periods before those are kept too, so an old
/// but authentic cookie is reported stale, not forged. advance() derives them ahead of time.
///
/// Threads: the MAC contexts are reused per call, so one SynCookie belongs to one thread (one per
/// packet worker, each constructed from the same secret).

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "common/ip_addr.h"
#include "common/packet.h"
#include "common/tcp_options.h"

// Forward declaration of OpenSSL's opaque context, so that users need no OpenSSL headers.
struct evp_mac_ctx_st;

namespace tandem {

/// What the client offered in its SYN (what Linux keeps in struct inet_request_sock).
struct SynOffer {
  uint16_t mss = 536;          ///< the MSS option, or 536 when absent (RFC 9293 section 3.7.1)
  bool has_wscale = false;
  uint8_t wscale = 0;          ///< the client's shift, 0..14 (parser clamps, RFC 7323 2.3)
  bool sack_ok = false;        ///< SACK-permitted (RFC 2018)
  bool ts_ok = false;          ///< timestamps option present (RFC 7323)
  bool ecn_ok = false;         ///< ECN-setup SYN: ECE and CWR both set (RFC 3168 section 6.1.1)
};

/// The connection identity the cookie is bound to, plus the SYN's offer (make() only).
struct CookieInput {
  Endpoint client;
  Endpoint vip;
  uint32_t client_isn = 0;     ///< SYN: its seq. ACK: its seq - 1.
  SynOffer offer;              ///< read by make() only; check() recovers options from the cookie
};

/// Options of the connection as the cookie carries them: what the SYN-ACK offered and what the
/// backend leg's SYN should carry on the client's behalf.
struct CookieOptions {
  uint16_t mss = 0;            ///< the client's MSS rounded down to the MSS table
  bool ts_ok = false;
  bool wscale_ok = false;
  uint8_t wscale = 0;          ///< the client's shift (Linux snd_wscale); valid if wscale_ok
  bool sack_ok = false;
  bool ecn_ok = false;
  friend bool operator==(const CookieOptions&, const CookieOptions&) noexcept = default;
};

/// A cookie to send: SYN-ACK seq = isn; TSval = tsval when options.ts_ok.
struct CookieIssue {
  bool ok = false;             ///< false only if the MAC failed (the SYN should be dropped)
  uint32_t isn = 0;
  uint32_t tsval = 0;
  CookieOptions options;
};

enum class CookieReject : uint8_t {
  kNone,
  kBadHash,          ///< MAC mismatch under every live secret: forged, corrupted or very old
  kStale,            ///< authentic but issued 2 or 3 periods ago (beyond Linux's 2-period life)
  kMssIndexInvalid,  ///< index beyond the configured MSS table (refused before any hashing)
  kCryptoError,      ///< the MAC primitive failed
  kCount
};

const char* cookieRejectName(CookieReject r) noexcept;

struct CookieCheck {
  bool ok = false;
  CookieReject reason = CookieReject::kNone;  ///< set when !ok
  CookieOptions options;                      ///< valid when ok
  uint8_t age = 0;                            ///< periods since issue (0 or 1 when ok)
};

struct SynCookieConfig {
  /// Length of one time-counter period. Linux uses 60 s; a cookie lives 1 to 2 periods.
  uint64_t period_ns = 64ull * 1'000'000'000ull;
  /// Client MSS classes, ascending, 1 to 4 entries (2 bits in the cookie). Linux's msstab.
  std::vector<uint16_t> mss_table = {536, 1300, 1440, 1460};
  /// Local enables, as Linux's sysctls: negotiate only what the client offered and these allow.
  bool timestamps = true;
  bool window_scaling = true;
  bool sack = true;
  bool ecn = true;             ///< answer an ECN-setup SYN (Linux tcp_ecn = 2 behaviour)
};

/// The cookie keys: the current secret and the one before it. Each secret is configuration
/// (at least kMinSecretLen bytes, shared with a standby); the 16-byte SipHash key is derived from
/// it with SHA-256 under a domain label, so any length works and the key is not the raw secret.
class CookieSecrets {
 public:
  static constexpr size_t kMinSecretLen = 16;

  /// Throws std::invalid_argument on a short secret, std::runtime_error if OpenSSL lacks SipHash.
  explicit CookieSecrets(std::span<const uint8_t> secret);
  ~CookieSecrets();
  CookieSecrets(CookieSecrets&& other) noexcept;
  CookieSecrets& operator=(CookieSecrets&& other) noexcept;
  CookieSecrets(const CookieSecrets&) = delete;
  CookieSecrets& operator=(const CookieSecrets&) = delete;

  /// Makes `secret` current and keeps the old current as previous (the one before is dropped).
  /// Rotate at most once per period so that every cookie lives at least one full period.
  /// Throws like the constructor; on a throw nothing changes.
  void rotate(std::span<const uint8_t> secret);

  bool hasPrevious() const noexcept { return previous_ != nullptr; }

  /// 64-bit SipHash-2-4 of msg under the current (slot 0) or previous (slot 1) key, little-endian
  /// as OpenSSL outputs it. False if the slot is empty or OpenSSL fails.
  bool mac(size_t slot, const uint8_t* msg, size_t len, uint64_t& out) noexcept;

 private:
  evp_mac_ctx_st* current_ = nullptr;
  evp_mac_ctx_st* previous_ = nullptr;
};

/// Makes and checks cookies. Pure apart from the reused MAC contexts (see the file comment).
class SynCookie {
 public:
  static constexpr unsigned kMacBits = 28;
  static constexpr unsigned kCountBits = 2;
  static constexpr unsigned kMssIndexBits = 2;
  static constexpr unsigned kTsOptionBits = 6;
  static constexpr uint32_t kTsOptionMask = (1u << kTsOptionBits) - 1;
  static constexpr uint32_t kTsWscaleNone = 0xf;
  static constexpr uint32_t kTsSack = 1u << 4;
  static constexpr uint32_t kTsEcn = 1u << 5;

  /// Throws std::invalid_argument on a bad configuration (period 0, MSS table empty, longer
  /// than 4 entries, or not ascending).
  SynCookie(SynCookieConfig config, CookieSecrets secrets);

  /// Key schedule mode (see the file comment): keys derived from `secret` and the period.
  /// Throws like CookieSecrets on a short secret or without SipHash.
  SynCookie(SynCookieConfig config, std::span<const uint8_t> secret);

  /// Key schedule mode: derives the keys of the period of now_ns and of the three before it
  /// (at most four derivations, normally one per period). make() and check() call it; calling
  /// it from a timer first keeps the derivation off the packet path. A failed derivation leaves
  /// that period without a key: its cookies fail as kCryptoError. No-op without a schedule.
  void advance(uint64_t now_ns) noexcept;
  bool scheduled() const noexcept { return !master_.bytes.empty(); }

  /// Key schedule mode: the 16-byte SipHash key of period `count` (the key make() uses for a
  /// cookie of that period), for a MAC computed elsewhere with the same message: the kernel's
  /// SYN answerer (proxy/fastpath/syncookie.bpf.c). False without a schedule or if SHA-256
  /// fails. The caller keeps it secret (cleanses its copy).
  bool periodKeyBytes(uint64_t count, uint8_t (&out)[16]) const noexcept;

  /// The cookie for a client SYN at now_ns. TSval, when used, is a 1 ms clock with a keyed
  /// per-connection offset (RFC 7323 section 5.4; Linux's tsoff), its low 6 bits replaced by the
  /// options and kept at or below that clock (Linux cookie_init_timestamp).
  CookieIssue make(const CookieInput& in, uint64_t now_ns) noexcept;

  /// Validates the ACK of a SYN-ACK: `from_ack` with client_isn = ACK seq - 1,
  /// `ack_seq_minus_1` = ACK ack - 1 (the cookie), `tsecr`/`has_ts` from the ACK's options.
  /// Tries the current secret, then the previous one: at most two MACs whatever the input.
  CookieCheck check(const CookieInput& from_ack, uint32_t ack_seq_minus_1, uint32_t tsecr,
                    bool has_ts, uint64_t now_ns) noexcept;

  /// Key rotation (configuration path, may throw): see CookieSecrets::rotate().
  void rotate(std::span<const uint8_t> secret) { secrets_.rotate(secret); }

  const SynCookieConfig& config() const noexcept { return config_; }

 private:
  uint8_t mssIndex(uint16_t mss) const noexcept;

  SynCookieConfig config_;
  std::array<uint16_t, 4> mss_table_{};
  uint8_t mss_table_size_ = 0;
  CookieSecrets secrets_;

  // Key schedule mode: the configured secret, and the keys of the last four periods by
  // period & 3 (ring_count_ says which period each holds).
  struct MacCtxFree {
    void operator()(evp_mac_ctx_st* ctx) const noexcept;
  };
  struct Secret {
    std::vector<uint8_t> bytes;
    Secret() = default;
    explicit Secret(std::span<const uint8_t> s) : bytes(s.begin(), s.end()) {}
    Secret(Secret&&) noexcept = default;
    Secret& operator=(Secret&&) noexcept = default;
    ~Secret();
  };
  evp_mac_ctx_st* periodKey(uint64_t count) const noexcept;
  Secret master_;
  std::array<std::unique_ptr<evp_mac_ctx_st, MacCtxFree>, 4> ring_{};
  std::array<uint64_t, 4> ring_count_{};
};

/// The offer of a client SYN (pkt validated, opts parsed from it).
CookieInput cookieInputFromSyn(const TcpPacket& syn, const TcpOptions& opts) noexcept;

/// The identity an ACK claims (client ISN = seq - 1, wrapping); offer left default.
CookieInput cookieInputFromAck(const TcpPacket& ack) noexcept;

/// What the proxy itself puts in the SYN-ACK.
struct SynAckParams {
  uint16_t mss = 1460;         ///< the proxy's MSS clamp, advertised to the client
  uint8_t wscale = 7;          ///< the proxy's receive shift, sent if the client offered one
  uint16_t window = 65535;     ///< raw window; never scaled in a SYN-ACK (RFC 7323 2.2)
  uint8_t ttl = 64;
};

/// Largest SYN-ACK buildSynAck() writes: IPv4 20 + TCP 20 + options 20.
inline constexpr size_t kMaxSynAckLen = 60;

/// Writes the SYN-ACK answering `syn` with `cookie` to out[0, cap): addresses and ports swapped,
/// seq = cookie.isn, ack = client ISN + 1, SYN|ACK (+ECE if ECN negotiated, RFC 3168 6.1.1),
/// options MSS / SACK-permitted / timestamps (TSecr = the SYN's TSval) / window scale as
/// negotiated, DF, IP ID 0, TOS 0 (as nf_synproxy_core.c), valid IPv4 and TCP checksums.
/// Returns the length written, or 0 if cap is too small or cookie.ok is false.
size_t buildSynAck(const TcpPacket& syn, const TcpOptions& syn_opts, const CookieIssue& cookie,
                   const SynAckParams& params, uint8_t* out, size_t cap) noexcept;

}  // namespace tandem
