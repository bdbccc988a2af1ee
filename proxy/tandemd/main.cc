/// tandemd: the tandem proxy daemon. Reads its configuration, checks the kernel settings it
/// depends on, binds the NFQUEUE, installs its rules, and runs one libevent loop: queue fd,
/// a 100 ms expiry timer, SIGTERM/SIGINT, and the HTTP status server. On a signal it removes its
/// rules and exits 0, leaving the host as it found it.
///
/// Exit codes: 0 success, 1 runtime failure (kernel, rules, sockets), 2 configuration error.

#include <event2/event.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <ctime>
#include <memory>
#include <optional>
#include <sstream>
#include <system_error>

#include "common/version.h"
#include "proxy/core/engine.h"
#include "proxy/io/log.h"
#include "proxy/io/nfqueue.h"
#include "proxy/io/raw_sender.h"
#include "proxy/io/rules.h"
#include "proxy/io/sysctl.h"
#include "proxy/tandemd/config.h"
#include "proxy/tandemd/fastpath_adapter.h"
#include "proxy/tandemd/syn_answer_adapter.h"
#include "proxy/tandemd/health.h"
#include "proxy/tandemd/http_status.h"
#include "proxy/tandemd/pair.h"

namespace tandem {
namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;
constexpr timeval kExpireInterval{0, 100'000};
/// Every this many expiry ticks (10 s) the kernel's queue drop counters are compared.
constexpr unsigned kKernelCheckTicks = 100;

void printHelp() {
  std::printf(
      "tandemd %s - transparent TCP proxy working at packet level\n"
      "\n"
      "tandemd forwards TCP connections that clients open to a virtual IP (VIP) to backend\n"
      "servers. It keeps no socket per connection: iptables rules send the packets of each\n"
      "service into an NFQUEUE, tandemd rewrites their addresses and ports (and sequence\n"
      "numbers) in place, and the kernel forwards them.\n"
      "\n"
      "Usage: tandemd --config FILE [--KEY=VALUE ...]\n"
      "       tandemd --config FILE --check     validate the configuration and exit\n"
      "       tandemd --help | --version\n"
      "\n"
      "Example:\n"
      "  tandemd --config /etc/tandem/tandemd.conf --daemon.log_level=debug\n"
      "  tandemctl status            # ask the running daemon (see tandemctl --help)\n"
      "\n"
      "The example configuration, with every key explained, is conf/tandemd.conf in the\n"
      "source tree. Any key can be given on the command line too and wins over the file,\n"
      "e.g. --timeouts.established=600 or --service.web.backends=\"10.0.0.2:80 10.0.0.3:80\".\n"
      "\n"
      "What tandemd needs from the host:\n"
      "  - root or CAP_NET_ADMIN (NFQUEUE, socket buffers, iptables);\n"
      "  - net.ipv4.ip_forward = 1, net.ipv4.conf.all.accept_local = 1 and rp_filter not\n"
      "    strict (0 or 2) on the service interfaces: tandem rewrites packet sources to local\n"
      "    addresses (VIP, SNAT address). It refuses to start otherwise, naming the setting;\n"
      "    daemon.set_sysctls = true makes it set them. See conf/sysctl.d/90-tandem.conf;\n"
      "  - the VIP configured on an interface of this host; with transparent addressing the\n"
      "    backends route their replies through this host;\n"
      "  - iptables (iptables-nft works): with daemon.rules = iptables (default) tandemd\n"
      "    installs chain TANDEM-Q<queue> in table raw at start and removes it at exit. With\n"
      "    daemon.rules = none install them yourself, see conf/rules.iptables.\n"
      "\n"
      "Configuration keys:\n"
      "%s"
      "\n"
      "Exit status: 0 ok, 1 runtime failure, 2 configuration error.\n",
      kVersion, configKeysHelp().c_str());
}

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const noexcept {
    Fn(p);
  }
};
using EventBasePtr = std::unique_ptr<event_base, Deleter<event_base_free>>;
using EventPtr = std::unique_ptr<event, Deleter<event_free>>;

/// State the libevent callbacks reach through their `arg`.
struct Loop {
  event_base* base = nullptr;
  Engine* engine = nullptr;
  NfQueue* queue = nullptr;
  PairController* pair = nullptr;  ///< the proxy pair, when configured
  RawSender* raw = nullptr;  ///< sends what the engine originates (Engine::drainOutbox)
  FastPathAdapter* fastpath = nullptr;  ///< the kernel fast path, with daemon.fastpath = on
  SynAnswerAdapter* syn = nullptr;  ///< kernel SYN answers, with daemon.fastpath_syn = on
  int signal = 0;
  unsigned ticks = 0;
  NfQueueKernelStats kernel_seen;
  RateLimit kernel_warn{60'000'000'000ull, 1};
};

/// Packets the engine originated itself (splice SYNs and timers, re-splice SYNs, resets) go out
/// through the raw socket.
void sendOutbox(Loop& loop) {
  if (loop.raw == nullptr) return;
  loop.engine->drainOutbox([&](const uint8_t* p, size_t n) { loop.raw->send(p, n); });
}

/// Close events the fast path reported go to the engine before the queued packets: they are
/// older than most of them (one read of the ring's positions when there are none).
void drainFastPath(Loop& loop) {
  if (loop.fastpath != nullptr) loop.fastpath->drain(monotonicNs());
}

void onQueueReadable(evutil_socket_t, short, void* arg) {
  auto* loop = static_cast<Loop*>(arg);
  loop->queue->onReadable(*loop->engine);  // drains the fast path before each batch
  if (loop->pair != nullptr) loop->pair->afterPackets();
  sendOutbox(*loop);  // what the packets caused: splice and re-splice SYNs, resets
}

void checkKernelDrops(Loop& loop) {
  auto k = readNfQueueKernelStats(loop.queue->options().queue);
  if (!k) return;
  const uint64_t full = k->queue_dropped - loop.kernel_seen.queue_dropped;
  const uint64_t overrun = k->user_dropped - loop.kernel_seen.user_dropped;
  if ((full > 0 || overrun > 0) && loop.kernel_warn.allow(monotonicNs())) {
    logf(LogLevel::kWarn,
         "kernel dropped queued packets: %llu at queue_maxlen, %llu at a full socket buffer "
         "(raise daemon.queue_maxlen / daemon.rcvbuf if this persists)",
         static_cast<unsigned long long>(full), static_cast<unsigned long long>(overrun));
    loop.kernel_seen = *k;
  } else if (full == 0 && overrun == 0) {
    loop.kernel_seen = *k;
  }
}

/// Splice mode: the MSS the proxy advertises and offers never exceeds what its interfaces
/// carry (MTU - 40: IPv4 and TCP headers without options).
void clampSpliceMss(EngineConfig& engine) {
  if (std::none_of(engine.services.begin(), engine.services.end(),
                   [](const ServiceConfig& s) { return s.mode == Mode::kSplice; }))
    return;
  for (const std::string& iface : serviceInterfaces(engine)) {
    std::ifstream f("/sys/class/net/" + iface + "/mtu");
    unsigned mtu = 0;
    if (!(f >> mtu) || mtu < 576 || mtu - 40 >= engine.splice.mss) continue;
    logf(LogLevel::kInfo, "splice MSS lowered from %u to %u (MTU %u of %s)", engine.splice.mss,
         mtu - 40, mtu, iface.c_str());
    engine.splice.mss = static_cast<uint16_t>(mtu - 40);
  }
}

/// Wall clock minus monotonic clock: SYN cookies follow the wall clock (Engine::
/// setCookieClockOffset), so a standby with the same secret validates them.
int64_t wallClockOffsetNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  const auto wall = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  return wall - static_cast<int64_t>(monotonicNs());
}

void onExpireTimer(evutil_socket_t, short, void* arg) {
  auto* loop = static_cast<Loop*>(arg);
  loop->engine->setCookieClockOffset(wallClockOffsetNs());
  if (loop->syn != nullptr) loop->syn->tick(monotonicNs());  // keys ahead of the rotation
  drainFastPath(*loop);  // a close the ring holds is not an idle flow
  const uint64_t now = monotonicNs();
  loop->engine->expire(now);
  sendOutbox(*loop);
  loop->queue->tick(now);  // held packets whose splice never completed: drop, TCP resends
  if (++loop->ticks % kKernelCheckTicks == 0) checkKernelDrops(*loop);
}

void onSignal(evutil_socket_t sig, short, void* arg) {
  auto* loop = static_cast<Loop*>(arg);
  if (sig == SIGHUP) {
    // Its default action would kill the daemon without removing its rules.
    logf(LogLevel::kWarn, "SIGHUP ignored: no configuration reload yet, restart tandemd instead");
    return;
  }
  loop->signal = sig;
  event_base_loopbreak(loop->base);
}

std::string mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

void logConfig(const DaemonConfig& c) {
  logf(LogLevel::kInfo,
       "tandemd %s starting: queue %u (maxlen %u, rcvbuf %s, batch %u), rules %s, metrics %s, "
       "max_flows %zu, log_level %s",
       kVersion, c.queue.queue, c.queue.maxlen, mib(c.queue.rcvbuf).c_str(), c.queue.batch,
       rulesModeName(c.rules), c.metrics ? c.metrics->toString().c_str() : "off",
       c.engine.max_flows, logLevelName(c.log_level));
  const Timeouts& t = c.engine.timeouts;
  logf(LogLevel::kInfo,
       "timeouts (s): syn_sent %g syn_recv %g established %g fin_wait %g close_wait "
       "%g last_ack %g time_wait %g close %g",
       static_cast<double>(t.syn_sent_ns) / 1e9, static_cast<double>(t.syn_recv_ns) / 1e9,
       static_cast<double>(t.established_ns) / 1e9, static_cast<double>(t.fin_wait_ns) / 1e9,
       static_cast<double>(t.close_wait_ns) / 1e9, static_cast<double>(t.last_ack_ns) / 1e9,
       static_cast<double>(t.time_wait_ns) / 1e9, static_cast<double>(t.close_ns) / 1e9);
  for (const ServiceConfig& s : c.engine.services) {
    std::string backends;
    for (const Endpoint& b : s.backends) backends += (backends.empty() ? "" : " ") + b.toString();
    std::string snat;
    if (s.addressing == Addressing::kSnat) {
      snat = " from " + s.snat_addr.toString() + ":" + std::to_string(s.snat_port_min) + "-" +
             std::to_string(s.snat_port_max);
    }
    logf(LogLevel::kInfo, "service %s: %s -> [%s] %s, %s%s, %s", s.name.c_str(),
         s.vip.toString().c_str(), backends.c_str(), modeName(s.mode), addressingName(s.addressing),
         snat.c_str(), schedulerName(s.scheduler));
  }
}

/// Checks the sysctls, or sets them with daemon.set_sysctls. False: refuse to start.
bool ensureSysctls(const DaemonConfig& config) {
  for (const std::string& w : snatPortWarnings(config.engine, readSysctl)) {
    logf(LogLevel::kWarn, "%s", w.c_str());
  }
  const std::vector<std::string> interfaces = serviceInterfaces(config.engine);
  std::vector<SysctlProblem> problems = checkSysctls(interfaces, readSysctl);
  if (problems.empty()) return true;
  if (!config.set_sysctls) {
    for (const SysctlProblem& p : problems) {
      logf(LogLevel::kError, "sysctl %s is %s, tandem needs %s: %s", p.key.c_str(),
           p.actual.c_str(), p.needed.c_str(), p.why.c_str());
    }
    std::string fix;
    for (const SysctlProblem& p : problems) fix += " " + p.key + "=" + p.fix;
    logf(LogLevel::kError,
         "refusing to start. Fix with: sysctl -w%s (or conf/sysctl.d/90-tandem.conf), or set "
         "daemon.set_sysctls = true",
         fix.c_str());
    return false;
  }
  for (const SysctlProblem& p : problems) {
    writeSysctl(p.key, p.fix);
    logf(LogLevel::kInfo, "set sysctl %s = %s (was %s): %s", p.key.c_str(), p.fix.c_str(),
         p.actual.c_str(), p.why.c_str());
  }
  problems = checkSysctls(interfaces, readSysctl);
  for (const SysctlProblem& p : problems) {
    logf(LogLevel::kError, "sysctl %s is still %s after setting it", p.key.c_str(),
         p.actual.c_str());
  }
  return problems.empty();
}

void logTotals(const Engine& engine, const NfQueue& queue) {
  const Counters& c = engine.counters();
  const NfQueueCounters& q = queue.counters();
  logf(LogLevel::kInfo,
       "totals: %llu packets from clients, %llu from backends, %llu dropped by the engine, "
       "%llu flows created; queue: %llu received, %llu send errors",
       static_cast<unsigned long long>(c.packets[0]), static_cast<unsigned long long>(c.packets[1]),
       static_cast<unsigned long long>(c.totalDrops()),
       static_cast<unsigned long long>(c.flows_created), static_cast<unsigned long long>(q.packets),
       static_cast<unsigned long long>(q.send_errors));
}

int run(const DaemonConfig& config, Engine& engine) {
  // A status client that disconnects early must not kill the daemon.
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    logf(LogLevel::kError, "cannot ignore SIGPIPE");
    return kExitRuntime;
  }
  logConfig(config);
  const uint64_t start_ns = monotonicNs();

