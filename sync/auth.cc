#include "sync/auth.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::sync {

namespace {

struct MacDeleter {
  void operator()(EVP_MAC* m) const noexcept { EVP_MAC_free(m); }
};
struct CtxDeleter {
  void operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }
};
using MacPtr = std::unique_ptr<EVP_MAC, MacDeleter>;
using CtxPtr = std::unique_ptr<EVP_MAC_CTX, CtxDeleter>;

MacPtr fetchHmac() noexcept { return MacPtr(EVP_MAC_fetch(nullptr, "HMAC", nullptr)); }

/// A context keyed with `key`, digest SHA-256; null on failure.
CtxPtr keyedContext(EVP_MAC* mac, std::span<const uint8_t> key) noexcept {
  if (mac == nullptr) return nullptr;
  CtxPtr ctx(EVP_MAC_CTX_new(mac));
  if (!ctx) return nullptr;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1) return nullptr;
  return ctx;
}

/// Runs HMAC on a copy of the keyed template, so the template stays reusable.
bool compute(const EVP_MAC_CTX* keyed, std::span<const uint8_t> data,
             std::span<uint8_t, kHmacSha256Len> out) noexcept {
  CtxPtr ctx(EVP_MAC_CTX_dup(keyed));
  if (!ctx) return false;
  size_t len = 0;
  return EVP_MAC_update(ctx.get(), data.data(), data.size()) == 1 &&
         EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) == 1 && len == kHmacSha256Len;
}

}  // namespace

bool hmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data,
                std::span<uint8_t, kHmacSha256Len> out) noexcept {
  const MacPtr mac = fetchHmac();
  const CtxPtr ctx = keyedContext(mac.get(), key);
  return ctx && compute(ctx.get(), data, out);
}

// ---- KeyRing ----

struct KeyRing::Impl {
  struct Key {
    uint16_t id;
    CtxPtr ctx;
  };
  MacPtr mac = fetchHmac();
  std::vector<Key> keys;  // a handful at most: linear search

  const Key* find(uint16_t id) const noexcept {
    for (const Key& k : keys) {
      if (k.id == id) return &k;
    }
    return nullptr;
  }
};

KeyRing::KeyRing() : impl_(std::make_unique<Impl>()) {
  if (!impl_->mac) throw std::runtime_error("OpenSSL: HMAC is not available (EVP_MAC_fetch)");
}
KeyRing::~KeyRing() = default;

void KeyRing::add(uint16_t id, std::span<const uint8_t> key) {
  if (key.size() < kMinKeyLen || key.size() > kMaxKeyLen) {
    throw std::invalid_argument("sync key " + std::to_string(id) + ": must be " +
                                std::to_string(kMinKeyLen) + " to " + std::to_string(kMaxKeyLen) +
                                " bytes, got " + std::to_string(key.size()));
  }
  CtxPtr ctx = keyedContext(impl_->mac.get(), key);
  if (!ctx) throw std::runtime_error("OpenSSL: cannot key HMAC-SHA256 (EVP_MAC_init)");
  remove(id);
  impl_->keys.push_back({id, std::move(ctx)});
}

void KeyRing::remove(uint16_t id) noexcept {
  auto& keys = impl_->keys;
  keys.erase(std::remove_if(keys.begin(), keys.end(), [id](const Impl::Key& k) {
               return k.id == id;
             }),
             keys.end());
}

bool KeyRing::has(uint16_t id) const noexcept { return impl_->find(id) != nullptr; }
size_t KeyRing::size() const noexcept { return impl_->keys.size(); }

void KeyRing::setSendKey(uint16_t id) {
  if (!has(id)) throw std::invalid_argument("sync send key " + std::to_string(id) + " unknown");
  send_key_ = id;
}

bool KeyRing::mac(uint16_t id, std::span<const uint8_t> data,
                  std::span<uint8_t, kMacLen> out) const noexcept {
  const Impl::Key* k = impl_->find(id);
  if (k == nullptr) return false;
  uint8_t full[kHmacSha256Len];
  if (!compute(k->ctx.get(), data, full)) return false;
  std::copy_n(full, kMacLen, out.begin());  // RFC 4868 section 2.6: the leftmost 128 bits
  OPENSSL_cleanse(full, sizeof full);
  return true;
}

// ---- ReplayWindow ----

