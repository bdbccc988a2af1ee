// The tcpcheck client: N non-blocking connections driven by one epoll loop. Every byte received
// is checked against the server's pattern; a connection counts as verified only when it also saw
// the server's clean FIN, which the server sends only after verifying every byte it received.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "net_util.h"
#include "stream_io.h"
#include "tcpcheck.h"
#include "wire.h"

namespace tandem::tools {
namespace {

constexpr const char* kProg = "tcpcheck";
constexpr int kMaxFailureLines = 20;
constexpr uint64_t kReadBudget = 1 << 20;  // per connection per turn (see tcpcheck_server.cc)

enum class FailKind : uint8_t { kNone, kReset, kTimeout, kOther };

// A RST ended the connection: ECONNREFUSED (answer to our SYN), ECONNRESET, or EPIPE (a send
// after the RST was processed).
FailKind kindOf(int err) {
  return err == ECONNRESET || err == ECONNREFUSED || err == EPIPE ? FailKind::kReset
                                                                  : FailKind::kOther;
}

struct ClientConn {
  Fd fd;
  uint32_t id = 0;
  uint64_t seed = 0;
  std::string label;
  bool connected = false;
  uint8_t header[kHeaderSize] = {};
  size_t header_sent = 0;
  Pattern tx_pattern;
  PatternChecker rx;
  uint64_t tx_off = 0;
  bool tx_shut = false;
  bool eof = false;
  bool more = false;  ///< stopped reading at the budget: pump again without waiting for an event
  uint64_t start_ns = 0;
  uint64_t last_progress_ns = 0;
  uint64_t hold_until_ns = 0;  ///< verify with --hold-ms/--rst: 0 until the exchange is done
  Pacer pacer;
  uint64_t last_rx_ns = 0;
  uint64_t max_gap_ns = 0;
  uint64_t rr_done = 0;        ///< completed round trips
  uint64_t rr_sent_ns = 0;     ///< when the current request started
};

struct Totals {
  uint64_t started = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t reset = 0;
  uint64_t timeout = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_verified = 0;
  uint64_t max_gap_ns = 0;
  std::vector<uint64_t> rtt_ns;
  // --trace: per bin (from the start of the run) the bytes received and round trips completed.
  std::vector<uint64_t> trace_bytes;
  std::vector<uint64_t> trace_rr;
  std::vector<uint64_t> trace_gap_ns;  ///< the largest inter-arrival gap that ended in the bin
  int failure_lines = 0;
};

class Client {
 public:
  explicit Client(const ClientOptions& o) : opt_(o) {}
  int run();

 private:
  enum class Step : uint8_t { kContinue, kDone, kFailed };

  void openConn();
  Step pump(ClientConn& c, uint64_t now);
  Step readAll(ClientConn& c, uint64_t now);
  Step writeAll(ClientConn& c, uint64_t now);
  Step advance(ClientConn& c, uint64_t now);
  Step fail(FailKind kind, std::string why);
  void logGap(const ClientConn& c, const char* kind, uint64_t gap_ns);
  void finish(int fd, Step step);
  bool wantsNewConn(uint64_t now) const;
  int report(uint64_t elapsed_ns);
  void traceAdd(uint64_t now, uint64_t bytes, uint64_t round_trips, uint64_t gap_ns);
  void writeTrace() const;
  bool rrOver(const ClientConn& c, uint64_t now) const;

