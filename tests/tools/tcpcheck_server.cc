// The tcpcheck server: one epoll loop, any number of connections. Per connection it reads the
// header, then runs the exchange the client asked for (wire.h). A connection that fails
// verification is aborted with a RST, so the client fails too and never mistakes it for a clean
// close; a clean close (FIN) therefore also tells the client that the server verified everything.

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "net_util.h"
#include "stream_io.h"
#include "tcpcheck.h"
#include "wire.h"

namespace tandem::tools {
namespace {

constexpr const char* kProg = "tcpcheck server";
// Bytes read per connection per turn, so that one fast sender cannot starve the other direction
// or the other connections (edge-triggered epoll would otherwise read it until EAGAIN).
constexpr uint64_t kReadBudget = 1 << 20;

struct ServerConn {
  Fd fd;
  std::string peer;
  uint8_t header[kHeaderSize] = {};
  size_t header_len = 0;
  std::optional<WireHeader> hdr;
  Pattern tx_pattern;
  PatternChecker rx;
  uint64_t tx_off = 0;
  bool eof = false;
  bool more = false;  ///< stopped reading at the budget: pump again without waiting for an event
  Pacer pacer;
};

struct ServerStats {
  uint64_t conns = 0;
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t bytes_verified = 0;
  uint64_t bytes_sent = 0;
  std::map<std::string, uint64_t> peers;  ///< connections per client address, as seen here
};

class Server {
 public:
  explicit Server(const sockaddr_in& listen_addr) : listen_addr_(listen_addr) {}
  int run();

 private:
  enum class Step : uint8_t { kContinue, kDone, kFailed };

  void acceptAll();
  Step pump(ServerConn& c);
  Step readAll(ServerConn& c);
  Step onHeaderBytes(ServerConn& c, const uint8_t* data, size_t n, size_t& used);
  uint64_t txTarget(ServerConn& c, uint64_t now) const;
  Step completion(ServerConn& c);
  bool resetIsExpected(const ServerConn& c) const;
  void finish(int fd, Step step, const std::string& why);
  void printStats() const;
  bool anyPaced() const;
  void pumpAll();

  sockaddr_in listen_addr_;
  Fd listen_fd_;
  Fd epoll_fd_;
  std::unordered_map<int, std::unique_ptr<ServerConn>> conns_;
  ServerStats stats_;
  std::string fail_reason_;
};

int Server::run() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) dieErrno(kProg, "sigprocmask");
  Fd sig_fd(signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!sig_fd.valid()) dieErrno(kProg, "signalfd");

  listen_fd_ = Fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_.valid()) dieErrno(kProg, "socket");
  int one = 1;
  if (setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    dieErrno(kProg, "SO_REUSEADDR");
  }
  if (bind(listen_fd_.get(), reinterpret_cast<const sockaddr*>(&listen_addr_),
           sizeof listen_addr_) != 0) {
    dieErrno(kProg, "bind " + endpointString(listen_addr_));
  }
  if (listen(listen_fd_.get(), 4096) != 0) dieErrno(kProg, "listen");

  epoll_fd_ = Fd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_fd_.valid()) dieErrno(kProg, "epoll_create1");
  for (int fd : {listen_fd_.get(), sig_fd.get()}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) dieErrno(kProg, "epoll_ctl");
  }
  std::printf("tcpcheck-server: listening on %s\n", endpointString(listen_addr_).c_str());
  std::fflush(stdout);

  epoll_event events[256];
  for (;;) {
    bool more = false;
    for (const auto& [fd, c] : conns_) more = more || c->more;
    const int timeout_ms = more ? 0 : anyPaced() ? 2 : -1;
    const int n = epoll_wait(epoll_fd_.get(), events, 256, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      dieErrno(kProg, "epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_.get()) {
        acceptAll();
      } else if (fd == sig_fd.get()) {
        signalfd_siginfo si{};
        while (read(sig_fd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
          printStats();
          if (si.ssi_signo != SIGUSR1) return kExitOk;
        }
      } else if (auto it = conns_.find(fd); it != conns_.end()) {
        const Step step = pump(*it->second);
        if (step != Step::kContinue) finish(fd, step, fail_reason_);
      }
    }
    // Streams waiting for their next pacing slot, and readers that used up their budget.
    if (timeout_ms >= 0) pumpAll();
  }
}

