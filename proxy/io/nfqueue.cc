#include "proxy/io/nfqueue.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>

#include "proxy/io/log.h"

namespace tandem {
namespace {

/// Batches read per wakeup before returning to the event loop, so timers and the status server
/// are not starved under load; level-triggered readiness brings us straight back.
constexpr int kMaxBatchesPerWakeup = 4;
/// How long open() waits for the kernel to acknowledge a configuration step.
constexpr int kAckTimeoutMs = 5000;
/// Room for every NFQA_* index the library's parser may fill, whatever header it was built with.
constexpr size_t kAttrSlots = 64;
constexpr uint16_t kPacketMsgType = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;

std::string hint(int err, uint16_t queue) {
  if (err != EPERM) return "";
  // The kernel answers EPERM both to the unprivileged and to a second binder of a queue.
  if (auto bound = readNfQueueKernelStats(queue)) {
    return " (queue " + std::to_string(queue) + " is already bound by netlink port " +
           std::to_string(bound->peer_portid) + ": another tandemd?)";
  }
  return " (tandemd needs CAP_NET_ADMIN)";
}

uint32_t u32Attr(const nlattr* attr) noexcept {
  return attr != nullptr && mnl_attr_get_payload_len(attr) >= sizeof(uint32_t)
             ? ntohl(mnl_attr_get_u32(attr))
             : 0;
}

}  // namespace

std::optional<NfQueueKernelStats> parseNfQueueProc(std::string_view text, uint16_t queue) {
  // Kernel format (nfnetlink_queue.c, seq_show): queue_number peer_portid queue_total copy_mode
  // copy_range queue_dropped queue_user_dropped id_sequence 1
  std::istringstream in{std::string(text)};
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    uint64_t number = 0, portid = 0, total = 0, mode = 0, range = 0, qdrop = 0, udrop = 0, seq = 0;
    if (!(fields >> number >> portid >> total >> mode >> range >> qdrop >> udrop >> seq)) continue;
    if (number != queue) continue;
    NfQueueKernelStats s;
    s.peer_portid = static_cast<uint32_t>(portid);
    s.queue_total = static_cast<uint32_t>(total);
    s.queue_dropped = qdrop;
    s.user_dropped = udrop;
    s.id_sequence = static_cast<uint32_t>(seq);
    return s;
  }
  return std::nullopt;
}

std::optional<NfQueueKernelStats> readNfQueueKernelStats(uint16_t queue) {
  std::ifstream file("/proc/net/netfilter/nfnetlink_queue");
  if (!file) return std::nullopt;
  std::stringstream text;
  text << file.rdbuf();
  return parseNfQueueProc(text.str(), queue);
}

NfQueue::NfQueue(const NfQueueOptions& options)
    : options_(options),
      rx_(static_cast<size_t>(options.batch) * kRxBufSize),
      msgs_(options.batch),
      rx_iov_(options.batch),
      senders_(options.batch),
      verdicts_(options.batch, kMaxSendBytes) {
  // One packet message per datagram in practice; room for more keeps push_back allocation-free.
  pending_.reserve(4 * static_cast<size_t>(options.batch));
  held_.reserve(kMaxHeld);
  pending_ids_.reserve(4 * static_cast<size_t>(options.batch));
  for (size_t i = 0; i < options.batch; ++i) {
    rx_iov_[i] = {rx_.data() + i * kRxBufSize, kRxBufSize};
    msgs_[i] = {};
    msgs_[i].msg_hdr.msg_name = &senders_[i];
    msgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_nl);
    msgs_[i].msg_hdr.msg_iov = &rx_iov_[i];
    msgs_[i].msg_hdr.msg_iovlen = 1;
  }
}

NfQueue::~NfQueue() {
  if (nl_ != nullptr) mnl_socket_close(nl_);
}

int NfQueue::fd() const noexcept { return fd_; }

void NfQueue::setBufferSize(int option, uint32_t size, const char* name) {
  int value = static_cast<int>(size);
  if (setsockopt(fd_, SOL_SOCKET, option, &value, sizeof(value)) != 0) {
    int err = errno;
    throw std::system_error(err, std::generic_category(),
                            std::string("nfqueue: setsockopt ") + name + hint(err, options_.queue));
  }
}

