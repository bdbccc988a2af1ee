/// tandemctl: asks a running tandemd over its HTTP status server (daemon.metrics).
///   tandemctl [--metrics ADDR:PORT] status|flows|counters|metrics
/// Exit codes: 0 ok, 1 daemon unreachable or error reply, 2 usage error.

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

void usage(FILE* out) {
  std::fprintf(out,
               "Usage: tandemctl [--metrics ADDR:PORT] COMMAND\n"
               "\n"
               "Asks a running tandemd through its HTTP status server (daemon.metrics in\n"
               "tandemd.conf, default %s). A loopback address is per network namespace:\n"
               "run tandemctl in tandemd's.\n"
               "\n"
               "Commands:\n"
               "  status    version, uptime, flow count and services (JSON)\n"
               "  flows     one line per flow: service client vip backend source state idle\n"
               "  counters  every counter as a 'name value' table\n"
               "  metrics   the raw Prometheus text\n"
               "%s",
               kDefaultMetrics, tandem::kBackendUsage);
}

struct Reply {
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
  static_cast<Reply*>(arg)->failure = requestErrorName(e);
}

void onDone(evhttp_request* req, void* arg) {
  auto* reply = static_cast<Reply*>(arg);
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

/// GETs `path` from tandemd; false (after a message) if there is no 200 reply.
bool get(const tandem::Endpoint& at, const char* path, std::string& body) {
  Reply reply;
  const std::string host = at.addr.toString();
  event_base* base = event_base_new();
  evhttp_connection* conn =
      base != nullptr ? evhttp_connection_base_new(base, nullptr, host.c_str(), at.port) : nullptr;
  evhttp_request* req = conn != nullptr ? evhttp_request_new(onDone, &reply) : nullptr;
  bool sent = false;
  if (req != nullptr) {
    evhttp_connection_set_timeout(conn, kTimeoutSeconds);
    evhttp_request_set_error_cb(req, onError);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host.c_str());
    // On failure evhttp_make_request frees the request itself.
    sent = evhttp_make_request(conn, req, EVHTTP_REQ_GET, path) == 0;
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
  if (reply.code != 200) {
    std::fprintf(stderr, "tandemctl: tandemd at %s answered %s with HTTP %d\n",
                 at.toString().c_str(), path, reply.code);
    return false;
  }
  body = std::move(reply.body);
  return true;
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
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("tandemctl %s\n", tandem::kVersion);
      return 0;
    }
    if (arg == "--metrics" && i + 1 < argc) {
      metrics = argv[++i];
    } else if (arg.rfind("--metrics=", 0) == 0) {
      metrics = std::string(arg.substr(10));
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
  const auto at = tandem::Endpoint::parse(metrics);
  if (!at || at->port == 0) {
    std::fprintf(stderr, "tandemctl: --metrics: expected ADDRESS:PORT, got '%s'\n",
                 metrics.c_str());
    return 2;
  }
  if (command == "backend") return tandem::backendCommand(*at, command_args);
  const char* path = command == "status"     ? "/status"
                     : command == "flows"    ? "/flows"
                     : command == "counters" ? "/metrics"
                     : command == "metrics"  ? "/metrics"
                                             : nullptr;
  if (path == nullptr) {
    if (command.empty()) {
      std::fprintf(stderr, "tandemctl: a command is required\n");
    } else {
      std::fprintf(stderr, "tandemctl: unknown command '%s'\n", command.c_str());
    }
    usage(stderr);
    return 2;
  }
  std::string body;
  if (!get(*at, path, body)) return 1;
  if (command == "counters") {
    printCounters(body);
  } else {
    std::fwrite(body.data(), 1, body.size(), stdout);
  }
  return 0;
}