void Server::pumpAll() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    const int fd = it->first;
    ++it;  // finish() erases the current element only
    const Step step = pump(*conns_[fd]);
    if (step != Step::kContinue) finish(fd, step, fail_reason_);
  }
}

bool Server::anyPaced() const {
  for (const auto& [fd, c] : conns_) {
    if (c->hdr && c->hdr->mode == ExchangeMode::kStream && !c->eof && c->hdr->rate > 0) {
      return true;
    }
  }
  return false;
}

void Server::acceptAll() {
  for (;;) {
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    const int fd = accept4(listen_fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      std::fprintf(stderr, "%s: accept: %s\n", kProg, std::strerror(errno));
      return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<ServerConn>();
    c->fd = Fd(fd);
    c->peer = endpointString(peer);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) dieErrno(kProg, "epoll_ctl");
    conns_.emplace(fd, std::move(c));
    ++stats_.conns;
  }
}

Server::Step Server::onHeaderBytes(ServerConn& c, const uint8_t* data, size_t n, size_t& used) {
  used = std::min(n, kHeaderSize - c.header_len);
  std::memcpy(c.header + c.header_len, data, used);
  c.header_len += used;
  if (c.header_len < kHeaderSize) return Step::kContinue;
  c.hdr = decodeHeader(c.header);
  if (!c.hdr) {
    fail_reason_ = "bad header (not a tcpcheck client, or a corrupted first segment)";
    return Step::kFailed;
  }
  ++stats_.peers[c.peer.substr(0, c.peer.rfind(':'))];
  c.tx_pattern = Pattern(c.hdr->seed, kServerSalt);
  c.rx = PatternChecker(Pattern(c.hdr->seed, kClientSalt));
  c.pacer = Pacer(c.hdr->rate, nowNs());
  return Step::kContinue;
}

Server::Step Server::readAll(ServerConn& c) {
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
      if (errno == ECONNRESET && resetIsExpected(c)) return Step::kDone;
      fail_reason_ = std::string("recv: ") + std::strerror(errno) + " after " +
                     std::to_string(c.rx.offset()) + " verified bytes";
      return Step::kFailed;
    }
    budget -= std::min<uint64_t>(budget, static_cast<uint64_t>(n));
    size_t used = 0;
    if (!c.hdr) {
      if (onHeaderBytes(c, buf, static_cast<size_t>(n), used) == Step::kFailed) {
        return Step::kFailed;
      }
    }
    const size_t rest = static_cast<size_t>(n) - used;
    if (rest == 0) continue;
    if (!c.rx.consume(buf + used, rest)) {
      fail_reason_ = "client data mismatch at " + c.rx.error();
      return Step::kFailed;
    }
    stats_.bytes_verified += rest;
    if (c.hdr->mode == ExchangeMode::kVerify && c.rx.offset() > c.hdr->bytes) {
      fail_reason_ = "client sent " + std::to_string(c.rx.offset()) + " bytes, expected " +
                     std::to_string(c.hdr->bytes);
      return Step::kFailed;
    }
  }
  return Step::kContinue;
}

// How far the server's own pattern may have been sent by now.
uint64_t Server::txTarget(ServerConn& c, uint64_t now) const {
  const WireHeader& h = *c.hdr;
  switch (h.mode) {
    case ExchangeMode::kVerify:
      // Hold the second half back until the client's FIN, so that it crosses a half-closed
      // connection (RFC 9293 3.6: a FIN only ends the sender's direction).
      return (c.eof || (h.flags & kFlagSendAll) != 0) ? h.bytes : h.bytes / 2;
    case ExchangeMode::kRequestResponse:
      return c.rx.offset() / h.bytes * h.bytes;  // one response per complete request
    case ExchangeMode::kStream: {
      if (c.eof) return c.tx_off;
      const uint64_t limit = c.pacer.limit(now, c.tx_off);
      if (c.pacer.unlimited() || limit - c.tx_off >= c.pacer.chunk()) return limit;
      return c.tx_off;
    }
  }
  return c.tx_off;
}

