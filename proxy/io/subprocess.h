#pragma once
/// @file Runs a helper program (iptables-restore, iptables-save) with posix_spawnp: input on
/// stdin, stdout and stderr captured. No shell is involved, so no quoting can go wrong.

#include <string>
#include <string_view>
#include <vector>

namespace tandem {

struct ProcessResult {
  int exit_code = -1;  ///< exit status, or 128 + signal number if killed by a signal
  std::string out;
  std::string err;
};

/// Runs argv[0] (searched in PATH) with `input` on its stdin and waits for it. Throws
/// std::system_error if it cannot be started (e.g. ENOENT: not installed). A child that exits
/// without reading all its input is reported through its exit code, never by SIGPIPE. Startup and
/// shutdown only: it blocks.
ProcessResult runProcess(const std::vector<std::string>& argv, std::string_view input);

}  // namespace tandem
