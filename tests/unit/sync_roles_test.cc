// Role state machine on a fake clock: table-driven transitions of one node, then two nodes
// exchanging heartbeats over two paths that can be cut independently.
#include "sync/roles.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace tandem::sync {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kInterval = 10 * kMs;

RolesConfig cfg(uint32_t id, uint8_t prio = 100, bool preempt = false) {
  return RolesConfig{id, prio, preempt, kInterval, 3};
}

Heartbeat hb(Role r, uint32_t epoch, uint8_t prio = 100, bool ready = true,
             bool handover = false) {
  return Heartbeat{r, prio, ready, handover, epoch, 0, 10};
}

TEST(SyncRoles, AloneAtStartTakesOverAfterTheDeadInterval) {
  RoleMachine m(cfg(1), 0);
  EXPECT_EQ(m.role(), Role::kStandby);
  EXPECT_EQ(m.nextTimerNs(), 0u);  // first heartbeat right away
  EXPECT_TRUE(m.tick(0).send_heartbeat);
  EXPECT_FALSE(m.tick(29 * kMs).changed);
  const RoleOutput o = m.tick(30 * kMs);
  EXPECT_TRUE(o.changed);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_TRUE(o.take_addresses);
  EXPECT_TRUE(o.send_heartbeat);
  EXPECT_STREQ(o.reason, "no peer heard since start");
  EXPECT_EQ(m.epoch(), 1u);
}

TEST(SyncRoles, PeerIsDeadOnlyWhenBothPathsAreSilent) {
  RoleMachine m(cfg(1), 0);
  m.setReady(true);
  m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), 0);
  // The sync path goes silent; the front path keeps going.
  for (uint64_t t = kInterval; t <= 200 * kMs; t += kInterval) {
    m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), t);
    EXPECT_FALSE(m.tick(t).changed) << t;
  }
  EXPECT_FALSE(m.pathAlive(Path::kSync, 200 * kMs));
  EXPECT_TRUE(m.pathAlive(Path::kFront, 200 * kMs));
  // Now the front path too: dead after 3 intervals, takeover with a higher epoch.
  EXPECT_FALSE(m.tick(229 * kMs).changed);
  EXPECT_EQ(m.nextTimerNs(), 230 * kMs);
  const RoleOutput o = m.tick(230 * kMs);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_STREQ(o.reason, "peer heartbeats lost on both paths");
  EXPECT_EQ(m.epoch(), 5u);
}

TEST(SyncRoles, StandbyNotReadyWaitsTwiceTheDeadIntervalForAnActivePeer) {
  RoleMachine m(cfg(1), 0);  // not ready: its bulk resync has not completed
  m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  // A lapse of the dead interval (30 ms) does not make it take over with a partial table.
  EXPECT_FALSE(m.tick(30 * kMs).changed);
  EXPECT_FALSE(m.peerAlive(30 * kMs));
  EXPECT_FALSE(m.tick(59 * kMs).changed);
  // The active is heard again: the lapse is forgotten.
  m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), 59 * kMs);
  EXPECT_FALSE(m.tick(118 * kMs).changed);
  // Silent for twice the dead interval: it is dead after all.
  const RoleOutput o = m.tick(119 * kMs);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_STREQ(o.reason, "peer heartbeats lost on both paths");

  // A ready standby takes over after the dead interval itself.
  RoleMachine r(cfg(1), 0);
  r.setReady(true);
  r.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  EXPECT_FALSE(r.tick(29 * kMs).changed);
  EXPECT_EQ(r.tick(30 * kMs).to, Role::kActive);
}

TEST(SyncRoles, AnOvertakenStandbyHeartbeatFromTheOtherPathIsIgnored) {
  // A was active (epoch 1); B took over (epoch 2) and A stepped down. Then B's standby
  // heartbeat of before its takeover arrives late on the front path: A must not see "both
  // standby" and take over again.
  RoleMachine a(cfg(1, 200), 0);
  a.setReady(true);
  a.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 2), 5 * kMs);
  EXPECT_EQ(a.role(), Role::kStandby);
  const RoleOutput o = a.onHeartbeat(Path::kFront, 2, hb(Role::kStandby, 1), 6 * kMs);
  EXPECT_FALSE(o.changed);
  EXPECT_EQ(a.role(), Role::kStandby);
  EXPECT_EQ(a.peer().role, Role::kActive);
  EXPECT_EQ(a.staleHeartbeats(), 1u);
  EXPECT_TRUE(a.peerAlive(6 * kMs));
  // A current standby heartbeat (the peer handed over at its own epoch) is acted on.
  const RoleOutput h = a.onHeartbeat(Path::kSync, 2, hb(Role::kStandby, 2, 100, true, true),
                                     7 * kMs);
  EXPECT_EQ(h.to, Role::kActive);
}