  const ClientOptions& opt_;
  Fd epoll_fd_;
  std::unordered_map<int, std::unique_ptr<ClientConn>> conns_;
  Totals totals_;
  uint64_t run_seed_ = 0;
  uint64_t start_ns_ = 0;
  uint64_t start_unix_ns_ = 0;  ///< wall clock at start_ns_, so a trace lines up with other logs
  FailKind fail_kind_ = FailKind::kNone;
  std::string fail_reason_;
};

const char* modeName(ClientMode m) {
  switch (m) {
    case ClientMode::kVerify: return "verify";
    case ClientMode::kStream: return "stream";
    case ClientMode::kRr: return "rr";
    case ClientMode::kConnectRate: return "connect-rate";
  }
  return "?";
}

// --log-gaps-ms: one line per gap (stream) or round trip (rr) at least that long, stamped with
// the wall clock at its end, so a test can line gaps up with events it caused (a failover).
void Client::logGap(const ClientConn& c, const char* kind, uint64_t gap_ns) {
  if (opt_.log_gaps_ns == 0 || gap_ns < opt_.log_gaps_ns) return;
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::fprintf(stderr, "tcpcheck-gap: kind=%s conn=%u end=%lld.%06ld ms=%.3f\n", kind, c.id,
               static_cast<long long>(ts.tv_sec), ts.tv_nsec / 1000,
               static_cast<double>(gap_ns) / 1e6);
}

Client::Step Client::fail(FailKind kind, std::string why) {
  fail_kind_ = kind;
  fail_reason_ = std::move(why);
  return Step::kFailed;
}

void Client::openConn() {
  auto c = std::make_unique<ClientConn>();
  c->id = static_cast<uint32_t>(totals_.started++);
  c->seed = mix64(run_seed_ + c->id);
  c->start_ns = c->last_progress_ns = nowNs();
  c->tx_pattern = Pattern(c->seed, kClientSalt);
  c->rx = PatternChecker(Pattern(c->seed, kServerSalt));
  c->pacer = Pacer(opt_.mode == ClientMode::kStream ? opt_.rate : 0, c->start_ns);

  WireHeader h;
  h.seed = c->seed;
  switch (opt_.mode) {
    case ClientMode::kVerify:
    case ClientMode::kConnectRate:
      h.mode = ExchangeMode::kVerify;
      h.bytes = opt_.bytes;
      if (opt_.hold_ns > 0 || opt_.rst) h.flags |= kFlagSendAll;
      if (opt_.rst) h.flags |= kFlagClientRst;
      break;
    case ClientMode::kStream:
      h.mode = ExchangeMode::kStream;
      h.rate = opt_.rate;
      break;
    case ClientMode::kRr:
      h.mode = ExchangeMode::kRequestResponse;
      h.bytes = opt_.bytes;
      break;
  }
  encodeHeader(h, c->header);

  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) dieErrno(kProg, "socket");
  c->fd = Fd(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opt_.bind.sin_family == AF_INET) {
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&opt_.bind), sizeof opt_.bind) != 0) {
      dieErrno(kProg, "bind " + endpointString(opt_.bind));
    }
  }
  c->label = "conn " + std::to_string(c->id);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) dieErrno(kProg, "epoll_ctl");
  conns_.emplace(fd, std::move(c));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&opt_.connect), sizeof opt_.connect) != 0 &&
      errno != EINPROGRESS) {
    fail_kind_ = kindOf(errno);
    fail_reason_ = std::string("connect: ") + std::strerror(errno);
    finish(fd, Step::kFailed);
  }
}

