#include "proxy/fastpath/kernel_syncookie.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/io/log.h"

namespace tandem {

extern const uint8_t kSynCookieBpfObject[];
extern const size_t kSynCookieBpfObjectSize;

namespace {

// The kernel's uapi since 6.6 (libbpf 1.1's headers predate tcx): BPF_TCX_INGRESS, and the
// mprog flag that puts a program before every other one when no relative program is named.
constexpr int kBpfTcxIngress = 46;
constexpr uint32_t kBpfFBefore = 1u << 3;

// The fallback without tcx: one priority ahead of the fast path's filter (kernel_fastpath.cc,
// 0x7464), so it runs first; TC_ACT_UNSPEC continues to the next filter.
constexpr uint32_t kTcPriority = 0x7463;
constexpr uint32_t kTcHandle = 0x7463;

std::string errnoText(int err) { return std::string(std::strerror(err < 0 ? -err : err)); }

}  // namespace

struct KernelSynCookie::Impl {
  struct Attachment {
    std::string ifname;
    int ifindex = 0;
    int link_fd = -1;
    bool tc_filter = false;
  };
  bpf_object* obj = nullptr;
  int prog_fd = -1;
  int config_fd = -1;
  int keys_fd = -1;
  int services_fd = -1;
  int stats_fd = -1;
  std::vector<Attachment> attachments;

  ~Impl() {
    for (auto& a : attachments) {
      if (a.link_fd >= 0) close(a.link_fd);
      if (a.tc_filter) {
        bpf_tc_hook hook{};
        hook.sz = sizeof hook;
        hook.ifindex = a.ifindex;
        hook.attach_point = BPF_TC_INGRESS;
        bpf_tc_opts opts{};
        opts.sz = sizeof opts;
        opts.handle = kTcHandle;
        opts.priority = kTcPriority;
        (void)bpf_tc_detach(&hook, &opts);
      }
    }
    if (obj) bpf_object__close(obj);
  }
};

KernelSynCookie::KernelSynCookie(int fp_flows_fd) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  std::string log(256 * 1024, '\0');
  bpf_object_open_opts open_opts{};
  open_opts.sz = sizeof open_opts;
  open_opts.object_name = "tandem_syncookie";
  open_opts.kernel_log_buf = log.data();
  open_opts.kernel_log_size = log.size();
  m.obj = bpf_object__open_mem(kSynCookieBpfObject, kSynCookieBpfObjectSize, &open_opts);
  if (m.obj == nullptr) {
    const int err = errno;
    throw std::runtime_error("syn cookies: opening the BPF object: " + errnoText(err));
  }
  bpf_program* prog = bpf_object__find_program_by_name(m.obj, TANDEM_SYN_PROG);
  bpf_map* config = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_CONFIG_MAP);
  bpf_map* keys = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_KEYS_MAP);
  bpf_map* services = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_SERVICES_MAP);
  bpf_map* stats = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_STATS_MAP);
  bpf_map* fp_flows = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_FP_FLOWS_MAP);
  if (!prog || !config || !keys || !services || !stats || !fp_flows)
    throw std::runtime_error("syn cookies: the BPF object lacks a map or the program");
  if (fp_flows_fd >= 0) {
    if (int err = bpf_map__reuse_fd(fp_flows, fp_flows_fd); err)
      throw std::runtime_error("syn cookies: sharing the fast path's flow map: " + errnoText(err));
  }
  if (int err = bpf_object__load(m.obj); err) {
    std::string msg = "syn cookies: loading the BPF program: " + errnoText(err);
    std::string s = log.substr(0, log.find('\0'));
    if (s.size() > 3000) s = "..." + s.substr(s.size() - 3000);
    if (!s.empty()) msg += "\nverifier log (end):\n" + s;
    errno = err < 0 ? -err : err;
    throw std::runtime_error(msg);
  }
  m.prog_fd = bpf_program__fd(prog);
  m.config_fd = bpf_map__fd(config);
  m.keys_fd = bpf_map__fd(keys);
  m.services_fd = bpf_map__fd(services);
  m.stats_fd = bpf_map__fd(stats);
}

KernelSynCookie::~KernelSynCookie() = default;

