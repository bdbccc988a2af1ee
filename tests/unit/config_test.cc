// Configuration tests: a good file, every kind of bad key or value (the message names the key),
// and command-line overrides beating the file.
#include "proxy/tandemd/config.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace tandem {
namespace {

constexpr uint64_t kSec = 1'000'000'000ull;

const char* const kGoodFile = R"(# a comment
[daemon]
queue = 3                  # NFQUEUE number
queue_maxlen = 4096
rcvbuf = 33554432
sndbuf = 4194304
batch = 32
max_flows = 5000
rules = none
metrics = 127.0.0.1:9200
set_sysctls = true
log_level = debug

[timeouts]
syn_sent = 5
established = 0.5
time_wait = 2

[service.web]
vip = 10.10.1.100:80
backends = 10.10.2.2:8080 10.10.2.3:8080,10.10.2.4:8080
mode = passthrough
addressing = transparent
scheduler = hash

[service.db]
vip = 10.10.1.101:5432
backends = 10.10.2.5:5432
addressing = snat
snat_address = 10.10.2.1
snat_ports = 30000-30999
)";

const char* const kMinimalService = R"([service.web]
vip = 10.10.1.100:80
backends = 10.10.2.2:8080
)";

DaemonConfig parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  std::istringstream in(text);
  return parseConfig(in, overrides);
}

/// The ConfigError message for `text` + `overrides`; fails the test if parsing succeeds.
std::string error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse(text, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError for:\n" << text;
  return "";
}

TEST(ConfigTest, GoodFile) {
  const DaemonConfig c = parse(kGoodFile);
  EXPECT_EQ(c.queue.queue, 3);
  EXPECT_EQ(c.queue.maxlen, 4096u);
  EXPECT_EQ(c.queue.rcvbuf, 33554432u);
  EXPECT_EQ(c.queue.sndbuf, 4194304u);
  EXPECT_EQ(c.queue.batch, 32u);
  EXPECT_EQ(c.engine.max_flows, 5000u);
  EXPECT_EQ(c.rules, RulesMode::kNone);
  ASSERT_TRUE(c.metrics.has_value());
  EXPECT_EQ(c.metrics->toString(), "127.0.0.1:9200");
  EXPECT_TRUE(c.set_sysctls);
  EXPECT_EQ(c.log_level, LogLevel::kDebug);

  EXPECT_EQ(c.engine.timeouts.syn_sent_ns, 5 * kSec);
  EXPECT_EQ(c.engine.timeouts.established_ns, kSec / 2);
  EXPECT_EQ(c.engine.timeouts.time_wait_ns, 2 * kSec);
  EXPECT_EQ(c.engine.timeouts.syn_recv_ns, Timeouts{}.syn_recv_ns);  // default kept

  ASSERT_EQ(c.engine.services.size(), 2u);
  const ServiceConfig& web = c.engine.services[0];
  EXPECT_EQ(web.name, "web");
  EXPECT_EQ(web.vip.toString(), "10.10.1.100:80");
  ASSERT_EQ(web.backends.size(), 3u);
  EXPECT_EQ(web.backends[2].toString(), "10.10.2.4:8080");
  EXPECT_EQ(web.mode, Mode::kPassthrough);
  EXPECT_EQ(web.addressing, Addressing::kTransparent);
  EXPECT_EQ(web.scheduler, Scheduler::kHash);

  const ServiceConfig& db = c.engine.services[1];
  EXPECT_EQ(db.name, "db");
  EXPECT_EQ(db.addressing, Addressing::kSnat);
  EXPECT_EQ(db.scheduler, Scheduler::kRoundRobin);
  EXPECT_EQ(db.snat_addr.toString(), "10.10.2.1");
  EXPECT_EQ(db.snat_port_min, 30000);
  EXPECT_EQ(db.snat_port_max, 30999);
}