Client::Step Client::readAll(ClientConn& c, uint64_t now) {
  uint8_t buf[65536];
  uint64_t budget = kReadBudget;
  c.more = false;
  while (!c.eof) {
    if (budget == 0) {
      c.more = true;
      break;
    }
    const ssize_t n = recv(c.fd.get(), buf, sizeof buf, 0);
    if (n == 0) {
      c.eof = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return fail(kindOf(errno),
                  std::string("recv: ") + std::strerror(errno) + " after " +
                      std::to_string(c.rx.offset()) + " verified bytes");
    }
    budget -= std::min<uint64_t>(budget, static_cast<uint64_t>(n));
    if (!c.rx.consume(buf, static_cast<size_t>(n))) {
      return fail(FailKind::kOther, "server data mismatch at " + c.rx.error());
    }
    totals_.bytes_verified += static_cast<uint64_t>(n);
    const uint64_t rr_before = c.rr_done;
    c.last_progress_ns = now;
    const uint64_t gap = c.last_rx_ns != 0 ? now - c.last_rx_ns : 0;
    c.max_gap_ns = std::max(c.max_gap_ns, gap);
    if (c.last_rx_ns != 0 && opt_.mode == ClientMode::kStream) logGap(c, "stream", gap);
    c.last_rx_ns = now;
    switch (opt_.mode) {
      case ClientMode::kVerify:
      case ClientMode::kConnectRate:
        if (c.rx.offset() > opt_.bytes) {
          return fail(FailKind::kOther, "server sent " + std::to_string(c.rx.offset()) +
                                            " bytes, expected " + std::to_string(opt_.bytes));
        }
        break;
      case ClientMode::kRr:
        if (c.rx.offset() > c.tx_off) return fail(FailKind::kOther, "response before request");
        if (c.rx.offset() == (c.rr_done + 1) * opt_.bytes) {
          totals_.rtt_ns.push_back(now - c.rr_sent_ns);
          logGap(c, "rr", now - c.rr_sent_ns);
          ++c.rr_done;
        }
        break;
      case ClientMode::kStream:
        break;
    }
    traceAdd(now, static_cast<uint64_t>(n), c.rr_done - rr_before, gap);
  }
  return Step::kContinue;
}

Client::Step Client::writeAll(ClientConn& c, uint64_t now) {
  if (c.tx_shut) return Step::kContinue;
  if (c.header_sent < kHeaderSize) {
    const IoStatus st = sendRaw(c.fd.get(), c.header, kHeaderSize, c.header_sent);
    if (st.error != 0) {
      return fail(kindOf(st.error),
                  std::string("send: ") + std::strerror(st.error));
    }
    if (st.would_block) return Step::kContinue;
  }
  uint64_t target = c.tx_off;
  switch (opt_.mode) {
    case ClientMode::kVerify:
    case ClientMode::kConnectRate:
      target = opt_.bytes;
      break;
    case ClientMode::kStream:
      if (now < c.start_ns + opt_.duration_ns) {
        const uint64_t limit = c.pacer.limit(now, c.tx_off);
        if (c.pacer.unlimited() || limit - c.tx_off >= c.pacer.chunk()) target = limit;
      }
      break;
    case ClientMode::kRr:
      // One request in flight: the next goes out when the previous response is complete.
      if (!rrOver(c, now) && c.tx_off == c.rr_done * opt_.bytes &&
          (opt_.rate == 0 || now >= c.start_ns + c.rr_done * kNsPerSec / opt_.rate)) {
        c.rr_sent_ns = now;
        target = c.tx_off + opt_.bytes;
      } else if (c.tx_off > c.rr_done * opt_.bytes &&
                 c.tx_off < c.rr_done * opt_.bytes + opt_.bytes) {
        target = c.rr_done * opt_.bytes + opt_.bytes;  // finish a partly sent request
      }
      break;
  }
  if (target > c.tx_off) {
    const IoStatus st = sendPattern(c.fd.get(), c.tx_pattern, c.tx_off, target);
    totals_.bytes_sent += st.bytes;
    if (st.bytes > 0) c.last_progress_ns = now;
    if (st.error != 0) {
      return fail(kindOf(st.error),
                  std::string("send: ") + std::strerror(st.error) + " after " +
                      std::to_string(c.tx_off) + " bytes sent");
    }
  }
  return Step::kContinue;
}

