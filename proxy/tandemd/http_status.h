#pragma once
/// @file tandemd's HTTP status server (libevent evhttp) and the texts it serves:
///   /metrics  Prometheus text format: every engine counter and the NFQUEUE I/O counters
///   /flows    one line per flow (at most ?limit=N, default kDefaultFlowLimit)
///   /status   JSON: version, uptime, flows, max_flows, services
///   /pair     "key value" lines: this node's role and its peer (proxy pair only)
///   POST /switchover  planned switchover (proxy pair only); answers when it is done
/// Served from the event loop thread, so it reads the counters without locks.

#include <cstdint>
#include <memory>
#include <string>

#include "common/ip_addr.h"
#include "proxy/core/engine.h"
#include "proxy/io/nfqueue.h"
#include "proxy/tandemd/config.h"

struct event_base;
struct evhttp;
struct evhttp_request;

namespace tandem {

class PairController;
class RawSender;
class HealthChecker;
class FastPathAdapter;
class SynAnswerAdapter;

/// Everything the pages show; the daemon owns all of it.
struct StatusSources {
  const Engine* engine = nullptr;
  const NfQueue* queue = nullptr;
  const DaemonConfig* config = nullptr;
  uint64_t start_ns = 0;  ///< monotonic start time, for the uptime
  const PairController* pair = nullptr;  ///< the proxy pair, when [sync] is configured
  const RawSender* raw = nullptr;  ///< splice mode: the engine's outbox sender
  HealthChecker* health = nullptr;  ///< backend states and their commands (POST /backend)
  PairController* control = nullptr;     ///< the same, for POST /switchover
  const FastPathAdapter* fastpath = nullptr;  ///< the kernel fast path, when daemon.fastpath = on
  const SynAnswerAdapter* syn = nullptr;  ///< kernel SYN answers, when daemon.fastpath_syn = on
};

std::string formatMetrics(const StatusSources& s, uint64_t now_ns);
std::string formatFlows(const StatusSources& s, uint64_t now_ns, size_t limit);
std::string formatStatus(const StatusSources& s, uint64_t now_ns);

class StatusServer {
 public:
  /// Formatting every flow blocks the packet loop, so /flows stops here unless asked for more.
  static constexpr size_t kDefaultFlowLimit = 10000;

  StatusServer(event_base* base, StatusSources sources);
  ~StatusServer();
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  /// Listens on `at`; throws std::runtime_error if it cannot (address in use, not local).
  void bind(const Endpoint& at);

 private:
  static void onRequest(evhttp_request* req, void* self) noexcept;
  void handle(evhttp_request* req);
  /// POST /switchover: replies when the pair controller reports the outcome.
  void handleSwitchover(evhttp_request* req);

  StatusSources sources_;
  evhttp* http_ = nullptr;
};

}  // namespace tandem
