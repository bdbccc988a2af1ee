/* tandem's kernel SYN answerer: a tc ingress program (direct action, first in the tcx chain,
 * before the fast path) that answers a client's SYN to a splice service with the SYN-ACK the
 * engine would send, cookie and all, so that the SYN never crosses NFQUEUE. The contract with
 * tandemd is syncookie_abi.h; the loader kernel_syncookie.cc; the engine's side
 * proxy/core/syn_cookie.cc (make, buildSynAck), which this follows step by step.
 *
 * What is answered: a pure SYN (SYN, optionally ECE+CWR; no payload; only the options MSS,
 * window scale, SACK-permitted, timestamps, NOP, EOL) of IPv4 without options, addressed to this
 * host, to a VIP:port in the services map, while the node is active and the key of the current
 * period is in the keys map. The SYN-ACK goes where the routing table sends traffic to the
 * client (bpf_fib_lookup), as the engine's would. Anything else goes on untouched (TC_ACT_UNSPEC: the next program,
 * then the iptables rules and NFQUEUE, where the engine handles it as before).
 *
 * Checksums: the IPv4 header is written whole with its checksum computed here. The TCP
 * checksum is fixed by difference (bpf_l4_csum_replace), as the fast path does, so that a
 * CHECKSUM_PARTIAL skb (a SYN from a local stack over veth) keeps a pseudo-header sum in the
 * check field and a complete one gets the full checksum; a SYN whose checksum was wrong yields
 * a SYN-ACK whose checksum is wrong (the client drops it, as it would drop the corrupt SYN).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxy/fastpath/fastpath_abi.h"
#include "proxy/fastpath/siphash.bpf.h"
#include "proxy/fastpath/tcp_hdr.bpf.h"
#include "proxy/fastpath/syncookie_abi.h"

char LICENSE[] SEC("license") = "GPL";

_Static_assert(sizeof(struct tandem_syn_config) == 48, "tandem_syn_config layout");
_Static_assert(sizeof(struct tandem_syn_key) == 16, "tandem_syn_key layout");
_Static_assert(sizeof(struct tandem_syn_service) == 8, "tandem_syn_service layout");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tandem_syn_config);
} tandem_syn_config SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8);
  __type(key, __u64);
  __type(value, struct tandem_syn_key);
} tandem_syn_keys SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct tandem_syn_service);
  __type(value, __u8);
} tandem_syn_services SEC(".maps");

/* The fast path's map, reused by the loader (bpf_map__reuse_fd); a private empty one without. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1);
  __type(key, struct tandem_fp_key);
  __type(value, struct tandem_fp_rewrite);
} tandem_fp_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, TANDEM_SYN_ST_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} tandem_syn_stats SEC(".maps");

/* Scratch space for the MAC message and the new TCP header (the stack holds 512 bytes). */
struct syn_scratch {
  __u8 msg[64];
  __u8 nh[64];
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct syn_scratch);
} tandem_syn_scratch SEC(".maps");

#define MAX_WSCALE 14 /* RFC 7323 2.3 */

/* Linux's cookie_init_timestamp bits (SynCookie::kTs*). */
#define TS_OPT_MASK 0x3fu
#define TS_WSCALE_NONE 0xfu
#define TS_SACK (1u << 4)
#define TS_ECN (1u << 5)
#define OPT_BYTE_TS 0x80

#define MSG_LEN 50 /* syn_cookie.cc kMsgLen */

/* Continue: the next tcx program (the fast path), then the stack. */
#define PASS TC_ACT_UNSPEC

static __always_inline void count(__u32 idx) {
  __u64* v = bpf_map_lookup_elem(&tandem_syn_stats, &idx);
  if (v) *v += 1;
}

/* The SYN's offer (tandem::TcpOptions as cookieInputFromSyn reads it). */
struct syn_parse {
  __u8 hdr[HDR_BUF];
  __u32 thl;
  __u32 i;
  __u32 err;  /* 1: malformed (the engine drops it); 2: odd (left to the engine) */
  __u32 has_mss;
  __u32 mss;
  __u32 has_wscale;
  __u32 wscale;
  __u32 sack_ok;
  __u32 ts_ok;
  __u32 ts_val;
};