// Closes our direction when the mode says the sending part is over, and judges EOF.
Client::Step Client::advance(ClientConn& c, uint64_t now) {
  const bool header_done = c.header_sent == kHeaderSize;
  if (!c.tx_shut && header_done) {
    bool close_now = false;
    switch (opt_.mode) {
      case ClientMode::kVerify:
      case ClientMode::kConnectRate:
        if (c.tx_off < opt_.bytes) break;
        if (opt_.hold_ns == 0 && !opt_.rst) {
          close_now = true;
          break;
        }
        if (c.rx.offset() < opt_.bytes) break;
        if (c.hold_until_ns == 0) c.hold_until_ns = now + opt_.hold_ns;
        if (now < c.hold_until_ns) break;
        if (opt_.rst) {
          // Abort only once the server has acknowledged all our bytes: a RST discards whatever
          // is still unsent or unacknowledged in our send queue.
          int outq = 0;
          if (ioctl(c.fd.get(), SIOCOUTQ, &outq) == 0 && outq > 0) break;
          setLingerZero(c.fd.get());
          return Step::kDone;
        }
        close_now = true;
        c.last_progress_ns = now;  // the idle timeout restarts after the hold
        break;
      case ClientMode::kStream:
        close_now = now >= c.start_ns + opt_.duration_ns;
        break;
      case ClientMode::kRr:
        // Over, and the last request's response is complete.
        close_now = rrOver(c, now) && c.tx_off == c.rr_done * opt_.bytes;
        break;
    }
    if (close_now) {
      if (shutdown(c.fd.get(), SHUT_WR) != 0) {
        // ENOTCONN: a RST arrived since the last read.
        return fail(errno == ENOTCONN ? FailKind::kReset : FailKind::kOther,
                    std::string("shutdown: ") + std::strerror(errno) + " (verified " +
                        std::to_string(c.rx.offset()) + " bytes)");
      }
      c.tx_shut = true;
    }
  }
  if (c.eof) {
    if (!c.tx_shut) {
      return fail(FailKind::kOther, "server closed before the client finished (verified " +
                                        std::to_string(c.rx.offset()) + " bytes)");
    }
    if ((opt_.mode == ClientMode::kVerify || opt_.mode == ClientMode::kConnectRate) &&
        c.rx.offset() != opt_.bytes) {
      return fail(FailKind::kOther, "EOF after " + std::to_string(c.rx.offset()) + " of " +
                                        std::to_string(opt_.bytes) + " server bytes");
    }
    return Step::kDone;
  }
  const bool holding = c.hold_until_ns != 0 && now < c.hold_until_ns;
  if (!holding && now - c.last_progress_ns > opt_.timeout_ns) {
    return fail(FailKind::kTimeout,
                "timeout: no progress for " + std::to_string(opt_.timeout_ns / kNsPerMs) +
                    " ms (sent " + std::to_string(c.tx_off) + ", verified " +
                    std::to_string(c.rx.offset()) + (c.tx_shut ? ", FIN sent" : "") + ")");
  }
  return Step::kContinue;
}

Client::Step Client::pump(ClientConn& c, uint64_t now) {
  if (!c.connected) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      return fail(kindOf(err),
                  std::string("connect: ") + std::strerror(err));
    }
    sockaddr_in peer{};
    len = sizeof peer;
    if (getpeername(c.fd.get(), reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
      if (now - c.start_ns > opt_.timeout_ns) return fail(FailKind::kTimeout, "connect timeout");
      return Step::kContinue;  // still in progress
    }
    c.connected = true;
    c.last_progress_ns = now;
    c.label = "conn " + std::to_string(c.id) + " (" + socketPair(c.fd.get()) + ")";
  }
  if (const Step s = readAll(c, now); s != Step::kContinue) return s;
  if (const Step s = writeAll(c, now); s != Step::kContinue) return s;
  return advance(c, now);
}

void Client::finish(int fd, Step step) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  ClientConn& c = *it->second;
  totals_.max_gap_ns = std::max(totals_.max_gap_ns, c.max_gap_ns);
  if (opt_.mode == ClientMode::kConnectRate) logGap(c, "connect", nowNs() - c.start_ns);
  if (step == Step::kDone) {
    ++totals_.ok;
  } else {
    ++totals_.failed;
    if (fail_kind_ == FailKind::kReset) ++totals_.reset;
    if (fail_kind_ == FailKind::kTimeout) ++totals_.timeout;
    if (totals_.failure_lines++ < kMaxFailureLines) {
      std::fprintf(stderr, "%s: %s seed=0x%016" PRIx64 " FAILED: %s\n", kProg, c.label.c_str(),
                   c.seed, fail_reason_.c_str());
    }
  }
  conns_.erase(it);
}

