// The [sync] keys of deferral, front-path heartbeats and the GARP refresh (issue 4).
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

const char* const kBase = R"([service.web]
vip = 10.10.1.100:80
backends = 10.10.2.2:8080
[sync]
node_id = 1
bind = 10.9.0.1:7600
peer = 10.9.0.2:7600
key = 000102030405060708090a0b0c0d0e0f
addresses = front=10.10.1.100/32
)";

SyncConfig parseSync(const std::string& extra) {
  std::istringstream in(kBase + extra);
  const DaemonConfig c = parseConfig(in, {});
  EXPECT_TRUE(c.sync.has_value());
  return c.sync.value_or(SyncConfig{});
}

std::string error(const std::string& extra) {
  std::istringstream in(kBase + extra);
  try {
    parseConfig(in, {});
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigPair, DefaultsDeferWithA50msBoundNoFrontPathNoRefresh) {
  const SyncConfig s = parseSync("");
  EXPECT_TRUE(s.defer);
  EXPECT_EQ(s.defer_timeout_ns, 50'000'000u);
  EXPECT_FALSE(s.front_bind.has_value());
  EXPECT_FALSE(s.front_peer.has_value());
  EXPECT_EQ(s.garp_refresh_ns, 0u);
}

TEST(ConfigPair, KeysAreParsed) {
  const SyncConfig s = parseSync(
      "defer = off\ndefer_timeout_ms = 20\nfront_bind = 10.10.1.11:7601\n"
      "front_peer = 10.10.1.12:7601\ngarp_refresh_ms = 1000\n");
  EXPECT_FALSE(s.defer);
  EXPECT_EQ(s.defer_timeout_ns, 20'000'000u);
  ASSERT_TRUE(s.front_bind.has_value());
  EXPECT_EQ(s.front_bind->toString(), "10.10.1.11:7601");
  EXPECT_EQ(s.front_peer->toString(), "10.10.1.12:7601");
  EXPECT_EQ(s.garp_refresh_ns, 1'000'000'000u);
}

TEST(ConfigPair, ErrorsNameTheKey) {
  EXPECT_NE(error("defer = maybe\n").find("sync.defer"), std::string::npos);
  EXPECT_NE(error("defer_timeout_ms = 0\n").find("sync.defer_timeout_ms"), std::string::npos);
  EXPECT_NE(error("defer_timeout_ms = 1001\n").find("sync.defer_timeout_ms"),
            std::string::npos);
  EXPECT_NE(error("front_bind = 10.10.1.11:7601\n").find("sync.front_peer"), std::string::npos);
  EXPECT_NE(error("front_peer = 10.10.1.12:7601\n").find("sync.front_bind"), std::string::npos);
  EXPECT_NE(error("front_bind = 10.10.1.11:7601\nfront_peer = 10.10.1.11:7601\n")
                .find("sync.front_peer"),
            std::string::npos);
  EXPECT_NE(error("front_bind = 10.9.0.1:7600\nfront_peer = 10.10.1.12:7601\n")
                .find("sync.front_bind"),
            std::string::npos);
  EXPECT_NE(error("garp_refresh_ms = -1\n").find("sync.garp_refresh_ms"), std::string::npos);
  EXPECT_NE(error("garp_refresh_ms = 3600001\n").find("sync.garp_refresh_ms"),
            std::string::npos);
}

TEST(ConfigPair, HelpListsTheNewKeysWithDefaults) {
  const std::string help = configKeysHelp();
  EXPECT_NE(help.find("sync.defer_timeout_ms"), std::string::npos);
  EXPECT_NE(help.find("(default 50)"), std::string::npos);
  EXPECT_NE(help.find("sync.front_bind"), std::string::npos);
  EXPECT_NE(help.find("sync.garp_refresh_ms"), std::string::npos);
}

TEST(ConfigPair, SendWindowDefaultsTo8192AndIsBounded) {
  EXPECT_EQ(parseSync("").send_window, 8192u);
  EXPECT_EQ(parseSync("send_window = 64\n").send_window, 64u);
  EXPECT_EQ(parseSync("send_window = 65536\n").send_window, 65536u);
  EXPECT_NE(error("send_window = 63\n").find("sync.send_window"), std::string::npos);
  EXPECT_NE(error("send_window = 65537\n").find("sync.send_window"), std::string::npos);
  EXPECT_NE(error("send_window = many\n").find("sync.send_window"), std::string::npos);
  const std::string help = configKeysHelp();
  EXPECT_NE(help.find("sync.send_window"), std::string::npos);
  EXPECT_NE(help.find("(default 8192)"), std::string::npos);
}

TEST(ConfigPair, HeartbeatThreadIsOnByDefaultAndSwitchable) {
  EXPECT_TRUE(parseSync("").heartbeat_thread);
  EXPECT_FALSE(parseSync("heartbeat_thread = off\n").heartbeat_thread);
  EXPECT_TRUE(parseSync("heartbeat_thread = on\n").heartbeat_thread);
  EXPECT_NE(error("heartbeat_thread = sometimes\n").find("sync.heartbeat_thread"),
            std::string::npos);
  const std::string help = configKeysHelp();
  EXPECT_NE(help.find("sync.heartbeat_thread"), std::string::npos);
}

}  // namespace
}  // namespace tandem
