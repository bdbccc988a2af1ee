// The NFQUEUE adapter's pure parts: kernel queue statistics from /proc.
#include <gtest/gtest.h>

#include "proxy/io/nfqueue.h"

namespace tandem {
namespace {

// /proc/net/netfilter/nfnetlink_queue as nfqnl seq_show prints it (two queues bound).
const char* const kProc =
    "    0  12345     3 2 65531     7    11   987654  1\n"
    "    5  23456     0 2 65531     0     0        4  1\n";

TEST(NfQueueProcTest, FindsTheQueue) {
  auto s = parseNfQueueProc(kProc, 0);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->peer_portid, 12345u);
  EXPECT_EQ(s->queue_total, 3u);
  EXPECT_EQ(s->queue_dropped, 7u);
  EXPECT_EQ(s->user_dropped, 11u);
  EXPECT_EQ(s->id_sequence, 987654u);
  auto five = parseNfQueueProc(kProc, 5);
  ASSERT_TRUE(five.has_value());
  EXPECT_EQ(five->id_sequence, 4u);
}

TEST(NfQueueProcTest, AbsentOrGarbled) {
  EXPECT_FALSE(parseNfQueueProc(kProc, 1).has_value());
  EXPECT_FALSE(parseNfQueueProc("", 0).has_value());
  EXPECT_FALSE(parseNfQueueProc("0 1 2\n", 0).has_value());
}

}  // namespace
}  // namespace tandem
