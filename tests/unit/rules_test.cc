// iptables rule generation: golden texts for both addressings, and the cleanup derived from
// iptables-save output.
#include "proxy/io/rules.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "proxy/fastpath/fastpath_abi.h"
#include "proxy/tandemd/config.h"

namespace tandem {
namespace {

ServiceConfig service(const char* name, const char* vip, std::vector<const char*> backends) {
  ServiceConfig s;
  s.name = name;
  s.vip = *Endpoint::parse(vip);
  for (const char* b : backends) s.backends.push_back(*Endpoint::parse(b));
  return s;
}

TEST(RulesTest, ChainName) {
  EXPECT_EQ(rulesChain(0), "TANDEM-Q0");
  EXPECT_EQ(rulesChain(65535), "TANDEM-Q65535");
}

TEST(RulesTest, ModeNames) {
  EXPECT_EQ(parseRulesMode("iptables"), RulesMode::kIptables);
  EXPECT_EQ(parseRulesMode("none"), RulesMode::kNone);
  EXPECT_EQ(parseRulesMode("nft"), std::nullopt);
  EXPECT_STREQ(rulesModeName(RulesMode::kNone), "none");
}

TEST(RulesTest, TransparentGolden) {
  EngineConfig c;
  c.services.push_back(service("web", "10.10.1.100:80", {"10.10.2.2:8080", "10.10.2.3:8080"}));
  EXPECT_EQ(buildIptablesRules(c, 0),
            "# tandemd: steers its services into NFQUEUE 0; removed when tandemd stops\n"
            "*raw\n"
            ":TANDEM-Q0 - [0:0]\n"
            "-A TANDEM-Q0 -d 10.10.1.100/32 -p tcp -m tcp --dport 80 -j CT --notrack\n"
            "-A TANDEM-Q0 -d 10.10.1.100/32 -p tcp -m tcp --dport 80 -j NFQUEUE --queue-num 0\n"
            "-A TANDEM-Q0 -s 10.10.2.2/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j CT --notrack\n"
            "-A TANDEM-Q0 -s 10.10.2.2/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j NFQUEUE --queue-num 0\n"
            "-A TANDEM-Q0 -s 10.10.2.3/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j CT --notrack\n"
            "-A TANDEM-Q0 -s 10.10.2.3/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j NFQUEUE --queue-num 0\n"
            "-I PREROUTING 1 -p tcp -j TANDEM-Q0\n"
            "COMMIT\n");
}

TEST(RulesTest, SnatGoldenAndSharedRulesOnce) {
  EngineConfig c;
  ServiceConfig a = service("api", "10.10.1.100:443", {"10.10.2.4:8443"});
  a.addressing = Addressing::kSnat;
  a.snat_addr = *IpAddr::parse("10.10.2.1");
  a.snat_port_min = 20000;
  a.snat_port_max = 29999;
  ServiceConfig b = a;  // same SNAT range and backend, other VIP: their rules appear once
  b.name = "api2";
  b.vip = *Endpoint::parse("10.10.1.101:443");
  c.services = {a, b};
  EXPECT_EQ(buildIptablesRules(c, 7),
            "# tandemd: steers its services into NFQUEUE 7; removed when tandemd stops\n"
            "*raw\n"
            ":TANDEM-Q7 - [0:0]\n"
            "-A TANDEM-Q7 -d 10.10.1.100/32 -p tcp -m tcp --dport 443 -j CT --notrack\n"
            "-A TANDEM-Q7 -d 10.10.1.100/32 -p tcp -m tcp --dport 443 -j NFQUEUE --queue-num 7\n"
            "-A TANDEM-Q7 -d 10.10.2.1/32 -p tcp -m tcp --dport 20000:29999 -j CT --notrack\n"
            "-A TANDEM-Q7 -d 10.10.2.1/32 -p tcp -m tcp --dport 20000:29999 -j NFQUEUE "
            "--queue-num 7\n"
            "-A TANDEM-Q7 -d 10.10.1.101/32 -p tcp -m tcp --dport 443 -j CT --notrack\n"
            "-A TANDEM-Q7 -d 10.10.1.101/32 -p tcp -m tcp --dport 443 -j NFQUEUE --queue-num 7\n"
            "-I PREROUTING 1 -p tcp -j TANDEM-Q7\n"
            "COMMIT\n");
}

// daemon.fastpath: packets the tc program translated (TANDEM_FP_MARK) leave the chain first,
// untracked, before any NFQUEUE rule could match them.
TEST(RulesTest, FastPathMarkSkipsConntrackAndQueue) {
  EngineConfig c;
  c.services.push_back(service("web", "10.10.1.100:80", {"10.10.2.2:8080"}));
  EXPECT_EQ(buildIptablesRules(c, 3, true),
            "# tandemd: steers its services into NFQUEUE 3; removed when tandemd stops\n"
            "*raw\n"
            ":TANDEM-Q3 - [0:0]\n"
            "-A TANDEM-Q3 -m mark --mark 0x7464f001 -j CT --notrack\n"
            "-A TANDEM-Q3 -m mark --mark 0x7464f001 -j RETURN\n"
            "-A TANDEM-Q3 -d 10.10.1.100/32 -p tcp -m tcp --dport 80 -j CT --notrack\n"
            "-A TANDEM-Q3 -d 10.10.1.100/32 -p tcp -m tcp --dport 80 -j NFQUEUE --queue-num 3\n"
            "-A TANDEM-Q3 -s 10.10.2.2/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j CT --notrack\n"
            "-A TANDEM-Q3 -s 10.10.2.2/32 -p tcp -m tcp --sport 8080 -m addrtype ! --dst-type LOCAL "
            "-j NFQUEUE --queue-num 3\n"
            "-I PREROUTING 1 -p tcp -j TANDEM-Q3\n"
            "COMMIT\n");
  // The ABI's mark, and nothing of it without the fast path.
  EXPECT_EQ(TANDEM_FP_MARK, 0x7464f001u);
  EXPECT_EQ(buildIptablesRules(c, 3).find("mark"), std::string::npos);
  // The cleanup of such a chain is the same as of any other.
  EXPECT_EQ(buildIptablesCleanup("*raw\n:TANDEM-Q3 - [0:0]\n-A PREROUTING -p tcp -j TANDEM-Q3\n"
                                 "-A TANDEM-Q3 -m mark --mark 0x7464f001 -j RETURN\nCOMMIT\n",
                                 3),
            "*raw\n-D PREROUTING -p tcp -j TANDEM-Q3\n-F TANDEM-Q3\n-X TANDEM-Q3\nCOMMIT\n");
}

TEST(RulesTest, NeverFailsOpen) {
  EngineConfig c;
  c.services.push_back(service("web", "10.10.1.100:80", {"10.10.2.2:8080"}));
  EXPECT_EQ(buildIptablesRules(c, 0).find("bypass"), std::string::npos);
}

// iptables-save -t raw (iptables-nft 1.8.9) while tandemd runs on queue 0, with an operator's
// rule and another daemon's chain on queue 1 around it.
const char* const kSaved =
    "# Generated by iptables-save v1.8.9 (nf_tables) on Fri Nov 27 04:24:00 2026\n"
    "*raw\n"
    ":PREROUTING ACCEPT [0:0]\n"
    ":OUTPUT ACCEPT [0:0]\n"
    ":TANDEM-Q0 - [0:0]\n"
    ":TANDEM-Q1 - [0:0]\n"
    "-A PREROUTING -p tcp -j TANDEM-Q0\n"
    "-A PREROUTING -p tcp -j TANDEM-Q1\n"
    "-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack\n"
    "-A PREROUTING -p tcp -j TANDEM-Q0\n"
    "-A OUTPUT -m comment --comment \"odd jump\" -g TANDEM-Q0\n"
    "-A TANDEM-Q0 -d 10.10.1.100/32 -p tcp -m tcp --dport 80 -j NFQUEUE --queue-num 0\n"
    "-A TANDEM-Q1 -d 10.10.1.101/32 -p tcp -m tcp --dport 80 -j NFQUEUE --queue-num 1\n"
    "COMMIT\n"
    "# Completed on Fri Nov 27 04:24:00 2026\n";

TEST(RulesTest, CleanupRemovesEveryJumpAndOnlyOurChain) {
  EXPECT_EQ(buildIptablesCleanup(kSaved, 0),
            "*raw\n"
            "-D PREROUTING -p tcp -j TANDEM-Q0\n"
            "-D PREROUTING -p tcp -j TANDEM-Q0\n"
            "-D OUTPUT -m comment --comment \"odd jump\" -g TANDEM-Q0\n"
            "-F TANDEM-Q0\n"
            "-X TANDEM-Q0\n"
            "COMMIT\n");
}

TEST(RulesTest, CleanupOfAbsentChainIsEmpty) {
  EXPECT_EQ(buildIptablesCleanup(kSaved, 2), "");
  EXPECT_EQ(buildIptablesCleanup("", 0), "");
  // A chain of the same name in another table is not ours to touch.
  EXPECT_EQ(buildIptablesCleanup("*filter\n:TANDEM-Q0 - [0:0]\nCOMMIT\n", 0), "");
}

TEST(RulesTest, CleanupOfPrefixNamedChainIsNotOurs) {
  // TANDEM-Q10 must not be mistaken for TANDEM-Q1.
  EXPECT_EQ(buildIptablesCleanup("*raw\n:TANDEM-Q10 - [0:0]\n-A PREROUTING -j TANDEM-Q10\n"
                                 "COMMIT\n",
                                 1),
            "");
}

TEST(RulesTest, ShippedExampleMatchesTheGenerator) {
  // conf/rules.iptables (for daemon.rules = none) must be what tandemd itself would install for
  // conf/tandemd.conf, comments aside. The source tree is found from this file's path.
  std::string root = __FILE__;
  root.erase(root.rfind("tests/unit/"));
  const DaemonConfig c = loadConfig(root + "conf/tandemd.conf", {});
  std::ifstream file(root + "conf/rules.iptables");
  ASSERT_TRUE(file) << "conf/rules.iptables missing";
  std::string shipped, line;
  while (std::getline(file, line)) {
    if (!line.empty() && line[0] != '#') shipped += line + "\n";
  }
  std::string generated;
  std::istringstream in(buildIptablesRules(c.engine, c.queue.queue, c.fastpath.enabled));
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') generated += line + "\n";
  }
  EXPECT_EQ(shipped, generated);
}

}  // namespace
}  // namespace tandem
