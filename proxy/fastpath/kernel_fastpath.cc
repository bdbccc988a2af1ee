#include "proxy/fastpath/kernel_fastpath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "proxy/fastpath/bpf_util.h"
#include "proxy/io/log.h"

namespace tandem {

extern const uint8_t kFastPathBpfObject[];
extern const size_t kFastPathBpfObjectSize;

namespace {

// Handle and priority of the classic cls_bpf filter (the fallback without tcx).
constexpr uint32_t kTcHandle = 0x7464;  // "td"

using bpfutil::errnoText;

}  // namespace

struct KernelFastPath::Impl {
  bpf_object* obj = nullptr;
  int prog_fd = -1;
  int flows_fd = -1;
  int events_fd = -1;
  const std::function<void(const tandem_fp_bind_event&)>* bind_sink = nullptr;
  int stats_fd = -1;
  int config_fd = -1;
  uint32_t config_bits = 0;  ///< what TANDEM_FP_CONFIG_MAP holds

  bool setConfigBit(uint32_t bit, bool on) noexcept {
    const uint32_t key = 0;
    const uint32_t value = on ? (config_bits | bit) : (config_bits & ~bit);
    if (bpf_map_update_elem(config_fd, &key, &value, BPF_ANY) != 0) return false;
    config_bits = value;
    return true;
  }
  ring_buffer* events = nullptr;
  const std::function<void(const tandem_fp_event&)>* sink = nullptr;
  const std::function<void(const tandem_fp_splice_event&)>* splice_sink = nullptr;
  std::vector<bpfutil::TcIngress> attachments;
  std::string log;

  ~Impl() {
    for (auto& a : attachments) bpfutil::detachTcIngress(a, "fast path");
    if (events) ring_buffer__free(events);
    if (obj) bpf_object__close(obj);
  }

