#include "proxy/io/sysctl.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <sstream>
#include <system_error>

namespace tandem {
namespace {

/// sysctl(8) writes an interface name's dots as '/' in a dotted key.
std::string keyName(const std::string& interface) {
  std::string s = interface;
  std::replace(s.begin(), s.end(), '.', '/');
  return s;
}

int asInt(const std::optional<std::string>& v) {
  if (!v) return -1;
  try {
    return std::stoi(*v);
  } catch (const std::exception&) {
    return -1;
  }
}

}  // namespace

std::vector<SysctlProblem> checkSysctls(const std::vector<std::string>& interfaces,
                                        const SysctlReader& read) {
  std::vector<SysctlProblem> problems;
  auto problem = [&](const std::string& key, const std::optional<std::string>& actual,
                     std::string needed, std::string fix, std::string why) {
    problems.push_back(
        {key, actual.value_or("unreadable"), std::move(needed), std::move(fix), std::move(why)});
  };

  const std::string forward = "net.ipv4.ip_forward";
  if (auto v = read(forward); asInt(v) != 1) {
    problem(forward, v, "1", "1", "tandem forwards the rewritten packets to clients and backends");
  }

  // accept_local: on if `all` or the receiving interface has it (IN_DEV_ORCONF).
  const std::string all_local = "net.ipv4.conf.all.accept_local";
  const auto all_local_value = read(all_local);
  bool local_ok = asInt(all_local_value) == 1;
  if (!local_ok && !interfaces.empty()) {
    local_ok = std::all_of(interfaces.begin(), interfaces.end(), [&](const std::string& i) {
      return asInt(read("net.ipv4.conf." + keyName(i) + ".accept_local")) == 1;
    });
  }
  if (!local_ok) {
    problem(all_local, all_local_value, "1", "1",
            "packets whose source tandem rewrote to a local address (VIP, SNAT address) are "
            "martians otherwise");
  }

  // rp_filter: the receiving interface uses max(all, interface); strict (1) refuses them.
  const std::string all_rp = "net.ipv4.conf.all.rp_filter";
  const auto all_rp_value = read(all_rp);
  const char* rp_why =
      "strict reverse-path filtering drops packets whose source tandem rewrote to a local "
      "address";
  if (asInt(all_rp_value) == 1) {
    problem(all_rp, all_rp_value, "0 or 2", "2", rp_why);
  }
  for (const std::string& i : interfaces) {
    const std::string key = "net.ipv4.conf." + keyName(i) + ".rp_filter";
    if (auto v = read(key); asInt(v) == 1) problem(key, v, "0 or 2", "2", rp_why);
  }
  return problems;
}

std::vector<std::string> snatPortWarnings(const EngineConfig& config, const SysctlReader& read) {
  std::vector<std::string> out;
  const std::string key = "net.ipv4.ip_local_port_range";
  const auto range = read(key);
  if (!range) return out;
  std::istringstream in(*range);
  unsigned lo = 0, hi = 0;
  if (!(in >> lo >> hi)) return out;
  for (const ServiceConfig& s : config.services) {
    if (s.addressing != Addressing::kSnat || s.snat_port_max < lo || s.snat_port_min > hi) continue;
    out.push_back("service." + s.name + ".snat_ports " + std::to_string(s.snat_port_min) + "-" +
                  std::to_string(s.snat_port_max) + " overlaps " + key + " " + std::to_string(lo) +
                  "-" + std::to_string(hi) + ": connections this host opens from " +
                  s.snat_addr.toString() +
                  " may lose their replies to tandem (reserve the range in "
                  "net.ipv4.ip_local_reserved_ports, or move one of the ranges)");
  }
  return out;
}

std::vector<std::string> serviceInterfaces(const EngineConfig& config) {
  std::vector<uint32_t> addrs;
  for (const ServiceConfig& s : config.services) {
    addrs.push_back(s.vip.addr.v4());
    for (const Endpoint& b : s.backends) addrs.push_back(b.addr.v4());
    if (s.addressing == Addressing::kSnat) addrs.push_back(s.snat_addr.v4());
  }
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) throw std::system_error(errno, std::generic_category(), "getifaddrs");
  std::unique_ptr<ifaddrs, decltype(&freeifaddrs)> guard(list, freeifaddrs);

  std::vector<std::string> out;
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_netmask == nullptr || i->ifa_addr->sa_family != AF_INET) {
      continue;
    }
    const auto* in = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    const auto* mask = reinterpret_cast<const sockaddr_in*>(i->ifa_netmask);
    const uint32_t a = ntohl(in->sin_addr.s_addr);
    const uint32_t m = ntohl(mask->sin_addr.s_addr);
    const bool carries =
        std::any_of(addrs.begin(), addrs.end(), [&](uint32_t x) { return (x & m) == (a & m); });
    if (carries && std::find(out.begin(), out.end(), i->ifa_name) == out.end()) {
      out.emplace_back(i->ifa_name);
    }
  }
  return out;
}

std::string sysctlPath(const std::string& key) {
  std::string path = "/proc/sys/";
  for (char c : key) path += c == '.' ? '/' : c == '/' ? '.' : c;
  return path;
}

std::optional<std::string> readSysctl(const std::string& key) {
  std::ifstream f(sysctlPath(key));
  std::string value;
  if (!f || !std::getline(f, value)) return std::nullopt;
  return value;
}

void writeSysctl(const std::string& key, const std::string& value) {
  std::ofstream f(sysctlPath(key));
  if (f) f << value << '\n';
  if (f) f.flush();
  if (!f) throw std::system_error(errno, std::generic_category(), "cannot set " + key);
}

}  // namespace tandem