/* One option, exactly as common/tcp_options.cc parses it (the last of a repeated option wins);
 * kinds the SYN-ACK does not depend on are refused as odd (the engine answers them, from
 * NFQUEUE). */
static long parse_option(__u32 n, void* arg) {
  struct syn_parse* c = arg;
  const __u32 i = c->i;
  const __u32 thl = c->thl;
  if (i >= thl || i >= HDR_BUF) return 1;
  const __u8 kind = c->hdr[i & HDR_MASK];
  if (kind == OPT_EOL) return 1;
  if (kind == OPT_NOP) {
    c->i = i + 1;
    return 0;
  }
  if (i + 1 >= thl) goto bad;
  const __u32 olen = c->hdr[(i + 1) & HDR_MASK];
  if (olen < 2 || i + olen > thl) goto bad;
  if (kind == OPT_MSS) {
    if (olen != 4) goto bad;
    c->has_mss = 1;
    c->mss = ((__u32)c->hdr[(i + 2) & HDR_MASK] << 8) | c->hdr[(i + 3) & HDR_MASK];
  } else if (kind == OPT_WSCALE) {
    if (olen != 3) goto bad;
    c->has_wscale = 1;
    c->wscale = c->hdr[(i + 2) & HDR_MASK];
    if (c->wscale > MAX_WSCALE) c->wscale = MAX_WSCALE;
  } else if (kind == OPT_SACK_PERM) {
    if (olen != 2) goto bad;
    c->sack_ok = 1;
  } else if (kind == OPT_TS) {
    if (olen != 10) goto bad;
    c->ts_ok = 1;
    c->ts_val = get32(c->hdr, i + 2);
  } else {
    c->err = 2;
    return 1;
  }
  c->i = i + olen;
  return 0;
bad:
  c->err = 1;
  return 1;
}

