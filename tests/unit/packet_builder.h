#pragma once
/// @file Builds IPv4/TCP packets for tests (in the spirit of Katran's PacketBuilder): fluent
/// setters, valid checksums by default, and knobs to produce partial checksums (as NFQUEUE hands
/// over CHECKSUM_PARTIAL skbs) or malformed headers.

#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/ip_addr.h"
#include "common/tcp_options.h"

namespace tandem::test {

class PacketBuilder {
 public:
  PacketBuilder& src(const std::string& ep) { src_ = *Endpoint::parse(ep); return *this; }
  PacketBuilder& dst(const std::string& ep) { dst_ = *Endpoint::parse(ep); return *this; }
  PacketBuilder& seq(uint32_t v) { seq_ = v; return *this; }
  PacketBuilder& ack(uint32_t v) { ack_ = v; flags_ |= 0x10; return *this; }
  PacketBuilder& flags(uint8_t f) { flags_ = f; return *this; }
  PacketBuilder& window(uint16_t w) { window_ = w; return *this; }
  PacketBuilder& payload(const std::string& p) { payload_.assign(p.begin(), p.end()); return *this; }
  PacketBuilder& payloadSize(size_t n, uint8_t fill = 'x') { payload_.assign(n, fill); return *this; }
  PacketBuilder& mss(uint16_t v) { opts_.has_mss = true; opts_.mss = v; return *this; }
  PacketBuilder& wscale(uint8_t v) { opts_.has_wscale = true; opts_.wscale = v; return *this; }
  PacketBuilder& sackPermitted() { opts_.sack_permitted = true; return *this; }
  PacketBuilder& timestamp(uint32_t val, uint32_t ecr) {
    opts_.has_timestamp = true; opts_.ts_val = val; opts_.ts_ecr = ecr; return *this;
  }
  /// SACK blocks, written after NOP NOP (and after a timestamp option if one is set).
  PacketBuilder& sack(std::vector<SackBlock> blocks) { sack_ = std::move(blocks); return *this; }
  /// Raw option bytes appended as they are (for malformed-option tests); padded with EOL to 4.
  PacketBuilder& rawOptions(std::vector<uint8_t> bytes) { raw_opts_ = std::move(bytes); return *this; }
  /// Leave only the pseudo-header sum in the TCP checksum field, as a CHECKSUM_PARTIAL skb has.
  PacketBuilder& partialChecksum() { partial_ = true; return *this; }
  PacketBuilder& ipId(uint16_t v) { ip_id_ = v; return *this; }

  std::vector<uint8_t> build() const {
    std::vector<uint8_t> opts;
    if (!raw_opts_.empty()) {
      opts = raw_opts_;
    } else {
      uint8_t buf[40];
      TcpOptions o = opts_;
      bool syn = (flags_ & 0x02) != 0;
      if (!syn) {  // non-SYN segments: NOP NOP TS, then NOP NOP SACK
        if (o.has_timestamp) {
          opts.insert(opts.end(), {1, 1, 8, 10});
          appendU32(opts, o.ts_val);
          appendU32(opts, o.ts_ecr);
        }
        if (o.has_mss) {
          opts.insert(opts.end(), {2, 4});
          appendU16(opts, o.mss);
        }
      } else {
        size_t n = buildSynOptions(o, buf, sizeof buf);
        opts.assign(buf, buf + n);
      }
      if (!sack_.empty()) {
        opts.insert(opts.end(), {1, 1, 5, static_cast<uint8_t>(2 + 8 * sack_.size())});
        for (auto& b : sack_) { appendU32(opts, b.left); appendU32(opts, b.right); }
      }
    }
    while (opts.size() % 4) opts.push_back(0);
    const size_t thl = 20 + opts.size();
    const size_t total = 20 + thl + payload_.size();
    std::vector<uint8_t> p(total, 0);
    p[0] = 0x45;
    store16(&p[2], static_cast<uint16_t>(total));
    store16(&p[4], ip_id_);
    store16(&p[6], 0x4000);  // DF
    p[8] = 64;
    p[9] = 6;
    store32(&p[12], src_.addr.v4());
    store32(&p[16], dst_.addr.v4());
    store16(&p[10], ipv4HeaderChecksum(p.data(), 20));
    uint8_t* t = p.data() + 20;
    store16(t, src_.port);
    store16(t + 2, dst_.port);
    store32(t + 4, seq_);
    store32(t + 8, ack_);
    t[12] = static_cast<uint8_t>((thl / 4) << 4);
    t[13] = flags_;
    store16(t + 14, window_);
    std::copy(opts.begin(), opts.end(), t + 20);
    std::copy(payload_.begin(), payload_.end(), t + thl);
    if (partial_) {
      const uint32_t s = src_.addr.v4(), d = dst_.addr.v4();
      uint32_t sum = (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + 6 +
                     static_cast<uint32_t>(thl + payload_.size());
      store16(t + 16, csumFold(sum));
    } else {
      store16(t + 16, tcpChecksumV4(src_.addr.v4(), dst_.addr.v4(), t, thl + payload_.size()));
    }
    return p;
  }

 private:
  static void appendU16(std::vector<uint8_t>& v, uint16_t x) {
    v.push_back(static_cast<uint8_t>(x >> 8)); v.push_back(static_cast<uint8_t>(x));
  }
  static void appendU32(std::vector<uint8_t>& v, uint32_t x) {
    appendU16(v, static_cast<uint16_t>(x >> 16)); appendU16(v, static_cast<uint16_t>(x));
  }
  Endpoint src_ = *Endpoint::parse("10.0.0.2:40000");
  Endpoint dst_ = *Endpoint::parse("10.0.0.100:80");
  uint32_t seq_ = 1000, ack_ = 0;
  uint8_t flags_ = 0x10;
  uint16_t window_ = 65535, ip_id_ = 1;
  std::vector<uint8_t> payload_;
  TcpOptions opts_;
  std::vector<SackBlock> sack_;
  std::vector<uint8_t> raw_opts_;
  bool partial_ = false;
};

/// The first 96 bytes in hex, four to a group: readable diffs of two packets in a failure.
inline std::string hexDump(const std::vector<uint8_t>& p) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string o;
  for (size_t i = 0; i < p.size() && i < 96; ++i) {
    o += kDigits[p[i] >> 4];
    o += kDigits[p[i] & 15];
    if (i % 4 == 3) o += ' ';
  }
  return o;
}

/// True if the packet's IPv4 header checksum and full TCP checksum verify.
inline bool checksumsValid(const std::vector<uint8_t>& p) {
  const size_t ihl = (p[0] & 0x0f) * 4u;
  if (ipv4HeaderChecksum(p.data(), ihl) != load16(&p[10])) return false;
  const size_t total = load16(&p[2]);
  return tcpChecksumV4(load32(&p[12]), load32(&p[16]), p.data() + ihl, total - ihl) ==
         load16(&p[ihl + 16]);
}

}  // namespace tandem::test
