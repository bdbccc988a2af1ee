#include "proxy/fastpath/kernel_fastpath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/io/log.h"

namespace tandem {

extern const uint8_t kFastPathBpfObject[];
extern const size_t kFastPathBpfObjectSize;

namespace {

// enum bpf_attach_type in the kernel's uapi since 6.6 (libbpf 1.1's headers predate tcx):
// ..., BPF_STRUCT_OPS = 44, BPF_NETFILTER = 45, BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47.
constexpr int kBpfTcxIngress = 46;

// Priority and handle of the classic cls_bpf filter (the fallback without tcx).
constexpr uint32_t kTcPriority = 0x7464;  // "td"
constexpr uint32_t kTcHandle = 0x7464;

std::string errnoText(int err) { return std::string(std::strerror(err < 0 ? -err : err)); }

/// The end of a verifier log: its last lines say why.
std::string logExcerpt(const std::string& log) {
  constexpr size_t kMax = 3000;
  std::string s = log.substr(0, log.find('\0'));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  if (s.size() > kMax) s = "..." + s.substr(s.size() - kMax);
  return s;
}

}  // namespace

struct KernelFastPath::Impl {
  struct Attachment {
    std::string ifname;
    int ifindex = 0;
    int link_fd = -1;        // tcx link: detaches when closed
    bool tc_filter = false;  // fallback: a cls_bpf filter we must delete
  };

  bpf_object* obj = nullptr;
  int prog_fd = -1;
  int flows_fd = -1;
  int stats_fd = -1;
  ring_buffer* events = nullptr;
  const std::function<void(const tandem_fp_event&)>* sink = nullptr;
  std::vector<Attachment> attachments;
  std::string log;

  ~Impl() {
    for (auto& a : attachments) detach(a);
    if (events) ring_buffer__free(events);
    if (obj) bpf_object__close(obj);
  }

  static void detach(Attachment& a) noexcept {
    if (a.link_fd >= 0) close(a.link_fd);
    a.link_fd = -1;
    if (a.tc_filter) {
      bpf_tc_hook hook{};
      hook.sz = sizeof hook;
      hook.ifindex = a.ifindex;
      hook.attach_point = BPF_TC_INGRESS;
      bpf_tc_opts opts{};
      opts.sz = sizeof opts;
      opts.handle = kTcHandle;
      opts.priority = kTcPriority;
      const int err = bpf_tc_detach(&hook, &opts);
      if (err && err != -ENOENT)
        logf(LogLevel::kWarn, "fast path: removing the tc filter on %s: %s", a.ifname.c_str(),
             errnoText(err).c_str());
      a.tc_filter = false;
    }
  }

  static int onEvent(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(tandem_fp_event) || self->sink == nullptr) return 0;
    tandem_fp_event ev;
    std::memcpy(&ev, data, sizeof ev);
    (*self->sink)(ev);
    return 0;
  }
};

