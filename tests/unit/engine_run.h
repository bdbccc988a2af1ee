#pragma once
// Running single packets through an Engine in the unit tests: what the engine made of a packet,
// parsed, and the state of its only flow.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/packet.h"
#include "common/tcp_options.h"
#include "proxy/core/engine.h"

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

/// The state of the engine's flow (the last one listed; kNone without any).
inline TcpState flowState(const Engine& e, uint64_t now) {
  TcpState st = TcpState::kNone;
  e.forEachFlow([&](const FlowInfo& f) { st = f.state; }, now);
  return st;
}

}  // namespace tandem::test
