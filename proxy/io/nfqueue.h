#pragma once
/// @file The NFQUEUE adapter: binds one queue over netlink (the libmnl API of
/// libnetfilter_queue), reads queued packets in batches, hands each to the Engine, which rewrites
/// it in place, and returns the verdicts in batches. All packet logic is in the Engine.
///
/// Fail-closed by construction: the queue is configured without NFQA_CFG_F_FAIL_OPEN (and the
/// rules use no --queue-bypass), so a packet tandem did not translate is never forwarded.

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "proxy/core/engine.h"
#include "proxy/io/log.h"
#include "proxy/io/verdict_batch.h"

struct mnl_socket;
struct mmsghdr;
struct nlmsghdr;
struct sockaddr_nl;

namespace tandem {

struct NfQueueOptions {
  uint16_t queue = 0;
  /// Packets the kernel holds for us; beyond it new packets are dropped (never bypassed).
  uint32_t maxlen = 8192;
  /// SO_RCVBUFFORCE: the default buffer overflows on a burst of 64 KiB GSO super-packets, and
  /// every overflow is a lost segment the sender must retransmit.
  uint32_t rcvbuf = 64u << 20;
  /// SO_SNDBUFFORCE: one verdict datagram may carry up to kMaxSendBytes of rewritten packets.
  uint32_t sndbuf = 8u << 20;
  /// Messages per recvmmsg().
  uint32_t batch = 64;
};

/// I/O counters of the adapter (the Engine counts per-packet outcomes).
struct NfQueueCounters {
  uint64_t reads = 0;           ///< recvmmsg() calls that returned messages
  uint64_t packets = 0;         ///< packet messages received
  uint64_t accepted = 0;        ///< NF_ACCEPT verdicts queued
  uint64_t dropped = 0;         ///< NF_DROP verdicts queued
  uint64_t modified = 0;        ///< accepts carrying the rewritten packet
  uint64_t truncated = 0;       ///< packets cut by the copy range: dropped, cannot be translated
  uint64_t sends = 0;           ///< sendmsg() calls carrying verdicts
  uint64_t recv_errors = 0;     ///< recvmmsg() failures other than EAGAIN/EINTR/ENOBUFS
  uint64_t send_errors = 0;     ///< verdicts that could not be sent (packet stays queued)
  uint64_t enobufs = 0;         ///< ENOBUFS from the socket (kernel dropped messages for us)
  uint64_t parse_errors = 0;    ///< malformed messages or packets without a packet header
  uint64_t verdict_errors = 0;  ///< NLMSG_ERROR replies from the kernel to our verdicts
  uint64_t foreign = 0;         ///< messages not from the kernel, ignored
  uint64_t held = 0;            ///< packets the engine asked to hold (splice handshake)
  uint64_t hold_released = 0;   ///< held packets forwarded once the splice completed
  uint64_t hold_dropped = 0;    ///< held packets dropped: store full, too large, or too old
};

/// A queue's line in /proc/net/netfilter/nfnetlink_queue.
struct NfQueueKernelStats {
  uint32_t peer_portid = 0;    ///< netlink port of the process bound to the queue
  uint32_t queue_total = 0;    ///< packets waiting for a verdict now
  uint64_t queue_dropped = 0;  ///< dropped because queue_maxlen was reached
  uint64_t user_dropped = 0;   ///< dropped because our socket buffer was full
  uint32_t id_sequence = 0;    ///< last packet id
};

/// Finds queue `queue` in the text of /proc/net/netfilter/nfnetlink_queue.
std::optional<NfQueueKernelStats> parseNfQueueProc(std::string_view text, uint16_t queue);
/// Reads /proc/net/netfilter/nfnetlink_queue; nullopt if unreadable or the queue is not bound.
std::optional<NfQueueKernelStats> readNfQueueKernelStats(uint16_t queue);

class NfQueue {
 public:
  /// Largest verdict datagram; well below sndbuf - 32 (netlink_sendmsg's limit).
  static constexpr size_t kMaxSendBytes = 1u << 20;
  /// Receive buffer per message: a full 64 KiB packet plus the netlink and NFQA headers.
  static constexpr size_t kRxBufSize = 0x10000 + 0x2000;
  /// Held packets (client data during a splice handshake): how many, how large, how long.
  static constexpr size_t kMaxHeld = 1024;
  static constexpr size_t kHoldMaxBytes = 2048;
  static constexpr uint64_t kHoldTimeoutNs = 1'000'000'000;

  explicit NfQueue(const NfQueueOptions& options);
  ~NfQueue();
  NfQueue(const NfQueue&) = delete;
  NfQueue& operator=(const NfQueue&) = delete;