  try {
    if (!ensureSysctls(config)) return kExitRuntime;
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "sysctl: %s", e.what());
    return kExitRuntime;
  }

  // The fast path comes up before the queue and the rules: a kernel that refuses it fails the
  // start with the host untouched (the operator asked for it).
  std::optional<FastPathAdapter> fastpath;
  if (config.fastpath.enabled) {
    try {
      fastpath.emplace(config.fastpath);
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "daemon.fastpath = on, but: %s", e.what());
      return kExitRuntime;
    }
    std::string names;
    for (const std::string& n : fastpath->interfaces()) names += (names.empty() ? "" : ", ") + n;
    logf(LogLevel::kInfo,
         "fast path attached at tc ingress of %s (tcx links, unless a warning above names a "
         "tc filter; %u map entries; closes %s; zero-window splices completed %s; translated "
         "packets %s)",
         names.c_str(),
         config.fastpath.max_entries,
         config.fastpath.close_fast ? "in the kernel, reported" : "through NFQUEUE",
         config.fastpath.splice ? "in the kernel" : "through NFQUEUE",
         config.fastpath.redirect ? "sent straight out of the routed interface"
                                  : "forwarded by the IP stack");
    if (std::none_of(config.engine.services.begin(), config.engine.services.end(),
                     [](const ServiceConfig& s) { return s.mode == Mode::kSplice; })) {
      logf(LogLevel::kWarn, "daemon.fastpath = on, but no service is in splice mode: the fast "
                            "path only carries established splice flows");
    }
  }

  NfQueue queue(config.queue);
  try {
    queue.open();
  } catch (const std::system_error& e) {
    logf(LogLevel::kError, "%s", e.what());
    return kExitRuntime;
  }
  logf(LogLevel::kInfo, "bound NFQUEUE %u (socket buffers: rcv %s, snd %s)", config.queue.queue,
       mib(static_cast<uint64_t>(queue.effectiveRcvbuf())).c_str(),
       mib(static_cast<uint64_t>(queue.effectiveSndbuf())).c_str());

  EventBasePtr base(event_base_new());
  if (!base) {
    logf(LogLevel::kError, "event_base_new failed");
    return kExitRuntime;
  }
  // Two priorities: the pair's heartbeats and sync sockets (0) run before the data path's
  // callbacks (1, the default of every other event) when both are ready (pair.cc).
  if (event_base_priority_init(base.get(), 2) != 0) {
    logf(LogLevel::kError, "event_base_priority_init failed");
    return kExitRuntime;
  }
  // Needed by splice services (originated SYNs, timers) and by the health layer (resets, re-splice
  // SYNs), so always open: tandemd runs with CAP_NET_RAW anyway (NFQUEUE needs CAP_NET_ADMIN).
  std::optional<RawSender> raw;
  try {
    raw.emplace();
  } catch (const std::system_error& e) {
    logf(LogLevel::kError, "%s", e.what());
    return kExitRuntime;
  }
  engine.setCookieClockOffset(wallClockOffsetNs());
  Loop loop;
  loop.raw = raw ? &*raw : nullptr;
  loop.base = base.get();
  loop.engine = &engine;
  loop.queue = &queue;
  loop.fastpath = fastpath ? &*fastpath : nullptr;
  queue.setBeforeBatch([&loop] { drainFastPath(loop); });  // loop.fastpath null: nothing
  // A new fast-path entry for the direction of the packet that made its flow qualify goes into
  // the kernel once that packet's verdict is sent (FastPathPort::install).
  queue.setAfterVerdicts([&loop] {
    if (loop.fastpath != nullptr) loop.fastpath->commit();
  });
  // Armed splices' entries (FastPathPort::putPair): in the kernel before the backend SYNs among
  // the verdicts leave.
  queue.setBeforeVerdicts([&loop] {
    if (loop.fastpath != nullptr) loop.fastpath->flushArms();
  });
  if (auto k = readNfQueueKernelStats(config.queue.queue)) loop.kernel_seen = *k;

  // Everything that can fail is set up before the rules go in, so a failed start leaves the host
  // untouched. Signals are registered first: one arriving while the rules are installed is held
  // by libevent and ends the loop at once, with cleanup.
  EventPtr queue_ev(event_new(loop.base, queue.fd(), EV_READ | EV_PERSIST, onQueueReadable, &loop));
  EventPtr timer_ev(event_new(loop.base, -1, EV_PERSIST, onExpireTimer, &loop));
  EventPtr term_ev(evsignal_new(loop.base, SIGTERM, onSignal, &loop));
  EventPtr int_ev(evsignal_new(loop.base, SIGINT, onSignal, &loop));
  EventPtr hup_ev(evsignal_new(loop.base, SIGHUP, onSignal, &loop));
  if (!queue_ev || !timer_ev || !term_ev || !int_ev || !hup_ev ||
      event_add(term_ev.get(), nullptr) != 0 || event_add(int_ev.get(), nullptr) != 0 ||
      event_add(hup_ev.get(), nullptr) != 0) {
    logf(LogLevel::kError, "cannot set up the event loop");
    return kExitRuntime;
  }

  // The pair controller registers its own timer and socket events; it only starts acting (and
  // may take the address group) once the loop runs, after the rules are in.
  std::optional<PairController> pair;
  if (config.sync) {
    try {
      pair.emplace(loop.base, engine, *config.sync);
      pair->setHeldReleaser([&queue, &engine](uint64_t now) { queue.offerHeld(engine, now); });
      loop.pair = &*pair;
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "sync: %s", e.what());
      return kExitRuntime;
    }
  }

  // A planned switchover holds the data path by not reading the queue: packets wait in the
  // kernel (up to daemon.queue_maxlen) instead of being dropped.
  if (pair) {
    try {
      pair->enableControl([&queue, &engine, &loop, ev = queue_ev.get()](bool hold) {
        // Kernel binding (fastpath_bind) stops with the data path, and the flows it bound
        // before are read now, so that the handover carries them.
        if (loop.syn != nullptr) loop.syn->pauseBind(hold);
        if (hold) {
          (void)event_del(ev);
          drainFastPath(loop);
          sendOutbox(loop);
        } else {
          if (event_add(ev, nullptr) != 0) logf(LogLevel::kError, "cannot re-add the queue event");
          queue.onReadable(engine);
          sendOutbox(loop);
        }
      });
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "%s", e.what());
      return kExitRuntime;
    }
  }

  if (fastpath) {
    try {
      fastpath->onSpliced([&queue, &engine](uint64_t now) { queue.offerHeld(engine, now); });
      fastpath->watch(loop.base, engine, [&loop] {
        if (loop.pair != nullptr) loop.pair->afterPackets();
        sendOutbox(loop);
      });
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "%s", e.what());
      return kExitRuntime;
    }
    engine.setFastPath(&*fastpath, config.fastpath.close_fast);
    engine.setFastPathSplice(config.fastpath.splice);
  }

  // Loaded and attached here, not yet answering: Engine::setSynAnswer (after the rules, below)
  // lets it answer while the engine is active (the pair controller starts it as a standby).
  std::optional<SynAnswerAdapter> syn;
  if (fastpath && config.fastpath.syn &&
      std::any_of(config.engine.services.begin(), config.engine.services.end(),
                  [](const ServiceConfig& s) { return s.mode == Mode::kSplice; })) {
    try {
      syn.emplace(engine, fastpath->interfaces(), fastpath->flowsMapFd(), monotonicNs(),
                  fastpath->eventsMapFd(), config.fastpath.bind, config.fastpath.close_fast);
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "daemon.fastpath_syn = on, but: %s", e.what());
      return kExitRuntime;
    }
    loop.syn = &*syn;
  }

  std::optional<HealthChecker> health;
  try {
    health.emplace(loop.base, engine, config, [&loop] { sendOutbox(loop); });
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "%s", e.what());
    return kExitRuntime;
  }

  std::optional<StatusServer> status;
  try {
    if (config.metrics) {
      status.emplace(loop.base,
                     StatusSources{&engine, &queue, &config, start_ns, pair ? &*pair : nullptr,
                                   raw ? &*raw : nullptr, &*health, pair ? &*pair : nullptr,
                                   fastpath ? &*fastpath : nullptr, syn ? &*syn : nullptr});
      status->bind(*config.metrics);
      logf(LogLevel::kInfo, "status server on http://%s (/metrics /flows /status)",
           config.metrics->toString().c_str());
    }
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "%s", e.what());
    return kExitRuntime;
  }

  std::optional<IptablesRules> rules;
  if (config.rules == RulesMode::kIptables) {
    rules.emplace(config.queue.queue);
    try {
      if (rules->remove()) {
        logf(LogLevel::kWarn, "removed chain %s left behind by an earlier run",
             rulesChain(config.queue.queue).c_str());
      }
      rules->install(config.engine, config.fastpath.enabled);
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "rules: %s", e.what());
      return kExitRuntime;
    }
    logf(LogLevel::kInfo, "installed iptables chain %s (table raw, from PREROUTING)",
         rulesChain(config.queue.queue).c_str());
  } else {
    logf(LogLevel::kInfo, "daemon.rules = none: expecting the operator's rules to queue to %u",
         config.queue.queue);
  }

  // The cookie ACKs of the kernel's SYN-ACKs must find the rules in place.
  if (syn) {
    engine.setSynAnswer(&*syn);
    logf(LogLevel::kInfo, "splice SYNs answered in the kernel while active (tc ingress, first)");
  }
  if (event_add(queue_ev.get(), nullptr) != 0 || event_add(timer_ev.get(), &kExpireInterval) != 0) {
    logf(LogLevel::kError, "cannot add events to the loop");
  } else {
    logf(LogLevel::kInfo, "running");
    if (event_base_dispatch(loop.base) < 0) logf(LogLevel::kError, "event loop failed");
  }
  logf(LogLevel::kInfo, "shutting down%s%s", loop.signal != 0 ? " on " : "",
       loop.signal != 0 ? strsignal(loop.signal) : "");

  int rc = loop.signal != 0 ? 0 : kExitRuntime;
  // Off the fast path first: the flows' packets come to the queue again, whose last batch is
  // read below, and nothing is translated any more once the rules are gone.
  if (syn) {  // SYNs to NFQUEUE again, while the engine still reads it
    engine.setSynAnswer(nullptr);
    loop.syn = nullptr;
    syn.reset();
  }
  if (fastpath) {
    drainFastPath(loop);
    engine.setFastPath(nullptr, config.fastpath.close_fast);
    loop.fastpath = nullptr;
    fastpath.reset();
  }
  // A node that stops on purpose gives its addresses up at once; the peer takes over when our
  // heartbeats stop.
  if (pair) pair->shutdown();
  if (rules) {
    try {
      rules->remove();
      logf(LogLevel::kInfo, "removed iptables chain %s", rulesChain(config.queue.queue).c_str());
    } catch (const std::exception& e) {
      logf(LogLevel::kError, "rules: %s; remove chain %s by hand", e.what(),
           rulesChain(config.queue.queue).c_str());
      rc = kExitRuntime;
    }
  }
  // Packets queued before the rules went away still get their verdict instead of being dropped
  // with the queue.
  queue.onReadable(engine);
  logTotals(engine, queue);
  return rc;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  using namespace tandem;
  setLogProgram("tandemd");
  CommandLine cl;
  DaemonConfig config;
  std::unique_ptr<Engine> engine;
  try {
    cl = parseCommandLine(argc, argv);
    if (cl.help) {
      printHelp();
      return 0;
    }
    if (cl.version) {
      std::printf("tandemd %s\n", kVersion);
      return 0;
    }
    if (!cl.config_path && cl.overrides.empty()) {
      throw ConfigError("--config FILE is required (see tandemd --help)");
    }
    if (cl.config_path) {
      config = loadConfig(*cl.config_path, cl.overrides);
    } else {
      std::istringstream empty;
      config = parseConfig(empty, cl.overrides);
    }
    clampSpliceMss(config.engine);
    engine = std::make_unique<Engine>(config.engine);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "tandemd: %s\n", e.what());
    return kExitConfig;
  } catch (const std::invalid_argument& e) {  // the engine refusing the configuration
    std::fprintf(stderr, "tandemd: %s\n", e.what());
    return kExitConfig;
  }
  if (cl.check) {
    std::printf("tandemd: configuration OK (%zu service%s)\n", config.engine.services.size(),
                config.engine.services.size() == 1 ? "" : "s");
    return 0;
  }
  setLogLevel(config.log_level);
  if (config.realtime_priority > 0) {
    sched_param sp{};
    sp.sched_priority = static_cast<int>(config.realtime_priority);
    if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0) {
      const int err = errno;
      logf(LogLevel::kError,
           "daemon.realtime_priority = %u: sched_setscheduler(SCHED_FIFO) refused: %s (needs "
           "CAP_SYS_NICE or RLIMIT_RTPRIO, and realtime time in this cgroup: cpu.rt_runtime_us)",
           config.realtime_priority, std::strerror(err));
      return kExitRuntime;
    }
    logf(LogLevel::kInfo, "running under SCHED_FIFO priority %u", config.realtime_priority);
  }
  try {
    return run(config, *engine);
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "%s", e.what());
    return kExitRuntime;
  }
}