void NfQueue::open() {
  nl_ = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (nl_ == nullptr) {
    throw std::system_error(errno, std::generic_category(), "nfqueue: netlink socket");
  }
  fd_ = mnl_socket_get_fd(nl_);
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    throw std::system_error(errno, std::generic_category(), "nfqueue: bind netlink socket");
  }

  setBufferSize(SO_RCVBUFFORCE, options_.rcvbuf, "SO_RCVBUFFORCE");
  setBufferSize(SO_SNDBUFFORCE, options_.sndbuf, "SO_SNDBUFFORCE");
  socklen_t len = sizeof(int);
  if (getsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &effective_rcvbuf_, &len) != 0 ||
      getsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &effective_sndbuf_, &len) != 0) {
    throw std::system_error(errno, std::generic_category(), "nfqueue: getsockopt buffer size");
  }
  // A lost message is a packet the kernel already dropped and counts (user_dropped in
  // /proc/net/netfilter/nfnetlink_queue); the error itself would only interrupt the read loop.
  int one = 1;
  if (setsockopt(fd_, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one)) != 0) {
    throw std::system_error(errno, std::generic_category(), "nfqueue: NETLINK_NO_ENOBUFS");
  }

  alignas(nlmsghdr) std::array<char, 512> buf{};
  nlmsghdr* nlh = nfq_nlmsg_put(buf.data(), NFQNL_MSG_CONFIG, options_.queue);
  nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
  sendConfig(nlh, "bind");

  nlh = nfq_nlmsg_put(buf.data(), NFQNL_MSG_CONFIG, options_.queue);
  nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, 0xffff);
  nfq_nlmsg_cfg_put_qmaxlen(nlh, options_.maxlen);
  // GSO: take super-packets whole (partial checksum) instead of having the kernel segment them
  // first. FAIL_OPEN is in the mask with value 0: explicitly off, because a packet accepted
  // without translation when the queue is full would reach the wrong host.
  mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
  mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN));
  sendConfig(nlh, "set copy mode, queue length and flags");
}

void NfQueue::sendConfig(nlmsghdr* nlh, const char* step) {
  const std::string what =
      std::string("nfqueue: ") + step + " (queue " + std::to_string(options_.queue) + ")";
  nlh->nlmsg_flags |= NLM_F_ACK;
  nlh->nlmsg_seq = ++seq_;
  if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0) {
    int err = errno;
    throw std::system_error(err, std::generic_category(), what + hint(err, options_.queue));
  }
  ack_seq_ = nlh->nlmsg_seq;
  ack_error_ = 1;
  while (ack_error_ == 1) {
    pollfd pfd{fd_, POLLIN, 0};
    int ready = poll(&pfd, 1, kAckTimeoutMs);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw std::system_error(errno, std::generic_category(), what + ": poll");
    if (ready == 0) throw std::system_error(ETIMEDOUT, std::generic_category(), what);
    ssize_t n = recv(fd_, rx_.data(), kRxBufSize, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), what + ": recv");
    // Packets may already arrive (rules installed by the operator): no engine yet, so they are
    // dropped, which TCP recovers from, rather than left queued without a verdict.
    handleDatagram(rx_.data(), static_cast<size_t>(n), nullptr);
    flush();
  }
  ack_seq_ = 0;
  if (ack_error_ != 0) {
    int err = -ack_error_;
    throw std::system_error(err, std::generic_category(), what + hint(err, options_.queue));
  }
}

