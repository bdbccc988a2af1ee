#include "proxy/io/rules.h"

#include <cstdio>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "proxy/fastpath/fastpath_abi.h"
#include "proxy/io/subprocess.h"

namespace tandem {
namespace {

std::string host(const IpAddr& a) { return a.toString() + "/32"; }

/// Splits a line on blanks; quoted comments stay split, which is harmless for the token pairs
/// looked for here.
std::vector<std::string> tokens(std::string_view line) {
  std::vector<std::string> out;
  std::istringstream in{std::string(line)};
  std::string t;
  while (in >> t) out.push_back(t);
  return out;
}

std::string trimmed(const std::string& s) {
  size_t end = s.find_last_not_of(" \t\r\n");
  return end == std::string::npos ? std::string() : s.substr(0, end + 1);
}

}  // namespace

const char* rulesModeName(RulesMode mode) noexcept {
  switch (mode) {
    case RulesMode::kIptables: return "iptables";
    case RulesMode::kNone: return "none";
  }
  return "unknown";
}

std::optional<RulesMode> parseRulesMode(std::string_view text) noexcept {
  if (text == "iptables") return RulesMode::kIptables;
  if (text == "none") return RulesMode::kNone;
  return std::nullopt;
}

std::string rulesChain(uint16_t queue) { return "TANDEM-Q" + std::to_string(queue); }

std::string buildIptablesRules(const EngineConfig& config, uint16_t queue, bool fastpath) {
  const std::string chain = rulesChain(queue);
  // Match specs in order of first appearance; services sharing a backend or a SNAT range need
  // the rule once.
  std::vector<std::string> matches;
  std::set<std::string> seen;
  auto add = [&](std::string m) {
    if (seen.insert(m).second) matches.push_back(std::move(m));
  };
  for (const ServiceConfig& s : config.services) {
    add("-d " + host(s.vip.addr) + " -p tcp -m tcp --dport " + std::to_string(s.vip.port));
    if (s.addressing == Addressing::kTransparent) {
      for (const Endpoint& b : s.backends) {
        // Not to a local address: the proxy's own connections to the backend (health checks)
        // are ordinary sockets.
        add("-s " + host(b.addr) + " -p tcp -m tcp --sport " + std::to_string(b.port) +
            " -m addrtype ! --dst-type LOCAL");
      }
    } else {
      add("-d " + host(s.snat_addr) + " -p tcp -m tcp --dport " + std::to_string(s.snat_port_min) +
          ":" + std::to_string(s.snat_port_max));
    }
  }

  std::string out;
  out += "# tandemd: steers its services into NFQUEUE " + std::to_string(queue) +
         "; removed when tandemd stops\n";
  out += "*raw\n";
  out += ":" + chain + " - [0:0]\n";
  const std::string queue_num = std::to_string(queue);
  if (fastpath) {
    // Translated by the tc ingress program already: conntrack must not track it (the same
    // reason as below) and NFQUEUE must not see it again. Marked packets are nobody else's:
    // the program sets the mark only on packets it rewrote.
    char mark[16];
    std::snprintf(mark, sizeof(mark), "0x%08x", static_cast<unsigned>(TANDEM_FP_MARK));
    out += "-A " + chain + " -m mark --mark " + mark + " -j CT --notrack\n";
    out += "-A " + chain + " -m mark --mark " + mark + " -j RETURN\n";
  }
  for (const std::string& m : matches) {
    out += "-A " + chain + " " + m + " -j CT --notrack\n";
    out += "-A " + chain + " " + m + " -j NFQUEUE --queue-num " + queue_num + "\n";
  }
  // First in PREROUTING, so no other raw rule decides about these packets before tandem does.
  out += "-I PREROUTING 1 -p tcp -j " + chain + "\n";
  out += "COMMIT\n";
  return out;
}

std::string buildIptablesCleanup(std::string_view saved_raw_table, uint16_t queue) {
  const std::string chain = rulesChain(queue);
  bool chain_exists = false;
  std::vector<std::string> deletes;
  std::istringstream in{std::string(saved_raw_table)};
  std::string line;
  bool in_raw = false;
  while (std::getline(in, line)) {
    line = trimmed(line);
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '*') {
      in_raw = line == "*raw";
      continue;
    }
    if (!in_raw) continue;
    if (line.rfind(":" + chain + " ", 0) == 0) {
      chain_exists = true;
      continue;
    }
    std::vector<std::string> t = tokens(line);
    if (t.size() < 2 || t[0] != "-A" || t[1] == chain) continue;
    for (size_t i = 2; i + 1 < t.size(); ++i) {
      if ((t[i] == "-j" || t[i] == "-g") && t[i + 1] == chain) {
        deletes.push_back("-D" + line.substr(2));
        break;
      }
    }
  }
  if (!chain_exists && deletes.empty()) return "";

  std::string out = "*raw\n";
  for (const std::string& d : deletes) out += d + "\n";
  if (chain_exists) {
    out += "-F " + chain + "\n";
    out += "-X " + chain + "\n";
  }
  out += "COMMIT\n";
  return out;
}

IptablesRules::IptablesRules(uint16_t queue, std::string restore_cmd, std::string save_cmd)
    : queue_(queue), restore_cmd_(std::move(restore_cmd)), save_cmd_(std::move(save_cmd)) {}

void IptablesRules::restore(const std::string& text, const char* what) {
  ProcessResult r = runProcess({restore_cmd_, "--noflush", "--wait"}, text);
  if (r.exit_code != 0) {
    throw std::runtime_error(std::string(what) + ": " + restore_cmd_ + " exited with " +
                             std::to_string(r.exit_code) + ": " + trimmed(r.err));
  }
}

void IptablesRules::install(const EngineConfig& config, bool fastpath) {
  restore(buildIptablesRules(config, queue_, fastpath),
          ("install chain " + rulesChain(queue_)).c_str());
}

bool IptablesRules::remove() {
  ProcessResult saved = runProcess({save_cmd_, "-t", "raw"}, "");
  if (saved.exit_code != 0) {
    throw std::runtime_error("list rules: " + save_cmd_ + " exited with " +
                             std::to_string(saved.exit_code) + ": " + trimmed(saved.err));
  }
  std::string cleanup = buildIptablesCleanup(saved.out, queue_);
  if (cleanup.empty()) return false;
  restore(cleanup, ("remove chain " + rulesChain(queue_)).c_str());
  return true;
}

}  // namespace tandem