struct TwoActives {
  const char* description;
  uint32_t my_epoch;
  uint8_t my_prio;
  uint32_t peer_id;
  uint32_t peer_epoch;
  uint8_t peer_prio;
  bool i_step_down;
};

TEST(SyncRoles, TwoActivesOneDeterministicWinner) {
  const TwoActives cases[] = {
      {"peer has the higher epoch", 3, 200, 2, 4, 50, true},
      {"I have the higher epoch", 4, 50, 2, 3, 200, false},
      {"same epoch, peer higher priority", 4, 100, 2, 4, 101, true},
      {"same epoch, I have higher priority", 4, 101, 2, 4, 100, false},
      {"same epoch and priority, peer higher id", 4, 100, 9, 4, 100, true},
      {"same epoch and priority, I have higher id", 4, 100, 1, 4, 100, false},
  };
  for (const TwoActives& c : cases) {
    RoleMachine m(cfg(5, c.my_prio), 0);
    // Become active with epoch my_epoch: hear a peer active at my_epoch - 1, then it dies.
    m.onHeartbeat(Path::kSync, c.peer_id, hb(Role::kStandby, c.my_epoch - 1, 0, false), 0);
    // Both standby and the peer is worse: we take over at once with epoch my_epoch.
    ASSERT_EQ(m.role(), Role::kActive) << c.description;
    ASSERT_EQ(m.epoch(), c.my_epoch) << c.description;
    const RoleOutput o =
        m.onHeartbeat(Path::kFront, c.peer_id, hb(Role::kActive, c.peer_epoch, c.peer_prio),
                      kMs);
    EXPECT_EQ(o.changed, c.i_step_down) << c.description;
    EXPECT_EQ(o.release_addresses, c.i_step_down) << c.description;
    EXPECT_TRUE(o.send_heartbeat) << c.description;  // the loser must learn at once
    EXPECT_EQ(m.role(), c.i_step_down ? Role::kStandby : Role::kActive) << c.description;
  }
}

struct StandbyCase {
  const char* description;
  RolesConfig config;
  bool ready;
  Heartbeat peer;
  bool takes_over;
  const char* reason;
};

TEST(SyncRoles, StandbyReactionsToPeerHeartbeats) {
  const StandbyCase cases[] = {
      {"active peer: stay", cfg(1), true, hb(Role::kActive, 3), false, nullptr},
      {"preempt off, higher priority: stay", cfg(1, 200), true, hb(Role::kActive, 3), false,
       nullptr},
      {"preempt on, higher priority, ready: take over", cfg(1, 200, true), true,
       hb(Role::kActive, 3), true, "preempt: higher priority than the active peer"},
      {"preempt on, higher priority, not ready: stay", cfg(1, 200, true), false,
       hb(Role::kActive, 3), false, nullptr},
      {"preempt on, equal priority: stay", cfg(1, 100, true), true, hb(Role::kActive, 3), false,
       nullptr},
      {"peer in fault: take over", cfg(1), false, hb(Role::kFault, 3), true, "peer in fault"},
      {"peer hands over: take over", cfg(1), true, hb(Role::kStandby, 3, 100, false, true), true,
       "peer handed over (planned switchover)"},
      {"both standby, I am ready and it is not: take over", cfg(1, 50), true,
       hb(Role::kStandby, 3, 100, false), true,
       "both standby: this node is the better candidate"},
      {"both standby, it is ready and I am not: stay", cfg(9, 200), false,
       hb(Role::kStandby, 3, 100, true), false, nullptr},
      {"both standby, both ready, higher priority: take over", cfg(1, 101), true,
       hb(Role::kStandby, 3, 100, true), true, "both standby: this node is the better candidate"},
      {"both standby, both ready, equal priority, lower id: stay", cfg(1), true,
       hb(Role::kStandby, 3), false, nullptr},
  };
  for (const StandbyCase& c : cases) {
    RoleMachine m(c.config, 0);
    m.setReady(c.ready);
    const RoleOutput o = m.onHeartbeat(Path::kSync, 2, c.peer, kMs);
    EXPECT_EQ(o.changed, c.takes_over) << c.description;
    EXPECT_EQ(m.role(), c.takes_over ? Role::kActive : Role::kStandby) << c.description;
    if (c.takes_over) {
      EXPECT_STREQ(o.reason, c.reason) << c.description;
      EXPECT_TRUE(o.take_addresses) << c.description;
      EXPECT_EQ(m.epoch(), c.peer.epoch + 1) << c.description;
    }
  }
}

