#pragma once
/// @file Many NFQUEUE verdicts in one sendmsg().
///
/// Each verdict is a small header (nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR and, for a rewritten
/// packet, the NFQA_PAYLOAD attribute header) plus an iovec pointing at the packet where it already
/// lies in the receive buffer, plus padding to NLA_ALIGN: a rewritten 64 KiB GSO packet is never
/// copied in user space. The kernel walks the datagram message by message (netlink_rcv_skb), so
/// every message must start 4-byte aligned, hence the padding.

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tandem {

class VerdictBatch {
 public:
  /// UIO_MAXIOV: sendmsg() refuses more iovecs.
  static constexpr size_t kMaxIov = 1024;
  /// Largest packet a verdict can carry: nla_len is 16 bits and includes its 4-byte header.
  static constexpr size_t kMaxPayload = 0xffff - 4;

  /// `max_messages` header slots are preallocated. `max_bytes` caps one datagram: the kernel
  /// refuses a netlink message above sk_sndbuf - 32 bytes (netlink_sendmsg).
  VerdictBatch(size_t max_messages, size_t max_bytes);

  /// Whether a verdict carrying `payload_len` packet bytes (0: none) still fits in this batch.
  bool fits(size_t payload_len) const noexcept;

  /// Appends a verdict for `packet_id` of queue `queue`. A non-null `payload` is sent as the new
  /// packet content and must stay valid until the batch is sent or cleared. Returns false (and
  /// adds nothing) if !fits(payload_len) or payload_len > kMaxPayload.
  bool add(uint16_t queue, uint32_t packet_id, uint32_t verdict, const uint8_t* payload,
           size_t payload_len) noexcept;

  const iovec* iov() const noexcept { return iov_.data(); }
  size_t iovCount() const noexcept { return iov_.size(); }
  size_t messages() const noexcept { return starts_.size(); }
  size_t bytes() const noexcept { return bytes_; }
  bool empty() const noexcept { return starts_.empty(); }
  /// The iovecs of message `i` alone, to resend one by one after a failed batch send.
  std::span<const iovec> message(size_t i) const noexcept;
  void clear() noexcept;

 private:
  /// Room for nlmsghdr (16) + nfgenmsg (4) + verdict attribute (12) + payload attribute header.
  struct alignas(8) HeaderSlot {
    char bytes[64];
  };

  size_t max_bytes_;
  std::vector<HeaderSlot> headers_;
  std::vector<iovec> iov_;
  std::vector<uint16_t> starts_;  ///< first iovec of each message
  size_t bytes_ = 0;
};

}  // namespace tandem