bool Client::wantsNewConn(uint64_t now) const {
  return opt_.mode == ClientMode::kConnectRate && now < start_ns_ + opt_.duration_ns;
}

int Client::run() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  run_seed_ = opt_.seed != 0 ? opt_.seed : mix64(nowNs() ^ static_cast<uint64_t>(getpid()));
  epoll_fd_ = Fd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) dieErrno(kProg, "epoll_create1");
  start_ns_ = nowNs();
  timespec wall{};
  clock_gettime(CLOCK_REALTIME, &wall);
  start_unix_ns_ = static_cast<uint64_t>(wall.tv_sec) * kNsPerSec +
                   static_cast<uint64_t>(wall.tv_nsec);
  for (uint32_t i = 0; i < opt_.conns; ++i) openConn();

  std::vector<epoll_event> events(1024);
  uint64_t last_scan_ns = 0;
  bool more = false;
  while (!conns_.empty()) {
    const bool paced_rr = opt_.mode == ClientMode::kRr && opt_.rate > 0;
    const int timeout_ms = more ? 0 : opt_.mode == ClientMode::kStream ? 2 : paced_rr ? 1 : 10;
    const int n = epoll_wait(epoll_fd_.get(), events.data(), static_cast<int>(events.size()),
                             timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      dieErrno(kProg, "epoll_wait");
    }
    uint64_t now = nowNs();
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<size_t>(i)].data.fd;
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      const Step step = pump(*it->second, now);
      if (step != Step::kContinue) {
        finish(fd, step);
        if (wantsNewConn(now)) openConn();
      }
    }
    // Timers (pacing, hold, idle timeout, connect timeout) and readers that used up their
    // budget: scan at most once a millisecond unless a reader is waiting.
    now = nowNs();
    if (more || n == 0 || now - last_scan_ns >= kNsPerMs) {
      last_scan_ns = now;
      std::vector<int> fds;
      fds.reserve(conns_.size());
      for (const auto& [fd, c] : conns_) fds.push_back(fd);
      for (int fd : fds) {
        const Step step = pump(*conns_.at(fd), now);
        if (step != Step::kContinue) {
          finish(fd, step);
          if (wantsNewConn(now)) openConn();
        }
      }
    }
    more = false;
    for (const auto& [fd, c] : conns_) more = more || c->more;
  }
  writeTrace();
  return report(nowNs() - start_ns_);
}

// Request/response: no new request after --count round trips or, with --duration, past it.
bool Client::rrOver(const ClientConn& c, uint64_t now) const {
  if (opt_.duration_ns > 0) return now >= start_ns_ + opt_.duration_ns;
  return c.rr_done >= opt_.count;
}

void Client::traceAdd(uint64_t now, uint64_t bytes, uint64_t round_trips, uint64_t gap_ns) {
  if (opt_.trace_path.empty() || now < start_ns_) return;
  const size_t bin = static_cast<size_t>((now - start_ns_) / opt_.trace_bin_ns);
  if (bin >= totals_.trace_bytes.size()) {
    totals_.trace_bytes.resize(bin + 1, 0);
    totals_.trace_rr.resize(bin + 1, 0);
    totals_.trace_gap_ns.resize(bin + 1, 0);
  }
  totals_.trace_bytes[bin] += bytes;
  totals_.trace_rr[bin] += round_trips;
  totals_.trace_gap_ns[bin] = std::max(totals_.trace_gap_ns[bin], gap_ns);
}