TEST(SyncRoles, LocalFaultReleasesAndRecovers) {
  RoleMachine m(cfg(1), 0);
  m.tick(30 * kMs);
  ASSERT_EQ(m.role(), Role::kActive);
  RoleOutput o = m.setFault(true, 31 * kMs);
  EXPECT_EQ(o.to, Role::kFault);
  EXPECT_TRUE(o.release_addresses);
  EXPECT_TRUE(o.send_heartbeat);
  EXPECT_FALSE(m.tick(100 * kMs).changed);  // no takeover while in fault
  EXPECT_EQ(m.heartbeat(0).role, Role::kFault);
  o = m.setFault(false, 100 * kMs);
  EXPECT_EQ(o.to, Role::kStandby);
  EXPECT_FALSE(o.take_addresses);
  EXPECT_FALSE(m.ready());
  EXPECT_FALSE(m.tick(129 * kMs).changed);  // waits a dead interval for the peer first
  EXPECT_EQ(m.tick(130 * kMs).to, Role::kActive);
  EXPECT_EQ(m.epoch(), 2u);
}

TEST(SyncRoles, HeartbeatsEveryInterval) {
  RoleMachine m(cfg(1), 0);
  int sent = 0;
  for (uint64_t t = 0; t < 100 * kMs; t += kMs) sent += m.tick(t).send_heartbeat ? 1 : 0;
  EXPECT_EQ(sent, 10);
}

// ---- Two nodes, two paths, fake clock. ----

struct Pair {
  RoleMachine a, b;
  bool cut[2][kPathCount] = {};  // cut[from][path]: heartbeats from node `from` lost on `path`
  uint64_t now = 0;
  uint64_t both_active_ns = 0;
  std::string log;

  Pair(RolesConfig ca, RolesConfig cb) : a(ca, 0), b(cb, 0) {}

  void send(int from) {
    RoleMachine& src = from == 0 ? a : b;
    RoleMachine& dst = from == 0 ? b : a;
    const Heartbeat h = src.heartbeat(0);
    for (size_t p = 0; p < kPathCount; ++p) {
      if (cut[from][p]) continue;
      handle(1 - from, dst.onHeartbeat(static_cast<Path>(p), from == 0 ? 1 : 2, h, now));
    }
  }
  void handle(int node, const RoleOutput& o) {
    if (o.changed) {
      log += std::string(node == 0 ? "A " : "B ") + roleName(o.to) + ": " + o.reason + "\n";
    }
    if (o.send_heartbeat) send(node);
  }
  void run(uint64_t until) {
    for (; now < until; now += kMs) {
      handle(0, a.tick(now));
      handle(1, b.tick(now));
      if (a.role() == Role::kActive && b.role() == Role::kActive) both_active_ns += kMs;
    }
  }
  int actives() const {
    return (a.role() == Role::kActive ? 1 : 0) + (b.role() == Role::kActive ? 1 : 0);
  }
};

TEST(SyncRoles, PairElectsOneActiveAndSurvivesLosingOnePath) {
  Pair p(cfg(1, 100), cfg(2, 100));
  p.a.setReady(true);
  p.b.setReady(true);
  p.run(100 * kMs);
  EXPECT_EQ(p.actives(), 1) << p.log;
  EXPECT_EQ(p.b.role(), Role::kActive) << p.log;  // equal priority: higher node id
  // The sync link is cut both ways: the front path still carries heartbeats.
  p.cut[0][0] = p.cut[1][0] = true;
  p.run(1000 * kMs);
  EXPECT_EQ(p.actives(), 1) << p.log;
  EXPECT_EQ(p.both_active_ns, 0u) << p.log;
}

