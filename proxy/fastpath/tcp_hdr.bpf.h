/* What tandem's BPF programs (fastpath.bpf.c, syncookie.bpf.c) share to read and write a TCP
 * header they copied into a buffer: flag and option numbers, the buffer's size, big-endian
 * access at offsets the verifier can bound; the IPv4 header they write for a segment of their
 * own; and the route lookup for a segment they send on. */
#ifndef TANDEM_TCP_HDR_BPF_H
#define TANDEM_TCP_HDR_BPF_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_ACK 0x10
#define TCPF_ECE 0x40
#define TCPF_CWR 0x80

#define OPT_EOL 0
#define OPT_NOP 1
#define OPT_MSS 2
#define OPT_WSCALE 3
#define OPT_SACK_PERM 4
#define OPT_SACK 5
#define OPT_TS 8

/* The TCP header copy: 20 fixed bytes and up to 40 of options; 64 so that an index masked with
 * 63 always stays inside (the verifier's view of every variable access). */
#define HDR_BUF 64
#define HDR_MASK 63

static __always_inline __u32 get32(const __u8* b, __u32 off) {
  return ((__u32)b[off & HDR_MASK] << 24) | ((__u32)b[(off + 1) & HDR_MASK] << 16) |
         ((__u32)b[(off + 2) & HDR_MASK] << 8) | (__u32)b[(off + 3) & HDR_MASK];
}

static __always_inline void put16(__u8* b, __u32 off, __u16 v) {
  b[off & HDR_MASK] = (__u8)(v >> 8);
  b[(off + 1) & HDR_MASK] = (__u8)v;
}

static __always_inline void put32(__u8* b, __u32 off, __u32 v) {
  b[off & HDR_MASK] = (__u8)(v >> 24);
  b[(off + 1) & HDR_MASK] = (__u8)(v >> 16);
  b[(off + 2) & HDR_MASK] = (__u8)(v >> 8);
  b[(off + 3) & HDR_MASK] = (__u8)v;
}

/* The one's complement sum folded to 16 bits. */
static __always_inline __u16 fold(__u64 sum) {
  sum = (sum & 0xffffffff) + (sum >> 32);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return (__u16)sum;
}

/* An IPv4 header without options, as the engine's writeTcpSegment() writes it (TOS 0, IP ID 0,
 * DF, protocol TCP), addresses copied as they are (wire order), checksum computed. */
static __always_inline void put_ipv4(__u8* ip, __u32 tot_len, const void* saddr, const void* daddr,
                                     __u8 ttl) {
  __builtin_memset(ip, 0, 20);
  ip[0] = 0x45;
  ip[2] = (__u8)(tot_len >> 8);
  ip[3] = (__u8)tot_len;
  ip[6] = 0x40;
  ip[8] = ttl;
  ip[9] = 6; /* IPPROTO_TCP */
  __builtin_memcpy(&ip[12], saddr, 4);
  __builtin_memcpy(&ip[16], daddr, 4);
  __u64 s = 0;
#pragma clang loop unroll(full)
  for (int k = 0; k < 20; k += 2) s += ((__u32)ip[k] << 8) | ip[k + 1];
  const __u16 c = (__u16)~fold(s);
  ip[10] = (__u8)(c >> 8);
  ip[11] = (__u8)c;
}

/* Where the kernel would forward an IPv4 TCP segment from `saddr`:`sport` to `daddr`:`dport`
 * (wire order) arriving on the skb's interface, as ip_forward() looks it up: bpf_fib_lookup
 * with the FIB rules and tables, forwarding on that interface, a unicast route. `tot_len` is
 * checked against the output MTU; 0 checks the skb itself. Returns the helper's result, `fib`
 * holding the output interface and both MACs on BPF_FIB_LKUP_RET_SUCCESS. */
static __always_inline long route_tcp4(struct __sk_buff* skb, struct bpf_fib_lookup* fib,
                                       __u32 saddr, __u32 daddr, __u16 sport, __u16 dport,
                                       __u8 tos, __u16 tot_len) {
  __builtin_memset(fib, 0, sizeof(*fib));
  fib->family = 2; /* AF_INET */
  fib->tos = tos;
  fib->l4_protocol = 6; /* IPPROTO_TCP */
  fib->sport = sport;
  fib->dport = dport;
  fib->tot_len = tot_len;
  fib->ifindex = skb->ifindex;
  fib->ipv4_src = saddr;
  fib->ipv4_dst = daddr;
  return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

#endif /* TANDEM_TCP_HDR_BPF_H */