SEC("tc")
int tandem_syn_ingress(struct __sk_buff* skb) {
  /* Only frames for this host: ip_rcv() drops the others before netfilter. A frame to a macvlan's
   * MAC is "other host" on the lower device and is answered on the macvlan. */
  if (skb->pkt_type != PACKET_HOST) return PASS;
  const __u32 l3 = ETH_HLEN;
  __u8 eth[ETH_HLEN];
  if (bpf_skb_load_bytes(skb, 0, eth, ETH_HLEN) < 0) return PASS;
  if (eth[12] != 0x08 || eth[13] != 0x00) return PASS;
  __u8 ip[20];
  if (bpf_skb_load_bytes(skb, l3, ip, 20) < 0) return PASS;
  if (ip[9] != IPPROTO_TCP || (ip[0] & 0xf0) != 0x40) return PASS;
  const __u32 ihl = (__u32)(ip[0] & 0x0f) * 4;
  __u8 th[20];
  if (ihl < 20 || bpf_skb_load_bytes(skb, l3 + (ihl & 0x3c), th, 20) < 0) return PASS;
  const __u8 tflags = th[13];
  if ((tflags & (TCPF_SYN | TCPF_ACK | TCPF_RST | TCPF_FIN)) != TCPF_SYN) return PASS;

  /* A SYN: from here every outcome is counted. */
  struct tandem_syn_service svc = {};
  __builtin_memcpy(&svc.addr, &ip[16], 4);
  __builtin_memcpy(&svc.port, &th[2], 2);
  const __u8* svc_flags = bpf_map_lookup_elem(&tandem_syn_services, &svc);
  if (!svc_flags) {
    count(TANDEM_SYN_ST_PASS_NO_SERVICE);
    return PASS;
  }
  const __u8 zero_window = (*svc_flags & TANDEM_SYN_SVC_ZERO_WINDOW) != 0;
  /* A SYN on an established fast flow: the engine's, as before this program (it passes it on
   * as a packet of that flow; the backend's challenge ACK sorts it out, RFC 5961 4). */
  struct tandem_fp_key fk;
  __builtin_memcpy(&fk.saddr, &ip[12], 4);
  __builtin_memcpy(&fk.daddr, &ip[16], 4);
  __builtin_memcpy(&fk.sport, &th[0], 2);
  __builtin_memcpy(&fk.dport, &th[2], 2);
  if (bpf_map_lookup_elem(&tandem_fp_flows, &fk)) {
    count(TANDEM_SYN_ST_PASS_FAST_FLOW);
    return PASS;
  }
  __u32 zero = 0;
  const struct tandem_syn_config* cfg = bpf_map_lookup_elem(&tandem_syn_config, &zero);
  if (!cfg || !cfg->active || cfg->period_ns == 0 || cfg->mss_table_size == 0 ||
      cfg->mss_table_size > 4) {
    count(TANDEM_SYN_ST_PASS_STANDBY);
    return PASS;
  }

  /* IPv4 without options, not a fragment, a valid header checksum (ip_rcv() drops the others
   * before the engine could see them), a TCP header inside, no payload. */
  const __u32 tot_len = ((__u32)ip[2] << 8) | ip[3];
  const __u32 thl = (__u32)(th[12] >> 4) * 4;
  if (ihl != 20 || (((__u32)ip[6] << 8 | ip[7]) & 0x3fff) != 0 || tot_len < 40 ||
      tot_len > skb->len - l3 || thl < 20 || thl > tot_len - 20) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  {
    __u64 s = 0;
#pragma clang loop unroll(full)
    for (int k = 0; k < 20; k += 2) s += ((__u32)ip[k] << 8) | ip[k + 1];
    if (fold(s) != 0xffff) {
      count(TANDEM_SYN_ST_PASS_UNPARSED);
      return PASS;
    }
  }
  /* Payload (TCP Fast Open data), PSH/URG or a reserved bit (AccECN's AE): the engine's. */
  if (tot_len != 20 + thl || (tflags & ~(TCPF_SYN | TCPF_ECE | TCPF_CWR)) != 0 ||
      (th[12] & 0x0f) != 0) {
    count(TANDEM_SYN_ST_PASS_ODD);
    return PASS;
  }

  struct syn_parse pc = {};
  __builtin_memcpy(pc.hdr, th, 20);
  const __u32 optlen = (thl - 20) & 0x3f;
  if (optlen > 40) return PASS; /* cannot happen; bounds the verifier */
  if (optlen > 0 && bpf_skb_load_bytes(skb, l3 + 40, &pc.hdr[20], optlen) < 0) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  pc.thl = thl;
  pc.i = 20;
  if (bpf_loop(40, parse_option, &pc, 0) < 0 || pc.err == 1) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  if (pc.err) {
    count(TANDEM_SYN_ST_PASS_ODD);
    return PASS;
  }

  /* Where the SYN-ACK goes: where the kernel would route the engine's (bpf_fib_lookup, as a
   * forwarded packet from the VIP to the client). A blackholed, unreachable or prohibited client
   * gets nothing, as from the engine; a route the program cannot follow alone (no neighbour entry
   * yet, a local or non-unicast destination, forwarding off) is the engine's and the stack's. */
  __u32 out_ifindex = skb->ifindex;
  __u8 out_dmac[6], out_smac[6];
  __builtin_memcpy(out_dmac, &eth[6], 6);
  __builtin_memcpy(out_smac, &eth[0], 6);
  if (!cfg->test_no_route) {
    struct bpf_fib_lookup fib = {};
    fib.family = 2; /* AF_INET */
    fib.l4_protocol = IPPROTO_TCP;
    __builtin_memcpy(&fib.sport, &th[2], 2);
    __builtin_memcpy(&fib.dport, &th[0], 2);
    fib.tot_len = 60;
    fib.ifindex = skb->ifindex;
    __builtin_memcpy(&fib.ipv4_src, &ip[16], 4);
    __builtin_memcpy(&fib.ipv4_dst, &ip[12], 4);
    const long rc = bpf_fib_lookup(skb, &fib, sizeof fib, 0);
    if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
        rc == BPF_FIB_LKUP_RET_PROHIBIT) {
      count(TANDEM_SYN_ST_DROP_UNROUTABLE);
      return TC_ACT_SHOT;
    }
    if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
      count(TANDEM_SYN_ST_PASS_ROUTE);
      return PASS;
    }
    out_ifindex = fib.ifindex;
    __builtin_memcpy(out_dmac, fib.dmac, 6);
    __builtin_memcpy(out_smac, fib.smac, 6);
  }

  /* The cookie clock and its key. */
  const __u64 now = cfg->test_now_ns ? cfg->test_now_ns
                                     : bpf_ktime_get_ns() + cfg->clock_offset_ns;
  const __u64 cnt = now / cfg->period_ns;
  const struct tandem_syn_key* key = bpf_map_lookup_elem(&tandem_syn_keys, &cnt);
  if (!key) {
    count(TANDEM_SYN_ST_PASS_NO_KEY);
    return PASS;
  }

  /* SynCookie::make(). */
  const __u32 client_mss = pc.has_mss ? pc.mss : 536;
  __u32 index = (cfg->mss_table_size - 1) & 3;