TEST(ConfigTest, SpliceModeAndCookieSecret) {
  const DaemonConfig c =
      parse(std::string("[daemon]\ncookie_secret = 000102030405060708090a0b0c0d0eFF\n") +
            kMinimalService + "mode = splice\n");
  ASSERT_EQ(c.engine.services.size(), 1u);
  EXPECT_EQ(c.engine.services[0].mode, Mode::kSplice);
  ASSERT_EQ(c.engine.splice.cookie_secret.size(), 16u);
  EXPECT_EQ(c.engine.splice.cookie_secret[1], 0x01);
  EXPECT_EQ(c.engine.splice.cookie_secret[15], 0xff);
}

TEST(ConfigTest, SpliceMssAndCookiePeriod) {
  const DaemonConfig c =
      parse(std::string("[daemon]\nmss = 1400\ncookie_period = 30\n") + kMinimalService);
  EXPECT_EQ(c.engine.splice.mss, 1400);
  EXPECT_EQ(c.engine.splice.cookie_period_ns, 30 * kSec);
  const DaemonConfig d = parse(kMinimalService);
  EXPECT_EQ(d.engine.splice.mss, 1460);
  EXPECT_EQ(d.engine.splice.cookie_period_ns, 64 * kSec);
}

TEST(ConfigTest, BindOnDataWithRoutes) {
  const DaemonConfig c = parse(R"([service.tls]
vip = 10.10.1.100:443
backends = 10.10.2.2:8443 10.10.2.3:8443
mode = splice
bind = data
route.10 = host:*.Example -> 10.10.2.2:8443
route.2 = sni:b.example -> 10.10.2.3:8443
)");
  ASSERT_EQ(c.engine.services.size(), 1u);
  const ServiceConfig& s = c.engine.services[0];
  EXPECT_EQ(s.bind, BindOn::kData);
  ASSERT_EQ(s.routes.size(), 2u);
  EXPECT_EQ(s.routes[0].kind, RouteKind::kSni);  // ordered by N, not by text
  EXPECT_EQ(s.routes[0].name, "b.example");
  EXPECT_EQ(s.routes[0].backend, 1);
  EXPECT_EQ(s.routes[1].kind, RouteKind::kHost);
  EXPECT_EQ(s.routes[1].name, "*.example");
  EXPECT_EQ(s.routes[1].backend, 0);
  EXPECT_EQ(parse(kMinimalService + std::string("mode = splice\n")).engine.services[0].bind,
            BindOn::kAck);
}

TEST(ConfigTest, HandshakeWindowIsZeroForBindOnAckAndOpenOtherwise) {
  auto svc = [](const std::string& extra) {
    return parse(kMinimalService + extra).engine.services[0];
  };
  EXPECT_FALSE(svc("").zero_window_handshake);  // passthrough
  EXPECT_TRUE(svc("mode = splice\n").zero_window_handshake);
  EXPECT_FALSE(svc("mode = splice\nbind = data\n").zero_window_handshake);
  EXPECT_FALSE(svc("mode = splice\nhandshake_window = open\n").zero_window_handshake);
  EXPECT_TRUE(svc("mode = splice\nhandshake_window = zero\n").zero_window_handshake);
  EXPECT_FALSE(
      svc("mode = splice\nbind = data\nhandshake_window = open\n").zero_window_handshake);
}

TEST(ConfigTest, SyncSection) {
  const DaemonConfig c = parse(std::string(kMinimalService) + R"(
[sync]
node_id = 2
priority = 50
preempt = true
bind = 10.9.0.2:7600
peer = 10.9.0.1:7600
key = 000102030405060708090a0b0c0d0e0f
key_id = 7
heartbeat_interval = 0.02
miss_count = 5
addresses = front=10.10.1.100/32 back=10.10.2.1/24
garp_count = 2
)");
  ASSERT_TRUE(c.sync.has_value());
  EXPECT_EQ(c.sync->node_id, 2u);
  EXPECT_EQ(c.sync->priority, 50);
  EXPECT_TRUE(c.sync->preempt);
  EXPECT_EQ(c.sync->peer.toString(), "10.9.0.1:7600");
  EXPECT_EQ(c.sync->key.size(), 16u);
  EXPECT_EQ(c.sync->key_id, 7);
  EXPECT_EQ(c.sync->heartbeat_interval_ns, 20'000'000u);
  EXPECT_EQ(c.sync->miss_count, 5u);
  ASSERT_EQ(c.sync->addresses.members.size(), 2u);
  EXPECT_EQ(c.sync->addresses.members[1].interface, "back");
  EXPECT_EQ(c.sync->garp_count, 2u);
  EXPECT_FALSE(parse(kMinimalService).sync.has_value());  // no [sync]: a single proxy
}

