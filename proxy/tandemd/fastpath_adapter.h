#pragma once
/// @file The daemon's side of the kernel fast path (docs/fastpath.md): FastPathPort over
/// KernelFastPath, through which the engine writes and erases map entries; the close events the
/// program reports, fed into Engine::fastPathClose from the event loop; the fast path's metrics.
/// Thin: which flows go on the fast path is the engine's decision.
///
/// Entries the engine writes through install() are kept until commit(), which the daemon calls
/// once the verdicts that preceded them are sent (NfQueue::setAfterVerdicts). A flow goes on the
/// fast path while the engine handles one of its segments; written at once, the entry would let
/// the flow's next segments, translated by the kernel, overtake that very segment, still waiting
/// for its verdict (docs/fastpath.md, "Reordering at install").

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "proxy/core/engine.h"
#include "proxy/core/fastpath_port.h"
#include "proxy/fastpath/kernel_fastpath.h"
#include "proxy/tandemd/config.h"

struct event_base;
struct event;

namespace tandem {

/// Names of the interfaces of the caller's network namespace that are up and not loopback.
/// Throws std::runtime_error if they cannot be listed.
std::vector<std::string> upNonLoopbackInterfaces();

class FastPathAdapter final : public FastPathPort {
 public:
  /// Loads the program with `config.max_entries` entries and attaches it at tc ingress of
  /// `config.interfaces` (empty: upNonLoopbackInterfaces()). Throws std::runtime_error naming
  /// what failed; nothing stays attached then.
  explicit FastPathAdapter(const FastPathConfig& config);
  ~FastPathAdapter() override;
  FastPathAdapter(const FastPathAdapter&) = delete;
  FastPathAdapter& operator=(const FastPathAdapter&) = delete;

  /// Writes at once, unless the key's install is still kept: then it replaces the kept entry.
  bool put(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept override;
  /// Keeps the entry for commit() (replacing one kept for the same key); true. get() and erase()
  /// see kept entries.
  bool install(const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept override;
  /// Gathers both entries of an armed splice for flushArms(); true. get(), put(), erase() and
  /// take() see gathered entries.
  bool putPair(const tandem_fp_key* keys, const tandem_fp_rewrite* values) noexcept override;
  bool get(const tandem_fp_key& key, tandem_fp_rewrite& value) const noexcept override;
  bool erase(const tandem_fp_key& key) noexcept override;
  bool take(const tandem_fp_key& key, tandem_fp_rewrite& value) noexcept override;
  void clear() noexcept override;

  /// Writes the entries install() kept, in order, with one system call. An entry the kernel refuses
  /// (map full) is counted (tandem_fastpath_map_put_failed_total) and reported to the engine
  /// (Engine::fastPathInstallLost), which takes its flow off the fast path.
  void commit() noexcept;
  /// Entries install() kept that commit() has not written yet.
  size_t uncommitted() const noexcept { return installs_.keys.size(); }
  /// Writes the armed entries putPair() gathered, with one system call. The daemon calls it
  /// just before a batch's verdicts are sent (NfQueue::setBeforeVerdicts): the backend SYNs
  /// among them must find their entries when their SYN-ACKs come back. An entry the kernel
  /// refuses is counted (tandem_fastpath_map_put_failed_total); its splice completes through
  /// NFQUEUE.
  void flushArms() noexcept;

  /// Watches the event ring in `base`: every wake-up (the ring a quarter full, or a 2 ms
  /// timer) drains it into `engine`, then calls `after` (what the events caused: the outbox,
  /// the pair's checkpoints). Throws on failure.
  void watch(event_base* base, Engine& engine, std::function<void()> after);
  /// Called by drain() when a splice the kernel completed moved Engine::spliceGeneration():
  /// client data held for it may go (NfQueue::offerHeld).
  void onSpliced(std::function<void(uint64_t now_ns)> fn) { on_spliced_ = std::move(fn); }
  /// Hands every waiting event (closes, splices the kernel completed) to the engine (stamped
  /// `now_ns`, CLOCK_MONOTONIC); returns how many. Cheap when there are none: one read of the
  /// ring's positions.
  size_t drain(uint64_t now_ns) noexcept;

  const std::vector<std::string>& interfaces() const noexcept { return interfaces_; }
  /// The program's flow map, shared with the SYN answerer (SynAnswerAdapter).
  int flowsMapFd() const noexcept { return kernel_.flowsMapFd(); }
  int eventsMapFd() const noexcept { return kernel_.eventsMapFd(); }
  /// Prometheus text of the tandem_fastpath_* families (the program's statistics; entries from
  /// the engine's counters).
  std::string metricsText(const Counters& counters) const;

 private:
  static void onEvents(int fd, short what, void* self) noexcept;
  /// Entries written later, in order, with one system call: parallel arrays, as
  /// BPF_MAP_UPDATE_BATCH takes them.
  struct Kept {
    std::vector<tandem_fp_key> keys;
    std::vector<tandem_fp_rewrite> values;
    /// Where `key` is; keys.size() if it is not kept.
    size_t find(const tandem_fp_key& key) const noexcept;
    void remove(size_t i) noexcept;
    void clear() noexcept;
  };
  /// `key`'s entry kept by install() or gathered by putPair(); nullptr if neither.
  const tandem_fp_rewrite* findKept(const tandem_fp_key& key) const noexcept;
  tandem_fp_rewrite* findKept(const tandem_fp_key& key) noexcept;
  /// Replaces `key`'s entry wherever it is kept, or keeps it in `list`.
  void keep(Kept& list, const tandem_fp_key& key, const tandem_fp_rewrite& value) noexcept;
  /// Writes `kept` into the kernel in order and empties it; `refused(i, err)` for each entry
  /// the kernel refuses (the rest still go in).
  template <typename Refused>
  void writeKept(Kept& kept, Refused refused) noexcept;

  KernelFastPath kernel_;
  std::vector<std::string> interfaces_;
  Engine* engine_ = nullptr;
  event* event_ = nullptr;
  event* poll_ = nullptr;  ///< the ring read on a timer (the program rarely wakes the reader)
  std::function<void()> after_;
  std::function<void(uint64_t)> on_spliced_;
  uint64_t put_failed_ = 0;
  Kept installs_;  ///< kept by install() for commit(), after the verdicts
  Kept arms_;      ///< gathered by putPair() for flushArms(), before the verdicts
  struct Lost {
    uint32_t flow_id;
    uint32_t generation;
  };
  std::vector<Lost> lost_;
};

/// Prometheus text for a daemon without the fast path: tandem_fastpath_enabled 0.
std::string fastPathDisabledMetricsText();

}  // namespace tandem
