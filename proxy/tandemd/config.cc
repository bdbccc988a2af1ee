#include "proxy/tandemd/config.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <map>
#include <sstream>
#include <string_view>

namespace po = boost::program_options;

namespace tandem {
namespace {

struct KeyHelp {
  const char* key;
  const char* help;
};

// Help texts; the defaults are printed from DaemonConfig{} and ServiceConfig{} (keyDefaults()).
constexpr KeyHelp kGlobalKeys[] = {
    {"daemon.queue", "NFQUEUE number, 0-65535"},
    {"daemon.queue_maxlen", "packets the kernel queues for tandemd at most"},
    {"daemon.rcvbuf", "netlink receive buffer in bytes (SO_RCVBUFFORCE)"},
    {"daemon.sndbuf", "netlink send buffer in bytes (SO_SNDBUFFORCE)"},
    {"daemon.batch", "packets read per recvmmsg(), 1-1024"},
    {"daemon.max_flows", "flow table capacity"},
    {"daemon.rules", "iptables: tandemd installs its rules; none: you do"},
    {"daemon.metrics", "ADDRESS:PORT of the status server; \"\" disables"},
    {"daemon.set_sysctls", "true: set the sysctls tandem needs, not refuse"},
    {"daemon.log_level", "debug | info | warn | error"},
    {"daemon.cookie_secret", "splice: SYN-cookie secret, hex, >= 16 bytes; default random"},
    {"daemon.mss", "splice: MSS advertised to clients and the most offered to backends, "
                   "536-65495; lowered to the service interfaces' MTU - 40"},
    {"daemon.cookie_period", "splice: seconds between cookie key rotations, 1-600; a cookie "
                             "lives 1-2 periods; same on both nodes of a pair"},
    {"daemon.realtime_priority", "SCHED_FIFO priority 1-99 for tandemd (fast heartbeats on a "
                                 "loaded host); 0: normal scheduling"},
    {"daemon.fastpath", "on: established flows (splice and passthrough) are translated in the "
                        "kernel (tc ingress eBPF), off NFQUEUE; start-up fails if the kernel "
                        "refuses it"},
    {"daemon.fastpath_interfaces", "interfaces the fast path attaches to, comma list; default: "
                                   "every interface up and not loopback at start-up"},
    {"daemon.fastpath_close", "on: FINs of fast flows (and the ack of each FIN) translated in the "
                              "kernel too and reported to tandemd; off: FINs go through NFQUEUE. "
                              "RSTs always go through NFQUEUE (RFC 5961 check)"},
    {"daemon.fastpath_syn", "on (default with fastpath = on): splice services' SYNs answered "
                            "with the engine's SYN cookie by a tc program in the kernel, off "
                            "NFQUEUE, while this node is active; off: through NFQUEUE"},
    {"daemon.fastpath_splice", "on: a zero-window splice's backend SYN-ACK is answered by the "
                               "fast path in the kernel (both ACKs sent, the flow put on it "
                               "there), off NFQUEUE; off: through NFQUEUE. Measured slower on "
                               "a 2-CPU host shared with its clients (docs/fastpath.md)"},
    {"daemon.fastpath_bind", "on: a splice client's cookie ACK is checked in the kernel and "
                             "turned there into the backend SYN (round-robin over the UP "
                             "backends; transparent, bind = ack, zero-window services), so that "
                             "no packet of a connection crosses NFQUEUE (the backend's SYN-ACK "
                             "answered there too, as with fastpath_splice); needs fastpath_syn; "
                             "in a pair, needs sync.defer = false"},
    {"daemon.fastpath_redirect", "on: a packet the fast path translated leaves at once by the "
                                 "interface the routing table names, its TTL decremented, past "
                                 "the IP stack and netfilter's FORWARD and POSTROUTING hooks "
                                 "(firewall rules there do not see it); off: the kernel "
                                 "forwards it; needs fastpath"},
    {"daemon.fastpath_max_entries", "fast-path map size, flow directions (two per flow), "
                                    "2-16777216; default 2 x max_flows, at most 262144"},
    {"timeouts.syn_sent", "idle timeouts by TCP state, seconds (decimals ok)"},
    {"timeouts.syn_recv", ""},
    {"timeouts.established", ""},
    {"timeouts.fin_wait", ""},
    {"timeouts.close_wait", ""},
    {"timeouts.last_ack", ""},
    {"timeouts.time_wait", ""},
    {"timeouts.close", ""},
    {"sync.node_id", "proxy pair: this node's id, 1-4294967295 (required with [sync])"},
    {"sync.priority", "0-255, higher is preferred as the active"},
    {"sync.preempt", "true: a ready standby with a higher priority takes over"},
    {"sync.bind", "ADDRESS:PORT of this node's sync socket (required)"},
    {"sync.peer", "ADDRESS:PORT of the other node's sync socket (required)"},
    {"sync.key", "HMAC-SHA256 key, hex, 16-64 bytes, same on both nodes (required)"},
    {"sync.key_id", "id of the key, 0-65535, same on both nodes"},
    {"sync.heartbeat_interval", "seconds between heartbeats, 0.001-10 (decimals ok)"},
    {"sync.miss_count", "missed heartbeats that make the peer dead, 2-100"},
    {"sync.addresses", "IFACE=ADDR/PLEN list: the group the active holds (required)"},
    {"sync.garp_count", "gratuitous ARP rounds at takeover, 1-100"},
    {"sync.defer", "true: a new flow's SYN-ACK waits until the standby acknowledged it"},
    {"sync.heartbeat_thread", "on: heartbeats leave from their own thread while the loop turns"},
    {"sync.defer_timeout_ms", "longest such wait, 1-1000 ms; then it goes anyway (counted)"},
    {"sync.front_bind", "ADDRESS:PORT of this node's front-network heartbeat socket"},
    {"sync.front_peer", "ADDRESS:PORT of the peer's front heartbeat socket (with front_bind)"},
    {"sync.garp_refresh_ms", "gratuitous ARP round every N ms while active, 0-3600000; 0 = off"},
    {"sync.takeover", "garp (the addresses move) or vmac (virtual MAC, shadow ring, replay)"},
    {"sync.vmac", "virtual MAC of the group, locally administered unicast (takeover = vmac)"},
    {"sync.shadow_bytes", "shadow ring size in bytes on the standby, 1 MiB - 1 GiB"},
    {"sync.send_window", "sync messages in flight unacknowledged at most, 64-65536"},
};

constexpr KeyHelp kServiceKeys[] = {
    {"vip", "ADDRESS:PORT clients connect to (required)"},
    {"backends", "ADDRESS:PORT list, space or comma separated (required)"},
    {"mode", "passthrough | splice (SYN cookies, backend bound on the client's ACK)"},
    {"addressing", "transparent | snat"},
    {"scheduler", "roundrobin | hash"},
    {"snat_address", "source ADDRESS towards the backends (snat: required)"},
    {"snat_ports", "MIN-MAX source ports for SNAT"},
    {"bind", "splice: ack (open the backend leg on the client's ACK) | data (on its first data, "
             "which may choose the backend by route.N)"},
    {"route.N", "bind = data: sni:NAME -> ADDRESS:PORT | host:NAME -> ADDRESS:PORT; N orders "
                "the rules; NAME may be *.SUFFIX; the backend must be in backends"},
    {"resplice", "splice: move idle flows off a down or draining backend (docs/health.md)"},
    {"handshake_window", "splice: zero (the SYN-ACK offers no window; the proxy opens it once "
                         "the backend answered) | open (data the client sends early waits in "
                         "NFQUEUE; the only choice with bind = data)"},
    {"health_check", "none | tcp | http: active checks of each backend"},
    {"health_interval", "seconds between checks of a backend (decimals ok)"},
    {"health_timeout", "seconds a check may take, at most health_interval"},
    {"health_fastinter", "checks while a backend changes state: interval and timeout"},
    {"health_rise", "consecutive passed checks that bring a backend UP, 1-100"},
    {"health_fall", "consecutive failed checks that take a backend DOWN, 1-100"},
    {"health_http_path", "http: path of the GET request"},
    {"health_http_status", "http: the status code a healthy backend answers, 100-599"},
};

/// `route.N` with N a number of 1 to 4 digits.
bool isRouteKey(const std::string& short_key) {
  if (short_key.rfind("route.", 0) != 0) return false;
  const std::string n = short_key.substr(6);
  return !n.empty() && n.size() <= 4 &&
         std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
}

constexpr struct {
  const char* key;
  uint64_t Timeouts::*field;
} kTimeoutKeys[] = {
    {"timeouts.syn_sent", &Timeouts::syn_sent_ns},
    {"timeouts.syn_recv", &Timeouts::syn_recv_ns},
    {"timeouts.established", &Timeouts::established_ns},
    {"timeouts.fin_wait", &Timeouts::fin_wait_ns},
    {"timeouts.close_wait", &Timeouts::close_wait_ns},
    {"timeouts.last_ack", &Timeouts::last_ack_ns},
    {"timeouts.time_wait", &Timeouts::time_wait_ns},
    {"timeouts.close", &Timeouts::close_ns},
};

/// Longest idle timeout accepted: a year is already far beyond any sane TCP idle time.
constexpr double kMaxTimeoutSeconds = 365.0 * 24 * 3600;

/// A value and where it came from, so messages can point at the command line.
struct Value {
  std::string text;
  bool from_cli = false;
};

/// Key -> value after overrides, in order of first appearance.
class Values {
 public:
  void set(const std::string& key, std::string text, bool from_cli) {
    auto it = values_.find(key);
    if (it == values_.end()) {
      values_.emplace(key, Value{std::move(text), from_cli});
      order_.push_back(key);
    } else if (!from_cli && !it->second.from_cli) {
      throw ConfigError(key + ": given more than once in the configuration file");
    } else {
      it->second = Value{std::move(text), from_cli};
    }
  }
  const Value* find(const std::string& key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  const std::vector<std::string>& keys() const { return order_; }

 private:
  std::map<std::string, Value> values_;
  std::vector<std::string> order_;
};

[[noreturn]] void fail(const std::string& key, const Value& v, const std::string& problem) {
  throw ConfigError(key + ": " + problem + (v.from_cli ? " (command line)" : ""));
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

uint64_t parseUint(const std::string& key, const Value& v, uint64_t min, uint64_t max) {
  uint64_t out = 0;
  const char* end = v.text.data() + v.text.size();
  auto [ptr, ec] = std::from_chars(v.text.data(), end, out);
  if (v.text.empty() || ec != std::errc() || ptr != end || out < min || out > max) {
    fail(key, v,
         "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
             ", got " + quoted(v.text));
  }
  return out;
}

uint64_t parseSeconds(const std::string& key, const Value& v) {
  double seconds = 0;
  const char* end = v.text.data() + v.text.size();
  auto [ptr, ec] = std::from_chars(v.text.data(), end, seconds, std::chars_format::fixed);
  const bool ok = !v.text.empty() && ec == std::errc() && ptr == end && std::isfinite(seconds) &&
                  seconds > 0 && seconds <= kMaxTimeoutSeconds;
  const auto ns = ok ? static_cast<uint64_t>(std::llround(seconds * 1e9)) : 0;
  if (ns == 0) {
    fail(key, v,
         "expected a number of seconds above 0 and at most one year, got " + quoted(v.text));
  }
  return ns;
}

bool parseBool(const std::string& key, const Value& v) {
  if (v.text == "true" || v.text == "yes" || v.text == "on" || v.text == "1") return true;
  if (v.text == "false" || v.text == "no" || v.text == "off" || v.text == "0") return false;
  fail(key, v, "expected true or false, got " + quoted(v.text));
}

IpAddr parseV4(const std::string& key, const Value& v, const std::string& text) {
  auto a = IpAddr::parse(text);
  if (!a) fail(key, v, "expected an IPv4 ADDRESS, got " + quoted(text));
  if (!a->isV4()) fail(key, v, "IPv6 is not supported yet, got " + quoted(text));
  return *a;
}

Endpoint parseEndpoint(const std::string& key, const Value& v, const std::string& text,
                       bool v4_only) {
  auto e = Endpoint::parse(text);
  // Endpoint::parse refuses port 0 too.
  if (!e) fail(key, v, "expected ADDRESS:PORT, got " + quoted(text));
  if (v4_only && !e->addr.isV4()) fail(key, v, "IPv6 is not supported yet, got " + quoted(text));
  return *e;
}

std::vector<std::string> splitList(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  for (char c : text + " ") {
    if (c == ' ' || c == ',' || c == '\t') {
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  return out;
}

template <typename Enum>
Enum parseChoice(const std::string& key, const Value& v,
                 std::initializer_list<std::pair<const char*, Enum>> choices) {
  std::string names;
  for (const auto& [name, value] : choices) {
    if (v.text == name) return value;
    names += names.empty() ? name : std::string(" | ") + name;
  }
  fail(key, v, "expected " + names + ", got " + quoted(v.text));
}

bool validServiceName(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

po::options_description globalOptions() {
  po::options_description desc;
  for (const KeyHelp& k : kGlobalKeys) desc.add_options()(k.key, po::value<std::string>(), k.help);
  return desc;
}

/// Boost refuses `--key=`, which is how a shell passes `--daemon.metrics=""`: spell the empty
/// value as `""`, which collect() strips again.
std::vector<std::string> quoteEmptyValues(std::vector<std::string> args) {
  for (std::string& a : args) {
    if (a.rfind("--", 0) == 0 && a.size() > 3 && a.back() == '=') a += "\"\"";
  }
  return args;
}

/// Boost gives an unregistered `--key value` no value; join such pairs into `--key=value` so
/// service keys accept both spellings, like the registered ones.
std::vector<std::string> joinValues(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) == 0 && a.find('=') == std::string::npos && i + 1 < args.size() &&
        args[i + 1].rfind("--", 0) != 0) {
      out.push_back(a + "=" + args[i + 1]);
      ++i;
    } else {
      out.push_back(a);
    }
  }
  return out;
}

void collect(const po::parsed_options& parsed, bool from_cli, Values& values) {
  for (const po::option& o : parsed.options) {
    if (o.position_key >= 0 || o.string_key.empty()) {
      const std::string token = o.original_tokens.empty() ? "" : o.original_tokens.front();
      throw ConfigError("unexpected argument " + quoted(token));
    }
    const std::string& key = o.string_key;
    if (o.unregistered && key.rfind("service.", 0) != 0) {
      throw ConfigError(key + ": unknown key" + (from_cli ? " (command line)" : ""));
    }
    if (o.value.size() != 1) {
      throw ConfigError(key + ": expected one value" + (from_cli ? " (command line)" : ""));
    }
    // Boost keeps quotes; `metrics = ""` is the documented way to write an empty value.
    std::string text = o.value.front();
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"') {
      text = text.substr(1, text.size() - 2);
    }
    values.set(key, std::move(text), from_cli);
  }
}

struct ServiceValues {
  std::string name;
  std::map<std::string, std::pair<std::string, Value>> keys;  ///< short key -> (full key, value)
};

std::vector<ServiceValues> groupServices(const Values& values) {
  std::vector<ServiceValues> services;
  for (const std::string& key : values.keys()) {
    if (key.rfind("service.", 0) != 0) continue;
    const Value& v = *values.find(key);
    const std::string rest = key.substr(8);
    size_t dot = rest.rfind('.');
    if (const size_t r = rest.find(".route."); r != std::string::npos) dot = r;  // route.N
    if (dot == std::string::npos) fail(key, v, "expected service.NAME.KEY");
    const std::string name = rest.substr(0, dot);
    const std::string short_key = rest.substr(dot + 1);
    if (!validServiceName(name)) {
      fail(key, v, "service name " + quoted(name) + " may hold only letters, digits, _ and -");
    }
    const bool known = std::any_of(std::begin(kServiceKeys), std::end(kServiceKeys),
                                   [&](const KeyHelp& k) { return short_key == k.key; });
    if (!known && !isRouteKey(short_key)) fail(key, v, "unknown key");
    auto it = std::find_if(services.begin(), services.end(),
                           [&](const ServiceValues& s) { return s.name == name; });
    if (it == services.end()) {
      services.push_back({name, {}});
      it = services.end() - 1;
    }
    it->keys[short_key] = {key, v};
  }
  return services;
}

ServiceConfig parseService(const ServiceValues& sv) {
  ServiceConfig s;
  s.name = sv.name;
  const std::string prefix = "service." + sv.name + ".";
  auto get = [&](const char* k) -> const std::pair<std::string, Value>* {
    auto it = sv.keys.find(k);
    return it == sv.keys.end() ? nullptr : &it->second;
  };
  auto require = [&](const char* k) -> const std::pair<std::string, Value>& {
    const auto* p = get(k);
    if (p == nullptr) throw ConfigError(prefix + k + ": missing (required for every service)");
    return *p;
  };

  const auto& [vip_key, vip] = require("vip");
  s.vip = parseEndpoint(vip_key, vip, vip.text, true);

  const auto& [backends_key, backends] = require("backends");
  for (const std::string& item : splitList(backends.text)) {
    Endpoint b = parseEndpoint(backends_key, backends, item, true);
    if (std::find(s.backends.begin(), s.backends.end(), b) != s.backends.end()) {
      fail(backends_key, backends, b.toString() + " is listed twice");
    }
    s.backends.push_back(b);
  }
  if (s.backends.empty()) fail(backends_key, backends, "empty backend list");

  if (const auto* p = get("mode")) {
    s.mode = parseChoice<Mode>(p->first, p->second,
                               {{"passthrough", Mode::kPassthrough}, {"splice", Mode::kSplice}});
  }
  if (const auto* p = get("addressing")) {
    s.addressing = parseChoice<Addressing>(
        p->first, p->second,
        {{"transparent", Addressing::kTransparent}, {"snat", Addressing::kSnat}});
  }
  if (const auto* p = get("scheduler")) {
    s.scheduler = parseChoice<Scheduler>(
        p->first, p->second, {{"roundrobin", Scheduler::kRoundRobin}, {"hash", Scheduler::kHash}});
  }

  if (const auto* p = get("bind")) {
    if (s.mode != Mode::kSplice) fail(p->first, p->second, "only used with mode = splice");
    s.bind = parseChoice<BindOn>(p->first, p->second,
                                 {{"ack", BindOn::kAck}, {"data", BindOn::kData}});
  }
  // Splice: the client sends nothing before the backend leg is up (docs/splice.md,
  // "handshake_window"), unless its first data must choose the backend.
  s.zero_window_handshake = s.mode == Mode::kSplice && s.bind == BindOn::kAck;
  if (const auto* p = get("handshake_window")) {
    if (s.mode != Mode::kSplice) fail(p->first, p->second, "only used with mode = splice");
    s.zero_window_handshake =
        parseChoice<bool>(p->first, p->second, {{"zero", true}, {"open", false}});
    if (s.zero_window_handshake && s.bind == BindOn::kData) {
      fail(p->first, p->second,
           "zero needs bind = ack: with bind = data the backend is chosen from the client's "
           "first data, which a zero window never lets it send");
    }
  }
  // route.N in the order of N.
  std::vector<std::pair<unsigned, const std::pair<std::string, Value>*>> routes;
  for (const auto& [short_key, kv] : sv.keys) {
    if (isRouteKey(short_key)) routes.emplace_back(std::stoul(short_key.substr(6)), &kv);
  }
  std::sort(routes.begin(), routes.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [n, kv] : routes) {
    const auto& [key, v] = *kv;
    if (s.bind != BindOn::kData) fail(key, v, "only used with bind = data");
    const size_t arrow = v.text.find("->");
    if (arrow == std::string::npos) {
      fail(key, v, "expected sni:NAME -> ADDRESS:PORT or host:NAME -> ADDRESS:PORT, got " +
                       quoted(v.text));
    }
    RouteRule rule;
    try {
      rule = parseRouteMatch(v.text.substr(0, arrow));
    } catch (const std::invalid_argument& e) {
      fail(key, v, e.what());
    }
    std::string target = v.text.substr(arrow + 2);
    target.erase(0, target.find_first_not_of(" \t"));
    target.erase(target.find_last_not_of(" \t") + 1);
    const Endpoint b = parseEndpoint(key, v, target, true);
    const auto it = std::find(s.backends.begin(), s.backends.end(), b);
    if (it == s.backends.end()) fail(key, v, b.toString() + " is not in " + prefix + "backends");
    rule.backend = static_cast<uint16_t>(it - s.backends.begin());
    s.routes.push_back(std::move(rule));
  }

  const auto* snat_address = get("snat_address");
  const auto* snat_ports = get("snat_ports");
  if (s.addressing == Addressing::kSnat) {
    if (snat_address == nullptr) {
      throw ConfigError(prefix + "snat_address: missing (required with addressing = snat)");
    }
    s.snat_addr = parseV4(snat_address->first, snat_address->second, snat_address->second.text);
    if (snat_ports != nullptr) {
      const auto& [key, v] = *snat_ports;
      const size_t dash = v.text.find('-');
      if (dash == std::string::npos) fail(key, v, "expected MIN-MAX, got " + quoted(v.text));
      Value lo{v.text.substr(0, dash), v.from_cli};
      Value hi{v.text.substr(dash + 1), v.from_cli};
      s.snat_port_min = static_cast<uint16_t>(parseUint(key, lo, 1, 65535));
      s.snat_port_max = static_cast<uint16_t>(parseUint(key, hi, 1, 65535));
      if (s.snat_port_min > s.snat_port_max) {
        fail(key, v, "range start " + lo.text + " is above its end " + hi.text);
      }
    }
  } else {
    // Silently ignoring them would hide a forgotten `addressing = snat`.
    for (const auto* p : {snat_address, snat_ports}) {
      if (p != nullptr) fail(p->first, p->second, "only used with addressing = snat");
    }
  }
  return s;
}

/// The health_* keys and resplice of a service (after parseService).
HealthConfig parseHealth(const ServiceValues& sv, ServiceConfig& s) {
  HealthConfig h;
  auto get = [&](const char* k) -> const std::pair<std::string, Value>* {
    auto it = sv.keys.find(k);
    return it == sv.keys.end() ? nullptr : &it->second;
  };
  if (const auto* p = get("resplice")) {
    s.resplice = parseBool(p->first, p->second);
    if (s.resplice && s.mode != Mode::kSplice) {
      fail(p->first, p->second, "only used with mode = splice");
    }
  }
  if (const auto* p = get("health_check")) {
    h.check = parseChoice<HealthCheck>(
        p->first, p->second,
        {{"none", HealthCheck::kNone}, {"tcp", HealthCheck::kTcp}, {"http", HealthCheck::kHttp}});
  }
  const char* const tuning[] = {"health_interval", "health_timeout",   "health_rise",
                                "health_fall",     "health_http_path", "health_http_status",
                                "health_fastinter"};
  for (const char* k : tuning) {
    const auto* p = get(k);
    if (p == nullptr) continue;
    if (h.check == HealthCheck::kNone) fail(p->first, p->second, "needs health_check = tcp | http");
    const bool http_only = std::string_view(k).rfind("health_http", 0) == 0;
    if (http_only && h.check != HealthCheck::kHttp) {
      fail(p->first, p->second, "only used with health_check = http");
    }
  }
  if (const auto* p = get("health_interval")) {
    h.interval_ns = parseSeconds(p->first, p->second);
    if (h.interval_ns < 10'000'000) fail(p->first, p->second, "expected at least 0.01 seconds");
  }
  if (const auto* p = get("health_timeout")) {
    h.timeout_ns = parseSeconds(p->first, p->second);
    if (h.timeout_ns > h.interval_ns) fail(p->first, p->second, "above health_interval");
  } else {
    h.timeout_ns = std::min(h.timeout_ns, h.interval_ns);
  }
  h.fastinter_ns = h.interval_ns;
  if (const auto* p = get("health_fastinter")) {
    h.fastinter_ns = parseSeconds(p->first, p->second);
    if (h.fastinter_ns < 10'000'000) fail(p->first, p->second, "expected at least 0.01 seconds");
    if (h.fastinter_ns > h.interval_ns) fail(p->first, p->second, "above health_interval");
  }
  if (const auto* p = get("health_rise")) {
    h.rise = static_cast<uint32_t>(parseUint(p->first, p->second, 1, 100));
  }
  if (const auto* p = get("health_fall")) {
    h.fall = static_cast<uint32_t>(parseUint(p->first, p->second, 1, 100));
  }
  if (const auto* p = get("health_http_path")) {
    if (p->second.text.empty() || p->second.text.front() != '/' ||
        p->second.text.find_first_of(" \r\n") != std::string::npos) {
      fail(p->first, p->second, "expected a path starting with /, got " + quoted(p->second.text));
    }
    h.http_path = p->second.text;
  }
  if (const auto* p = get("health_http_status")) {
    h.http_status = static_cast<int>(parseUint(p->first, p->second, 100, 599));
  }
  return h;
}

/// Rules that span services: every VIP unique, no backend or SNAT range on a VIP.
void crossCheck(const std::vector<ServiceConfig>& services) {
  for (size_t i = 0; i < services.size(); ++i) {
    const ServiceConfig& s = services[i];
    const std::string prefix = "service." + s.name + ".";
    for (size_t j = 0; j < services.size(); ++j) {
      const ServiceConfig& o = services[j];
      if (j < i && o.vip == s.vip) {
        throw ConfigError(prefix + "vip: " + s.vip.toString() + " is already the VIP of service." +
                          o.name);
      }
      for (const Endpoint& b : s.backends) {
        if (b == o.vip) {
          throw ConfigError(prefix + "backends: " + b.toString() + " is the VIP of service." +
                            o.name);
        }
      }
      if (s.addressing == Addressing::kSnat && s.snat_addr == o.vip.addr &&
          o.vip.port >= s.snat_port_min && o.vip.port <= s.snat_port_max) {
        throw ConfigError(prefix + "snat_ports: the range holds the VIP " + o.vip.toString() +
                          " of service." + o.name);
      }
    }
  }
}

/// The [sync] keys of deferral, front-path heartbeats and the GARP refresh.
void parseSyncPairExtras(const Values& values, SyncConfig& s) {
  if (const Value* v = values.find("sync.defer")) s.defer = parseBool("sync.defer", *v);
  if (const Value* v = values.find("sync.heartbeat_thread")) {
    s.heartbeat_thread = parseBool("sync.heartbeat_thread", *v);
  }
  if (const Value* v = values.find("sync.defer_timeout_ms")) {
    // Below the NFQUEUE hold store's own limit (NfQueue::kHoldTimeoutNs), which drops a packet
    // held longer.
    s.defer_timeout_ns = parseUint("sync.defer_timeout_ms", *v, 1, 1'000) * 1'000'000;
  }
  if (const Value* v = values.find("sync.send_window")) {
    // Up to the standby's reorder window (sync::kMaxSendWindow): past it, it drops what arrives.
    s.send_window = static_cast<uint32_t>(parseUint("sync.send_window", *v, 64, 65'536));
  }
  const Value* fb = values.find("sync.front_bind");
  const Value* fp = values.find("sync.front_peer");
  if ((fb == nullptr) != (fp == nullptr)) {
    const char* missing = fb == nullptr ? "sync.front_bind" : "sync.front_peer";
    throw ConfigError(std::string(missing) + ": missing (sync.front_bind and sync.front_peer " +
                      "go together)");
  }
  if (fb != nullptr) {
    s.front_bind = parseEndpoint("sync.front_bind", *fb, fb->text, true);
    s.front_peer = parseEndpoint("sync.front_peer", *fp, fp->text, true);
    if (*s.front_bind == *s.front_peer) fail("sync.front_peer", *fp, "is the same as front_bind");
    if (*s.front_bind == s.bind) fail("sync.front_bind", *fb, "is the same as sync.bind");
  }
  if (const Value* v = values.find("sync.garp_refresh_ms")) {
    s.garp_refresh_ns = parseUint("sync.garp_refresh_ms", *v, 0, 3'600'000) * 1'000'000;
  }
}

/// sync.takeover, sync.vmac, sync.shadow_bytes (zero-loss takeover, proxy/tandemd/vmac_takeover.h).
void parseTakeover(const Values& values, SyncConfig& s) {
  const Value* mode = values.find("sync.takeover");
  if (mode != nullptr && mode->text == "vmac") {
    s.takeover = TakeoverMode::kVmac;
  } else if (mode != nullptr && mode->text != "garp") {
    fail("sync.takeover", *mode, "expected garp or vmac, got " + quoted(mode->text));
  }
  const Value* vmac = values.find("sync.vmac");
  if (s.takeover == TakeoverMode::kVmac && vmac == nullptr) {
    fail("sync.vmac", *mode, "is required with takeover = vmac");
  }
  if (vmac != nullptr) {
    const auto mac = parseMac(vmac->text);
    if (!mac || !isLocalUnicastMac(*mac)) {
      fail("sync.vmac", *vmac,
           "expected a locally administered unicast MAC (02:xx:xx:xx:xx:xx), got " +
               quoted(vmac->text));
    }
    s.vmac = *mac;
  }
  if (const Value* v = values.find("sync.shadow_bytes")) {
    s.shadow_bytes = parseUint("sync.shadow_bytes", *v, 1u << 20, 1u << 30);
  }
}

/// daemon.fastpath* (docs/fastpath.md), after daemon.max_flows.
void parseFastPath(const Values& values, DaemonConfig& c) {
  FastPathConfig& f = c.fastpath;
  if (const Value* v = values.find("daemon.fastpath")) f.enabled = parseBool("daemon.fastpath", *v);
  if (const Value* v = values.find("daemon.fastpath_close")) {
    f.close_fast = parseBool("daemon.fastpath_close", *v);
  }
  if (const Value* v = values.find("daemon.fastpath_syn")) {
    f.syn = parseBool("daemon.fastpath_syn", *v);
  }
  if (const Value* v = values.find("daemon.fastpath_splice")) {
    f.splice = parseBool("daemon.fastpath_splice", *v);
  }
  if (const Value* v = values.find("daemon.fastpath_bind")) {
    f.bind = parseBool("daemon.fastpath_bind", *v);
    if (f.bind && !(f.enabled && f.syn))
      fail("daemon.fastpath_bind", *v, "needs fastpath and fastpath_syn on");

  }
  if (const Value* v = values.find("daemon.fastpath_redirect")) {
    f.redirect = parseBool("daemon.fastpath_redirect", *v);
    if (f.redirect && !f.enabled) fail("daemon.fastpath_redirect", *v, "needs fastpath on");
  }
  if (const Value* v = values.find("daemon.fastpath_interfaces")) {
    for (const std::string& name : splitList(v->text)) {
      // IFNAMSIZ - 1 characters, none of which `ip link` refuses.
      if (name.size() > 15 || name == "." || name == ".." ||
          name.find_first_of("/: \t") != std::string::npos) {
        fail("daemon.fastpath_interfaces", *v, "not an interface name: " + quoted(name));
      }
      if (std::find(f.interfaces.begin(), f.interfaces.end(), name) != f.interfaces.end()) {
        fail("daemon.fastpath_interfaces", *v, quoted(name) + " is listed twice");
      }
      f.interfaces.push_back(name);
    }
    if (f.interfaces.empty()) fail("daemon.fastpath_interfaces", *v, "empty interface list");
  }
  if (const Value* v = values.find("daemon.fastpath_max_entries")) {
    f.max_entries = static_cast<uint32_t>(
        parseUint("daemon.fastpath_max_entries", *v, 2, FastPathConfig::kMaxEntries));
  } else {
    f.max_entries = static_cast<uint32_t>(std::min<uint64_t>(
        2 * static_cast<uint64_t>(c.engine.max_flows), FastPathConfig::kDefaultMaxEntries));
  }
}

/// The [sync] section: present if any sync.* key is.
std::optional<SyncConfig> parseSync(const Values& values) {
  bool any = false;
  for (const std::string& key : values.keys()) any = any || key.rfind("sync.", 0) == 0;
  if (!any) return std::nullopt;
  SyncConfig s;
  auto require = [&](const char* key) -> const Value& {
    const Value* v = values.find(key);
    if (v == nullptr) throw ConfigError(std::string(key) + ": missing (required with [sync])");
    return *v;
  };
  s.node_id = static_cast<uint32_t>(parseUint("sync.node_id", require("sync.node_id"), 1,
                                              UINT32_MAX));
  if (const Value* v = values.find("sync.priority")) {
    s.priority = static_cast<uint8_t>(parseUint("sync.priority", *v, 0, 255));
  }
  if (const Value* v = values.find("sync.preempt")) s.preempt = parseBool("sync.preempt", *v);
  const Value& bind = require("sync.bind");
  s.bind = parseEndpoint("sync.bind", bind, bind.text, true);
  const Value& peer = require("sync.peer");
  s.peer = parseEndpoint("sync.peer", peer, peer.text, true);
  if (s.peer == s.bind) fail("sync.peer", peer, "is the same as sync.bind");
  const Value& key = require("sync.key");
  const std::string& hex = key.text;
  if (hex.size() < 32 || hex.size() > 128 || hex.size() % 2 != 0 ||
      hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    fail("sync.key", key, "expected an even number (32 to 128) of hex digits");
  }
  for (size_t i = 0; i < hex.size(); i += 2) {
    s.key.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  if (const Value* v = values.find("sync.key_id")) {
    s.key_id = static_cast<uint16_t>(parseUint("sync.key_id", *v, 0, 65535));
  }
  if (const Value* v = values.find("sync.heartbeat_interval")) {
    s.heartbeat_interval_ns = parseSeconds("sync.heartbeat_interval", *v);
    // Below 10 ms only on a quiet or realtime host (docs/pair_sync.md, "Faster heartbeats").
    if (s.heartbeat_interval_ns < 1'000'000 || s.heartbeat_interval_ns > 10'000'000'000) {
      fail("sync.heartbeat_interval", *v, "expected 0.001 to 10 seconds, got " + quoted(v->text));
    }
  }
  if (const Value* v = values.find("sync.miss_count")) {
    s.miss_count = static_cast<uint32_t>(parseUint("sync.miss_count", *v, 2, 100));
  }
  if (const Value* v = values.find("sync.garp_count")) {
    s.garp_count = static_cast<uint32_t>(parseUint("sync.garp_count", *v, 1, 100));
  }
  const Value& addrs = require("sync.addresses");
  for (const std::string& item : splitList(addrs.text)) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq > 15) {
      fail("sync.addresses", addrs, "expected IFACE=ADDR/PLEN, got " + quoted(item));
    }
    auto prefix = Ipv4Prefix::parse(item.substr(eq + 1));
    if (!prefix) fail("sync.addresses", addrs, "expected IFACE=ADDR/PLEN, got " + quoted(item));
    for (const GroupMember& m : s.addresses.members) {
      if (m.interface == item.substr(0, eq) && m.address == *prefix) {
        fail("sync.addresses", addrs, quoted(item) + " is listed twice");
      }
    }
    s.addresses.members.push_back(GroupMember{item.substr(0, eq), *prefix});
  }
  if (s.addresses.members.empty()) fail("sync.addresses", addrs, "empty address list");
  parseSyncPairExtras(values, s);
  parseTakeover(values, s);
  return s;
}

}  // namespace

DaemonConfig parseConfig(std::istream& file, const std::vector<std::string>& overrides) {
  const po::options_description desc = globalOptions();
  Values values;
  try {
    collect(po::parse_config_file(file, desc, /*allow_unregistered=*/true), false, values);
    const auto style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    collect(po::command_line_parser(joinValues(quoteEmptyValues(overrides)))
                .options(desc)
                .style(style)
                .allow_unregistered()
                .run(),
            true, values);
  } catch (const po::error& e) {
    throw ConfigError(e.what());
  }

  DaemonConfig c;
  auto get = [&](const char* key) { return values.find(key); };
  if (const Value* v = get("daemon.queue")) {
    c.queue.queue = static_cast<uint16_t>(parseUint("daemon.queue", *v, 0, 65535));
  }
  if (const Value* v = get("daemon.queue_maxlen")) {
    c.queue.maxlen = static_cast<uint32_t>(parseUint("daemon.queue_maxlen", *v, 1, 1u << 22));
  }
  // Both buffers at least 1 MiB: a verdict datagram may carry NfQueue::kMaxSendBytes.
  if (const Value* v = get("daemon.rcvbuf")) {
    c.queue.rcvbuf = static_cast<uint32_t>(parseUint("daemon.rcvbuf", *v, 1u << 20, 1u << 30));
  }
  if (const Value* v = get("daemon.sndbuf")) {
    c.queue.sndbuf = static_cast<uint32_t>(parseUint("daemon.sndbuf", *v, 1u << 20, 1u << 30));
  }
  if (const Value* v = get("daemon.batch")) {
    // recvmmsg() takes at most UIO_MAXIOV messages.
    c.queue.batch = static_cast<uint32_t>(parseUint("daemon.batch", *v, 1, 1024));
  }
  if (const Value* v = get("daemon.max_flows")) {
    c.engine.max_flows = static_cast<size_t>(parseUint("daemon.max_flows", *v, 1, 100'000'000));
  }
  if (const Value* v = get("daemon.rules")) {
    c.rules = parseChoice<RulesMode>(
        "daemon.rules", *v, {{"iptables", RulesMode::kIptables}, {"none", RulesMode::kNone}});
  }
  if (const Value* v = get("daemon.metrics")) {
    c.metrics = v->text.empty()
                    ? std::nullopt
                    : std::optional(parseEndpoint("daemon.metrics", *v, v->text, false));
  }
  if (const Value* v = get("daemon.realtime_priority")) {
    c.realtime_priority = static_cast<uint32_t>(parseUint("daemon.realtime_priority", *v, 0, 99));
  }
  if (const Value* v = get("daemon.set_sysctls")) {
    c.set_sysctls = parseBool("daemon.set_sysctls", *v);
  }
  if (const Value* v = get("daemon.cookie_secret")) {
    const std::string& hex = v->text;
    if (hex.size() < 32 || hex.size() % 2 != 0 ||
        hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
      fail("daemon.cookie_secret", *v, "expected an even number (at least 32) of hex digits");
    }
    for (size_t i = 0; i < hex.size(); i += 2) {
      c.engine.splice.cookie_secret.push_back(
          static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
    }
  }
  if (const Value* v = get("daemon.mss")) {
    c.engine.splice.mss = static_cast<uint16_t>(parseUint("daemon.mss", *v, 536, 65495));
  }
  if (const Value* v = get("daemon.cookie_period")) {
    c.engine.splice.cookie_period_ns = parseSeconds("daemon.cookie_period", *v);
    if (c.engine.splice.cookie_period_ns < kNsPerSec ||
        c.engine.splice.cookie_period_ns > 600 * kNsPerSec) {
      fail("daemon.cookie_period", *v, "expected 1 to 600 seconds, got " + quoted(v->text));
    }
  }
  if (const Value* v = get("daemon.log_level")) {
    auto level = parseLogLevel(v->text);
    if (!level) {
      fail("daemon.log_level", *v, "expected debug | info | warn | error, got " + quoted(v->text));
    }
    c.log_level = *level;
  }
  for (const auto& t : kTimeoutKeys) {
    if (const Value* v = get(t.key)) c.engine.timeouts.*t.field = parseSeconds(t.key, *v);
  }
  parseFastPath(values, c);

  for (const ServiceValues& sv : groupServices(values)) {
    c.engine.services.push_back(parseService(sv));
    c.health.push_back(parseHealth(sv, c.engine.services.back()));
  }
  if (c.engine.services.empty()) {
    throw ConfigError("service: no [service.NAME] section, nothing to proxy");
  }
  crossCheck(c.engine.services);
  c.sync = parseSync(values);
  if (c.fastpath.bind && c.sync && c.sync->defer) {
    // The kernel answers the backend's SYN-ACK, which deferral holds until the standby has the
    // flow.
    fail("daemon.fastpath_bind", *values.find("daemon.fastpath_bind"),
         "cannot be on in a pair with sync.defer = true (the default): set sync.defer = false, "
         "or leave fastpath_bind off");
  }
  return c;
}

DaemonConfig loadConfig(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream file(path);
  if (!file) throw ConfigError(path + ": cannot open: " + std::strerror(errno));
  return parseConfig(file, overrides);
}

CommandLine parseCommandLine(int argc, const char* const argv[]) {
  po::options_description desc;
  desc.add_options()("config", po::value<std::string>())("help", "")("version", "")("check", "");
  CommandLine cl;
  try {
    const auto style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    const std::vector<std::string> args =
        quoteEmptyValues(std::vector<std::string>(argv + 1, argv + argc));
    po::parsed_options parsed =
        po::command_line_parser(args).options(desc).style(style).allow_unregistered().run();
    po::variables_map vm;
    po::store(parsed, vm);
    if (vm.count("config")) cl.config_path = vm["config"].as<std::string>();
    cl.help = vm.count("help") > 0;
    cl.version = vm.count("version") > 0;
    cl.check = vm.count("check") > 0;
    cl.overrides = po::collect_unrecognized(parsed.options, po::include_positional);
  } catch (const po::error& e) {
    throw ConfigError(e.what());
  }
  return cl;
}

std::string configKeysHelp() {
  const DaemonConfig d;
  const ServiceConfig svc;
  std::map<std::string, std::string> defaults = {
      {"daemon.queue", std::to_string(d.queue.queue)},
      {"daemon.queue_maxlen", std::to_string(d.queue.maxlen)},
      {"daemon.rcvbuf", std::to_string(d.queue.rcvbuf)},
      {"daemon.sndbuf", std::to_string(d.queue.sndbuf)},
      {"daemon.batch", std::to_string(d.queue.batch)},
      {"daemon.max_flows", std::to_string(d.engine.max_flows)},
      {"daemon.rules", rulesModeName(d.rules)},
      {"daemon.metrics", d.metrics ? d.metrics->toString() : "\"\""},
      {"daemon.set_sysctls", d.set_sysctls ? "true" : "false"},
      {"daemon.realtime_priority", std::to_string(d.realtime_priority)},
      {"daemon.log_level", logLevelName(d.log_level)},
      {"daemon.mss", std::to_string(d.engine.splice.mss)},
      {"daemon.cookie_period", std::to_string(d.engine.splice.cookie_period_ns / kNsPerSec)},
      {"daemon.fastpath", d.fastpath.enabled ? "on" : "off"},
      {"daemon.fastpath_close", d.fastpath.close_fast ? "on" : "off"},
      {"daemon.fastpath_syn", d.fastpath.syn ? "on" : "off"},
      {"daemon.fastpath_splice", d.fastpath.splice ? "on" : "off"},
      {"daemon.fastpath_bind", d.fastpath.bind ? "on" : "off"},
      {"daemon.fastpath_redirect", d.fastpath.redirect ? "on" : "off"},
      {"sync.priority", std::to_string(SyncConfig{}.priority)},
      {"sync.preempt", SyncConfig{}.preempt ? "true" : "false"},
      {"sync.key_id", std::to_string(SyncConfig{}.key_id)},
      {"sync.heartbeat_interval", "0.05"},
      {"sync.miss_count", std::to_string(SyncConfig{}.miss_count)},
      {"sync.garp_count", std::to_string(SyncConfig{}.garp_count)},
      {"sync.defer", SyncConfig{}.defer ? "true" : "false"},
      {"sync.heartbeat_thread", SyncConfig{}.heartbeat_thread ? "on" : "off"},
      {"sync.defer_timeout_ms", std::to_string(SyncConfig{}.defer_timeout_ns / 1'000'000)},
      {"sync.garp_refresh_ms", std::to_string(SyncConfig{}.garp_refresh_ns / 1'000'000)},
      {"sync.takeover", "garp"},
      {"sync.shadow_bytes", std::to_string(SyncConfig{}.shadow_bytes)},
      {"sync.send_window", std::to_string(SyncConfig{}.send_window)},
      {"service.NAME.mode", modeName(svc.mode)},
      {"service.NAME.addressing", addressingName(svc.addressing)},
      {"service.NAME.scheduler", schedulerName(svc.scheduler)},
      {"service.NAME.bind", bindOnName(svc.bind)},
      {"service.NAME.resplice", svc.resplice ? "true" : "false"},
      {"service.NAME.handshake_window", "zero with mode = splice and bind = ack, else open"},
      {"service.NAME.health_check", "none"},
      {"service.NAME.health_interval", "2"},
      {"service.NAME.health_timeout", "1"},
      {"service.NAME.health_fastinter", "health_interval"},
      {"service.NAME.health_rise", std::to_string(HealthConfig{}.rise)},
      {"service.NAME.health_fall", std::to_string(HealthConfig{}.fall)},
      {"service.NAME.health_http_path", HealthConfig{}.http_path},
      {"service.NAME.health_http_status", std::to_string(HealthConfig{}.http_status)},
      {"service.NAME.snat_ports",
       std::to_string(svc.snat_port_min) + "-" + std::to_string(svc.snat_port_max)},
  };
  for (const auto& t : kTimeoutKeys) {
    std::ostringstream seconds;
    seconds << static_cast<double>(d.engine.timeouts.*t.field) / 1e9;
    defaults[t.key] = seconds.str();
  }

  std::ostringstream out;
  auto line = [&](const std::string& key, const char* help) {
    out << "  " << std::left << std::setw(27) << key << (key.size() >= 27 ? " " : "") << help;
    if (auto it = defaults.find(key); it != defaults.end()) {
      out << (*help != '\0' ? " " : "") << "(default " << it->second << ")";
    }
    out << "\n";
  };
  for (const KeyHelp& k : kGlobalKeys) line(k.key, k.help);
  for (const KeyHelp& k : kServiceKeys) line(std::string("service.NAME.") + k.key, k.help);
  return out.str();
}

}  // namespace tandem