TEST(ConfigTest, SyncErrorsNameTheKey) {
  const std::string base = std::string(kMinimalService) +
                           "[sync]\nnode_id = 1\nbind = 10.9.0.1:7600\npeer = 10.9.0.2:7600\n"
                           "addresses = front=10.10.1.100/32\n";
  EXPECT_NE(error(base).find("sync.key"), std::string::npos) << error(base);
  EXPECT_NE(error(base + "key = 0011\n").find("sync.key"), std::string::npos);
  EXPECT_NE(error(base + "key = 000102030405060708090a0b0c0d0e0f\nheartbeat_interval = 0.0005\n")
                .find("sync.heartbeat_interval"),
            std::string::npos);
}

TEST(ConfigTest, Defaults) {
  const DaemonConfig c = parse(kMinimalService);
  EXPECT_EQ(c.queue.queue, 0);
  EXPECT_EQ(c.queue.maxlen, 8192u);
  EXPECT_EQ(c.queue.rcvbuf, 64u << 20);
  EXPECT_EQ(c.queue.batch, 64u);
  EXPECT_EQ(c.engine.max_flows, 1'000'000u);
  EXPECT_EQ(c.rules, RulesMode::kIptables);
  ASSERT_TRUE(c.metrics.has_value());
  EXPECT_EQ(c.metrics->toString(), "127.0.0.1:9100");
  EXPECT_FALSE(c.set_sysctls);
  EXPECT_EQ(c.log_level, LogLevel::kInfo);
  EXPECT_EQ(c.engine.timeouts.established_ns, 7200 * kSec);
  const ServiceConfig& s = c.engine.services.at(0);
  EXPECT_EQ(s.addressing, Addressing::kTransparent);
  EXPECT_EQ(s.scheduler, Scheduler::kRoundRobin);
  EXPECT_EQ(s.mode, Mode::kPassthrough);
}

TEST(ConfigTest, EmptyMetricsDisables) {
  EXPECT_FALSE(parse(std::string("[daemon]\nmetrics = \"\"\n") + kMinimalService).metrics);
  EXPECT_FALSE(parse(std::string("[daemon]\nmetrics =\n") + kMinimalService).metrics);
  EXPECT_FALSE(parse(kMinimalService, {"--daemon.metrics="}).metrics);
}

TEST(ConfigTest, CommandLineBeatsFile) {
  const DaemonConfig c =
      parse(kGoodFile, {"--daemon.queue=7", "--timeouts.established", "2",
                        "--service.web.backends=10.10.2.9:81", "--service.db.snat_ports",
                        "40000-40001", "--daemon.log_level=warn"});
  EXPECT_EQ(c.queue.queue, 7);
  EXPECT_EQ(c.engine.timeouts.established_ns, 2 * kSec);
  EXPECT_EQ(c.log_level, LogLevel::kWarn);
  ASSERT_EQ(c.engine.services.at(0).backends.size(), 1u);
  EXPECT_EQ(c.engine.services[0].backends[0].toString(), "10.10.2.9:81");
  EXPECT_EQ(c.engine.services[1].snat_port_min, 40000);
  EXPECT_EQ(c.engine.services[1].snat_port_max, 40001);
  // Untouched keys keep the file's values.
  EXPECT_EQ(c.queue.maxlen, 4096u);
}

TEST(ConfigTest, ServiceFromCommandLineOnly) {
  const DaemonConfig c =
      parse("", {"--service.api.vip=10.0.0.1:443", "--service.api.backends", "10.0.1.1:8443"});
  ASSERT_EQ(c.engine.services.size(), 1u);
  EXPECT_EQ(c.engine.services[0].name, "api");
}

struct BadCase {
  const char* description;
  std::string file;
  std::vector<std::string> overrides;
  const char* expected;  ///< the whole message
};