TEST(SyncRoles, ActiveCrashThenStaleActiveReturnsAndStepsDown) {
  Pair p(cfg(1), cfg(2));
  p.run(100 * kMs);
  ASSERT_EQ(p.b.role(), Role::kActive);
  const uint32_t e = p.b.epoch();
  // B is partitioned away completely (its heartbeats lost, and it hears nothing).
  p.cut[1][0] = p.cut[1][1] = p.cut[0][0] = p.cut[0][1] = true;
  p.run(200 * kMs);
  EXPECT_EQ(p.a.role(), Role::kActive);
  EXPECT_EQ(p.a.epoch(), e + 1);
  // The partition heals: B (stale epoch, higher node id) steps down at the first heartbeat.
  p.cut[1][0] = p.cut[1][1] = p.cut[0][0] = p.cut[0][1] = false;
  const uint64_t both_before = p.both_active_ns;
  p.run(300 * kMs);
  EXPECT_EQ(p.a.role(), Role::kActive) << p.log;
  EXPECT_EQ(p.b.role(), Role::kStandby) << p.log;
  EXPECT_LE(p.both_active_ns - both_before, kInterval) << p.log;
  EXPECT_NE(p.log.find("B standby: two actives: peer has the higher epoch"), std::string::npos)
      << p.log;
}

TEST(SyncRoles, PlannedSwitchoverHandsOverWithoutPreemptingBack) {
  Pair p(cfg(1, 200, true), cfg(2, 100, true));
  p.a.setReady(true);
  p.b.setReady(true);
  p.run(100 * kMs);
  ASSERT_EQ(p.a.role(), Role::kActive) << p.log;
  // Refused on the standby.
  EXPECT_STREQ(p.b.requestSwitchover(p.now).reason,
               "switchover refused: this node is not active");
  p.b.setReady(false);
  p.send(1);
  EXPECT_STREQ(p.a.requestSwitchover(p.now).reason,
               "switchover refused: peer is not a ready standby");
  p.b.setReady(true);
  p.send(1);
  const uint32_t e = p.a.epoch();
  const RoleOutput o = p.a.requestSwitchover(p.now);
  EXPECT_TRUE(o.changed);
  EXPECT_TRUE(o.release_addresses);
  p.handle(0, o);  // A's handover heartbeat reaches B, B takes over, tells A
  EXPECT_EQ(p.b.role(), Role::kActive) << p.log;
  EXPECT_EQ(p.b.epoch(), e + 1);
  EXPECT_EQ(p.both_active_ns, 0u);
  // A has the higher priority and preempt on, and is ready again after a bulk resync: still it
  // does not take back what it handed over.
  p.a.setReady(true);
  p.run(p.now + 500 * kMs);
  EXPECT_EQ(p.a.role(), Role::kStandby) << p.log;
  EXPECT_EQ(p.b.role(), Role::kActive) << p.log;
  // Preempt re-enabled by the admin: A takes over again.
  p.a.setPreempt(true);
  p.run(p.now + 50 * kMs);
  EXPECT_EQ(p.a.role(), Role::kActive) << p.log;
  EXPECT_EQ(p.b.role(), Role::kStandby) << p.log;
}

// ---- Planned switchover: refusals, a lost handover heartbeat, a peer dying mid-handover. ----

struct SwitchoverCase {
  const char* description;
  bool make_active;      // become active (alone at start) before the peer is heard
  bool peer_heard;
  Heartbeat peer;
  uint64_t asked_at_ms;  // peer heard at 40 ms
  const char* refusal;   // nullptr: proceeds
};

