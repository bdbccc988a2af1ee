#pragma once
/// @file `tandemctl backend drain|enable|disable SERVICE BACKEND`: POSTs the command to
/// tandemd's /backend (proxy/tandemd/health.h).

#include <string>
#include <vector>

#include "common/ip_addr.h"

namespace tandem {

/// args: {ACTION, SERVICE, BACKEND}. Returns the exit code (0 ok, 1 refused or unreachable,
/// 2 usage).
int backendCommand(const Endpoint& at, const std::vector<std::string>& args);

inline constexpr const char* kBackendUsage =
    "  backend drain|enable|disable SERVICE ADDR:PORT\n"
    "            drain: no new flows, idle ones move away (resplice = on) as they become\n"
    "            idle; disable: out of service now; enable: back to the health checks\n";

}  // namespace tandem
