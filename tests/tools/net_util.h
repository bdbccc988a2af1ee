#pragma once
/// @file Small POSIX helpers shared by the test tools: endpoint parsing, number parsing, an
/// owning file descriptor and the monotonic clock. Standard library and POSIX only, so the tools
/// stay independent of the code they test.

#include <netinet/in.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::tools {

inline constexpr uint64_t kNsPerMs = 1'000'000;
inline constexpr uint64_t kNsPerSec = 1'000'000'000;

/// CLOCK_MONOTONIC in nanoseconds.
uint64_t nowNs() noexcept;

/// Parses "A.B.C.D:PORT" (port required) or, with `port_optional`, also "A.B.C.D" (port 0).
std::optional<sockaddr_in> parseEndpoint(std::string_view text, bool port_optional = false);

/// "A.B.C.D:PORT".
std::string endpointString(const sockaddr_in& sa);

/// Decimal unsigned integer; rejects empty strings, signs, trailing garbage and overflow.
std::optional<uint64_t> parseU64(std::string_view text);

/// Non-negative decimal number such as "2" or "0.5".
std::optional<double> parseSeconds(std::string_view text);

/// Local and peer address of a connected socket as "A:P -> B:Q" (best effort).
std::string socketPair(int fd);

/// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept;

 private:
  int fd_ = -1;
};

/// Sets SO_LINGER {on, 0} so that close() sends a RST (RFC 793 abort) instead of a FIN.
bool setLingerZero(int fd) noexcept;

/// Prints "PROG: WHAT: strerror(errno)" to stderr and exits with status 2 (setup error).
[[noreturn]] void dieErrno(const char* prog, const std::string& what);

}  // namespace tandem::tools
