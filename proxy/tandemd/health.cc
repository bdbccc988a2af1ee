#include "proxy/tandemd/health.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/io/log.h"
#include "proxy/tandemd/prom_text.h"

namespace tandem {

const char* adminStateName(AdminState a) noexcept {
  switch (a) {
    case AdminState::kNone: return "none";
    case AdminState::kDrain: return "drain";
    case AdminState::kDisable: return "disable";
  }
  return "?";
}

struct HealthChecker::Target {
  HealthChecker* owner = nullptr;
  size_t service = 0;
  size_t backend = 0;
  Endpoint ep;
  const HealthConfig* cfg = nullptr;
  std::string name;  // "service web backend 10.0.0.2:80", for the log
  event_base* base = nullptr;
  const ServiceConfig* svc = nullptr;

  bool healthy = true;  // optimistic until checks say otherwise
  uint32_t ok_streak = 0;
  uint32_t fail_streak = 0;
  AdminState admin = AdminState::kNone;
  BackendState applied = BackendState::kUp;
  uint64_t checks = 0;
  uint64_t failures = 0;
  uint64_t seen_rsts = 0;
  uint64_t seen_timeouts = 0;
  uint64_t seen_stalls = 0;
  std::string last_error;

  event* timer = nullptr;
  event* conn_ev = nullptr;
  int fd = -1;
  evhttp_connection* http = nullptr;
  uint64_t started_ns = 0;
  uint32_t port_cursor = 0;
  uint32_t index = 0;    // among all targets, for its share of check ports
  uint32_t targets = 1;
};

namespace {

using Target = HealthChecker::Target;

timeval toTimeval(uint64_t ns) {
  return timeval{static_cast<time_t>(ns / kNsPerSec),
                 static_cast<suseconds_t>((ns % kNsPerSec) / 1000)};
}

/// SNAT services: a source port outside the SNAT range, so the check's replies (to a local
/// address, maybe the SNAT address) are not queued to the engine. Each target cycles through
/// its own share of the free ports, so a port comes back only long after its TIME_WAIT.
/// 0: any port will do.
uint16_t checkPort(const Target& t, uint32_t& cursor) {
  const ServiceConfig& s = *t.svc;
  if (s.addressing != Addressing::kSnat) return 0;
  uint32_t lo = uint32_t{s.snat_port_max} + 1, hi = 65535;
  if (lo > hi || hi - lo < 64) {
    lo = 1024;
    hi = s.snat_port_min > 1024 ? s.snat_port_min - 1u : 1024u;
  }
  const uint32_t share = std::max<uint32_t>((hi - lo + 1) / std::max<uint32_t>(t.targets, 1), 1);
  return static_cast<uint16_t>(lo + t.index * share + cursor++ % share);
}

void startCheck(Target& t);
void finishCheck(Target& t, bool ok, const std::string& error);

/// A backend changing state: a check failed while it is UP, or passed while it is DOWN. The
/// confirming checks then run every fastinter, each with at most that long to answer (HAProxy's
/// fastinter): a host that died is confirmed dead sooner, a flapping one no more often.
bool changing(const Target& t);

uint64_t checkEvery(const Target& t) {
  const uint64_t fast = t.cfg->fastinter_ns != 0 ? t.cfg->fastinter_ns : t.cfg->interval_ns;
  return changing(t) ? std::min(fast, t.cfg->interval_ns) : t.cfg->interval_ns;
}

uint64_t checkTimeout(const Target& t) { return std::min(t.cfg->timeout_ns, checkEvery(t)); }

void onTimer(evutil_socket_t, short, void* arg) { startCheck(*static_cast<Target*>(arg)); }

/// Passive signals are looked at this often (a few comparisons per backend).
constexpr uint64_t kPassivePollNs = 50'000'000;

void onTcp(evutil_socket_t fd, short what, void* arg) {
  auto& t = *static_cast<Target*>(arg);
  if (what & EV_TIMEOUT) {
    finishCheck(t, false, "connect timed out");
    return;
  }
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  finishCheck(t, err == 0, err == 0 ? "" : std::string("connect: ") + std::strerror(err));
}

void freeConnection(evutil_socket_t, short, void* arg) {
  evhttp_connection_free(static_cast<evhttp_connection*>(arg));
}

void onHttpError(evhttp_request_error e, void* arg) {
  auto& t = *static_cast<Target*>(arg);
  switch (e) {
    case EVREQ_HTTP_TIMEOUT: t.last_error = "http: timed out"; break;
    case EVREQ_HTTP_EOF: t.last_error = "http: connection refused or closed"; break;
    default: t.last_error = "http: request failed"; break;
  }
}

void onHttpDone(evhttp_request* req, void* arg) {
  auto& t = *static_cast<Target*>(arg);
  const int code = req != nullptr ? evhttp_request_get_response_code(req) : 0;
  std::string error;
  if (code == 0) {
    error = t.last_error.empty() ? "http: no reply" : t.last_error;
  } else if (code != t.cfg->http_status) {
    error = "http: status " + std::to_string(code) + ", expected " +
            std::to_string(t.cfg->http_status);
  }
  finishCheck(t, error.empty(), error);
}

void finishCheck(Target& t, bool ok, const std::string& error) {
  if (t.conn_ev != nullptr) {
    event_free(t.conn_ev);
    t.conn_ev = nullptr;
  }
  if (t.fd >= 0) {
    close(t.fd);  // SO_LINGER 0: a RST, no TIME_WAIT left behind per check
    t.fd = -1;
  }
  if (t.http != nullptr) {
    // Not inside its own callback: free it from the loop.
    const timeval now{0, 0};
    event_base_once(t.base, -1, EV_TIMEOUT, freeConnection, t.http, &now);
    t.http = nullptr;
  }
  t.owner->checkDone(t, ok, error);
  // The next check one interval (or fastinter) after this one started (the timeout is at most
  // that).
  const uint64_t elapsed = monotonicNs() - t.started_ns;
  const uint64_t every = checkEvery(t);
  const timeval next = toTimeval(elapsed < every ? every - elapsed : 0);
  event_add(t.timer, &next);
}

void startTcp(Target& t) {
  t.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (t.fd < 0) {
    finishCheck(t, false, std::string("socket: ") + std::strerror(errno));
    return;
  }
  const linger rst{1, 0};
  setsockopt(t.fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
  if (const uint16_t port = checkPort(t, t.port_cursor); port != 0) {
    const int one = 1;
    setsockopt(t.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_port = htons(port);
    if (bind(t.fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) != 0) {
      finishCheck(t, false, std::string("bind: ") + std::strerror(errno));
      return;
    }
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(t.ep.port);
  to.sin_addr.s_addr = htonl(t.ep.addr.v4());
  if (connect(t.fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
    finishCheck(t, true, "");
    return;
  }
  if (errno != EINPROGRESS) {
    finishCheck(t, false, std::string("connect: ") + std::strerror(errno));
    return;
  }
  t.conn_ev = event_new(t.base, t.fd, EV_WRITE, onTcp, &t);
  const timeval timeout = toTimeval(checkTimeout(t));
  if (t.conn_ev == nullptr || event_add(t.conn_ev, &timeout) != 0) {
    finishCheck(t, false, "cannot add the connect event");
  }
}

void startHttp(Target& t) {
  const std::string host = t.ep.addr.toString();
  t.http = evhttp_connection_base_new(t.base, nullptr, host.c_str(), t.ep.port);
  if (t.http == nullptr) {
    finishCheck(t, false, "http: cannot create a connection");
    return;
  }
  const timeval timeout = toTimeval(checkTimeout(t));
  evhttp_connection_set_timeout_tv(t.http, &timeout);
  evhttp_connection_set_retries(t.http, 0);
  if (const uint16_t port = checkPort(t, t.port_cursor); port != 0) {
    evhttp_connection_set_local_port(t.http, port);
  }
  evhttp_request* req = evhttp_request_new(onHttpDone, &t);
  if (req == nullptr) {
    finishCheck(t, false, "http: cannot create a request");
    return;
  }
  evhttp_request_set_error_cb(req, onHttpError);
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Host", host.c_str());
  evhttp_add_header(headers, "Connection", "close");
  evhttp_add_header(headers, "User-Agent", "tandemd-health");
  t.last_error.clear();
  // On failure evhttp_make_request frees the request itself.
  if (evhttp_make_request(t.http, req, EVHTTP_REQ_GET, t.cfg->http_path.c_str()) != 0) {
    finishCheck(t, false, "http: cannot send the request");
  }
}

void startCheck(Target& t) {
  t.started_ns = monotonicNs();
  if (t.cfg->check == HealthCheck::kHttp) {
    startHttp(t);
  } else {
    startTcp(t);
  }
}

bool changing(const Target& t) {
  return t.healthy ? t.fail_streak > 0 : t.ok_streak > 0;
}

void onPoll(evutil_socket_t, short, void* arg) {
  static_cast<HealthChecker*>(arg)->pollPassive();
}

}  // namespace

HealthChecker::HealthChecker(event_base* base, Engine& engine, const DaemonConfig& config,
                             std::function<void()> flush)
    : base_(base), engine_(engine), config_(config), flush_(std::move(flush)) {
  const auto& services = config_.engine.services;
  for (size_t s = 0; s < services.size(); ++s) {
    const HealthConfig* cfg = s < config_.health.size() ? &config_.health[s] : nullptr;
    for (size_t b = 0; b < services[s].backends.size(); ++b) {
      auto t = std::make_unique<Target>();
      t->owner = this;
      t->base = base_;
      t->svc = &services[s];
      t->service = s;
      t->backend = b;
      t->ep = services[s].backends[b];
      t->cfg = cfg;
      t->name = "service " + services[s].name + " backend " + t->ep.toString();
      t->index = static_cast<uint32_t>(targets_.size());
      if (cfg != nullptr && cfg->check != HealthCheck::kNone) {
        t->timer = event_new(base_, -1, 0, onTimer, t.get());
        // Spread the first checks over the first interval.
        const uint64_t n = services[s].backends.size();
        const timeval first = toTimeval(cfg->interval_ns * b / n / 4 + 1'000'000);
        if (t->timer == nullptr || event_add(t->timer, &first) != 0) {
          throw std::runtime_error("health: cannot add a timer");
        }
      }
      targets_.push_back(std::move(t));
    }
  }
  for (auto& t : targets_) t->targets = static_cast<uint32_t>(targets_.size());
  const bool any = std::any_of(targets_.begin(), targets_.end(),
                               [](const auto& t) { return t->timer != nullptr; });
  if (any) {
    poll_ = event_new(base_, -1, EV_PERSIST, onPoll, this);
    const timeval every = toTimeval(kPassivePollNs);
    if (poll_ == nullptr || event_add(poll_, &every) != 0) {
      throw std::runtime_error("health: cannot add the passive-signal timer");
    }
  }
}

HealthChecker::~HealthChecker() {
  if (poll_ != nullptr) event_free(poll_);
  for (auto& t : targets_) {
    if (t->conn_ev != nullptr) event_free(t->conn_ev);
    if (t->fd >= 0) close(t->fd);
    if (t->http != nullptr) evhttp_connection_free(t->http);
    if (t->timer != nullptr) event_free(t->timer);
  }
}

void HealthChecker::checkDone(Target& t, bool ok, const std::string& error) {
  ++t.checks;
  // Passive signals since the last check count as a failed check: a backend that resets
  // connections or leaves SYNs unanswered is suspect before its next probe fails.
  std::string why = error;
  if (std::string passive; takePassive(t, passive)) {
    if (ok) why = passive;
    ok = false;
  }
  countResult(t, ok, why);
}

bool HealthChecker::takePassive(Target& t, std::string& why) {
  const BackendStats st = engine_.backendStats(t.service, t.backend);
  if (st.rsts == t.seen_rsts && st.connect_timeouts == t.seen_timeouts &&
      st.stalls == t.seen_stalls)
    return false;
  why = "passive: " + std::to_string(st.rsts - t.seen_rsts) + " RSTs, " +
        std::to_string(st.connect_timeouts - t.seen_timeouts) + " unanswered SYNs, " +
        std::to_string(st.stalls - t.seen_stalls) + " stalled requests";
  t.seen_rsts = st.rsts;
  t.seen_timeouts = st.connect_timeouts;
  t.seen_stalls = st.stalls;
  return true;
}

void HealthChecker::pollPassive() {
  for (auto& tp : targets_) {
    Target& t = *tp;
    if (t.timer == nullptr || !t.healthy) continue;
    std::string why;
    if (!takePassive(t, why)) continue;
    // Counted at once, as a failed check; a confirming check starts now unless one is running
    // (then its own result counts next).
    countResult(t, false, why);
    if (t.fd < 0 && t.http == nullptr) {
      event_del(t.timer);
      event_active(t.timer, EV_TIMEOUT, 0);
    }
  }
}

void HealthChecker::countResult(Target& t, bool ok, const std::string& why) {
  if (ok) {
    engine_.noteBackendAlive(t.service, t.backend, monotonicNs());
    t.fail_streak = 0;
    ++t.ok_streak;
    if (!t.healthy && t.ok_streak >= t.cfg->rise) {
      t.healthy = true;
      apply(t, std::to_string(t.ok_streak) + " checks passed");
    }
    return;
  }
  ++t.failures;
  t.last_error = why;
  t.ok_streak = 0;
  ++t.fail_streak;
  logf(LogLevel::kDebug, "health: %s: check failed: %s", t.name.c_str(), why.c_str());
  if (t.healthy && t.fail_streak >= t.cfg->fall) {
    t.healthy = false;
    apply(t, std::to_string(t.fail_streak) + " checks failed, last: " + why);
  }
}

void HealthChecker::apply(Target& t, const std::string& why) {
  const BackendState want = t.admin == AdminState::kDisable ? BackendState::kDisabled
                            : t.admin == AdminState::kDrain ? BackendState::kDraining
                            : t.healthy                     ? BackendState::kUp
                                                            : BackendState::kDown;
  if (want == t.applied) {
    logf(LogLevel::kInfo, "health: %s stays %s (%s)", t.name.c_str(), backendStateName(want),
         why.c_str());
    return;
  }
  logf(LogLevel::kInfo, "health: %s: %s -> %s (%s)", t.name.c_str(), backendStateName(t.applied),
       backendStateName(want), why.c_str());
  t.applied = want;
  engine_.setBackendState(t.service, t.backend, want, monotonicNs());
  flush_();
}

bool HealthChecker::command(const std::string& service, const std::string& backend,
                            const std::string& action, std::string& error) {
  AdminState admin;
  if (action == "drain") {
    admin = AdminState::kDrain;
  } else if (action == "disable") {
    admin = AdminState::kDisable;
  } else if (action == "enable") {
    admin = AdminState::kNone;
  } else {
    error = "unknown action '" + action + "' (drain | disable | enable)";
    return false;
  }
  bool service_known = false;
  for (auto& t : targets_) {
    if (t->svc->name != service) continue;
    service_known = true;
    if (t->ep.toString() != backend) continue;
    t->admin = admin;
    // Whatever the checks say, the operator vouches for the backend being alive until now: its
    // idle flows can move (drain, disable) without losing a response.
    if (admin != AdminState::kNone) engine_.noteBackendAlive(t->service, t->backend, monotonicNs());
    apply(*t, "command " + action);
    return true;
  }
  error = service_known ? "service " + service + " has no backend " + backend
                        : "no service " + service;
  return false;
}

void HealthChecker::handleRequest(evhttp_request* req) {
  int code = HTTP_OK;
  std::string body;
  if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
    code = 405;
    body = "use POST /backend?service=NAME&backend=ADDR:PORT&action=drain|disable|enable\n";
  } else {
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
    const char* query = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;
    evkeyvalq params{};
    if (query == nullptr || evhttp_parse_query_str(query, &params) != 0) {
      code = HTTP_BADREQUEST;
      body = "missing query: service, backend, action\n";
    } else {
      const char* service = evhttp_find_header(&params, "service");
      const char* backend = evhttp_find_header(&params, "backend");
      const char* action = evhttp_find_header(&params, "action");
      std::string error;
      if (service == nullptr || backend == nullptr || action == nullptr) {
        code = HTTP_BADREQUEST;
        body = "missing parameter: service, backend and action are required\n";
      } else if (!command(service, backend, action, error)) {
        code = HTTP_BADREQUEST;
        body = error + "\n";
      } else {
        body = std::string("ok: service ") + service + " backend " + backend + " " + action + "\n";
      }
      evhttp_clear_headers(&params);
    }
  }
  evbuffer* buf = evbuffer_new();
  if (buf == nullptr || evbuffer_add(buf, body.data(), body.size()) != 0) {
    if (buf != nullptr) evbuffer_free(buf);
    evhttp_send_error(req, HTTP_INTERNAL, nullptr);
    return;
  }
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain; charset=utf-8");
  evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
  evhttp_send_reply(req, code, code == HTTP_OK ? "OK" : "Error", buf);
  evbuffer_free(buf);
}

std::string HealthChecker::metricsText() const {
  PromText m;
  m.family("tandem_backend_state", "gauge", "Backend state: 1 for the current one.");
  for (const auto& t : targets_) {
    const std::string backend = t->ep.toString();
    for (BackendState s : {BackendState::kUp, BackendState::kDown, BackendState::kDraining,
                           BackendState::kDisabled}) {
      m.sample("tandem_backend_state",
               {{"service", t->svc->name}, {"backend", backend}, {"state", backendStateName(s)}},
               t->applied == s ? 1 : 0);
    }
  }
  struct Field {
    const char* name;
    const char* help;
    uint64_t (*get)(const Target&, const BackendStats&);
  };
  const Field fields[] = {
      {"tandem_backend_checks_total", "Active health checks run.",
       [](const Target& t, const BackendStats&) { return t.checks; }},
      {"tandem_backend_check_failures_total", "Failed checks (active or passive).",
       [](const Target& t, const BackendStats&) { return t.failures; }},
      {"tandem_backend_rsts_total", "RSTs from the backend that tore a flow down.",
       [](const Target&, const BackendStats& s) { return s.rsts; }},
      {"tandem_backend_connect_timeouts_total", "Backend SYNs never answered.",
       [](const Target&, const BackendStats& s) { return s.connect_timeouts; }},
      {"tandem_backend_stalls_total", "Client data resent while the backend acknowledged nothing.",
       [](const Target&, const BackendStats& s) { return s.stalls; }},
      {"tandem_backend_flows_moved_total", "Flows re-spliced away from the backend.",
       [](const Target&, const BackendStats& s) { return s.flows_moved; }},
      {"tandem_backend_flows_reset_total", "Flows reset because the backend left.",
       [](const Target&, const BackendStats& s) { return s.flows_reset; }},
  };
  for (const Field& f : fields) {
    m.family(f.name, "counter", f.help);
    for (const auto& t : targets_) {
      const BackendStats st = engine_.backendStats(t->service, t->backend);
      m.sample(f.name, {{"service", t->svc->name}, {"backend", t->ep.toString()}},
               f.get(*t, st));
    }
  }
  return m.take();
}

std::string HealthChecker::statusJson(size_t service) const {
  std::string out = "[";
  bool first = true;
  for (const auto& t : targets_) {
    if (t->service != service) continue;
    if (!first) out += ',';
    first = false;
    const bool checked = t->cfg != nullptr && t->cfg->check != HealthCheck::kNone;
    out += "{\"backend\":\"" + t->ep.toString() + "\",\"state\":\"" +
           backendStateName(t->applied) + "\",\"health\":\"" +
           (checked ? (t->healthy ? "up" : "down") : "unchecked") + "\",\"admin\":\"" +
           adminStateName(t->admin) + "\",\"checks\":" + std::to_string(t->checks) +
           ",\"failures\":" + std::to_string(t->failures) + "}";
  }
  return out + "]";
}

}  // namespace tandem
