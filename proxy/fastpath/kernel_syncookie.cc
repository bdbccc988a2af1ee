#include "proxy/fastpath/kernel_syncookie.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/fastpath/bpf_util.h"
#include "proxy/io/log.h"

namespace tandem {

extern const uint8_t kSynCookieBpfObject[];
extern const size_t kSynCookieBpfObjectSize;

namespace {

// The fallback without tcx: a cls_bpf filter one priority ahead of the fast path's
// (kernel_fastpath.cc, 0x7464), so it runs first; TC_ACT_UNSPEC continues to the next filter.
constexpr uint32_t kTcHandle = 0x7463;

using bpfutil::errnoText;

}  // namespace

struct KernelSynCookie::Impl {
  bpf_object* obj = nullptr;
  int prog_fd = -1;
  int config_fd = -1;
  int keys_fd = -1;
  int services_fd = -1;
  int stats_fd = -1;
  int binds_fd = -1;
  std::vector<bpfutil::TcIngress> attachments;

  ~Impl() {
    for (auto& a : attachments) bpfutil::detachTcIngress(a, "syn cookies");
    if (obj) bpf_object__close(obj);
  }
};

KernelSynCookie::KernelSynCookie(int fp_flows_fd, int fp_events_fd)
    : impl_(std::make_unique<Impl>()) {
  // Loaded without a verifier log (the full trace of a program this size is megabytes, and the
  // kernel refuses a load whose log does not fit); only if that fails, again with a log large
  // enough to say why.
  for (int attempt = 0;; ++attempt) {
    std::string log(attempt == 0 ? 0 : 64u << 20, '\0');
    if (load(fp_flows_fd, fp_events_fd, attempt == 0 ? nullptr : &log)) return;
  }
}

bool KernelSynCookie::load(int fp_flows_fd, int fp_events_fd, std::string* log) {
  Impl& m = *impl_;
  if (m.obj) {
    bpf_object__close(m.obj);
    m.obj = nullptr;
  }
  bpf_object_open_opts open_opts{};
  open_opts.sz = sizeof open_opts;
  open_opts.object_name = "tandem_syncookie";
  if (log != nullptr) {
    open_opts.kernel_log_buf = log->data();
    open_opts.kernel_log_size = log->size();
  }
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
  bpf_map* binds = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_BINDS_MAP);
  bpf_map* events = bpf_object__find_map_by_name(m.obj, TANDEM_SYN_EVENTS_MAP);
  if (!prog || !config || !keys || !services || !stats || !fp_flows || !binds || !events)
    throw std::runtime_error("syn cookies: the BPF object lacks a map or the program");
  if (fp_flows_fd >= 0) {
    if (int err = bpf_map__reuse_fd(fp_flows, fp_flows_fd); err)
      throw std::runtime_error("syn cookies: sharing the fast path's flow map: " + errnoText(err));
  }
  if (fp_events_fd >= 0) {
    if (int err = bpf_map__reuse_fd(events, fp_events_fd); err)
      throw std::runtime_error("syn cookies: sharing the fast path's ring: " + errnoText(err));
  }
  if (int err = bpf_object__load(m.obj); err) {
    if (log == nullptr) return false;
    throw std::runtime_error(bpfutil::loadError("syn cookies", err, *log));
  }
  m.prog_fd = bpf_program__fd(prog);
  m.config_fd = bpf_map__fd(config);
  m.keys_fd = bpf_map__fd(keys);
  m.services_fd = bpf_map__fd(services);
  m.stats_fd = bpf_map__fd(stats);
  m.binds_fd = bpf_map__fd(binds);
  return true;
}

KernelSynCookie::~KernelSynCookie() = default;

void KernelSynCookie::attach(const std::string& ifname) {
  Impl& m = *impl_;
  // First in the chain: the fast path's program ends it on SYNs it does not know.
  m.attachments.push_back(
      bpfutil::attachTcIngress(m.prog_fd, ifname, /*first=*/true, kTcHandle, "syn cookies"));
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

bool KernelSynCookie::putService(const tandem_syn_service& service, uint8_t flags) noexcept {
  return bpf_map_update_elem(impl_->services_fd, &service, &flags, BPF_ANY) == 0;
}

bool KernelSynCookie::eraseService(const tandem_syn_service& service) noexcept {
  return bpf_map_delete_elem(impl_->services_fd, &service) == 0;
}

bool KernelSynCookie::putBind(const tandem_syn_service& service,
                              const tandem_syn_bind& bind) noexcept {
  return bpf_map_update_elem(impl_->binds_fd, &service, &bind, BPF_ANY) == 0;
}

std::vector<uint64_t> KernelSynCookie::stats() const noexcept {
  return bpfutil::sumPerCpu(impl_->stats_fd, TANDEM_SYN_ST_COUNT);
}

int KernelSynCookie::testRun(std::vector<uint8_t>& frame) noexcept {
  return bpfutil::testRun(impl_->prog_fd, frame);
}

}  // namespace tandem
