// Sysctl requirements: judged from a fake reader, so each rule shows what it accepts.
#include "proxy/io/sysctl.h"

#include <gtest/gtest.h>

#include <map>

namespace tandem {
namespace {

struct FakeSysctls {
  std::map<std::string, std::string> values = {
      {"net.ipv4.ip_forward", "1"},
      {"net.ipv4.conf.all.accept_local", "1"},
      {"net.ipv4.conf.all.rp_filter", "0"},
      {"net.ipv4.conf.front.accept_local", "0"},
      {"net.ipv4.conf.front.rp_filter", "0"},
      {"net.ipv4.conf.back.accept_local", "0"},
      {"net.ipv4.conf.back.rp_filter", "2"},
  };
  SysctlReader reader() {
    return [this](const std::string& key) -> std::optional<std::string> {
      auto it = values.find(key);
      if (it == values.end()) return std::nullopt;
      return it->second;
    };
  }
};

std::vector<std::string> keys(const std::vector<SysctlProblem>& problems) {
  std::vector<std::string> out;
  for (const auto& p : problems) out.push_back(p.key);
  return out;
}

const std::vector<std::string> kInterfaces = {"front", "back"};

TEST(SysctlTest, GoodHostHasNoProblems) {
  FakeSysctls f;
  EXPECT_TRUE(checkSysctls(kInterfaces, f.reader()).empty());
}

TEST(SysctlTest, ForwardingOff) {
  FakeSysctls f;
  f.values["net.ipv4.ip_forward"] = "0";
  auto p = checkSysctls(kInterfaces, f.reader());
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].key, "net.ipv4.ip_forward");
  EXPECT_EQ(p[0].actual, "0");
  EXPECT_EQ(p[0].needed, "1");
  EXPECT_EQ(p[0].fix, "1");
}

TEST(SysctlTest, AcceptLocalFromAllOrEveryInterface) {
  FakeSysctls f;
  f.values["net.ipv4.conf.all.accept_local"] = "0";
  EXPECT_EQ(keys(checkSysctls(kInterfaces, f.reader())),
            std::vector<std::string>{"net.ipv4.conf.all.accept_local"});
  f.values["net.ipv4.conf.front.accept_local"] = "1";
  f.values["net.ipv4.conf.back.accept_local"] = "1";
  EXPECT_TRUE(checkSysctls(kInterfaces, f.reader()).empty());
  // Interfaces unknown: only `all` can prove it.
  EXPECT_EQ(keys(checkSysctls({}, f.reader())),
            std::vector<std::string>{"net.ipv4.conf.all.accept_local"});
}

TEST(SysctlTest, StrictReversePathFilter) {
  FakeSysctls f;
  f.values["net.ipv4.conf.front.rp_filter"] = "1";
  auto p = checkSysctls(kInterfaces, f.reader());
  ASSERT_EQ(keys(p), std::vector<std::string>{"net.ipv4.conf.front.rp_filter"});
  EXPECT_EQ(p[0].needed, "0 or 2");
  EXPECT_EQ(p[0].fix, "2");
  f.values["net.ipv4.conf.front.rp_filter"] = "2";  // loose is fine
  f.values["net.ipv4.conf.all.rp_filter"] = "1";   // but `all` strict overrides every interface
  EXPECT_EQ(keys(checkSysctls(kInterfaces, f.reader())),
            std::vector<std::string>{"net.ipv4.conf.all.rp_filter"});
}

TEST(SysctlTest, UnreadableCountsAsWrong) {
  FakeSysctls f;
  f.values.erase("net.ipv4.ip_forward");
  auto p = checkSysctls(kInterfaces, f.reader());
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].actual, "unreadable");
}

TEST(SysctlTest, SnatRangeOverlappingEphemeralPorts) {
  FakeSysctls f;
  f.values["net.ipv4.ip_local_port_range"] = "32768\t60999";
  EngineConfig c;
  ServiceConfig s;
  s.name = "api";
  s.addressing = Addressing::kSnat;
  s.snat_addr = *IpAddr::parse("10.0.2.1");
  s.snat_port_min = 20000;
  s.snat_port_max = 32768;
  c.services.push_back(s);
  auto w = snatPortWarnings(c, f.reader());
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].rfind("service.api.snat_ports 20000-32768 overlaps "
                       "net.ipv4.ip_local_port_range 32768-60999",
                       0),
            0u)
      << w[0];
  c.services[0].snat_port_max = 32767;
  EXPECT_TRUE(snatPortWarnings(c, f.reader()).empty());
  c.services[0].addressing = Addressing::kTransparent;  // transparent uses no local ports
  c.services[0].snat_port_max = 40000;
  EXPECT_TRUE(snatPortWarnings(c, f.reader()).empty());
}

TEST(SysctlTest, Paths) {
  EXPECT_EQ(sysctlPath("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
  // sysctl(8) writes a VLAN interface eth0.100 as eth0/100 inside a dotted key.
  EXPECT_EQ(sysctlPath("net.ipv4.conf.eth0/100.rp_filter"),
            "/proc/sys/net/ipv4/conf/eth0.100/rp_filter");
}

}  // namespace
}  // namespace tandem
