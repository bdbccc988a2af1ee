/// tandemctl: asks a running tandemd over its HTTP status server (daemon.metrics).
///   tandemctl [--metrics ADDR:PORT] status|role|peer|pair|flows|counters|metrics|switchover
/// Exit codes: 0 ok, 1 daemon unreachable, error reply or refused request, 2 usage error.

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/ip_addr.h"
#include "common/version.h"
#include "proxy/tandemd/tandemctl_backend.h"

namespace {

constexpr const char* kDefaultMetrics = "127.0.0.1:9100";
constexpr int kTimeoutSeconds = 5;

/// One subcommand: what it asks the daemon, and the help a newcomer reads.
struct Command {
  const char* name;
  const char* path;  ///< HTTP path on tandemd
  bool post;
  const char* summary;
  const char* details;
};

constexpr Command kCommands[] = {
    {"status", "/status", false, "version, uptime, flows, services and pair role (JSON)",
     "Prints tandemd's /status as JSON: version, uptime, flow count and capacity, queue,\n"
     "services with their backends, and (in a proxy pair) the pair's role and readiness:\n"
     "  \"pair\":{\"role\":\"active\",\"ready\":true,...}\n"},
    {"role", "/pair", false, "this node's role in the pair: active, standby or fault",
     "Prints one word: active (holds the VIP and forwards), standby (mirrors the active's\n"
     "flows, ready to take over) or fault. Fails if tandemd runs without a [sync] section.\n"
     "  Example: [ \"$(tandemctl role)\" = active ] && echo this node serves the VIP\n"},
    {"peer", "/pair", false, "the other node of the pair, as this node last heard it",
     "Prints what this node knows about its peer from the peer's heartbeats: node id, alive\n"
     "(heard on the sync or the front path within the dead interval), role, ready (holds the\n"
     "whole flow table; a restarted standby is not ready until its bulk resync completes),\n"
     "epoch, priority, flow count and heartbeat interval. Exit status 1 if no peer was heard.\n"},
    {"pair", "/pair", false, "everything about this node, its peer and the last switchover",
     "Prints /pair as 'key value' lines: this node's role, readiness, epoch, priority,\n"
     "preempt, whether it holds the address group, its peer (as `peer` shows it) and the\n"
     "switchover counters: completed, refused, failed, last and worst data-path hold (ms).\n"},
    {"flows", "/flows", false, "one line per flow (service client vip backend source state idle)",
     "Prints the flow table, one flow per line: service, client, VIP, backend, the source the\n"
     "backend sees, TCP state and seconds idle. At most 10000 lines.\n"},
    {"counters", "/metrics", false, "every counter as a 'name value' table",
     "Prints every metric as 'name value', labels folded into the name:\n"
     "  drops_total.no_flow  3\n"},
    {"metrics", "/metrics", false, "the raw Prometheus text",
     "Prints /metrics as Prometheus scrapes it.\n"},
    {"switchover", "/switchover", true, "planned switchover: hand the VIP to the standby",
     "Run it on the ACTIVE node. It hands the address group to the standby without losing\n"
     "a packet or resetting a connection: this node holds its data path (packets wait in\n"
     "the kernel queue), sends its last flow changes to the standby and waits until they are\n"
     "acknowledged, announces the handover and withdraws its addresses; the standby brings\n"
     "them up, sends gratuitous ARP and forwards. This node becomes a standby and resyncs.\n"
     "The command returns once the peer is heard active and prints how long the data path\n"
     "was held. Refused (exit status 1, nothing changes) unless this node is active and its\n"
     "peer is alive, standby and ready. Switch back the same way on the other node, once\n"
     "`tandemctl peer` run there says 'ready yes'.\n"},
};

const Command* findCommand(std::string_view name) {
  for (const Command& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

void usage(FILE* out) {
  std::fprintf(out,
               "Usage: tandemctl [--metrics ADDR:PORT] COMMAND\n"
               "       tandemctl help COMMAND    (or COMMAND --help)\n"
               "\n"
               "Asks a running tandemd through its HTTP status server (daemon.metrics in\n"
               "tandemd.conf, default %s). A loopback address is per network namespace:\n"
               "run tandemctl in tandemd's.\n"
               "\n"
               "Commands:\n",
               kDefaultMetrics);
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s  %s\n", c.name, c.summary);
  std::fprintf(out, "%s", tandem::kBackendUsage);
  std::fprintf(out,
               "\n"
               "Examples:\n"
               "  tandemctl role                      # active | standby | fault\n"
               "  tandemctl peer                      # is the standby alive and ready?\n"
               "  tandemctl switchover                # on the active: hand over, no loss\n"
               "  tandemctl backend drain web 10.0.2.2:8080   # take a backend out gently\n"
               "  tandemctl --metrics 127.0.0.1:9101 counters\n"
               "\n"
               "Exit status: 0 ok; 1 tandemd unreachable, an error reply or a refused request;\n"
               "2 usage error.\n");
}

void commandHelp(const Command& c) {
  std::printf("Usage: tandemctl [--metrics ADDR:PORT] %s\n\n%s\n%s", c.name, c.summary,
              c.details);
  std::printf("\nAsks tandemd with: %s %s\n", c.post ? "POST" : "GET", c.path);
}

struct Reply {
  event_base* base = nullptr;  ///< its loop ends as soon as the reply (or an error) is in
  int code = 0;
  std::string body;
  const char* failure = nullptr;  ///< set when no HTTP reply arrived
};

const char* requestErrorName(evhttp_request_error e) {
  switch (e) {
    case EVREQ_HTTP_TIMEOUT: return "timed out";
    case EVREQ_HTTP_EOF: return "connection refused or closed";
    case EVREQ_HTTP_INVALID_HEADER: return "invalid reply";
    case EVREQ_HTTP_BUFFER_ERROR: return "connection error";
    case EVREQ_HTTP_REQUEST_CANCEL: return "cancelled";
    case EVREQ_HTTP_DATA_TOO_LONG: return "reply too long";
  }
  return "failed";
}

void onError(evhttp_request_error e, void* arg) {
  auto* reply = static_cast<Reply*>(arg);
  reply->failure = requestErrorName(e);
  event_base_loopexit(reply->base, nullptr);
}

void onDone(evhttp_request* req, void* arg) {
  auto* reply = static_cast<Reply*>(arg);
  // A keep-alive connection would otherwise hold the loop until its timeout.
  event_base_loopexit(reply->base, nullptr);
  if (req == nullptr || evhttp_request_get_response_code(req) == 0) {
    if (reply->failure == nullptr) reply->failure = "connection failed";
    return;
  }
  reply->code = evhttp_request_get_response_code(req);
  evbuffer* in = evhttp_request_get_input_buffer(req);
  const size_t len = evbuffer_get_length(in);
  reply->body.resize(len);
  if (len > 0 && evbuffer_remove(in, reply->body.data(), len) < 0) reply->failure = "read error";
}

/// Sends `method path` to tandemd. False (after a message) if no HTTP reply arrived; otherwise
/// `code` and `body` hold the reply, whatever its status.
bool request(const tandem::Endpoint& at, evhttp_cmd_type method, const char* path, int& code,
             std::string& body) {
  Reply reply;
  const std::string host = at.addr.toString();
  event_base* base = event_base_new();
  reply.base = base;
  evhttp_connection* conn =
      base != nullptr ? evhttp_connection_base_new(base, nullptr, host.c_str(), at.port) : nullptr;
  evhttp_request* req = conn != nullptr ? evhttp_request_new(onDone, &reply) : nullptr;
  bool sent = false;
  if (req != nullptr) {
    evhttp_connection_set_timeout(conn, kTimeoutSeconds);
    evhttp_request_set_error_cb(req, onError);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host.c_str());
    // On failure evhttp_make_request frees the request itself.
    sent = evhttp_make_request(conn, req, method, path) == 0;
    if (sent) event_base_dispatch(base);
  }
  if (conn != nullptr) evhttp_connection_free(conn);
  if (base != nullptr) event_base_free(base);

  if (!sent) {
    std::fprintf(stderr, "tandemctl: cannot create an HTTP request\n");
    return false;
  }
  if (reply.failure != nullptr || reply.code == 0) {
    std::fprintf(stderr,
                 "tandemctl: cannot reach tandemd at %s: %s\n"
                 "  Is tandemd running, and is its daemon.metrics this address? "
                 "(use --metrics ADDR:PORT)\n",
                 at.toString().c_str(), reply.failure != nullptr ? reply.failure : "no reply");
    return false;
  }
  code = reply.code;
  body = std::move(reply.body);
  return true;
}

/// GETs `path` from tandemd; false (after a message) if there is no 200 reply.
bool get(const tandem::Endpoint& at, const char* path, std::string& body) {
  int code = 0;
  if (!request(at, EVHTTP_REQ_GET, path, code, body)) return false;
  if (code != 200) {
    std::fprintf(stderr, "tandemctl: tandemd at %s answered %s with HTTP %d: %s",
                 at.toString().c_str(), path, code, body.c_str());
    return false;
  }
  return true;
}

/// The `key value` lines of /pair.
std::vector<std::pair<std::string, std::string>> parsePairText(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t space = line.find(' ');
    if (space == std::string::npos) continue;
    out.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return out;
}

std::string pairValue(const std::vector<std::pair<std::string, std::string>>& kv,
                      std::string_view key) {
  for (const auto& [k, v] : kv) {
    if (k == key) return v;
  }
  return "";
}

/// tandemctl peer: the peer_* lines without their prefix.
int printPeer(const std::string& text) {
  const auto kv = parsePairText(text);
  if (pairValue(kv, "peer_seen") != "yes") {
    std::printf(
        "no peer heard yet: is the other tandemd running, and do [sync] bind, peer, key and\n"
        "key_id match on both nodes? (tandemctl counters | grep sync_rejected)\n");
    return 1;
  }
  for (const auto& [k, v] : kv) {
    if (k.rfind("peer_", 0) != 0 || k == "peer_seen") continue;
    std::printf("%-14s %s\n", k.substr(5).c_str(), v.c_str());
  }
  return 0;
}

/// Prometheus samples as a two-column table: `drops_total{reason="no_flow"} 3` becomes
/// `drops_total.no_flow  3`.
void printCounters(const std::string& metrics) {
  std::vector<std::pair<std::string, std::string>> rows;
  std::istringstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string name = line.substr(0, space);
    const std::string value = line.substr(space + 1);
    if (name.rfind("tandem_", 0) == 0) name.erase(0, 7);
    // Keep only label values: name{k="v",k2="w"} -> name.v.w
    if (size_t brace = name.find('{'); brace != std::string::npos) {
      std::string labels = name.substr(brace + 1, name.size() - brace - 2);
      name.erase(brace);
      size_t pos = 0;
      while ((pos = labels.find('"', pos)) != std::string::npos) {
        const size_t end = labels.find('"', pos + 1);
        if (end == std::string::npos) break;
        name += "." + labels.substr(pos + 1, end - pos - 1);
        pos = end + 1;
      }
    }
    rows.emplace_back(name, value);
  }
  size_t width = 0;
  for (const auto& [name, value] : rows) width = std::max(width, name.size());
  for (const auto& [name, value] : rows) {
    std::printf("%-*s  %s\n", static_cast<int>(width), name.c_str(), value.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string metrics = kDefaultMetrics;
  std::string command;
  std::vector<std::string> command_args;  // after the command (backend ...)
  bool help = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
    } else if (arg == "--version") {
      std::printf("tandemctl %s\n", tandem::kVersion);
      return 0;
    } else if (arg == "--metrics" && i + 1 < argc) {
      metrics = argv[++i];
    } else if (arg.rfind("--metrics=", 0) == 0) {
      metrics = std::string(arg.substr(10));
    } else if (command == "help" && arg.rfind("-", 0) != 0) {
      command = std::string(arg);
      help = true;
    } else if (command.empty() && arg.rfind("-", 0) != 0) {
      command = std::string(arg);
    } else if (command == "backend") {
      command_args.emplace_back(arg);
    } else {
      std::fprintf(stderr, "tandemctl: unexpected argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  if (help || command == "help") {
    if (const Command* c = findCommand(command)) {
      commandHelp(*c);
    } else {
      usage(stdout);
    }
    return 0;
  }
  const auto at = tandem::Endpoint::parse(metrics);
  if (!at || at->port == 0) {
    std::fprintf(stderr, "tandemctl: --metrics: expected ADDRESS:PORT, got '%s'\n",
                 metrics.c_str());
    return 2;
  }
  if (command == "backend") return tandem::backendCommand(*at, command_args);
  const Command* c = findCommand(command);
  if (c == nullptr) {
    if (command.empty()) {
      std::fprintf(stderr, "tandemctl: a command is required\n");
    } else {
      std::fprintf(stderr, "tandemctl: unknown command '%s'\n", command.c_str());
    }
    usage(stderr);
    return 2;
  }
  std::string body;
  if (c->post) {
    int code = 0;
    if (!request(*at, EVHTTP_REQ_POST, c->path, code, body)) return 1;
    std::fwrite(body.data(), 1, body.size(), code == 200 ? stdout : stderr);
    return code == 200 ? 0 : 1;
  }
  if (!get(*at, c->path, body)) return 1;
  const std::string_view name = c->name;
  if (name == "counters") {
    printCounters(body);
  } else if (name == "role") {
    const std::string role = pairValue(parsePairText(body), "role");
    if (role.empty()) {
      std::fprintf(stderr, "tandemctl: no role in tandemd's /pair reply\n");
      return 1;
    }
    std::printf("%s\n", role.c_str());
  } else if (name == "peer") {
    return printPeer(body);
  } else {
    std::fwrite(body.data(), 1, body.size(), stdout);
  }
  return 0;
}
