// VerdictBatch: the iovecs of a batch, concatenated as sendmsg() would, must parse back as the
// netlink messages the kernel expects (nfqnl_recv_verdict), each starting 4-byte aligned.
#include "proxy/io/verdict_batch.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>

#include <cstring>
#include <vector>

namespace tandem {
namespace {

std::vector<uint8_t> flatten(const VerdictBatch& b) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < b.iovCount(); ++i) {
    const auto* p = static_cast<const uint8_t*>(b.iov()[i].iov_base);
    out.insert(out.end(), p, p + b.iov()[i].iov_len);
  }
  return out;
}

struct Parsed {
  uint16_t queue = 0;
  uint32_t id = 0;
  uint32_t verdict = 0;
  std::vector<uint8_t> payload;
  bool has_payload = false;
};

int attrCb(const nlattr* attr, void* data) {
  auto* p = static_cast<Parsed*>(data);
  switch (mnl_attr_get_type(attr)) {
    case NFQA_VERDICT_HDR: {
      nfqnl_msg_verdict_hdr vh;
      std::memcpy(&vh, mnl_attr_get_payload(attr), sizeof(vh));
      p->id = ntohl(vh.id);
      p->verdict = ntohl(vh.verdict);
      break;
    }
    case NFQA_PAYLOAD: {
      const auto* d = static_cast<const uint8_t*>(mnl_attr_get_payload(attr));
      p->payload.assign(d, d + mnl_attr_get_payload_len(attr));
      p->has_payload = true;
      break;
    }
  }
  return MNL_CB_OK;
}

std::vector<Parsed> parse(std::vector<uint8_t>& bytes) {
  std::vector<Parsed> out;
  int len = static_cast<int>(bytes.size());
  auto* nlh = reinterpret_cast<nlmsghdr*>(bytes.data());
  while (mnl_nlmsg_ok(nlh, len)) {
    EXPECT_EQ(nlh->nlmsg_type, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT);
    EXPECT_EQ(nlh->nlmsg_len % 4, 0u);
    Parsed p;
    const auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
    p.queue = ntohs(nfg->res_id);
    EXPECT_EQ(mnl_attr_parse(nlh, sizeof(nfgenmsg), attrCb, &p), MNL_CB_OK);
    out.push_back(p);
    nlh = mnl_nlmsg_next(nlh, &len);
  }
  EXPECT_EQ(len, 0) << "trailing bytes after the last message";
  return out;
}

TEST(VerdictBatchTest, MessagesParseBack) {
  VerdictBatch b(8, 1 << 20);
  std::vector<uint8_t> pkt1(41, 0xab);  // odd length: needs 3 bytes of padding
  std::vector<uint8_t> pkt2(64, 0xcd);  // aligned: no padding iovec
  ASSERT_TRUE(b.add(3, 100, NF_ACCEPT, pkt1.data(), pkt1.size()));
  ASSERT_TRUE(b.add(3, 101, NF_DROP, nullptr, 0));
  ASSERT_TRUE(b.add(3, 102, NF_ACCEPT, pkt2.data(), pkt2.size()));
  ASSERT_TRUE(b.add(3, 103, NF_ACCEPT, nullptr, 0));  // accept unchanged
  EXPECT_EQ(b.messages(), 4u);
  EXPECT_EQ(b.iovCount(), 3u + 1u + 2u + 1u);

  std::vector<uint8_t> bytes = flatten(b);
  EXPECT_EQ(bytes.size(), b.bytes());
  std::vector<Parsed> msgs = parse(bytes);
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[0].queue, 3);
  EXPECT_EQ(msgs[0].id, 100u);
  EXPECT_EQ(msgs[0].verdict, static_cast<uint32_t>(NF_ACCEPT));
  EXPECT_TRUE(msgs[0].has_payload);
  EXPECT_EQ(msgs[0].payload, pkt1);
  EXPECT_EQ(msgs[1].id, 101u);
  EXPECT_EQ(msgs[1].verdict, static_cast<uint32_t>(NF_DROP));
  EXPECT_FALSE(msgs[1].has_payload);
  EXPECT_EQ(msgs[2].payload, pkt2);
  EXPECT_EQ(msgs[3].id, 103u);
  EXPECT_FALSE(msgs[3].has_payload);
}

TEST(VerdictBatchTest, PayloadIsReferencedNotCopied) {
  VerdictBatch b(4, 1 << 20);
  std::vector<uint8_t> pkt(100, 1);
  ASSERT_TRUE(b.add(0, 1, NF_ACCEPT, pkt.data(), pkt.size()));
  EXPECT_EQ(b.message(0)[1].iov_base, pkt.data());
}

TEST(VerdictBatchTest, MessageSpansCoverTheBatch) {
  VerdictBatch b(4, 1 << 20);
  std::vector<uint8_t> pkt(10, 1);
  ASSERT_TRUE(b.add(0, 1, NF_ACCEPT, pkt.data(), pkt.size()));
  ASSERT_TRUE(b.add(0, 2, NF_DROP, nullptr, 0));
  EXPECT_EQ(b.message(0).size(), 3u);
  EXPECT_EQ(b.message(1).size(), 1u);
  EXPECT_EQ(b.message(1).data(), b.iov() + 3);
}

TEST(VerdictBatchTest, LimitsAndClear) {
  VerdictBatch b(2, 1 << 20);
  std::vector<uint8_t> pkt(VerdictBatch::kMaxPayload + 1, 0);
  EXPECT_FALSE(b.add(0, 1, NF_ACCEPT, pkt.data(), pkt.size())) << "above the 16-bit nla_len";
  EXPECT_TRUE(b.add(0, 1, NF_ACCEPT, pkt.data(), VerdictBatch::kMaxPayload));
  EXPECT_TRUE(b.add(0, 2, NF_DROP, nullptr, 0));
  EXPECT_FALSE(b.fits(0)) << "message slots exhausted";
  EXPECT_FALSE(b.add(0, 3, NF_DROP, nullptr, 0));
  b.clear();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.bytes(), 0u);
  EXPECT_TRUE(b.fits(0));
}

TEST(VerdictBatchTest, ByteLimit) {
  VerdictBatch b(64, 3000);
  std::vector<uint8_t> pkt(1000, 0);
  EXPECT_TRUE(b.add(0, 1, NF_ACCEPT, pkt.data(), pkt.size()));
  EXPECT_TRUE(b.add(0, 2, NF_ACCEPT, pkt.data(), pkt.size()));
  EXPECT_FALSE(b.fits(pkt.size())) << "a third would pass 3000 bytes";
  EXPECT_TRUE(b.fits(0));
}

TEST(VerdictBatchTest, IovLimit) {
  VerdictBatch b(VerdictBatch::kMaxIov, 1 << 30);
  std::vector<uint8_t> pkt(5, 0);  // header + packet + padding: 3 iovecs each
  size_t added = 0;
  while (b.add(0, static_cast<uint32_t>(added), NF_ACCEPT, pkt.data(), pkt.size())) ++added;
  EXPECT_EQ(added, VerdictBatch::kMaxIov / 3);
  EXPECT_LE(b.iovCount(), VerdictBatch::kMaxIov);
}

}  // namespace
}  // namespace tandem
