// Configuration of backend health checks and re-splicing: [service.NAME] health_* and resplice
// keys, defaults, and messages that name the key.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

DaemonConfig parse(const std::string& service_keys) {
  std::istringstream in("[service.web]\nvip = 10.10.1.100:80\n"
                        "backends = 10.10.2.2:8080 10.10.2.3:8080\n" +
                        service_keys);
  return parseConfig(in, {});
}

std::string errorOf(const std::string& service_keys) {
  try {
    parse(service_keys);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(ConfigHealth, DefaultsAreNoChecksAndNoResplice) {
  const DaemonConfig c = parse("");
  ASSERT_EQ(c.health.size(), 1u);
  EXPECT_EQ(c.health[0].check, HealthCheck::kNone);
  EXPECT_FALSE(c.engine.services[0].resplice);
}

TEST(ConfigHealth, EveryKeyParses) {
  const DaemonConfig c = parse(
      "mode = splice\nresplice = on\nhealth_check = http\nhealth_interval = 0.5\n"
      "health_timeout = 0.25\nhealth_rise = 1\nhealth_fall = 2\nhealth_http_path = /healthz\n"
      "health_http_status = 204\nhealth_fastinter = 0.05\n");
  const HealthConfig& h = c.health[0];
  EXPECT_TRUE(c.engine.services[0].resplice);
  EXPECT_EQ(h.check, HealthCheck::kHttp);
  EXPECT_EQ(h.interval_ns, 500'000'000u);
  EXPECT_EQ(h.timeout_ns, 250'000'000u);
  EXPECT_EQ(h.rise, 1u);
  EXPECT_EQ(h.fall, 2u);
  EXPECT_EQ(h.http_path, "/healthz");
  EXPECT_EQ(h.http_status, 204);
  EXPECT_EQ(h.fastinter_ns, 50'000'000u);
}

TEST(ConfigHealth, TimeoutDefaultsToAtMostTheInterval) {
  const DaemonConfig c = parse("health_check = tcp\nhealth_interval = 0.2\n");
  EXPECT_EQ(c.health[0].timeout_ns, 200'000'000u);
  EXPECT_EQ(c.health[0].fastinter_ns, 200'000'000u) << "fastinter defaults to the interval";
}

TEST(ConfigHealth, ErrorsNameTheKey) {
  struct Case {
    const char* keys;
    const char* message;
  } cases[] = {
      {"resplice = on\n", "service.web.resplice: only used with mode = splice"},
      {"mode = splice\nresplice = maybe\n", "service.web.resplice: expected true or false"},
      {"health_check = icmp\n", "service.web.health_check: expected none | tcp | http"},
      {"health_interval = 1\n", "service.web.health_interval: needs health_check = tcp | http"},
      {"health_check = tcp\nhealth_http_path = /x\n",
       "service.web.health_http_path: only used with health_check = http"},
      {"health_check = tcp\nhealth_interval = 1\nhealth_timeout = 2\n",
       "service.web.health_timeout: above health_interval"},
      {"health_check = tcp\nhealth_interval = 1\nhealth_fastinter = 2\n",
       "service.web.health_fastinter: above health_interval"},
      {"health_fastinter = 0.1\n", "service.web.health_fastinter: needs health_check = tcp | http"},
      {"health_check = tcp\nhealth_rise = 0\n", "service.web.health_rise: expected an integer"},
      {"health_check = tcp\nhealth_fall = 101\n", "service.web.health_fall: expected an integer"},
      {"health_check = http\nhealth_http_path = healthz\n",
       "service.web.health_http_path: expected a path starting with /"},
      {"health_check = http\nhealth_http_status = 99\n",
       "service.web.health_http_status: expected an integer from 100 to 599"},
  };
  for (const Case& k : cases) {
    EXPECT_EQ(errorOf(k.keys).rfind(k.message, 0), 0u) << k.keys << " -> " << errorOf(k.keys);
  }
}

}  // namespace
}  // namespace tandem