KernelFastPath::KernelFastPath(uint32_t max_entries) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  if (max_entries == 0) throw std::runtime_error("fast path: max_entries must be positive");
  m.log.assign(256 * 1024, '\0');
  bpf_object_open_opts open_opts{};  // LIBBPF_OPTS is a GNU statement expression
  open_opts.sz = sizeof open_opts;
  open_opts.object_name = "tandem_fastpath";
  open_opts.kernel_log_buf = m.log.data();
  open_opts.kernel_log_size = m.log.size();
  m.obj = bpf_object__open_mem(kFastPathBpfObject, kFastPathBpfObjectSize, &open_opts);
  if (m.obj == nullptr) {
    const int err = errno;
    throw std::runtime_error("fast path: opening the BPF object: " + errnoText(err));
  }
  bpf_map* flows = bpf_object__find_map_by_name(m.obj, TANDEM_FP_FLOWS_MAP);
  bpf_map* stats = bpf_object__find_map_by_name(m.obj, TANDEM_FP_STATS_MAP);
  bpf_map* events = bpf_object__find_map_by_name(m.obj, TANDEM_FP_EVENTS_MAP);
  bpf_program* prog = bpf_object__find_program_by_name(m.obj, TANDEM_FP_PROG);
  if (!flows || !stats || !events || !prog)
    throw std::runtime_error("fast path: the BPF object lacks a map or the program");
  if (int err = bpf_map__set_max_entries(flows, max_entries); err)
    throw std::runtime_error("fast path: sizing " TANDEM_FP_FLOWS_MAP ": " + errnoText(err));
  if (int err = bpf_object__load(m.obj); err) {
    std::string msg = "fast path: loading the BPF program: " + errnoText(err);
    const std::string excerpt = logExcerpt(m.log);
    if (!excerpt.empty()) msg += "\nverifier log (end):\n" + excerpt;
    errno = err < 0 ? -err : err;  // the caller tells "no permission" from "refused"
    throw std::runtime_error(msg);
  }
  m.log.clear();
  m.log.shrink_to_fit();
  m.prog_fd = bpf_program__fd(prog);
  m.flows_fd = bpf_map__fd(flows);
  m.stats_fd = bpf_map__fd(stats);
  m.events = ring_buffer__new(bpf_map__fd(events), &Impl::onEvent, &m, nullptr);
  if (m.events == nullptr) {
    const int err = errno;
    throw std::runtime_error("fast path: opening the event ring: " + errnoText(err));
  }
}

KernelFastPath::~KernelFastPath() = default;

void KernelFastPath::attach(const std::string& ifname) {
  Impl& m = *impl_;
  for (const auto& a : m.attachments)
    if (a.ifname == ifname)
      throw std::runtime_error("fast path: already attached to " + ifname);
  Impl::Attachment a;
  a.ifname = ifname;
  a.ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (a.ifindex == 0) {
    const int err = errno;
    throw std::runtime_error("fast path: interface " + ifname + ": " + errnoText(err));
  }
  // tcx (Linux 6.6+): the link lives as long as its fd, so a dead tandemd stops translating.
  a.link_fd = bpf_link_create(m.prog_fd, a.ifindex, static_cast<bpf_attach_type>(kBpfTcxIngress),
                              nullptr);
  if (a.link_fd < 0) {
    const int err = -a.link_fd;
    if (err != EINVAL && err != EOPNOTSUPP)
      throw std::runtime_error("fast path: tcx attach to " + ifname + ": " + errnoText(err));
    // A kernel without tcx (before 6.6): a classic clsact + cls_bpf filter, removed by the
    // destructor. A SIGKILLed tandemd leaves it behind, translating with a frozen map, until the
    // next attach on that interface replaces it (same handle and priority, BPF_TC_F_REPLACE).
    a.link_fd = -1;
    bpf_tc_hook hook{};
    hook.sz = sizeof hook;
    hook.ifindex = a.ifindex;
    hook.attach_point = BPF_TC_INGRESS;
    int rc = bpf_tc_hook_create(&hook);
    if (rc && rc != -EEXIST)
      throw std::runtime_error("fast path: clsact qdisc on " + ifname + ": " + errnoText(rc));
    bpf_tc_opts opts{};
    opts.sz = sizeof opts;
    opts.prog_fd = m.prog_fd;
    opts.flags = BPF_TC_F_REPLACE;
    opts.handle = kTcHandle;
    opts.priority = kTcPriority;
    rc = bpf_tc_attach(&hook, &opts);
    if (rc)
      throw std::runtime_error("fast path: tc filter on " + ifname + ": " + errnoText(rc) +
                               " (tcx: " + errnoText(err) + ")");
    a.tc_filter = true;
    logf(LogLevel::kWarn,
         "fast path: no tcx on %s (%s): attached as a tc cls_bpf filter instead, which stays "
         "behind if tandemd is killed",
         ifname.c_str(), errnoText(err).c_str());
  }
  m.attachments.push_back(std::move(a));
}

std::vector<std::string> KernelFastPath::attached() const {
  std::vector<std::string> names;
  for (const auto& a : impl_->attachments) names.push_back(a.ifname);
  return names;
}