TEST(SyncRoles, SwitchoverRefusedUnlessActiveWithALiveReadyStandby) {
  const SwitchoverCase cases[] = {
      {"standby", false, true, hb(Role::kActive, 1), 41,
       "switchover refused: this node is not active"},
      {"no peer ever heard", true, false, hb(Role::kStandby, 1), 41,
       "switchover refused: peer not alive"},
      {"peer silent for the dead interval", true, true, hb(Role::kStandby, 1), 70,
       "switchover refused: peer not alive"},
      {"peer standby, not ready (bulk resync running)", true, true,
       hb(Role::kStandby, 1, 100, false), 41, "switchover refused: peer is not a ready standby"},
      {"peer in fault", true, true, hb(Role::kFault, 1), 41,
       "switchover refused: peer is not a ready standby"},
      {"peer ready standby, heard just now", true, true, hb(Role::kStandby, 1), 41, nullptr},
      {"peer ready standby, heard 29 ms ago", true, true, hb(Role::kStandby, 1), 69, nullptr},
  };
  for (const SwitchoverCase& c : cases) {
    RoleMachine m(cfg(1), 0);
    if (c.make_active) {
      ASSERT_EQ(m.tick(30 * kMs).to, Role::kActive) << c.description;
    }
    if (c.peer_heard) m.onHeartbeat(Path::kSync, 2, c.peer, 40 * kMs);
    const Role before = m.role();
    const uint64_t now = c.asked_at_ms * kMs;
    const char* why = m.switchoverRefusal(now);
    if (c.refusal == nullptr) {
      EXPECT_EQ(why, nullptr) << c.description << ": " << why;
    } else {
      EXPECT_STREQ(why, c.refusal) << c.description;
    }
    const RoleOutput o = m.requestSwitchover(now);
    EXPECT_EQ(o.changed, c.refusal == nullptr) << c.description;
    if (c.refusal != nullptr) {
      EXPECT_STREQ(o.reason, c.refusal) << c.description;
      EXPECT_EQ(m.role(), before) << c.description;
      EXPECT_FALSE(o.release_addresses || o.take_addresses || o.send_heartbeat) << c.description;
      EXPECT_FALSE(m.handingOver()) << c.description;
    } else {
      EXPECT_EQ(m.role(), Role::kStandby) << c.description;
      EXPECT_TRUE(o.release_addresses) << c.description;
      EXPECT_TRUE(o.send_heartbeat) << c.description;
      EXPECT_TRUE(m.handingOver()) << c.description;
      EXPECT_TRUE(m.heartbeat(0).handover) << c.description;
      EXPECT_FALSE(m.ready()) << c.description;  // it must bulk-resync from the new active
    }
  }
}

TEST(SyncRoles, LostHandoverHeartbeatIsRepeatedUntilThePeerTakesOver) {
  Pair p(cfg(1, 200), cfg(2, 100));
  p.a.setReady(true);
  p.b.setReady(true);
  p.run(100 * kMs);
  ASSERT_EQ(p.a.role(), Role::kActive) << p.log;
  // The handover heartbeat is lost on both paths.
  p.cut[0][0] = p.cut[0][1] = true;
  p.handle(0, p.a.requestSwitchover(p.now));
  EXPECT_EQ(p.actives(), 0);
  EXPECT_TRUE(p.a.handingOver());
  p.cut[0][0] = p.cut[0][1] = false;
  // A does not take back, B takes over at A's next periodic heartbeat (still `handover`).
  const uint64_t asked = p.now;
  p.run(asked + kInterval + kMs);
  EXPECT_EQ(p.b.role(), Role::kActive) << p.log;
  EXPECT_EQ(p.a.role(), Role::kStandby) << p.log;
  EXPECT_FALSE(p.a.handingOver()) << p.log;  // it heard B active
  EXPECT_EQ(p.both_active_ns, 0u);
  EXPECT_NE(p.log.find("B active: peer handed over (planned switchover)"), std::string::npos)
      << p.log;
  // And nothing flips afterwards.
  p.run(p.now + 300 * kMs);
  EXPECT_EQ(p.b.role(), Role::kActive) << p.log;
  EXPECT_EQ(p.a.role(), Role::kStandby) << p.log;
}

TEST(SyncRoles, PeerDyingDuringTheHandoverGetsTheAddressesBack) {
  RoleMachine m(cfg(1), 0);
  ASSERT_EQ(m.tick(30 * kMs).to, Role::kActive);
  const uint32_t e = m.epoch();
  m.onHeartbeat(Path::kSync, 2, hb(Role::kStandby, e), 40 * kMs);
  ASSERT_TRUE(m.requestSwitchover(41 * kMs).changed);
  // The peer never answers: A waits out the dead interval from the last heartbeat, then
  // takes the group back under a new epoch.
  EXPECT_FALSE(m.tick(69 * kMs).changed);
  EXPECT_EQ(m.role(), Role::kStandby);
  const RoleOutput o = m.tick(70 * kMs);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_STREQ(o.reason, "peer died during the handover");
  EXPECT_TRUE(o.take_addresses);
  EXPECT_GT(m.epoch(), e);
}