void NfQueue::onReadable(Engine& engine) noexcept {
  const unsigned batch = options_.batch;
  if (!held_.empty()) tick(monotonicNs());
  for (int round = 0; round < kMaxBatchesPerWakeup; ++round) {
    int n = recvmmsg(fd_, msgs_.data(), batch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      if (err == ENOBUFS) {
        ++counters_.enobufs;
        warnLimited("socket receive buffer overrun, kernel dropped packets", err);
        continue;
      }
      ++counters_.recv_errors;
      warnLimited("recvmmsg", err);
      break;
    }
    if (n == 0) break;
    ++counters_.reads;
    // Close events the kernel reported while this batch waited: before its packets (a RST
    // answering the last ACK of a close must meet the flow in TIME_WAIT, as it would have
    // without the fast path). Before taking now: the events are stamped with their own, and no
    // flow may have been seen after the batch's now (idle times are unsigned differences).
    if (before_batch_) before_batch_();
    const uint64_t now_ns = monotonicNs();
    for (int i = 0; i < n; ++i) {
      mmsghdr& m = msgs_[static_cast<size_t>(i)];
      const sockaddr_nl& sender = senders_[static_cast<size_t>(i)];
      if (sender.nl_pid != 0) {
        ++counters_.foreign;  // only the kernel may queue packets or answer verdicts
      } else if ((m.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
        // Cannot happen with kRxBufSize above the copy range; without the whole message there is
        // no safe verdict, the kernel drops the packet when the queue is unbound.
        ++counters_.parse_errors;
        warnLimited("message larger than the receive buffer", 0);
      } else {
        handleDatagram(rx_.data() + static_cast<size_t>(i) * kRxBufSize, m.msg_len, &engine);
      }
      m.msg_hdr.msg_namelen = sizeof(sockaddr_nl);
      m.msg_hdr.msg_flags = 0;
    }
    // One engine call per read: the batch's flow lookups overlap their cache misses.
    processPending(engine, now_ns);
    // The verdicts point into the receive buffers: send them before the next read reuses them.
    sendVerdicts();
    compactHeld();  // released held packets' bytes were referenced by the verdicts just sent
    // No break on a short read: the answers to the verdicts just sent (a backend's SYN-ACK to
    // the SYN among them) were queued while they were sent; reading again takes them now
    // rather than after a trip through the event loop.
  }
}

void NfQueue::warnLimited(const char* what, int err) noexcept {
  if (!warn_limit_.allow(monotonicNs())) return;
  const uint64_t suppressed = warn_limit_.takeSuppressed();
  logf(LogLevel::kWarn, "nfqueue: %s%s%s (%llu similar warnings suppressed before)", what,
       err != 0 ? ": " : "", err != 0 ? strerror(err) : "",
       static_cast<unsigned long long>(suppressed));
}

void NfQueue::handleDatagram(uint8_t* buf, size_t len, Engine* engine) noexcept {
  auto* nlh = reinterpret_cast<nlmsghdr*>(buf);
  int remaining = static_cast<int>(len);
  while (mnl_nlmsg_ok(nlh, remaining)) {
    if (nlh->nlmsg_type == NLMSG_ERROR) {
      handleError(nlh);
    } else if (nlh->nlmsg_type == kPacketMsgType) {
      handlePacket(nlh, engine);
    }
    nlh = mnl_nlmsg_next(nlh, &remaining);
  }
}

void NfQueue::handleError(const nlmsghdr* nlh) noexcept {
  if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(nlmsgerr))) {
    ++counters_.parse_errors;
    return;
  }
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  if (ack_seq_ != 0 && nlh->nlmsg_seq == ack_seq_) {
    ack_error_ = err->error;
    return;
  }
  if (err->error != 0) {
    // A verdict the kernel refused, e.g. ENOENT for an id it no longer holds.
    ++counters_.verdict_errors;
    warnLimited("kernel refused a verdict", -err->error);
  }
}