  /// Opens the netlink socket, sizes its buffers, binds the queue and configures it, waiting for
  /// the kernel's acknowledgement of each step. Throws std::system_error naming the step
  /// (startup only). Closing the socket (destructor) unbinds the queue.
  void open();

  int fd() const noexcept;

  /// Reads what is queued (a few batches at most, so timers still run), runs every packet
  /// through `engine` and sends the verdicts. Call when fd() is readable.
  void onReadable(Engine& engine) noexcept;

  /// Called after each read of a batch, before the engine sees it: the kernel fast path's close
  /// events (which may be older than packets of the batch) go to the engine first.
  void setBeforeBatch(std::function<void()> fn) { before_batch_ = std::move(fn); }
  /// Called once the verdicts of a batch (or of held packets released outside one) are sent:
  /// what must not take effect before those packets are on their way (the fast path's new
  /// entries, FastPathAdapter::commit).
  void setAfterVerdicts(std::function<void()> fn) { after_verdicts_ = std::move(fn); }
  /// Called just before verdicts are sent: what must be in place when the packets they release
  /// are answered (the fast path's armed splices, FastPathAdapter::flushArms).
  void setBeforeVerdicts(std::function<void()> fn) { before_verdicts_ = std::move(fn); }

  /// Drops held packets older than kHoldTimeoutNs (TCP then resends them). Call periodically.
  void tick(uint64_t now_ns) noexcept;
  /// Offers every held packet to `engine` again and sends the verdicts of those it lets go.
  /// For a hold released outside packet processing (the pair's deferral: Engine::markSynced).
  void offerHeld(Engine& engine, uint64_t now_ns) noexcept;

  const NfQueueCounters& counters() const noexcept { return counters_; }
  const NfQueueOptions& options() const noexcept { return options_; }
  /// Socket buffer sizes the kernel granted (it doubles the requested value).
  int effectiveRcvbuf() const noexcept { return effective_rcvbuf_; }
  int effectiveSndbuf() const noexcept { return effective_sndbuf_; }

 private:
  void handleDatagram(uint8_t* buf, size_t len, Engine* engine) noexcept;
  /// Validates one packet message and adds it to the batch for the engine (or answers it).
  void handlePacket(nlmsghdr* nlh, Engine* engine) noexcept;
  /// Runs the collected packets through Engine::processBatch and queues their verdicts.
  void processPending(Engine& engine, uint64_t now_ns) noexcept;
  void handleError(const nlmsghdr* nlh) noexcept;
  void queueVerdict(uint32_t id, uint32_t verdict, const uint8_t* payload, size_t len) noexcept;
  void flush() noexcept;
  /// flush(), then after_verdicts_ (the fast path's kept entries go in after their packets).
  void sendVerdicts() noexcept;
  /// Per-packet warnings share one limit: the counters carry the numbers.
  void warnLimited(const char* what, int err) noexcept;
  void sendConfig(nlmsghdr* nlh, const char* step);
  void setBufferSize(int option, uint32_t size, const char* name);

  NfQueueOptions options_;
  std::function<void()> before_batch_;
  std::function<void()> after_verdicts_;
  std::function<void()> before_verdicts_;
  mnl_socket* nl_ = nullptr;
  int fd_ = -1;
  uint32_t seq_ = 0;
  uint32_t ack_seq_ = 0;  ///< sequence number of the config request awaiting its ack
  int ack_error_ = 1;     ///< 1: none yet; else 0 or -errno from the kernel's ack
  int effective_rcvbuf_ = 0;
  int effective_sndbuf_ = 0;

  std::vector<uint8_t> rx_;  ///< batch * kRxBufSize
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> rx_iov_;
  std::vector<sockaddr_nl> senders_;
  struct Held {
    uint32_t id = 0;
    uint64_t since_ns = 0;
    size_t len = 0;
    PacketMeta meta;
    bool done = false;  ///< verdict queued: free the entry once the verdicts are sent
    std::array<uint8_t, kHoldMaxBytes> bytes{};
  };
  void hold(uint32_t id, const PacketSlot& slot, uint64_t now_ns) noexcept;
  /// Offers every held packet to the engine again (a splice completed in this batch).
  void releaseHeld(Engine& engine, uint64_t now_ns) noexcept;
  /// Frees the entries whose verdicts were sent.
  void compactHeld() noexcept;

  std::vector<Held> held_;               ///< at most kMaxHeld, capacity reserved
  std::vector<PacketSlot> pending_;      ///< packets of the current read, for the engine
  std::vector<uint32_t> pending_ids_;    ///< their packet ids
  VerdictBatch verdicts_;
  NfQueueCounters counters_;
  RateLimit warn_limit_{10'000'000'000ull, 5};
};

}  // namespace tandem