class ConfigErrorTest : public testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrorTest, NamesTheKey) {
  const BadCase& c = GetParam();
  EXPECT_EQ(error(c.file, c.overrides), c.expected) << c.description;
}

const std::string kSvc = kMinimalService;

INSTANTIATE_TEST_SUITE_P(
    Config, ConfigErrorTest,
    testing::Values(
        BadCase{"vip without port", "[service.web]\nvip = 10.0.0.1\nbackends = 10.0.0.2:80\n",
                {},
                "service.web.vip: expected ADDRESS:PORT, got '10.0.0.1'"},
        BadCase{"misspelt service key", kSvc + "bakends = 10.0.0.3:80\n", {},
                "service.web.bakends: unknown key"},
        BadCase{"unknown daemon key", "[daemon]\nqueu = 1\n" + kSvc, {},
                "daemon.queu: unknown key"},
        BadCase{"unknown section", "[deamon]\nqueue = 1\n" + kSvc, {},
                "deamon.queue: unknown key"},
        BadCase{"unknown key on the command line", kSvc, {"--daemon.qeue=1"},
                "daemon.qeue: unknown key (command line)"},
        BadCase{"snat without snat_address", kSvc + "addressing = snat\n", {},
                "service.web.snat_address: missing (required with addressing = snat)"},
        BadCase{"snat_address without snat", kSvc + "snat_address = 10.0.0.9\n", {},
                "service.web.snat_address: only used with addressing = snat"},
        BadCase{"duplicate VIP",
                kSvc + "[service.api]\nvip = 10.10.1.100:80\nbackends = 10.0.0.2:80\n", {},
                "service.api.vip: 10.10.1.100:80 is already the VIP of service.web"},
        BadCase{"empty backend list", "[service.web]\nvip = 10.0.0.1:80\nbackends = , \n", {},
                "service.web.backends: empty backend list"},
        BadCase{"missing backends", "[service.web]\nvip = 10.0.0.1:80\n", {},
                "service.web.backends: missing (required for every service)"},
        BadCase{"backend listed twice",
                "[service.web]\nvip = 10.0.0.1:80\nbackends = 10.0.0.2:80 10.0.0.2:80\n", {},
                "service.web.backends: 10.0.0.2:80 is listed twice"},
        BadCase{"backend is a VIP",
                kSvc + "[service.api]\nvip = 10.10.1.101:80\nbackends = 10.10.1.100:80\n", {},
                "service.api.backends: 10.10.1.100:80 is the VIP of service.web"},
        BadCase{"port range reversed",
                kSvc + "addressing = snat\nsnat_address = 10.0.0.9\nsnat_ports = 40000-30000\n",
                {},
                "service.web.snat_ports: range start 40000 is above its end 30000"},
        BadCase{"port range malformed",
                kSvc + "addressing = snat\nsnat_address = 10.0.0.9\nsnat_ports = 40000\n", {},
                "service.web.snat_ports: expected MIN-MAX, got '40000'"},
        BadCase{"port zero in range",
                kSvc + "addressing = snat\nsnat_address = 10.0.0.9\nsnat_ports = 0-10\n", {},
                "service.web.snat_ports: expected an integer from 1 to 65535, got '0'"},
        BadCase{"short cookie secret", "[daemon]\ncookie_secret = 00112233\n" + kSvc, {},
                "daemon.cookie_secret: expected an even number (at least 32) of hex digits"},
        BadCase{"non-hex cookie secret",
                "[daemon]\ncookie_secret = 000102030405060708090a0b0c0d0e0g\n" + kSvc, {},
                "daemon.cookie_secret: expected an even number (at least 32) of hex digits"},
        BadCase{"bad mode", kSvc + "mode = fast\n", {},
                "service.web.mode: expected passthrough | splice, got 'fast'"},
        BadCase{"bad addressing", kSvc + "addressing = nat\n", {},
                "service.web.addressing: expected transparent | snat, got 'nat'"},
        BadCase{"bad scheduler", kSvc + "scheduler = random\n", {},
                "service.web.scheduler: expected roundrobin | hash, got 'random'"},
        BadCase{"max_flows zero", "[daemon]\nmax_flows = 0\n" + kSvc, {},
                "daemon.max_flows: expected an integer from 1 to 100000000, got '0'"},
        BadCase{"queue out of range", "[daemon]\nqueue = 70000\n" + kSvc, {},
                "daemon.queue: expected an integer from 0 to 65535, got '70000'"},
        BadCase{"queue not a number", kSvc, {"--daemon.queue=three"},
                "daemon.queue: expected an integer from 0 to 65535, got 'three' (command line)"},
        BadCase{"batch too large", "[daemon]\nbatch = 5000\n" + kSvc, {},
                "daemon.batch: expected an integer from 1 to 1024, got '5000'"},
        BadCase{"rcvbuf too small", "[daemon]\nrcvbuf = 4096\n" + kSvc, {},
                "daemon.rcvbuf: expected an integer from 1048576 to 1073741824, got '4096'"},
        BadCase{"bad rules", "[daemon]\nrules = nft\n" + kSvc, {},
                "daemon.rules: expected iptables | none, got 'nft'"},
        BadCase{"bad metrics", "[daemon]\nmetrics = localhost\n" + kSvc, {},
                "daemon.metrics: expected ADDRESS:PORT, got 'localhost'"},
        BadCase{"bad bool", "[daemon]\nset_sysctls = maybe\n" + kSvc, {},
                "daemon.set_sysctls: expected true or false, got 'maybe'"},
        BadCase{"bad log level", "[daemon]\nlog_level = verbose\n" + kSvc, {},
                "daemon.log_level: expected debug | info | warn | error, got 'verbose'"},
        BadCase{"zero timeout", "[timeouts]\nestablished = 0\n" + kSvc, {},
                "timeouts.established: expected a number of seconds above 0 and at most one "
                "year, got '0'"},
        BadCase{"negative timeout", "[timeouts]\nclose = -1\n" + kSvc, {},
                "timeouts.close: expected a number of seconds above 0 and at most one year, got "
                "'-1'"},
        BadCase{"timeout with unit", "[timeouts]\nfin_wait = 2s\n" + kSvc, {},
                "timeouts.fin_wait: expected a number of seconds above 0 and at most one year, "
                "got '2s'"},
        BadCase{"IPv6 VIP", "[service.web]\nvip = [::1]:80\nbackends = 10.0.0.2:80\n", {},
                "service.web.vip: IPv6 is not supported yet, got '[::1]:80'"},
        BadCase{"port zero", "[service.web]\nvip = 10.0.0.1:0\nbackends = 10.0.0.2:80\n", {},
                "service.web.vip: expected ADDRESS:PORT, got '10.0.0.1:0'"},
        BadCase{"bad service name", "[service.w eb]\nvip = 10.0.0.1:80\n", {},
                "service.w eb.vip: service name 'w eb' may hold only letters, digits, _ and -"},
        BadCase{"key directly under service", "[service]\nvip = 10.0.0.1:80\n", {},
                "service.vip: expected service.NAME.KEY"},
        BadCase{"key given twice", "[daemon]\nqueue = 1\nqueue = 2\n" + kSvc, {},
                "daemon.queue: given more than once in the configuration file"},
        BadCase{"no service", "[daemon]\nqueue = 1\n", {},
                "service: no [service.NAME] section, nothing to proxy"},
        BadCase{"stray argument", kSvc, {"extra"}, "unexpected argument 'extra'"},
        BadCase{"bind without splice", kSvc + "bind = data\n", {},
                "service.web.bind: only used with mode = splice"},
        BadCase{"bad bind", kSvc + "mode = splice\nbind = syn\n", {},
                "service.web.bind: expected ack | data, got 'syn'"},
        BadCase{"handshake_window without splice", kSvc + "handshake_window = zero\n", {},
                "service.web.handshake_window: only used with mode = splice"},
        BadCase{"bad handshake_window", kSvc + "mode = splice\nhandshake_window = 0\n", {},
                "service.web.handshake_window: expected zero | open, got '0'"},
        BadCase{"zero window with bind = data",
                kSvc + "mode = splice\nbind = data\nhandshake_window = zero\n", {},
                "service.web.handshake_window: zero needs bind = ack: with bind = data the backend "
                "is chosen from the client's first data, which a zero window never lets it send"},
        BadCase{"route without bind = data",
                kSvc + "mode = splice\nroute.1 = sni:a.example -> 10.10.2.2:8080\n", {},
                "service.web.route.1: only used with bind = data"},
        BadCase{"route without arrow",
                kSvc + "mode = splice\nbind = data\nroute.1 = sni:a.example 10.10.2.2:8080\n", {},
                "service.web.route.1: expected sni:NAME -> ADDRESS:PORT or host:NAME -> "
                "ADDRESS:PORT, got 'sni:a.example 10.10.2.2:8080'"},
        BadCase{"route of unknown kind",
                kSvc + "mode = splice\nbind = data\nroute.1 = alpn:h2 -> 10.10.2.2:8080\n", {},
                "service.web.route.1: expected sni:NAME or host:NAME before '->', got 'alpn:h2'"},
        BadCase{"route to a backend not in the pool",
                kSvc + "mode = splice\nbind = data\nroute.1 = host:a -> 10.10.2.9:8080\n", {},
                "service.web.route.1: 10.10.2.9:8080 is not in service.web.backends"},
        BadCase{"route with a bad target",
                kSvc + "mode = splice\nbind = data\nroute.1 = host:a -> backend1\n", {},
                "service.web.route.1: expected ADDRESS:PORT, got 'backend1'"},
        BadCase{"route with a bad name",
                kSvc + "mode = splice\nbind = data\nroute.1 = sni:a/b -> 10.10.2.2:8080\n", {},
                "service.web.route.1: 'a/b' is not a host name (letters, digits, '-', '_', '.', "
                "an optional leading '*.')"},
        BadCase{"MSS too small", "[daemon]\nmss = 100\n" + kSvc, {},
                "daemon.mss: expected an integer from 536 to 65495, got '100'"},
        BadCase{"cookie period too long", "[daemon]\ncookie_period = 3600\n" + kSvc, {},
                "daemon.cookie_period: expected 1 to 600 seconds, got '3600'"},
        BadCase{"route key not numbered", kSvc + "route.x = sni:a -> 10.10.2.2:8080\n", {},
                "service.web.route.x: unknown key"}));