TEST(SyncRoles, SwitchoverBackAndForthTwentyTimes) {
  Pair p(cfg(1, 100), cfg(2, 100));
  p.a.setReady(true);
  p.b.setReady(true);
  p.run(100 * kMs);
  ASSERT_EQ(p.actives(), 1) << p.log;
  uint32_t last_epoch = std::max(p.a.epoch(), p.b.epoch());
  for (int i = 0; i < 20; ++i) {
    RoleMachine& from = p.a.role() == Role::kActive ? p.a : p.b;
    RoleMachine& to = &from == &p.a ? p.b : p.a;
    const int from_index = &from == &p.a ? 0 : 1;
    // The old active of the previous round is not ready until its bulk resync completes.
    if (i > 0) {
      EXPECT_STREQ(from.switchoverRefusal(p.now),
                   "switchover refused: peer is not a ready standby") << i;
      to.setReady(true);
      p.run(p.now + kInterval + kMs);  // its heartbeat says so
    }
    ASSERT_EQ(from.switchoverRefusal(p.now), nullptr) << i << "\n" << p.log;
    p.handle(from_index, from.requestSwitchover(p.now));
    EXPECT_EQ(to.role(), Role::kActive) << i << "\n" << p.log;
    EXPECT_EQ(from.role(), Role::kStandby) << i << "\n" << p.log;
    EXPECT_GT(to.epoch(), last_epoch) << i;
    last_epoch = to.epoch();
    p.run(p.now + 50 * kMs);
    EXPECT_EQ(p.actives(), 1) << i << "\n" << p.log;
    EXPECT_EQ(to.role(), Role::kActive) << i << "\n" << p.log;
  }
  EXPECT_EQ(p.both_active_ns, 0u) << p.log;
}

// Receive-path barrier: the silence must survive a drain of the local receive queues.
RoleMachine barrierMachine() {
  RolesConfig c = cfg(1);
  c.barrier_timeout_ns = 100 * kMs;
  RoleMachine m(c, 0);
  m.setReady(true);
  m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), 0);
  return m;
}

TEST(SyncRoles, BarrierAskedForOnceWhenThePeerWouldBeDeadAndTakeoverWaitsForIt) {
  RoleMachine m = barrierMachine();
  EXPECT_FALSE(m.tick(29 * kMs).start_barrier);
  RoleOutput o = m.tick(30 * kMs);
  EXPECT_TRUE(o.start_barrier);
  EXPECT_FALSE(o.changed);
  EXPECT_TRUE(m.barrierPending());
  o = m.tick(32 * kMs);  // still outstanding: neither asked again nor taken over
  EXPECT_FALSE(o.start_barrier);
  EXPECT_FALSE(o.changed);
  o = m.barrierDone(33 * kMs);
  EXPECT_TRUE(o.changed);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_STREQ(o.reason, "peer heartbeats lost on both paths");
  EXPECT_FALSE(m.barrierPending());
  EXPECT_EQ(m.barrierSaves(), 0u);
  EXPECT_EQ(m.barrierTimeouts(), 0u);
}

TEST(SyncRoles, HeartbeatHeardDuringTheBarrierCancelsTheTakeover) {
  RoleMachine m = barrierMachine();
  EXPECT_TRUE(m.tick(30 * kMs).start_barrier);
  // The frames the kernel held arrive while the probes are out.
  EXPECT_FALSE(m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), 45 * kMs).changed);
  EXPECT_FALSE(m.barrierPending());
  EXPECT_EQ(m.barrierSaves(), 1u);
  // The barrier completing afterwards changes nothing: the peer is alive.
  EXPECT_FALSE(m.barrierDone(46 * kMs).changed);
  EXPECT_EQ(m.role(), Role::kStandby);
  // A new silence asks for a new barrier; no takeover on the old one.
  EXPECT_FALSE(m.tick(74 * kMs).start_barrier);
  RoleOutput o = m.tick(75 * kMs);
  EXPECT_TRUE(o.start_barrier);
  EXPECT_FALSE(o.changed);
  EXPECT_TRUE(m.barrierDone(76 * kMs).changed);
  EXPECT_EQ(m.role(), Role::kActive);
}

TEST(SyncRoles, BarrierThatNeverCompletesTimesOutIntoATakeover) {
  RoleMachine m = barrierMachine();
  EXPECT_TRUE(m.tick(30 * kMs).start_barrier);
  EXPECT_FALSE(m.tick(129 * kMs).changed);
  const RoleOutput o = m.tick(130 * kMs);
  EXPECT_TRUE(o.changed);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_STREQ(o.reason, "peer heartbeats lost on both paths (receive-path barrier timed out)");
  EXPECT_EQ(m.barrierTimeouts(), 1u);
  EXPECT_FALSE(m.barrierPending());
}

