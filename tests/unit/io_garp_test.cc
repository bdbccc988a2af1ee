// garp's pure parts: the gratuitous ARP frame (golden bytes) and the burst/refresh schedule on a
// fake clock.
#include "proxy/io/garp.h"

#include <gtest/gtest.h>

#include <vector>

namespace tandem {
namespace {

constexpr uint64_t kMs = 1'000'000;

TEST(GarpFrameTest, GoldenBytes) {
  const MacAddress mac = {0x02, 0x00, 0x5e, 0x10, 0x20, 0x0a};
  const auto f = buildGarpFrame(mac, 0x0a140164);  // 10.20.1.100
  const std::vector<uint8_t> expected = {
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // Ethernet destination: broadcast
      0x02, 0x00, 0x5e, 0x10, 0x20, 0x0a,  // Ethernet source: the interface
      0x08, 0x06,                          // EtherType ARP
      0x00, 0x01,                          // hardware type Ethernet
      0x08, 0x00,                          // protocol type IPv4
      0x06, 0x04,                          // address lengths
      0x00, 0x01,                          // op: request (see garp.h for why not reply)
      0x02, 0x00, 0x5e, 0x10, 0x20, 0x0a,  // sender MAC
      0x0a, 0x14, 0x01, 0x64,              // sender IP = VIP
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // target MAC: zero (RFC 5227 2.1.1)
      0x0a, 0x14, 0x01, 0x64,              // target IP = VIP: gratuitous
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // padding to 60 bytes (ETH_ZLEN) ...
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // ...
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // ...
  };
  ASSERT_EQ(f.size(), kGarpFrameLen);
  EXPECT_EQ(std::vector<uint8_t>(f.begin(), f.end()), expected);
  EXPECT_EQ(kGarpPayloadEnd + 18, kGarpFrameLen);
}

TEST(GarpFrameTest, MacToString) {
  EXPECT_EQ(macToString({0x02, 0x00, 0x5e, 0xab, 0xcd, 0xef}), "02:00:5e:ab:cd:ef");
}

// Runs the schedule on a fake clock ticking every `step` until `until`; returns send times.
std::vector<uint64_t> run(GarpSchedule& s, uint64_t from, uint64_t until, uint64_t step) {
  std::vector<uint64_t> sends;
  for (uint64_t t = from; t <= until; t += step) {
    if (s.poll(t)) sends.push_back(t);
  }
  return sends;
}

TEST(GarpScheduleTest, IdleUntilStarted) {
  GarpSchedule s(GarpScheduleConfig{});
  EXPECT_EQ(s.nextDueNs(), GarpSchedule::kNever);
  EXPECT_FALSE(s.poll(0));
  EXPECT_FALSE(s.poll(UINT64_MAX - 1));
}

TEST(GarpScheduleTest, BurstThenNothingWithoutRefresh) {
  GarpSchedule s({.burst_count = 3, .burst_spacing_ns = 20 * kMs, .refresh_interval_ns = 0});
  s.start(1000 * kMs);
  EXPECT_EQ(s.nextDueNs(), 1000 * kMs);  // the first round goes out at once
  const auto sends = run(s, 1000 * kMs, 5000 * kMs, kMs);
  EXPECT_EQ(sends, (std::vector<uint64_t>{1000 * kMs, 1020 * kMs, 1040 * kMs}));
  EXPECT_EQ(s.nextDueNs(), GarpSchedule::kNever);
  EXPECT_EQ(s.burstLeft(), 0u);
}

TEST(GarpScheduleTest, BurstThenPeriodicRefresh) {
  GarpSchedule s(
      {.burst_count = 2, .burst_spacing_ns = 10 * kMs, .refresh_interval_ns = 1000 * kMs});
  s.start(0);
  const auto sends = run(s, 0, 3100 * kMs, kMs);
  EXPECT_EQ(sends, (std::vector<uint64_t>{0, 10 * kMs, 1010 * kMs, 2010 * kMs, 3010 * kMs}));
}

TEST(GarpScheduleTest, LateTimerSendsOneRoundAndSpacesFromIt) {
  GarpSchedule s({.burst_count = 4, .burst_spacing_ns = 20 * kMs, .refresh_interval_ns = 0});
  s.start(0);
  EXPECT_TRUE(s.poll(0));
  // The loop stalls for 100 ms: three rounds are overdue, but only one goes out now.
  EXPECT_TRUE(s.poll(100 * kMs));
  EXPECT_FALSE(s.poll(100 * kMs));
  EXPECT_EQ(s.nextDueNs(), 120 * kMs);
  EXPECT_FALSE(s.poll(119 * kMs));
  EXPECT_TRUE(s.poll(120 * kMs));
  EXPECT_TRUE(s.poll(140 * kMs));
  EXPECT_EQ(s.nextDueNs(), GarpSchedule::kNever);
}

TEST(GarpScheduleTest, StopAndRestart) {
  GarpSchedule s(
      {.burst_count = 3, .burst_spacing_ns = 20 * kMs, .refresh_interval_ns = 500 * kMs});
  s.start(0);
  EXPECT_TRUE(s.poll(0));
  s.stop();  // stepped down mid-burst
  EXPECT_EQ(s.nextDueNs(), GarpSchedule::kNever);
  EXPECT_FALSE(s.poll(10'000 * kMs));
  s.start(20'000 * kMs);  // took over again: a full burst
  EXPECT_EQ(s.burstLeft(), 3u);
  const auto sends = run(s, 20'000 * kMs, 20'600 * kMs, kMs);
  EXPECT_EQ(sends, (std::vector<uint64_t>{20'000 * kMs, 20'020 * kMs, 20'040 * kMs, 20'540 * kMs}));
}

TEST(GarpScheduleTest, ZeroBurstCountStillAnnouncesOnce) {
  GarpSchedule s({.burst_count = 0, .burst_spacing_ns = 20 * kMs, .refresh_interval_ns = 0});
  s.start(5);
  EXPECT_EQ(run(s, 0, 1000 * kMs, kMs).size(), 1u);
}

}  // namespace
}  // namespace tandem
