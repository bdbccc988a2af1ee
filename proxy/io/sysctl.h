#pragma once
/// @file The kernel settings tandem's forwarding depends on, checked (or set) at startup.
///
/// tandem rewrites a received packet's source to a local address: the VIP on a backend's reply,
/// the SNAT address on a SNAT request. The route lookup that follows (fib_validate_source) calls
/// such a packet a martian unless accept_local is set, and a strict reverse-path filter
/// (rp_filter = 1) still refuses it, because the local address does not route back out of the
/// interface the packet came in on. Loose mode (2) or off (0) accepts it.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "proxy/core/engine_config.h"

namespace tandem {

/// A setting found wrong, with what would fix it.
struct SysctlProblem {
  std::string key;     ///< dotted name as sysctl(8) prints it, e.g. net.ipv4.ip_forward
  std::string actual;  ///< current value, or "unreadable"
  std::string needed;  ///< human-readable requirement, e.g. "1" or "0 or 2"
  std::string fix;     ///< value written when daemon.set_sysctls = true
  std::string why;
};

/// Reads a sysctl by dotted key; nullopt if it does not exist or cannot be read.
using SysctlReader = std::function<std::optional<std::string>(const std::string& key)>;

/// Pure: evaluates the requirements for traffic arriving on `interfaces` (those carrying the
/// services; empty if unknown, then only the `all` settings are judged).
std::vector<SysctlProblem> checkSysctls(const std::vector<std::string>& interfaces,
                                        const SysctlReader& read);

/// Pure: warnings for SNAT port ranges overlapping net.ipv4.ip_local_port_range. The host's own
/// connections from the SNAT address would get their replies queued to tandem, which knows no
/// such flow and drops them. Not fatal: the host may never use that address itself.
std::vector<std::string> snatPortWarnings(const EngineConfig& config, const SysctlReader& read);

/// Interfaces with an IPv4 subnet holding a VIP, a backend or a SNAT address (getifaddrs).
std::vector<std::string> serviceInterfaces(const EngineConfig& config);

/// /proc/sys path of a dotted key; an interface name's own dots (eth0.100) must be given as '/'
/// in the key, as sysctl(8) does.
std::string sysctlPath(const std::string& key);
/// Reads /proc/sys (in the caller's network namespace).
std::optional<std::string> readSysctl(const std::string& key);
/// Writes /proc/sys; throws std::system_error naming the key.
void writeSysctl(const std::string& key, const std::string& value);

}  // namespace tandem