  static int onEvent(void* ctx, void* data, size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(tandem_fp_event)) return 0;
    tandem_fp_event ev;
    std::memcpy(&ev, data, sizeof ev);
    if (ev.kind == TANDEM_FP_EV_BIND) {
      if (size < sizeof(tandem_fp_bind_event) || self->bind_sink == nullptr) return 0;
      tandem_fp_bind_event bev;
      std::memcpy(&bev, data, sizeof bev);
      (*self->bind_sink)(bev);
      return 0;
    }
    if (ev.kind == TANDEM_FP_EV_SPLICE) {
      if (size < sizeof(tandem_fp_splice_event) || self->splice_sink == nullptr) return 0;
      tandem_fp_splice_event sev;
      std::memcpy(&sev, data, sizeof sev);
      (*self->splice_sink)(sev);
      return 0;
    }
    if (self->sink != nullptr) (*self->sink)(ev);
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
  bpf_map* config = bpf_object__find_map_by_name(m.obj, TANDEM_FP_CONFIG_MAP);
  bpf_program* prog = bpf_object__find_program_by_name(m.obj, TANDEM_FP_PROG);
  if (!flows || !stats || !events || !config || !prog)
    throw std::runtime_error("fast path: the BPF object lacks a map or the program");
  if (int err = bpf_map__set_max_entries(flows, max_entries); err)
    throw std::runtime_error("fast path: sizing " TANDEM_FP_FLOWS_MAP ": " + errnoText(err));
  if (int err = bpf_object__load(m.obj); err)
    throw std::runtime_error(bpfutil::loadError("fast path", err, m.log));
  m.log.clear();
  m.log.shrink_to_fit();
  m.prog_fd = bpf_program__fd(prog);
  m.flows_fd = bpf_map__fd(flows);
  m.stats_fd = bpf_map__fd(stats);
  m.config_fd = bpf_map__fd(config);
  m.events_fd = bpf_map__fd(events);
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
  // tcx (Linux 6.6+): the link lives as long as its fd, so a dead tandemd stops translating.
  m.attachments.push_back(
      bpfutil::attachTcIngress(m.prog_fd, ifname, /*first=*/false, kTcHandle, "fast path"));
}

std::vector<std::string> KernelFastPath::attached() const {
  std::vector<std::string> names;
  for (const auto& a : impl_->attachments) names.push_back(a.ifname);
  return names;
}

bool KernelFastPath::update(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept {
  return bpf_map_update_elem(impl_->flows_fd, &key, &value, BPF_ANY) == 0;
}

size_t KernelFastPath::updateBatch(const tandem_fp_key* keys, const tandem_fp_rewrite* values,
                                   size_t n) noexcept {
  if (n == 0) return 0;
  auto count = static_cast<__u32>(n);
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  if (bpf_map_update_batch(impl_->flows_fd, keys, values, &count, &opts) == 0) return n;
  return count < n ? count : n - 1;  // count: the entries written before the failing one
}

bool KernelFastPath::lookup(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept {
  return bpf_map_lookup_elem(impl_->flows_fd, &key, &value) == 0;
}

bool KernelFastPath::erase(const tandem_fp_key& key) noexcept {
  return bpf_map_delete_elem(impl_->flows_fd, &key) == 0;
}

bool KernelFastPath::lookupAndErase(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept {
  return bpf_map_lookup_and_delete_elem(impl_->flows_fd, &key, &value) == 0;
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
int KernelFastPath::eventsMapFd() const noexcept { return impl_->events_fd; }

std::vector<uint64_t> KernelFastPath::stats() const noexcept {
  return bpfutil::sumPerCpu(impl_->stats_fd, TANDEM_FP_ST_COUNT);
}

int KernelFastPath::eventFd() const noexcept { return ring_buffer__epoll_fd(impl_->events); }

size_t KernelFastPath::drainEvents(
    const std::function<void(const tandem_fp_event&)>& fn) noexcept {
  return drainEvents(fn, nullptr);
}

size_t KernelFastPath::drainEvents(
    const std::function<void(const tandem_fp_event&)>& close,
    const std::function<void(const tandem_fp_splice_event&)>& splice,
    const std::function<void(const tandem_fp_bind_event&)>& bind) noexcept {
  impl_->sink = &close;
  impl_->splice_sink = splice ? &splice : nullptr;
  impl_->bind_sink = bind ? &bind : nullptr;
  const int n = ring_buffer__consume(impl_->events);
  impl_->sink = nullptr;
  impl_->splice_sink = nullptr;
  impl_->bind_sink = nullptr;
  return n > 0 ? static_cast<size_t>(n) : 0;
}

bool KernelFastPath::setRedirect(bool on) noexcept {
  return impl_->setConfigBit(TANDEM_FP_CFG_REDIRECT, on);
}

bool KernelFastPath::setTestNoRoute(bool on) noexcept {
  return impl_->setConfigBit(TANDEM_FP_CFG_TEST_NO_ROUTE, on);
}

int KernelFastPath::testRun(std::vector<uint8_t>& pkt, uint32_t* mark_out,
                            uint8_t* eth_out, uint32_t gso_size) noexcept {
  try {
    std::vector<uint8_t> frame(ETH_HLEN + pkt.size());
    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, IPv4.
    const uint8_t eth[ETH_HLEN] = {2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00};
    std::memcpy(frame.data(), eth, ETH_HLEN);
    if (!pkt.empty()) std::memcpy(frame.data() + ETH_HLEN, pkt.data(), pkt.size());
    __sk_buff ctx{};
    if (mark_out) ctx.mark = *mark_out;
    if (gso_size != 0) {
      ctx.gso_size = gso_size;
      ctx.gso_segs = 2;
    }
    const int rc = bpfutil::testRun(impl_->prog_fd, frame, &ctx);
    if (rc < 0 || frame.size() < ETH_HLEN) return -1;
    if (eth_out) std::memcpy(eth_out, frame.data(), ETH_HLEN);
    pkt.assign(frame.begin() + ETH_HLEN, frame.end());
    if (mark_out) *mark_out = ctx.mark;
    return rc;
  } catch (const std::bad_alloc&) {
    return -1;
  }
}

}  // namespace tandem