// CSV: the start of each bin as Unix time in ms (wall clock), bytes received, round trips, and
// the largest gap between two receptions (any connection) that ended in the bin.
void Client::writeTrace() const {
  if (opt_.trace_path.empty()) return;
  FILE* f = std::fopen(opt_.trace_path.c_str(), "w");
  if (f == nullptr) dieErrno(kProg, "open " + opt_.trace_path);
  std::fprintf(f, "unix_ms,rx_bytes,round_trips,max_gap_ms\n");
  for (size_t i = 0; i < totals_.trace_bytes.size(); ++i) {
    const uint64_t t = start_unix_ns_ + i * opt_.trace_bin_ns;
    std::fprintf(f, "%" PRIu64 ".%03" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.3f\n", t / kNsPerMs,
                 (t % kNsPerMs) / 1000, totals_.trace_bytes[i], totals_.trace_rr[i],
                 static_cast<double>(totals_.trace_gap_ns[i]) / 1e6);
  }
  if (std::fclose(f) != 0) dieErrno(kProg, "write " + opt_.trace_path);
}

uint64_t percentile(const std::vector<uint64_t>& sorted, unsigned pct) {
  if (sorted.empty()) return 0;
  return sorted[(sorted.size() - 1) * pct / 100];
}

int Client::report(uint64_t elapsed_ns) {
  const uint64_t conns = totals_.ok + totals_.failed;
  std::string line = "tcpcheck: conns=" + std::to_string(conns) +
                     " ok=" + std::to_string(totals_.ok) +
                     " failed=" + std::to_string(totals_.failed) +
                     " bytes_sent=" + std::to_string(totals_.bytes_sent) +
                     " bytes_verified=" + std::to_string(totals_.bytes_verified) +
                     " mode=" + modeName(opt_.mode) + " reset=" + std::to_string(totals_.reset) +
                     " timeout=" + std::to_string(totals_.timeout) +
                     " elapsed_ms=" + std::to_string(elapsed_ns / kNsPerMs);
  const double secs = static_cast<double>(elapsed_ns) / 1e9;
  char buf[160];
  switch (opt_.mode) {
    case ClientMode::kStream:
      std::snprintf(buf, sizeof buf, " max_gap_ms=%.1f rx_rate_bps=%.0f",
                    static_cast<double>(totals_.max_gap_ns) / 1e6,
                    secs > 0 ? static_cast<double>(totals_.bytes_verified) / secs : 0.0);
      line += buf;
      break;
    case ClientMode::kRr: {
      std::vector<uint64_t> v = totals_.rtt_ns;
      std::sort(v.begin(), v.end());
      std::snprintf(buf, sizeof buf,
                    " round_trips=%zu p50_us=%.1f p99_us=%.1f max_us=%.1f max_gap_ms=%.1f",
                    v.size(), static_cast<double>(percentile(v, 50)) / 1e3,
                    static_cast<double>(percentile(v, 99)) / 1e3,
                    v.empty() ? 0.0 : static_cast<double>(v.back()) / 1e3,
                    static_cast<double>(totals_.max_gap_ns) / 1e6);
      line += buf;
      break;
    }
    case ClientMode::kConnectRate:
      std::snprintf(buf, sizeof buf, " conn_rate_per_s=%.1f",
                    secs > 0 ? static_cast<double>(totals_.ok) / secs : 0.0);
      line += buf;
      break;
    case ClientMode::kVerify:
      break;
  }
  bool as_expected = false;
  switch (opt_.expect) {
    case Expect::kSuccess: as_expected = conns > 0 && totals_.failed == 0; break;
    case Expect::kFail: as_expected = conns > 0 && totals_.ok == 0; break;
    case Expect::kReset: as_expected = conns > 0 && totals_.reset == conns; break;
  }
  static constexpr const char* kExpectNames[] = {"success", "fail", "reset"};
  line += std::string(" expect=") + kExpectNames[static_cast<int>(opt_.expect)] +
          " result=" + (as_expected ? "as_expected" : "UNEXPECTED");
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  return as_expected ? kExitOk : kExitFailed;
}

}  // namespace

int runClient(const ClientOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  Client client(options);
  return client.run();
}

}  // namespace tandem::tools