void NfQueue::handlePacket(nlmsghdr* nlh, Engine* engine) noexcept {
  std::array<nlattr*, kAttrSlots> attr{};
  if (nfq_nlmsg_parse(nlh, attr.data()) < 0 || attr[NFQA_PACKET_HDR] == nullptr) {
    ++counters_.parse_errors;  // no packet id: nothing to answer
    warnLimited("malformed packet message", 0);
    return;
  }
  ++counters_.packets;
  const auto* ph =
      static_cast<const nfqnl_msg_packet_hdr*>(mnl_attr_get_payload(attr[NFQA_PACKET_HDR]));
  const uint32_t id = ntohl(ph->packet_id);

  if (attr[NFQA_PAYLOAD] == nullptr) {
    ++counters_.parse_errors;
    queueVerdict(id, NF_DROP, nullptr, 0);
    return;
  }
  auto* data = static_cast<uint8_t*>(mnl_attr_get_payload(attr[NFQA_PAYLOAD]));
  const size_t len = mnl_attr_get_payload_len(attr[NFQA_PAYLOAD]);
  // NFQA_CAP_LEN is present only when the packet was cut to the copy range: its tail is missing,
  // so it can neither be translated nor re-injected.
  if (attr[NFQA_CAP_LEN] != nullptr && u32Attr(attr[NFQA_CAP_LEN]) != len) {
    ++counters_.truncated;
    warnLimited("packet larger than the copy range dropped", 0);
    queueVerdict(id, NF_DROP, nullptr, 0);
    return;
  }
  if (engine == nullptr) {
    queueVerdict(id, NF_DROP, nullptr, 0);
    return;
  }
  const uint32_t skb_info = u32Attr(attr[NFQA_SKB_INFO]);
  PacketMeta meta;
  meta.csum_not_ready = (skb_info & NFQA_SKB_CSUMNOTREADY) != 0;
  meta.gso = (skb_info & NFQA_SKB_GSO) != 0;

  PacketSlot slot;
  slot.data = data;
  slot.len = len;
  // Splice mode may write a longer packet in its place: room up to the end of this receive slot.
  const size_t offset = static_cast<size_t>(data - rx_.data());
  slot.cap = (offset / kRxBufSize + 1) * kRxBufSize - offset;
  slot.meta = meta;
  slot.meta.can_hold = true;
  pending_.push_back(slot);  // capacity reserved for a whole read: no allocation here
  pending_ids_.push_back(id);
}

void NfQueue::processPending(Engine& engine, uint64_t now_ns) noexcept {
  size_t done = 0;
  while (done < pending_.size()) {
    const uint64_t splices_before = engine.spliceGeneration();
    const uint64_t kept_before = engine.fastPathKeptInstalls();
    // Up to and including the first packet that completes a splice or puts its flow on the fast
    // path with a kept entry (Engine::processBatch).
    const size_t k = engine.processBatch(pending_.data() + done, pending_.size() - done, now_ns);
    for (size_t i = done; i < done + k; ++i) {
      const PacketSlot& s = pending_[i];
      switch (s.decision.verdict) {
        case Verdict::kAccept:
          queueVerdict(pending_ids_[i], NF_ACCEPT, s.decision.modified ? s.data : nullptr,
                       s.decision.len);
          break;
        case Verdict::kHold:
          hold(pending_ids_[i], s, now_ns);
          break;
        case Verdict::kDrop:
          queueVerdict(pending_ids_[i], NF_DROP, nullptr, 0);
          break;
      }
    }
    done += k;
    // A backend SYN-ACK just became the proxy's ACK, queued above: the data held for its flow
    // goes right after it, before the rest of the batch, which may hold that flow's later
    // segments (its FIN, typically: a short request and its FIN arrive together).
    const bool released = !held_.empty() && engine.spliceGeneration() != splices_before;
    if (released) releaseHeld(engine, now_ns);
    if (released || engine.fastPathKeptInstalls() != kept_before) {
      // A flow went on the fast path with an entry the port keeps until the segment that put
      // it on is sent: send it now and write the entry right after, rather than once the whole
      // batch is handled and sent. Meanwhile the flow's next segments queue here, to be
      // overtaken by the ones after them through the kernel (the client's acknowledgement of
      // the backend's answer, a bulk sender's next segments).
      sendVerdicts();
    }
  }
  pending_.clear();
  pending_ids_.clear();
}

void NfQueue::hold(uint32_t id, const PacketSlot& slot, uint64_t now_ns) noexcept {
  if (held_.size() >= kMaxHeld || slot.len > kHoldMaxBytes) {
    // Not acknowledged to the client: it sends the data again after its timeout.
    ++counters_.hold_dropped;
    queueVerdict(id, NF_DROP, nullptr, 0);
    return;
  }
  ++counters_.held;
  Held& h = held_.emplace_back();  // capacity reserved: no allocation
  h.id = id;
  h.since_ns = now_ns;
  h.len = slot.len;
  h.meta = slot.meta;
  std::copy(slot.data, slot.data + slot.len, h.bytes.begin());
}