#pragma clang loop unroll(full)
  for (int k = 0; k < 3; k++) {
    if (index > 0 && client_mss < cfg->mss_table[index & 3]) index--;
  }
  const __u8 en = cfg->enable;
  const int ts_ok = pc.ts_ok && (en & TANDEM_SYN_EN_TS);
  const int wscale_ok = ts_ok && pc.has_wscale && (en & TANDEM_SYN_EN_WSCALE);
  const int sack_ok = ts_ok && pc.sack_ok && (en & TANDEM_SYN_EN_SACK);
  const int ecn_ok = ts_ok && (tflags & (TCPF_ECE | TCPF_CWR)) == (TCPF_ECE | TCPF_CWR) &&
                     (en & TANDEM_SYN_EN_ECN);
  __u32 ts_bits = wscale_ok ? pc.wscale : TS_WSCALE_NONE;
  if (sack_ok) ts_bits |= TS_SACK;
  if (ecn_ok) ts_bits |= TS_ECN;

  struct syn_scratch* scratch = bpf_map_lookup_elem(&tandem_syn_scratch, &zero);
  if (!scratch) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  __u8* msg = scratch->msg;
  __builtin_memset(msg, 0, sizeof scratch->msg);
  msg[10] = 0xff; /* v4-mapped addresses (IpAddr::fromV4) */
  msg[11] = 0xff;
  __builtin_memcpy(&msg[12], &ip[12], 4); /* client */
  msg[26] = 0xff;
  msg[27] = 0xff;
  __builtin_memcpy(&msg[28], &ip[16], 4); /* VIP */
  __builtin_memcpy(&msg[32], &th[0], 2);  /* client port */
  __builtin_memcpy(&msg[34], &th[2], 2);  /* VIP port */
  __builtin_memcpy(&msg[36], &th[4], 4);  /* client ISN */
  put32(msg, 40, (__u32)(cnt >> 32));
  put32(msg, 44, (__u32)cnt);
  msg[48] = (__u8)index;
  msg[49] = ts_ok ? (__u8)(OPT_BYTE_TS | ts_bits) : 0;
  const __u64 mac = tandem_siphash24(msg, MSG_LEN, key->bytes);
  const __u32 isn = (((__u32)mac & 0x0fffffff) << 4) | (((__u32)cnt & 3) << 2) | index;
  __u32 tsval = 0;
  if (ts_ok) {
    const __u32 clock = (__u32)(now / 1000000) + (__u32)(mac >> 32);
    tsval = (clock & ~TS_OPT_MASK) | ts_bits;
    if ((__s32)(tsval - clock) > 0) tsval -= TS_OPT_MASK + 1;
  }

  /* buildSynAck(): options MSS, [SACK-permitted or NOP NOP, timestamps], [NOP, window scale]
   * (common/tcp_options.cc buildSynOptions; without timestamps neither SACK nor scaling). */
  __u8* nh = scratch->nh;
  __builtin_memset(nh, 0, sizeof scratch->nh);
  __u32 o = 20;
  nh[o++] = OPT_MSS;
  nh[o++] = 4;
  put16(nh, o, cfg->mss);
  o += 2;
  if (ts_ok) {
    if (sack_ok) {
      nh[o++] = OPT_SACK_PERM;
      nh[o++] = 2;
    } else {
      nh[o++] = OPT_NOP;
      nh[o++] = OPT_NOP;
    }
    nh[o++] = OPT_TS;
    nh[o++] = 10;
    put32(nh, o, tsval);
    put32(nh, o + 4, pc.ts_val);
    o += 8;
  }
  if (wscale_ok) {
    nh[o & HDR_MASK] = OPT_NOP;
    nh[(o + 1) & HDR_MASK] = OPT_WSCALE;
    nh[(o + 2) & HDR_MASK] = 3;
    nh[(o + 3) & HDR_MASK] = cfg->wscale > MAX_WSCALE ? MAX_WSCALE : cfg->wscale;
    o += 4;
  }
  const __u32 nthl = o & 0x3c; /* 24, 36 or 40 */
  __builtin_memcpy(&nh[0], &th[2], 2);
  __builtin_memcpy(&nh[2], &th[0], 2);
  put32(nh, 4, isn);
  put32(nh, 8, get32(th, 4) + 1);
  nh[12] = (__u8)((nthl / 4) << 4);
  nh[13] = TCPF_SYN | TCPF_ACK | (ecn_ok ? TCPF_ECE : 0);
  put16(nh, 14, zero_window ? 0 : cfg->window);
  nh[16] = th[16]; /* the check field, fixed by difference below */
  nh[17] = th[17];

  const __u32 ntot = 20 + nthl;
  __u8 frame[ETH_HLEN + 20];
  __builtin_memcpy(&frame[0], out_dmac, 6);
  __builtin_memcpy(&frame[6], out_smac, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  /* DF, IP ID 0, TOS 0 (as nf_synproxy_core.c), addresses swapped. */
  put_ipv4(&frame[ETH_HLEN], ntot, &ip[16], &ip[12], cfg->ttl);

  /* TCP checksum differences: the header, and the pseudo header's length (the addresses only
   * swap, which the sum does not see). */
  const __u32 ohsize = thl & 0x3c;
  if (ohsize < 20 || nthl < 20) return PASS; /* cannot happen; bounds the verifier */
  const __s64 hdr_diff = bpf_csum_diff((__be32*)pc.hdr, ohsize, (__be32*)nh, nthl, 0);
  __u8 old_len[4] = {0, IPPROTO_TCP, (__u8)(thl >> 8), (__u8)thl};
  __u8 new_len[4] = {0, IPPROTO_TCP, (__u8)(nthl >> 8), (__u8)nthl};
  const __s64 len_diff = bpf_csum_diff((__be32*)old_len, 4, (__be32*)new_len, 4, 0);
  if (hdr_diff < 0 || len_diff < 0) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }

  /* Writes. The first (the length) fails, if anything does, before the packet changed. */
  if (bpf_skb_change_tail(skb, ETH_HLEN + ntot, 0) < 0) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  const __u32 l4 = l3 + 20;
  int err = bpf_skb_store_bytes(skb, 0, frame, sizeof frame, 0);
  if (!err) err = bpf_skb_store_bytes(skb, l4, nh, nthl, 0);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)len_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)hdr_diff, 0);
  if (err) {
    count(TANDEM_SYN_ST_FAILED);
    return TC_ACT_SHOT;
  }
  count(TANDEM_SYN_ST_ANSWERED);
  return bpf_redirect(out_ifindex, 0);
}
