#pragma once
// Running single packets through an Engine in the unit tests: what the engine made of a packet,
// parsed, and the state of its only flow.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace tandem::test {

/// The engine's decision and, when it accepted, the packet it passes on (bytes, parsed).
struct Seen {
  Decision d;
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
  TcpOptions opts;
};

/// Runs one packet through the engine, with room for a longer reply (256 bytes, as the NFQUEUE
/// receive buffer has room); an accepted packet must parse, options included.
inline Seen runPacket(Engine& e, std::vector<uint8_t> p, uint64_t now, PacketMeta meta = {}) {
  Seen s;
  const size_t len = p.size();
  p.resize(256);
  s.d = e.process(p.data(), len, p.size(), meta, now);
  if (s.d.verdict == Verdict::kAccept) {
    p.resize(s.d.len);
    s.bytes = p;
    EXPECT_EQ(parseTcpPacket(s.bytes.data(), s.bytes.size(), s.pkt), ParseError::kNone);
    EXPECT_EQ(parseTcpOptions(s.pkt.options(), s.pkt.optionsLen(), s.opts), OptionError::kNone);
  }
  return s;
}

/// A packet the engine originated (its outbox), bytes and parsed views of them.
struct Originated {
  std::vector<uint8_t> bytes;
  TcpPacket pkt;
  TcpOptions opts;
};

/// Empties the engine's outbox; every packet must parse and carry valid checksums.
inline std::vector<Originated> drainOutbox(Engine& e) {
  std::vector<Originated> out;
  e.drainOutbox([&](const uint8_t* p, size_t n) { out.push_back({{p, p + n}, {}, {}}); });
  for (Originated& o : out) {  // parsed only once the vector stopped moving
    EXPECT_EQ(parseTcpPacket(o.bytes.data(), o.bytes.size(), o.pkt), ParseError::kNone);
    EXPECT_EQ(parseTcpOptions(o.pkt.options(), o.pkt.optionsLen(), o.opts), OptionError::kNone);
    EXPECT_TRUE(checksumsValid(o.bytes));
  }
  return out;
}

/// The state of the engine's flow (the last one listed; kNone without any).
inline TcpState flowState(const Engine& e, uint64_t now) {
  TcpState st = TcpState::kNone;
  e.forEachFlow([&](const FlowInfo& f) { st = f.state; }, now);
  return st;
}

/// Two flows that completed the same splice, one from a SYN-ACK through NFQUEUE and one from
/// the kernel's report of it (Engine::fastPathSpliced): the same binding (offsets, timestamp
/// offset, scales), whether on the fast path, and the same tracker state.
inline void expectSameSplice(const Flow& a, const Flow& b) {
  EXPECT_EQ(a.fast_path, b.fast_path);
  EXPECT_EQ(a.has_seqadj, b.has_seqadj);
  EXPECT_EQ(std::memcmp(a.adj, b.adj, sizeof a.adj), 0);
  EXPECT_EQ(a.has_ts_adj, b.has_ts_adj);
  EXPECT_EQ(a.ts_offset, b.ts_offset);
  EXPECT_EQ(a.backend_wscale, b.backend_wscale);
  EXPECT_EQ(a.rescale_window, b.rescale_window);
  EXPECT_EQ(a.client_view_wscale, b.client_view_wscale);
  for (size_t d = 0; d < 2; ++d) {
    EXPECT_EQ(a.win[d].td_end, b.win[d].td_end) << d;
    EXPECT_EQ(a.win[d].td_maxend, b.win[d].td_maxend) << d;
    EXPECT_EQ(a.win[d].td_maxwin, b.win[d].td_maxwin) << d;
    EXPECT_EQ(a.win[d].last_ack, b.win[d].last_ack) << d;
    EXPECT_EQ(a.win[d].td_scale, b.win[d].td_scale) << d;
    EXPECT_EQ(a.win[d].seen, b.win[d].seen) << d;
  }
}

}  // namespace tandem::test