TEST(SyncRoles, BarrierDoneWithoutOneOutstandingTakesNoDecision) {
  RoleMachine m = barrierMachine();
  EXPECT_FALSE(m.barrierDone(10 * kMs).changed);
  EXPECT_FALSE(m.barrierPending());
  // ... and does not count as a barrier for the next silence.
  EXPECT_TRUE(m.tick(30 * kMs).start_barrier);
  EXPECT_EQ(m.role(), Role::kStandby);
}

TEST(SyncRoles, WithoutABarrierTheTakeoverIsImmediate) {
  RoleMachine m(cfg(1), 0);
  m.setReady(true);
  m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  const RoleOutput o = m.tick(30 * kMs);
  EXPECT_FALSE(o.start_barrier);
  EXPECT_TRUE(o.changed);
}

// Own stalls: a standby whose own loop was frozen does not count the freeze against the peer.
RoleMachine stallMachine(bool own_stalls) {
  RolesConfig c = cfg(1);
  c.own_stalls = own_stalls;
  RoleMachine m(c, 0);
  m.setReady(true);
  m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 0);
  m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), 0);
  for (uint64_t t = 0; t <= 10 * kMs; t += kMs) EXPECT_FALSE(m.tick(t).changed);
  return m;
}

TEST(SyncRoles, TicksOnTimeAreNeverOwnStalls) {
  RoleMachine m = stallMachine(true);
  for (uint64_t t = 10 * kMs; t <= 1000 * kMs; t += 2 * kMs) {
    if (t % (10 * kMs) == 0) m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), t);
    EXPECT_FALSE(m.tick(t).changed);
  }
  EXPECT_EQ(m.selfStalls(), 0u);
  // Ticking on time, a silent peer (last heard at 1000 ms) is dead after exactly the dead
  // interval.
  for (uint64_t t = 1002 * kMs; t < 1030 * kMs; t += 2 * kMs) EXPECT_FALSE(m.tick(t).changed);
  EXPECT_TRUE(m.tick(1030 * kMs).changed);
}

TEST(SyncRoles, OwnStallGivesThePeerAWholeDeadIntervalFromTheLateTick) {
  RoleMachine m = stallMachine(true);
  // Frozen from 10 ms to 80 ms: the peer was last heard 80 ms ago, far past the 30 ms dead
  // interval, but this node saw none of that time.
  EXPECT_FALSE(m.tick(80 * kMs).changed);
  EXPECT_EQ(m.selfStalls(), 1u);
  EXPECT_EQ(m.role(), Role::kStandby);
  for (uint64_t t = 81 * kMs; t < 110 * kMs; t += kMs) EXPECT_FALSE(m.tick(t).changed);
  EXPECT_EQ(m.selfStalls(), 1u);
  // Still silent a whole dead interval after the stall: dead.
  const RoleOutput o = m.tick(110 * kMs);
  EXPECT_TRUE(o.changed);
  EXPECT_EQ(o.to, Role::kActive);
}

TEST(SyncRoles, PeerHeardAfterBothStalledKeepsItsRole) {
  RoleMachine m = stallMachine(true);
  EXPECT_FALSE(m.tick(80 * kMs).changed);
  // The peer's sender was frozen by the same cause; its next heartbeat comes soon after.
  EXPECT_FALSE(m.onHeartbeat(Path::kSync, 2, hb(Role::kActive, 4), 83 * kMs).changed);
  for (uint64_t t = 84 * kMs; t < 200 * kMs; t += kMs) {
    if (t % (10 * kMs) == 3 * kMs) m.onHeartbeat(Path::kFront, 2, hb(Role::kActive, 4), t);
    EXPECT_FALSE(m.tick(t).changed);
  }
  EXPECT_EQ(m.role(), Role::kStandby);
}

TEST(SyncRoles, WithoutTheOwnStallRuleALateTickTakesOverAtOnce) {
  RoleMachine m = stallMachine(false);
  const RoleOutput o = m.tick(80 * kMs);
  EXPECT_TRUE(o.changed);
  EXPECT_EQ(o.to, Role::kActive);
  EXPECT_EQ(m.selfStalls(), 1u);  // counted either way
}

}  // namespace
}  // namespace tandem::sync