bool Server::resetIsExpected(const ServerConn& c) const {
  return c.hdr && c.hdr->mode == ExchangeMode::kVerify && (c.hdr->flags & kFlagClientRst) != 0 &&
         c.rx.offset() == c.hdr->bytes && c.tx_off == c.hdr->bytes;
}

Server::Step Server::completion(ServerConn& c) {
  if (!c.eof) return Step::kContinue;
  const WireHeader& h = *c.hdr;
  switch (h.mode) {
    case ExchangeMode::kVerify:
      if (c.rx.offset() != h.bytes) {
        fail_reason_ =
            "EOF after " + std::to_string(c.rx.offset()) + " of " + std::to_string(h.bytes) +
            " client bytes";
        return Step::kFailed;
      }
      return c.tx_off == h.bytes ? Step::kDone : Step::kContinue;
    case ExchangeMode::kRequestResponse:
      if (c.rx.offset() % h.bytes != 0) {
        fail_reason_ = "EOF inside a request";
        return Step::kFailed;
      }
      return c.tx_off == c.rx.offset() ? Step::kDone : Step::kContinue;
    case ExchangeMode::kStream:
      return Step::kDone;
  }
  return Step::kContinue;
}

Server::Step Server::pump(ServerConn& c) {
  if (const Step s = readAll(c); s != Step::kContinue) return s;
  if (!c.hdr) {
    if (!c.eof) return Step::kContinue;
    if (c.header_len == 0) return Step::kDone;  // a port probe: connected and closed
    fail_reason_ = "EOF inside the header";
    return Step::kFailed;
  }
  const uint64_t target = txTarget(c, nowNs());
  if (target > c.tx_off) {
    const IoStatus st = sendPattern(c.fd.get(), c.tx_pattern, c.tx_off, target);
    stats_.bytes_sent += st.bytes;
    if (st.error != 0) {
      if (st.error == ECONNRESET && resetIsExpected(c)) return Step::kDone;
      fail_reason_ = std::string("send: ") + std::strerror(st.error) + " after " +
                     std::to_string(c.tx_off) + " bytes sent";
      return Step::kFailed;
    }
  }
  return completion(c);
}

void Server::finish(int fd, Step step, const std::string& why) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  ServerConn& c = *it->second;
  if (step == Step::kFailed) {
    ++stats_.failed;
    std::fprintf(stderr, "%s: conn from %s seed=0x%016" PRIx64 " FAILED: %s\n", kProg,
                 c.peer.c_str(), c.hdr ? c.hdr->seed : 0, why.c_str());
    setLingerZero(fd);  // abort, so the client cannot take this for a verified close
  } else if (c.hdr || c.header_len > 0) {
    ++stats_.ok;
  } else {
    --stats_.conns;  // a probe is not a connection of the test
  }
  conns_.erase(it);  // closes the socket (and removes it from the epoll set)
}

void Server::printStats() const {
  // peers=ADDR(N),...: the source addresses the server saw, i.e. the client (transparent
  // addressing) or the proxy's SNAT address.
  std::string peers;
  for (const auto& [ip, n] : stats_.peers) {
    peers += (peers.empty() ? "" : ",") + ip + "(" + std::to_string(n) + ")";
  }
  std::printf("tcpcheck-server: listen=%s conns=%" PRIu64 " ok=%" PRIu64 " failed=%" PRIu64
              " active=%zu bytes_verified=%" PRIu64 " bytes_sent=%" PRIu64 " peers=%s\n",
              endpointString(listen_addr_).c_str(), stats_.conns, stats_.ok, stats_.failed,
              conns_.size(), stats_.bytes_verified, stats_.bytes_sent,
              peers.empty() ? "-" : peers.c_str());
  std::fflush(stdout);
}

}  // namespace

int runServer(const sockaddr_in& listen_addr) {
  signal(SIGPIPE, SIG_IGN);
  Server server(listen_addr);
  return server.run();
}

}  // namespace tandem::tools
