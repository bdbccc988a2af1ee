// daemon.realtime_priority: off by default, 1-99 accepted, anything else named in the error.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

const char* const kService = R"([service.web]
vip = 10.10.1.100:80
backends = 10.10.2.2:8080
)";

DaemonConfig parse(const std::vector<std::string>& overrides) {
  std::istringstream in(kService);
  return parseConfig(in, overrides);
}

TEST(ConfigRealtime, OffByDefaultAndParsed) {
  EXPECT_EQ(parse({}).realtime_priority, 0u);
  EXPECT_EQ(parse({"--daemon.realtime_priority=50"}).realtime_priority, 50u);
  EXPECT_EQ(parse({"--daemon.realtime_priority=99"}).realtime_priority, 99u);
  EXPECT_NE(configKeysHelp().find("daemon.realtime_priority"), std::string::npos);
}

TEST(ConfigRealtime, OutOfRangeIsRefusedNamingTheKey) {
  for (const char* bad : {"--daemon.realtime_priority=100", "--daemon.realtime_priority=-1",
                          "--daemon.realtime_priority=high"}) {
    try {
      parse({bad});
      ADD_FAILURE() << bad << " accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("daemon.realtime_priority"), std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
}  // namespace tandem