bool KernelFastPath::update(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  return bpf_map_update_elem(impl_->flows_fd, &key, &value, BPF_ANY) == 0;
}

bool KernelFastPath::lookup(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept {
  return bpf_map_lookup_elem(impl_->flows_fd, &key, &value) == 0;
}

bool KernelFastPath::erase(const tandem_fp_key& key) noexcept {
  return bpf_map_delete_elem(impl_->flows_fd, &key) == 0;
}

size_t KernelFastPath::clear() noexcept {
  // Collect first, then delete: get_next_key(NULL) after each delete would rescan the buckets.
  std::vector<tandem_fp_key> keys;
  tandem_fp_key key{}, next{};
  const tandem_fp_key* prev = nullptr;
  try {
    while (bpf_map_get_next_key(impl_->flows_fd, prev, &next) == 0) {
      keys.push_back(next);
      key = next;
      prev = &key;
    }
  } catch (const std::bad_alloc&) {
    // Delete what was collected; the rest stays (the caller can clear again).
  }
  size_t n = 0;
  for (const auto& k : keys)
    if (bpf_map_delete_elem(impl_->flows_fd, &k) == 0) ++n;
  return n;
}

int KernelFastPath::flowsMapFd() const noexcept { return impl_->flows_fd; }

std::vector<uint64_t> KernelFastPath::stats() const noexcept {
  std::vector<uint64_t> out;
  try {
    out.assign(TANDEM_FP_ST_COUNT, 0);
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return out;
    std::vector<uint64_t> per_cpu(static_cast<size_t>(ncpu));
    for (uint32_t i = 0; i < TANDEM_FP_ST_COUNT; ++i) {
      if (bpf_map_lookup_elem(impl_->stats_fd, &i, per_cpu.data()) != 0) continue;
      for (uint64_t v : per_cpu) out[i] += v;
    }
  } catch (const std::bad_alloc&) {
  }
  return out;
}

int KernelFastPath::eventFd() const noexcept { return ring_buffer__epoll_fd(impl_->events); }

size_t KernelFastPath::drainEvents(
    const std::function<void(const tandem_fp_event&)>& fn) noexcept {
  impl_->sink = &fn;
  const int n = ring_buffer__consume(impl_->events);
  impl_->sink = nullptr;
  return n > 0 ? static_cast<size_t>(n) : 0;
}

int KernelFastPath::testRun(std::vector<uint8_t>& pkt, uint32_t* mark_out) noexcept {
  try {
    std::vector<uint8_t> in(ETH_HLEN + pkt.size());
    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4.
    const uint8_t eth[ETH_HLEN] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
    std::memcpy(in.data(), eth, ETH_HLEN);
    if (!pkt.empty()) std::memcpy(in.data() + ETH_HLEN, pkt.data(), pkt.size());
    std::vector<uint8_t> out(in.size() + 256);
    __sk_buff ctx_in{}, ctx_out{};
    if (mark_out) ctx_in.mark = *mark_out;
    bpf_test_run_opts opts{};
    opts.sz = sizeof opts;
    opts.data_in = in.data();
    opts.data_out = out.data();
    opts.data_size_in = static_cast<uint32_t>(in.size());
    opts.data_size_out = static_cast<uint32_t>(out.size());
    opts.ctx_in = &ctx_in;
    opts.ctx_out = &ctx_out;
    opts.ctx_size_in = sizeof ctx_in;
    opts.ctx_size_out = sizeof ctx_out;
    opts.repeat = 1;
    if (bpf_prog_test_run_opts(impl_->prog_fd, &opts) != 0) return -1;
    if (opts.data_size_out < ETH_HLEN) return -1;
    pkt.assign(out.begin() + ETH_HLEN, out.begin() + opts.data_size_out);
    if (mark_out) *mark_out = ctx_out.mark;
    return static_cast<int>(opts.retval);
  } catch (const std::bad_alloc&) {
    return -1;
  }
}

}  // namespace tandem
