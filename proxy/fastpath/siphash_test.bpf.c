/* Test-only program (tests/unit/syncookie_bpf_test.cc; not part of tandemd): runs the BPF
 * SipHash-2-4 of siphash.bpf.h on a frame laid out as Ethernet header | key (16) | length (1) |
 * message (64), and writes the 64-bit result, little-endian, over the key. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "proxy/fastpath/siphash.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tc")
int tandem_siphash_test(struct __sk_buff* skb) {
  __u8 key[16];
  __u8 len = 0;
  __u8 msg[TANDEM_SIPHASH_MAX] = {};
  if (bpf_skb_load_bytes(skb, 14, key, 16) < 0 || bpf_skb_load_bytes(skb, 30, &len, 1) < 0 ||
      bpf_skb_load_bytes(skb, 31, msg, TANDEM_SIPHASH_MAX) < 0)
    return TC_ACT_SHOT;
  const __u64 h = tandem_siphash24(msg, len, key);
  __u8 out[8];
#pragma clang loop unroll(full)
  for (int i = 0; i < 8; i++) out[i] = (__u8)(h >> (8 * i));
  if (bpf_skb_store_bytes(skb, 14, out, 8, 0) < 0) return TC_ACT_SHOT;
  return TC_ACT_OK;
}