bool ReplayWindow::check(uint64_t counter) const noexcept {
  if (!any_ || counter > top_) return true;
  if (top_ - counter >= kBits) return false;  // older than the window: cannot tell, refuse
  return !testBit(counter);
}

void ReplayWindow::update(uint64_t counter) noexcept {
  if (!any_) {
    bits_.fill(0);
    top_ = counter;
    any_ = true;
  } else if (counter > top_) {
    if (counter - top_ >= kBits) {
      bits_.fill(0);
    } else {
      // Slots of the counters passed over may hold bits of counters kBits older: clear them.
      for (uint64_t c = top_ + 1; c <= counter; ++c) clearBit(c);
    }
    top_ = counter;
  } else if (top_ - counter >= kBits) {
    return;  // older than the window; check() refuses these
  }
  setBit(counter);
}

// ---- Sealer / Verifier ----

const char* rejectName(Reject r) noexcept {
  switch (r) {
    case Reject::kNone: return "none";
    case Reject::kBadMagic: return "bad_magic";
    case Reject::kBadVersion: return "bad_version";
    case Reject::kBadLength: return "bad_length";
    case Reject::kUnknownKey: return "unknown_key";
    case Reject::kBadMac: return "bad_mac";
    case Reject::kReplay: return "replay";
    case Reject::kStaleEpoch: return "stale_epoch";
    case Reject::kBadPayload: return "bad_payload";
    case Reject::kTooManyPeers: return "too_many_peers";
    case Reject::kCount: break;
  }
  return "?";
}

bool Sealer::seal(FrameWriter& writer, FrameHeader header) noexcept {
  if (!keys_.has(keys_.sendKey())) return false;
  header.key_id = keys_.sendKey();
  header.counter = counter_->fetch_add(1, std::memory_order_relaxed) + 1;
  writer.finish(header);
  const std::span<uint8_t> frame = writer.frame();
  const std::span<uint8_t, kMacLen> mac = frame.last<kMacLen>();
  return keys_.mac(header.key_id, frame.first(frame.size() - kMacLen), mac);
}

Verifier::Result Verifier::reject(Reject r, WireError w) noexcept {
  ++counters_[static_cast<size_t>(r)];
  Result res;
  res.reject = r;
  res.wire = w;
  return res;
}

namespace {
/// Validates without dispatching (SectionHandler's defaults do nothing).
class NullHandler final : public SectionHandler {};
}  // namespace

Verifier::Result Verifier::open(std::span<const uint8_t> frame, SectionHandler& handler,
                                uint32_t min_epoch) noexcept {
  const HeaderResult hr = decodeHeader(frame);
  switch (hr.error) {
    case WireError::kNone: break;
    case WireError::kBadMagic: return reject(Reject::kBadMagic, hr.error);
    case WireError::kBadVersion: return reject(Reject::kBadVersion, hr.error);
    default: return reject(Reject::kBadLength, hr.error);
  }
  if (!keys_.has(hr.header.key_id)) return reject(Reject::kUnknownKey);

  Peer* peer = nullptr;
  for (Peer& p : peers_) {
    if (p.used && p.node_id == hr.header.node_id) peer = &p;
  }
  // Cheap replay pre-check before the MAC; the window only moves after the MAC passed.
  if (peer != nullptr && !peer->window.check(hr.header.counter)) return reject(Reject::kReplay);

  uint8_t expect[kMacLen];
  if (!keys_.mac(hr.header.key_id, hr.signed_bytes, expect) ||
      CRYPTO_memcmp(expect, hr.mac.data(), kMacLen) != 0) {
    return reject(Reject::kBadMac);
  }
  if (hr.header.epoch < min_epoch) return reject(Reject::kStaleEpoch);

  NullHandler validate_only;
  const PayloadResult pr = decodePayload(hr.payload, validate_only);
  if (pr.error != WireError::kNone) return reject(Reject::kBadPayload, pr.error);

  if (peer == nullptr) {
    size_t used = 0;
    for (Peer& p : peers_) {
      if (p.used) {
        ++used;
      } else if (peer == nullptr) {
        peer = &p;
      }
    }
    if (used >= max_peers_ || peer == nullptr) return reject(Reject::kTooManyPeers);
    *peer = Peer{};
    peer->used = true;
    peer->node_id = hr.header.node_id;
  }
  peer->window.update(hr.header.counter);
  ++accepted_;
  decodePayload(hr.payload, handler);
  Result res;
  res.header = hr.header;
  return res;
}

}  // namespace tandem::sync
