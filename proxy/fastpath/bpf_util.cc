#include "proxy/fastpath/bpf_util.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>

#include "proxy/io/log.h"

namespace tandem::bpfutil {
namespace {

// The kernel's uapi since 6.6 (libbpf 1.1's headers predate tcx): BPF_TCX_INGRESS in enum
// bpf_attach_type (..., BPF_NETFILTER = 45, BPF_TCX_INGRESS = 46), and the mprog flag that puts
// a program before every other one when no relative program is named.
constexpr int kBpfTcxIngress = 46;
constexpr uint32_t kBpfFBefore = 1u << 3;

}  // namespace

std::string errnoText(int err) { return std::string(std::strerror(err < 0 ? -err : err)); }

std::string loadError(const std::string& what, int err, const std::string& log) {
  constexpr size_t kMax = 3000;
  std::string msg = what + ": loading the BPF program: " + errnoText(err);
  std::string s = log.substr(0, log.find('\0'));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > kMax) s = "..." + s.substr(s.size() - kMax);
  if (!s.empty()) msg += "\nverifier log (end):\n" + s;
  errno = err < 0 ? -err : err;
  return msg;
}

TcIngress attachTcIngress(int prog_fd, const std::string& ifname, bool first, uint32_t tc_handle,
                          const std::string& what) {
  TcIngress a;
  a.ifname = ifname;
  a.ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (a.ifindex == 0) {
    const int err = errno;
    throw std::runtime_error(what + ": interface " + ifname + ": " + errnoText(err));
  }
  bpf_link_create_opts opts{};  // LIBBPF_OPTS is a GNU statement expression
  opts.sz = sizeof opts;
  opts.flags = first ? kBpfFBefore : 0;
  a.link_fd = bpf_link_create(prog_fd, a.ifindex, static_cast<bpf_attach_type>(kBpfTcxIngress),
                              &opts);
  if (a.link_fd >= 0) return a;
  const int err = -a.link_fd;
  a.link_fd = -1;
  if (err != EINVAL && err != EOPNOTSUPP)
    throw std::runtime_error(what + ": tcx attach to " + ifname + ": " + errnoText(err));
  // A kernel without tcx (before 6.6): a classic clsact + cls_bpf filter, removed by
  // detachTcIngress. A SIGKILLed tandemd leaves it behind, with frozen maps, until the next
  // attach on that interface replaces it (same handle and priority, BPF_TC_F_REPLACE).
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = a.ifindex;
  hook.attach_point = BPF_TC_INGRESS;
  int rc = bpf_tc_hook_create(&hook);
  if (rc && rc != -EEXIST)
    throw std::runtime_error(what + ": clsact qdisc on " + ifname + ": " + errnoText(rc));
  bpf_tc_opts tc{};
  tc.sz = sizeof tc;
  tc.prog_fd = prog_fd;
  tc.flags = BPF_TC_F_REPLACE;
  tc.handle = tc_handle;
  tc.priority = tc_handle;
  rc = bpf_tc_attach(&hook, &tc);
  if (rc)
    throw std::runtime_error(what + ": tc filter on " + ifname + ": " + errnoText(rc) +
                             " (tcx: " + errnoText(err) + ")");
  a.tc_filter = true;
  a.tc_handle = tc_handle;
  logf(LogLevel::kWarn,
       "%s: no tcx on %s (%s): attached as a tc cls_bpf filter instead, which stays behind if "
       "tandemd is killed",
       what.c_str(), ifname.c_str(), errnoText(err).c_str());
  return a;
}

void detachTcIngress(TcIngress& a, const std::string& what) noexcept {
  if (a.link_fd >= 0) close(a.link_fd);
  a.link_fd = -1;
  if (!a.tc_filter) return;
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = a.ifindex;
  hook.attach_point = BPF_TC_INGRESS;
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.handle = a.tc_handle;
  opts.priority = a.tc_handle;
  const int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT)
    logf(LogLevel::kWarn, "%s: removing the tc filter on %s: %s", what.c_str(), a.ifname.c_str(),
         errnoText(err).c_str());
  a.tc_filter = false;
}

std::vector<uint64_t> sumPerCpu(int map_fd, uint32_t count) noexcept {
  std::vector<uint64_t> out;
  try {
    out.assign(count, 0);
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return out;
    std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
    for (uint32_t i = 0; i < count; ++i) {
      if (bpf_map_lookup_elem(map_fd, &i, per_cpu.data()) != 0) continue;
      for (uint64_t v : per_cpu) out[i] += v;
    }
  } catch (const std::bad_alloc&) {
  }
  return out;
}

int testRun(int prog_fd, std::vector<uint8_t>& data, __sk_buff* ctx) noexcept {
  try {
    std::vector<uint8_t> out(data.size() + 256);
    __sk_buff ctx_out{};
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = data.data();
    opts.data_out = out.data();
    opts.data_size_in = static_cast<uint32_t>(data.size());
    opts.data_size_out = static_cast<uint32_t>(out.size());
    if (ctx != nullptr) {
      opts.ctx_in = ctx;
      opts.ctx_out = &ctx_out;
      opts.ctx_size_in = sizeof *ctx;
      opts.ctx_size_out = sizeof ctx_out;
    }
    opts.repeat = 1;
    if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) return -1;
    data.assign(out.begin(), out.begin() + opts.data_size_out);
    if (ctx != nullptr) *ctx = ctx_out;
    return static_cast<int>(opts.retval);
  } catch (const std::bad_alloc&) {
    return -1;
  }
}

}  // namespace tandem::bpfutil
