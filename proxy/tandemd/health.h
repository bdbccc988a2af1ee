#pragma once
/// @file Backend health for tandemd: active checks (a TCP connect, or an HTTP GET through
/// libevent's evhttp client with an expected status) every interval per backend, rise/fall
/// counting, the engine's passive signals (RSTs, unanswered SYNs) counted as failed checks, and
/// the operator's drain / disable / enable commands. The resulting state of each backend goes to
/// Engine::setBackendState; the packets the engine originates then (re-splice SYNs, RSTs) are
/// sent at once through `flush`.
///
/// Checks come from this host, like any local connection: in transparent addressing the service
/// rules leave packets to local addresses alone; in SNAT addressing a check binds a source port
/// outside the SNAT range, so its replies are not queued to the engine either.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/core/engine.h"
#include "proxy/tandemd/config.h"

struct event;
struct event_base;
struct evhttp_request;

namespace tandem {

/// What the operator asked for a backend; kNone leaves it to the checks.
enum class AdminState : uint8_t { kNone, kDrain, kDisable };

class HealthChecker {
 public:
  /// Starts a timer per checked backend. `flush` sends what the engine originated.
  HealthChecker(event_base* base, Engine& engine, const DaemonConfig& config,
                std::function<void()> flush);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  /// drain | disable | enable backend ADDR:PORT of `service`. False with `error` set if the
  /// service, backend or action is unknown.
  bool command(const std::string& service, const std::string& backend, const std::string& action,
               std::string& error);
  /// POST /backend?service=S&backend=ADDR:PORT&action=A on the status server.
  void handleRequest(evhttp_request* req);

  /// Prometheus families: state, checks and passive signals per backend.
  std::string metricsText() const;
  /// JSON array of one service's backends with state, health and admin state.
  std::string statusJson(size_t service) const;

  struct Target;
  /// A check of `t` ended (called from the libevent callbacks).
  void checkDone(Target& t, bool ok, const std::string& error);
  /// Counts the engine's passive signals (RSTs, unanswered SYNs, stalled requests) as a failed
  /// check as soon as they appear, and starts a confirming check (every 50 ms, timer).
  void pollPassive();

 private:
  void apply(Target& t, const std::string& why);
  void countResult(Target& t, bool ok, const std::string& why);
  /// New passive signals since the last look: true, with `why` describing them.
  bool takePassive(Target& t, std::string& why);

  event_base* base_;
  Engine& engine_;
  const DaemonConfig& config_;
  std::function<void()> flush_;
  std::vector<std::unique_ptr<Target>> targets_;
  event* poll_ = nullptr;
};

const char* adminStateName(AdminState a) noexcept;

}  // namespace tandem