TEST(ConfigTest, CommandLineOptions) {
  const char* argv[] = {"tandemd", "--config", "/etc/t.conf", "--check", "--daemon.queue=2",
                        "--service.web.vip", "10.0.0.1:80"};
  CommandLine cl = parseCommandLine(7, argv);
  EXPECT_EQ(cl.config_path, "/etc/t.conf");
  EXPECT_TRUE(cl.check);
  EXPECT_FALSE(cl.help);
  EXPECT_FALSE(cl.version);
  EXPECT_EQ(cl.overrides,
            (std::vector<std::string>{"--daemon.queue=2", "--service.web.vip", "10.0.0.1:80"}));
}

TEST(ConfigTest, EmptyValueOnTheCommandLine) {
  // What a shell passes for --daemon.metrics="".
  const char* argv[] = {"tandemd", "--daemon.metrics=", "--service.web.vip=10.0.0.1:80",
                        "--service.web.backends=10.0.0.2:80"};
  CommandLine cl = parseCommandLine(4, argv);
  std::istringstream empty;
  EXPECT_FALSE(parseConfig(empty, cl.overrides).metrics.has_value());
}

TEST(ConfigTest, LoadMissingFileNamesIt) {
  try {
    loadConfig("/nonexistent/tandemd.conf", {});
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "/nonexistent/tandemd.conf: cannot open: No such file or directory");
  }
}

TEST(ConfigTest, ExampleConfigParses) {
  // The shipped example must stay valid. CMake compiles with absolute paths, so the source tree
  // is found from this file's own path.
  std::string root = __FILE__;
  root.erase(root.rfind("tests/unit/"));
  const DaemonConfig c = loadConfig(root + "conf/tandemd.conf", {});
  EXPECT_FALSE(c.engine.services.empty());
}

}  // namespace
}  // namespace tandem