void KernelSynCookie::attach(const std::string& ifname) {
  Impl& m = *impl_;
  Impl::Attachment a;
  a.ifname = ifname;
  a.ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (a.ifindex == 0) {
    const int err = errno;
    throw std::runtime_error("syn cookies: interface " + ifname + ": " + errnoText(err));
  }
  bpf_link_create_opts opts{};
  opts.sz = sizeof opts;
  opts.flags = kBpfFBefore;  // first in the chain, whatever is attached already
  a.link_fd = bpf_link_create(m.prog_fd, a.ifindex, static_cast<bpf_attach_type>(kBpfTcxIngress),
                              &opts);
  if (a.link_fd < 0) {
    const int err = -a.link_fd;
    if (err != EINVAL && err != EOPNOTSUPP)
      throw std::runtime_error("syn cookies: tcx attach to " + ifname + ": " + errnoText(err));
    a.link_fd = -1;
    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = a.ifindex;
    hook.attach_point = BPF_TC_INGRESS;
    int rc = bpf_tc_hook_create(&hook);
    if (rc && rc != -EEXIST)
      throw std::runtime_error("syn cookies: clsact qdisc on " + ifname + ": " + errnoText(rc));
    bpf_tc_opts tc{};
    tc.sz = sizeof tc;
    tc.prog_fd = m.prog_fd;
    tc.flags = BPF_TC_F_REPLACE;
    tc.handle = kTcHandle;
    tc.priority = kTcPriority;
    rc = bpf_tc_attach(&hook, &tc);
    if (rc)
      throw std::runtime_error("syn cookies: tc filter on " + ifname + ": " + errnoText(rc) +
                               " (tcx: " + errnoText(err) + ")");
    a.tc_filter = true;
    logf(LogLevel::kWarn, "syn cookies: no tcx on %s: attached as a tc cls_bpf filter instead",
         ifname.c_str());
  }
  m.attachments.push_back(std::move(a));
}

bool KernelSynCookie::setConfig(const tandem_syn_config& config) noexcept {
  const uint32_t zero = 0;
  return bpf_map_update_elem(impl_->config_fd, &zero, &config, BPF_ANY) == 0;
}

bool KernelSynCookie::config(tandem_syn_config& out) const noexcept {
  const uint32_t zero = 0;
  return bpf_map_lookup_elem(impl_->config_fd, &zero, &out) == 0;
}

bool KernelSynCookie::putKey(uint64_t count, const tandem_syn_key& key) noexcept {
  return bpf_map_update_elem(impl_->keys_fd, &count, &key, BPF_ANY) == 0;
}

bool KernelSynCookie::eraseKey(uint64_t count) noexcept {
  return bpf_map_delete_elem(impl_->keys_fd, &count) == 0;
}

std::vector<uint64_t> KernelSynCookie::keyCounts() const {
  std::vector<uint64_t> out;
  uint64_t key = 0, next = 0;
  const uint64_t* prev = nullptr;
  while (bpf_map_get_next_key(impl_->keys_fd, prev, &next) == 0) {
    out.push_back(next);
    key = next;
    prev = &key;
  }
  return out;
}

bool KernelSynCookie::putService(const tandem_syn_service& service) noexcept {
  const uint8_t one = 1;
  return bpf_map_update_elem(impl_->services_fd, &service, &one, BPF_ANY) == 0;
}

bool KernelSynCookie::eraseService(const tandem_syn_service& service) noexcept {
  return bpf_map_delete_elem(impl_->services_fd, &service) == 0;
}

std::vector<uint64_t> KernelSynCookie::stats() const noexcept {
  std::vector<uint64_t> out;
  try {
    out.assign(TANDEM_SYN_ST_COUNT, 0);
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return out;
    std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
    for (uint32_t i = 0; i < TANDEM_SYN_ST_COUNT; ++i) {
      if (bpf_map_lookup_elem(impl_->stats_fd, &i, per_cpu.data()) != 0) continue;
      for (uint64_t v : per_cpu) out[i] += v;
    }
  } catch (const std::bad_alloc&) {
  }
  return out;
}

int KernelSynCookie::testRun(std::vector<uint8_t>& frame) noexcept {
  try {
    std::vector<uint8_t> out(frame.size() + 256);
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = frame.data();
    opts.data_out = out.data();
    opts.data_size_in = static_cast<uint32_t>(frame.size());
    opts.data_size_out = static_cast<uint32_t>(out.size());
    opts.repeat = 1;
    if (bpf_prog_test_run_opts(impl_->prog_fd, &opts) != 0) return -1;
    frame.assign(out.begin(), out.begin() + opts.data_size_out);
    return static_cast<int>(opts.retval);
  } catch (const std::bad_alloc&) {
    return -1;
  }
}

}  // namespace tandem