void NfQueue::releaseHeld(Engine& engine, uint64_t now_ns) noexcept {
  // A held packet released here may itself move the generation (a deferred backend SYN-ACK
  // completes its splice): the client data held before it in the store gets another pass.
  for (int pass = 0; pass < 4; ++pass) {
    const uint64_t generation = engine.spliceGeneration();
    for (Held& h : held_) {
      if (h.done) continue;
      const Decision d = engine.process(h.bytes.data(), h.len, h.bytes.size(), h.meta, now_ns);
      if (d.verdict == Verdict::kHold) continue;  // its own splice is still opening
      h.done = true;
      if (d.verdict == Verdict::kAccept) {
        ++counters_.hold_released;
        queueVerdict(h.id, NF_ACCEPT, d.modified ? h.bytes.data() : nullptr, d.len);
      } else {
        queueVerdict(h.id, NF_DROP, nullptr, 0);
      }
    }
    if (engine.spliceGeneration() == generation) return;
  }
}

void NfQueue::compactHeld() noexcept {
  std::erase_if(held_, [](const Held& h) { return h.done; });
}

void NfQueue::offerHeld(Engine& engine, uint64_t now_ns) noexcept {
  if (held_.empty()) return;
  releaseHeld(engine, now_ns);
  sendVerdicts();
  compactHeld();
}

void NfQueue::tick(uint64_t now_ns) noexcept {
  bool any = false;
  for (Held& h : held_) {
    if (h.done || now_ns - h.since_ns < kHoldTimeoutNs) continue;
    h.done = true;
    any = true;
    ++counters_.hold_dropped;
    queueVerdict(h.id, NF_DROP, nullptr, 0);
  }
  if (any) {
    flush();
    compactHeld();
  }
}

void NfQueue::queueVerdict(uint32_t id, uint32_t verdict, const uint8_t* payload,
                           size_t len) noexcept {
  const size_t payload_len = payload != nullptr ? len : 0;
  if (!verdicts_.fits(payload_len)) flush();
  if (!verdicts_.add(options_.queue, id, verdict, payload, payload_len)) {
    // Only a payload above kMaxPayload gets here, which the copy range rules out.
    ++counters_.send_errors;
    return;
  }
  if (verdict == NF_ACCEPT) {
    ++counters_.accepted;
    if (payload != nullptr) ++counters_.modified;
  } else {
    ++counters_.dropped;
  }
}

void NfQueue::sendVerdicts() noexcept {
  flush();
  if (after_verdicts_) after_verdicts_();
}

void NfQueue::flush() noexcept {
  if (verdicts_.empty()) return;
  if (before_verdicts_) before_verdicts_();
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  msghdr mh{};
  mh.msg_name = &kernel;
  mh.msg_namelen = sizeof(kernel);
  mh.msg_iov = const_cast<iovec*>(verdicts_.iov());
  mh.msg_iovlen = verdicts_.iovCount();
  ssize_t n;
  do {
    n = sendmsg(fd_, &mh, 0);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) {
    ++counters_.sends;
    verdicts_.clear();
    return;
  }
  // The whole datagram failed (e.g. no memory for a large skb): retry message by message, since
  // a packet left without a verdict stays queued until the queue is unbound.
  const int batch_err = errno;
  uint64_t failed = 0;
  for (size_t i = 0; i < verdicts_.messages(); ++i) {
    std::span<const iovec> one = verdicts_.message(i);
    mh.msg_iov = const_cast<iovec*>(one.data());
    mh.msg_iovlen = one.size();
    do {
      n = sendmsg(fd_, &mh, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      ++failed;
    } else {
      ++counters_.sends;
    }
  }
  counters_.send_errors += failed;
  warnLimited(failed > 0 ? "verdicts lost: sendmsg" : "batched sendmsg failed, resent singly",
              batch_err);
  verdicts_.clear();
}

}  // namespace tandem
