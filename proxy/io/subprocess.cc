#include "proxy/io/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include <array>
#include <cerrno>
#include <ctime>
#include <stdexcept>
#include <string>
#include <system_error>

extern char** environ;

namespace tandem {
namespace {

[[noreturn]] void throwErrno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

/// Owns a file descriptor; closes it once.
class Fd {
 public:
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct Pipe {
  Fd read;
  Fd write;
};

void makePipe(Pipe& p, const std::string& what) {
  int fds[2];
  // O_CLOEXEC: only the dup2'd copies reach the child.
  if (pipe2(fds, O_CLOEXEC) != 0) throwErrno(errno, what + ": pipe2");
  p.read.reset(fds[0]);
  p.write.reset(fds[1]);
}

/// Blocks SIGPIPE while we write to the child and discards one raised meanwhile, so a child that
/// exits without reading its input cannot kill the caller, whatever its SIGPIPE disposition.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    was_pending_ = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      timespec zero{};
      while (sigtimedwait(&set_, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t set_;
  sigset_t old_;
  bool was_pending_ = false;
};

void setNonBlocking(int fd, const std::string& what) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throwErrno(errno, what + ": fcntl");
}

}  // namespace

ProcessResult runProcess(const std::vector<std::string>& argv, std::string_view input) {
  if (argv.empty()) throw std::invalid_argument("runProcess: empty argv");
  const std::string& name = argv[0];
  Pipe in, out, err;
  makePipe(in, name);
  makePipe(out, name);
  makePipe(err, name);

  posix_spawn_file_actions_t actions;
  if (int rc = posix_spawn_file_actions_init(&actions); rc != 0) throwErrno(rc, name);
  posix_spawnattr_t attr;
  if (int rc = posix_spawnattr_init(&attr); rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    throwErrno(rc, name);
  }
  // Whatever the caller ignores or blocks, the child starts with default signal handling.
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigset_t empty;
  sigemptyset(&empty);
  int rc = posix_spawn_file_actions_adddup2(&actions, in.read.get(), STDIN_FILENO);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out.write.get(), STDOUT_FILENO);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, err.write.get(), STDERR_FILENO);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &defaults);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &empty);
  if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawnp(&pid, name.c_str(), &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throwErrno(rc, "cannot run " + name);

  // Our copies of the child's ends must go, or we would never see EOF.
  in.read.reset();
  out.write.reset();
  err.write.reset();
  setNonBlocking(in.write.get(), name);

  ProcessResult result;
  SigpipeGuard sigpipe_guard;
  size_t written = 0;
  if (input.empty()) in.write.reset();
  std::array<char, 4096> buf;
  // Feed stdin while draining stdout and stderr, so neither side can block the other.
  while (out.read.get() >= 0 || err.read.get() >= 0) {
    std::array<pollfd, 3> pfds{
        {{in.write.get(), POLLOUT, 0}, {out.read.get(), POLLIN, 0}, {err.read.get(), POLLIN, 0}}};
    if (poll(pfds.data(), pfds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throwErrno(errno, name + ": poll");
    }
    if (pfds[0].revents != 0) {
      ssize_t n = write(in.write.get(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      // EPIPE or POLLERR: the child stopped reading; its exit code will say why.
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        in.write.reset();
      }
    }
    for (size_t i = 1; i < 3; ++i) {
      if (pfds[i].revents == 0) continue;
      Fd& fd = i == 1 ? out.read : err.read;
      std::string& sink = i == 1 ? result.out : result.err;
      ssize_t n = read(fd.get(), buf.data(), buf.size());
      if (n > 0) {
        sink.append(buf.data(), static_cast<size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.reset();
      }
    }
  }
  in.write.reset();

  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throwErrno(errno, name + ": waitpid");
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

}  // namespace tandem
