#include "proxy/io/verdict_batch.h"

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

namespace tandem {
namespace {

constexpr uint8_t kZeros[MNL_ALIGNTO] = {};
constexpr size_t kIovPerMessage = 3;  // header, packet, padding

size_t messageBytes(size_t payload_len) {
  // nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR (+ NFQA_PAYLOAD header and aligned packet).
  size_t n = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg)) + MNL_ATTR_HDRLEN +
             MNL_ALIGN(sizeof(nfqnl_msg_verdict_hdr));
  if (payload_len > 0) n += MNL_ATTR_HDRLEN + MNL_ALIGN(payload_len);
  return n;
}

}  // namespace

VerdictBatch::VerdictBatch(size_t max_messages, size_t max_bytes)
    : max_bytes_(max_bytes), headers_(max_messages) {
  iov_.reserve(kMaxIov);
  starts_.reserve(max_messages);
}

bool VerdictBatch::fits(size_t payload_len) const noexcept {
  return starts_.size() < headers_.size() && iov_.size() + kIovPerMessage <= kMaxIov &&
         bytes_ + messageBytes(payload_len) <= max_bytes_;
}

bool VerdictBatch::add(uint16_t queue, uint32_t packet_id, uint32_t verdict, const uint8_t* payload,
                       size_t payload_len) noexcept {
  if (payload == nullptr) payload_len = 0;
  if (payload_len > kMaxPayload || !fits(payload_len)) return false;

  char* slot = headers_[starts_.size()].bytes;
  nlmsghdr* nlh = nfq_nlmsg_put(slot, NFQNL_MSG_VERDICT, queue);
  nfq_nlmsg_verdict_put(nlh, static_cast<int>(packet_id), static_cast<int>(verdict));
  size_t header_len = nlh->nlmsg_len;
  if (payload_len > 0) {
    // The attribute header goes in the slot; the packet itself is referenced, not copied
    // (nfq_nlmsg_verdict_put_pkt would copy it).
    auto* attr = static_cast<nlattr*>(mnl_nlmsg_get_payload_tail(nlh));
    attr->nla_type = NFQA_PAYLOAD;
    attr->nla_len = static_cast<uint16_t>(MNL_ATTR_HDRLEN + payload_len);
    header_len += MNL_ATTR_HDRLEN;
    nlh->nlmsg_len = static_cast<uint32_t>(header_len + MNL_ALIGN(payload_len));
  }

  starts_.push_back(static_cast<uint16_t>(iov_.size()));
  iov_.push_back({slot, header_len});
  if (payload_len > 0) {
    // sendmsg() only reads through iov_base; the cast drops const for the POSIX struct.
    iov_.push_back({const_cast<uint8_t*>(payload), payload_len});
    size_t pad = MNL_ALIGN(payload_len) - payload_len;
    if (pad > 0) iov_.push_back({const_cast<uint8_t*>(kZeros), pad});
  }
  bytes_ += nlh->nlmsg_len;
  return true;
}

std::span<const iovec> VerdictBatch::message(size_t i) const noexcept {
  size_t begin = starts_[i];
  size_t end = i + 1 < starts_.size() ? starts_[i + 1] : iov_.size();
  return {iov_.data() + begin, end - begin};
}

void VerdictBatch::clear() noexcept {
  iov_.clear();
  starts_.clear();
  bytes_ = 0;
}

}  // namespace tandem
