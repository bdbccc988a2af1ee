// daemon.fastpath*: off by default; interfaces, close and map size parsed; bad values named.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

const char* const kService = R"([service.web]
vip = 10.10.1.100:80
backends = 10.10.2.2:8080
mode = splice
)";

DaemonConfig parse(const std::vector<std::string>& overrides) {
  std::istringstream in(kService);
  return parseConfig(in, overrides);
}

/// `overrides` are refused with an error that starts with `key` (and a colon).
void expectRefused(const std::vector<std::string>& overrides, const std::string& key) {
  try {
    parse(overrides);
    ADD_FAILURE() << "accepted " << overrides.back();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(key + ":", 0), 0u) << e.what();
  }
}

TEST(ConfigFastPath, OffByDefault) {
  const DaemonConfig c = parse({});
  EXPECT_FALSE(c.fastpath.enabled);
  EXPECT_TRUE(c.fastpath.close_fast);
  EXPECT_TRUE(c.fastpath.interfaces.empty());
  // 2 x max_flows (default 1,000,000), bounded: the map is preallocated.
  EXPECT_EQ(c.fastpath.max_entries, FastPathConfig::kDefaultMaxEntries);
  const std::string help = configKeysHelp();
  for (const char* key : {"daemon.fastpath ", "daemon.fastpath_interfaces",
                          "daemon.fastpath_close", "daemon.fastpath_max_entries"}) {
    EXPECT_NE(help.find(key), std::string::npos) << key;
  }
}

TEST(ConfigFastPath, Parsed) {
  const DaemonConfig c =
      parse({"--daemon.fastpath=on", "--daemon.fastpath_interfaces=front, back",
             "--daemon.fastpath_close=off", "--daemon.max_flows=1000"});
  EXPECT_TRUE(c.fastpath.enabled);
  EXPECT_FALSE(c.fastpath.close_fast);
  EXPECT_EQ(c.fastpath.interfaces, (std::vector<std::string>{"front", "back"}));
  EXPECT_EQ(c.fastpath.max_entries, 2000u);  // two directions per flow
  EXPECT_EQ(parse({"--daemon.fastpath_max_entries=64"}).fastpath.max_entries, 64u);
}

TEST(ConfigFastPath, BadValuesNameTheKey) {
  const std::pair<const char*, const char*> bad[] = {
      {"--daemon.fastpath=maybe", "daemon.fastpath"},
      {"--daemon.fastpath_close=2", "daemon.fastpath_close"},
      {"--daemon.fastpath_interfaces=front,front", "daemon.fastpath_interfaces"},
      {"--daemon.fastpath_interfaces=averyveryverylongname", "daemon.fastpath_interfaces"},
      {"--daemon.fastpath_interfaces=\"\"", "daemon.fastpath_interfaces"},
      {"--daemon.fastpath_max_entries=1", "daemon.fastpath_max_entries"},
      {"--daemon.fastpath_max_entries=16777217", "daemon.fastpath_max_entries"},
  };
  for (const auto& [arg, key] : bad) expectRefused({arg}, key);
}

TEST(ConfigFastPath, SynAnswersOnByDefaultOffOnRequest) {
  EXPECT_TRUE(parse({"--daemon.fastpath=on"}).fastpath.syn);
  EXPECT_FALSE(parse({"--daemon.fastpath=on", "--daemon.fastpath_syn=off"}).fastpath.syn);
  EXPECT_NE(configKeysHelp().find("daemon.fastpath_syn"), std::string::npos);
  try {
    parse({"--daemon.fastpath_syn=sometimes"});
    ADD_FAILURE() << "accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("daemon.fastpath_syn:", 0), 0u) << e.what();
  }
}

TEST(ConfigFastPath, KernelSpliceCompletionOffByDefaultOnOnRequest) {
  EXPECT_FALSE(parse({"--daemon.fastpath=on"}).fastpath.splice);
  EXPECT_TRUE(parse({"--daemon.fastpath=on", "--daemon.fastpath_splice=on"}).fastpath.splice);
  EXPECT_NE(configKeysHelp().find("daemon.fastpath_splice"), std::string::npos);
  expectRefused({"--daemon.fastpath_splice=yes please"}, "daemon.fastpath_splice");
}

TEST(ConfigFastPath, KernelBindOffByDefaultNeedsTheSynAnswerer) {
  EXPECT_FALSE(parse({"--daemon.fastpath=on"}).fastpath.bind);
  EXPECT_TRUE(parse({"--daemon.fastpath=on", "--daemon.fastpath_bind=on"}).fastpath.bind);
  EXPECT_NE(configKeysHelp().find("daemon.fastpath_bind"), std::string::npos);
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--daemon.fastpath_bind=on"},
        std::vector<std::string>{"--daemon.fastpath=on", "--daemon.fastpath_syn=off",
                                 "--daemon.fastpath_bind=on"},
        std::vector<std::string>{"--daemon.fastpath=on", "--daemon.fastpath_bind=maybe"}})
    expectRefused(bad, "daemon.fastpath_bind");
}

TEST(ConfigFastPath, RedirectOffByDefaultNeedsTheFastPath) {
  EXPECT_FALSE(parse({"--daemon.fastpath=on"}).fastpath.redirect);
  EXPECT_TRUE(parse({"--daemon.fastpath=on", "--daemon.fastpath_redirect=on"}).fastpath.redirect);
  EXPECT_NE(configKeysHelp().find("daemon.fastpath_redirect"), std::string::npos);
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--daemon.fastpath_redirect=on"},
        std::vector<std::string>{"--daemon.fastpath=on", "--daemon.fastpath_redirect=2"}})
    expectRefused(bad, "daemon.fastpath_redirect");
}

TEST(ConfigFastPath, KernelBindInAPairNeedsDeferralOff) {
  const std::string pair = std::string(kService) + R"([sync]
node_id = 1
bind = 10.9.0.1:7600
peer = 10.9.0.2:7600
key = 000102030405060708090a0b0c0d0e0f
addresses = front=10.10.1.100/32
)";
  const std::vector<std::string> on = {"--daemon.fastpath=on", "--daemon.fastpath_bind=on"};
  {
    std::istringstream in(pair);  // sync.defer defaults to true
    try {
      parseConfig(in, on);
      ADD_FAILURE() << "accepted with deferral";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("daemon.fastpath_bind:", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("sync.defer"), std::string::npos) << e.what();
    }
  }
  std::istringstream in(pair + "defer = false\n");
  EXPECT_TRUE(parseConfig(in, on).fastpath.bind);
}

}  // namespace
}  // namespace tandem
