// The [sync] keys of the virtual MAC takeover mode: takeover, vmac, shadow_bytes.
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

const std::string kBase =
    "[service.web]\nvip = 10.10.1.100:80\nbackends = 10.10.2.2:8080\n"
    "[sync]\nnode_id = 1\nbind = 10.9.0.1:7600\npeer = 10.9.0.2:7600\n"
    "key = 000102030405060708090a0b0c0d0e0f\naddresses = front=10.10.1.100/32\n";

DaemonConfig parse(const std::string& text) {
  std::istringstream in(text);
  return parseConfig(in, {});
}

std::string error(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ConfigVmacTest, DefaultIsGarp) {
  const DaemonConfig c = parse(kBase);
  ASSERT_TRUE(c.sync);
  EXPECT_EQ(c.sync->takeover, TakeoverMode::kGarp);
  EXPECT_EQ(c.sync->shadow_bytes, 32u << 20);
}

TEST(ConfigVmacTest, VmacModeWithItsMac) {
  const DaemonConfig c =
      parse(kBase + "takeover = vmac\nvmac = 02:54:44:4d:00:01\nshadow_bytes = 8388608\n");
  ASSERT_TRUE(c.sync);
  EXPECT_EQ(c.sync->takeover, TakeoverMode::kVmac);
  EXPECT_EQ(c.sync->vmac, (MacAddress{0x02, 0x54, 0x44, 0x4d, 0x00, 0x01}));
  EXPECT_EQ(c.sync->shadow_bytes, 8u << 20);
}

TEST(ConfigVmacTest, ErrorsNameTheKey) {
  EXPECT_NE(error(kBase + "takeover = vrrp\n").find("sync.takeover"), std::string::npos);
  EXPECT_NE(error(kBase + "takeover = vmac\n").find("sync.vmac"), std::string::npos);
  // A vendor-assigned MAC and a multicast one are refused: the vMAC must be nobody's.
  EXPECT_NE(error(kBase + "takeover = vmac\nvmac = 00:16:3e:00:00:01\n").find("sync.vmac"),
            std::string::npos);
  EXPECT_NE(error(kBase + "takeover = vmac\nvmac = 03:00:00:00:00:01\n").find("sync.vmac"),
            std::string::npos);
  EXPECT_NE(error(kBase + "shadow_bytes = 1000\n").find("sync.shadow_bytes"), std::string::npos);
}

}  // namespace
}  // namespace tandem
