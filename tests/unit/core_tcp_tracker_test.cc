// TCP tracker tests: the transition table itself and flag validation.
#include <gtest/gtest.h>

#include <cstring>

#include "proxy/core/tcp_tracker.h"

namespace tandem {
namespace {

TEST(TcpTracker, EveryCellHasAReason) {
  for (auto dir : {Direction::kFromClient, Direction::kFromBackend})
    for (size_t e = 0; e < static_cast<size_t>(TcpEvent::kCount); ++e)
      for (size_t s = 0; s < static_cast<size_t>(TcpState::kCount); ++s) {
        const auto& t = tcpTransition(dir, static_cast<TcpEvent>(e), static_cast<TcpState>(s));
        ASSERT_NE(t.why, nullptr);
        EXPECT_GT(std::strlen(t.why), 5u);
      }
}

struct Cell {
  Direction dir;
  TcpEvent ev;
  TcpState from;
  Transition::Kind kind;
  TcpState to;
};

TEST(TcpTracker, KeyTransitions) {
  using K = Transition::Kind;
  using S = TcpState;
  using E = TcpEvent;
  const auto C = Direction::kFromClient;
  const auto B = Direction::kFromBackend;
  const Cell cells[] = {
      {C, E::kSyn, S::kNone, K::kMove, S::kSynSent},
      {B, E::kSynAck, S::kSynSent, K::kMove, S::kSynRecv},
      {C, E::kAck, S::kSynRecv, K::kMove, S::kEstablished},
      {C, E::kSyn, S::kEstablished, K::kIgnore, S::kNone},       // RFC 5961 challenge ACK
      {B, E::kSynAck, S::kEstablished, K::kIgnore, S::kNone},    // lost third ACK
      {C, E::kSynAck, S::kEstablished, K::kInvalid, S::kNone},
      {B, E::kSyn, S::kNone, K::kInvalid, S::kNone},
      {C, E::kAck, S::kNone, K::kInvalid, S::kNone},
      {C, E::kFin, S::kEstablished, K::kDerive, S::kNone},
      {B, E::kRst, S::kSynSent, K::kMove, S::kClose},
      {C, E::kSyn, S::kTimeWait, K::kMove, S::kSynSent},
      {C, E::kNone, S::kEstablished, K::kInvalid, S::kNone},
  };
  for (const auto& c : cells) {
    const auto& t = tcpTransition(c.dir, c.ev, c.from);
    EXPECT_EQ(t.kind, c.kind) << t.why;
    if (c.kind == K::kMove) {
      EXPECT_EQ(t.next, c.to) << t.why;
    }
  }
}

TEST(TcpTracker, ValidFlags) {
  EXPECT_TRUE(validTcpFlags(0x02));         // SYN
  EXPECT_TRUE(validTcpFlags(0x02 | 0xc0));  // SYN with ECE|CWR (ECN setup)
  EXPECT_TRUE(validTcpFlags(0x12));
  EXPECT_TRUE(validTcpFlags(0x18));         // PSH|ACK
  EXPECT_TRUE(validTcpFlags(0x11));         // FIN|ACK
  EXPECT_TRUE(validTcpFlags(0x04));
  EXPECT_TRUE(validTcpFlags(0x14));
  EXPECT_FALSE(validTcpFlags(0x00));        // NULL scan
  EXPECT_FALSE(validTcpFlags(0x03));        // SYN|FIN
  EXPECT_FALSE(validTcpFlags(0x06));        // SYN|RST
  EXPECT_FALSE(validTcpFlags(0x01));        // FIN without ACK
  EXPECT_FALSE(validTcpFlags(0x29));        // XMAS-ish
}

TEST(TcpTracker, Timeouts) {
  Timeouts t;
  t.established_ns = 5;
  t.time_wait_ns = 7;
  EXPECT_EQ(stateTimeout(t, TcpState::kEstablished), 5u);
  EXPECT_EQ(stateTimeout(t, TcpState::kTimeWait), 7u);
}

}  // namespace
}  // namespace tandem
