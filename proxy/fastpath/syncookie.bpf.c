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

/* The backends a kernel-bound cookie ACK may go to, per service. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct tandem_syn_service);
  __type(value, struct tandem_syn_bind);
} tandem_syn_binds SEC(".maps");

/* The fast path's event ring, reused by the loader; a private one without. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} tandem_fp_events SEC(".maps");

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
  __u8 frame[40];
  struct tandem_fp_rewrite val[2];
};

/* Per CPU: [0] the count of flows bound, [1 + rr_slot] each service's round-robin position. A
 * bound flow's id: flow_id = 1 << 31 | (count mod 2^21) << 10 | cpu (mod 1024), generation =
 * count / 2^21 + 1; unique per flow until a CPU has bound 2^53 of them. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1025);
  __type(key, __u32);
  __type(value, __u64);
} tandem_syn_ids SEC(".maps");

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
  __u32 ts_ecr;
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
    c->ts_ecr = get32(c->hdr, i + 6);
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

/* A SYN's or SYN-ACK's options after its 20-byte header in nh, as common/tcp_options.cc's
 * buildSynOptions() lays them out: MSS, [SACK-permitted or NOP NOP, timestamps], [NOP, window
 * scale] (without timestamps neither SACK nor scaling: the cookie carries them in TSval).
 * Returns the header's length: 24, 36 or 40. */
static __always_inline __u32 put_syn_options(__u8* nh, __u16 mss, int ts, int sack, __u32 tsval,
                                             __u32 tsecr, int wscale_ok, __u8 wscale) {
  __u32 o = 20;
  nh[o++] = OPT_MSS;
  nh[o++] = 4;
  put16(nh, o, mss);
  o += 2;
  if (ts) {
    if (sack) {
      nh[o++] = OPT_SACK_PERM;
      nh[o++] = 2;
    } else {
      nh[o++] = OPT_NOP;
      nh[o++] = OPT_NOP;
    }
    nh[o++] = OPT_TS;
    nh[o++] = 10;
    put32(nh, o, tsval);
    put32(nh, o + 4, tsecr);
    o += 8;
  }
  if (wscale_ok) {
    nh[o & HDR_MASK] = OPT_NOP;
    nh[(o + 1) & HDR_MASK] = OPT_WSCALE;
    nh[(o + 2) & HDR_MASK] = 3;
    nh[(o + 3) & HDR_MASK] = wscale;
    o += 4;
  }
  return o & 0x3c;
}

/* The TCP checksum's differences when the header `old` (thl bytes) becomes `nh` (nthl bytes):
 * the header's, and the pseudo header's length word's. -1 if a helper failed. */
static __always_inline int header_diffs(const __u8* old, __u32 thl, const __u8* nh, __u32 nthl,
                                        __s64* hdr_diff, __s64* len_diff) {
  const __u32 ohsize = thl & 0x3c;
  if (ohsize < 20 || nthl < 20 || nthl > 60) return -1; /* bounds the verifier */
  *hdr_diff = bpf_csum_diff((__be32*)old, ohsize, (__be32*)nh, nthl, 0);
  __u8 old_len[4] = {0, IPPROTO_TCP, (__u8)(thl >> 8), (__u8)thl};
  __u8 new_len[4] = {0, IPPROTO_TCP, (__u8)(nthl >> 8), (__u8)nthl};
  *len_diff = bpf_csum_diff((__be32*)old_len, 4, (__be32*)new_len, 4, 0);
  return *hdr_diff < 0 || *len_diff < 0 ? -1 : 0;
}

/* daemon.fastpath_bind: a bare ACK to a kernel-bound splice service that returns a valid cookie
 * (SynCookie::check: the period it names, at most one old) becomes the backend SYN the engine's
 * spliceOpen() would write (backendSyn()), to the first UP backend from the service's round-robin
 * position (pickBackend()); both of the flow's entries are written armed as fastPathArm() writes
 * them, under an id of the kernel's, so that the fast path program answers the backend's SYN-ACK.
 * The ACK goes to the engine through the ring, which creates the flow from it
 * (Engine::fastPathBound) and sends nothing. Anything it cannot do alone goes on untouched to
 * NFQUEUE, counted (TANDEM_SYN_ST_ACK_PASS). */
static __noinline int handle_ack(struct __sk_buff* skb) {
  const __u32 l3 = ETH_HLEN;
  __u8 ip[20];
  if (bpf_skb_load_bytes(skb, l3, ip, 20) < 0) return PASS;
  __u8 th[20];
  if ((ip[0] & 0x0f) != 5 || bpf_skb_load_bytes(skb, l3 + 20, th, 20) < 0) return PASS;
  struct tandem_syn_service svc = {};
  __builtin_memcpy(&svc.addr, &ip[16], 4);
  __builtin_memcpy(&svc.port, &th[2], 2);
  const __u8* svc_flags = bpf_map_lookup_elem(&tandem_syn_services, &svc);
  if (!svc_flags || !(*svc_flags & TANDEM_SYN_SVC_KBIND)) return PASS;
  const struct tandem_syn_bind* bind = bpf_map_lookup_elem(&tandem_syn_binds, &svc);
  if (!bind || bind->n == 0 || bind->n > TANDEM_SYN_BIND_MAX || bind->rr_slot >= 1024) return PASS;
  struct tandem_fp_key fk;
  __builtin_memcpy(&fk.saddr, &ip[12], 4);
  __builtin_memcpy(&fk.daddr, &ip[16], 4);
  __builtin_memcpy(&fk.sport, &th[0], 2);
  __builtin_memcpy(&fk.dport, &th[2], 2);
  if (bpf_map_lookup_elem(&tandem_fp_flows, &fk)) return PASS;
  __u32 zero = 0;
  const struct tandem_syn_config* cfg = bpf_map_lookup_elem(&tandem_syn_config, &zero);
  if (!cfg || !cfg->active || cfg->no_bind || cfg->period_ns == 0 || cfg->mss_table_size == 0 ||
      cfg->mss_table_size > 4)
    return PASS;
  const __u32 tot_len = ((__u32)ip[2] << 8) | ip[3];
  const __u32 ihl = (__u32)(ip[0] & 0x0f) * 4;
  const __u32 thl = (__u32)(th[12] >> 4) * 4;
  if (ihl != 20 || (((__u32)ip[6] << 8 | ip[7]) & 0x3fff) != 0 || thl < 20 ||
      tot_len != 20 + thl || tot_len > skb->len - l3 || (th[12] & 0x0f) != 0)
    return PASS;
  {
    /* A bad header checksum: ip_rcv() drops it before the engine could see it; so here. */
    __u64 sum = 0;
#pragma clang loop unroll(full)
    for (int k = 0; k < 20; k += 2) sum += ((__u32)ip[k] << 8) | ip[k + 1];
    if (fold(sum) != 0xffff) return PASS;
  }
  struct syn_parse pc = {};
  __builtin_memcpy(pc.hdr, th, 20);
  const __u32 optlen = (thl - 20) & 0x3f;
  if (optlen > 40) return PASS;
  if (optlen > 0 && bpf_skb_load_bytes(skb, l3 + 40, &pc.hdr[20], optlen) < 0) return PASS;
  pc.thl = thl;
  pc.i = 20;
  if (bpf_loop(40, parse_option, &pc, 0) < 0 || pc.err) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }

  const __u32 seq = get32(th, 4);
  const __u32 c = get32(th, 8) - 1;
  const __u32 index = c & 3;
  if (index >= cfg->mss_table_size) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  const __u64 now = cfg->test_now_ns ? cfg->test_now_ns
                                     : bpf_ktime_get_ns() + cfg->clock_offset_ns;
  const __u64 now_count = now / cfg->period_ns;
  const __u32 field = (c >> 2) & 3;
  const __u32 age = ((__u32)now_count - field) & 3;
  /* SynCookie::check: the period the cookie names, at most kMaxAge (1) old. */
  if (age > 1 || age > now_count) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  const __u64 cookie_count = now_count - age;
  const struct tandem_syn_key* key = bpf_map_lookup_elem(&tandem_syn_keys, &cookie_count);
  if (!key) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  __u32 ts_bits = 0;
  const int ts = pc.ts_ok && (cfg->enable & TANDEM_SYN_EN_TS);
  if (ts) ts_bits = pc.ts_ecr & TS_OPT_MASK;

  struct syn_scratch* scratch = bpf_map_lookup_elem(&tandem_syn_scratch, &zero);
  if (!scratch) return PASS;
  __u8* msg = scratch->msg;
  __builtin_memset(msg, 0, sizeof scratch->msg);
  msg[10] = 0xff;
  msg[11] = 0xff;
  __builtin_memcpy(&msg[12], &ip[12], 4);
  msg[26] = 0xff;
  msg[27] = 0xff;
  __builtin_memcpy(&msg[28], &ip[16], 4);
  __builtin_memcpy(&msg[32], &th[0], 2);
  __builtin_memcpy(&msg[34], &th[2], 2);
  put32(msg, 36, seq - 1);
  put32(msg, 40, (__u32)(cookie_count >> 32));
  put32(msg, 44, (__u32)cookie_count);
  msg[48] = (__u8)index;
  msg[49] = ts ? (__u8)(OPT_BYTE_TS | ts_bits) : 0;
  const __u64 mac = tandem_siphash24(msg, MSG_LEN, key->bytes);
  if (((__u32)mac & 0x0fffffff) != (c >> 4)) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  /* Engine::Impl::pickBackend() for round-robin: from the next position, the first UP backend
   * (the position per CPU, not shared). */
  const __u32 rr_key = 1 + bind->rr_slot;
  __u64* rr = bpf_map_lookup_elem(&tandem_syn_ids, &rr_key);
  if (!rr) return PASS;
  const __u32 nb = bind->n;
  const __u32 start = (__u32)(*rr % nb);
  *rr += 1;
  __u32 pick = TANDEM_SYN_BIND_MAX;
#pragma clang loop unroll(full)
  for (__u32 k = 0; k < TANDEM_SYN_BIND_MAX; k++) {
    const __u32 bi = (start + k) % nb;
    if (k < nb && pick == TANDEM_SYN_BIND_MAX && bind->b[bi & (TANDEM_SYN_BIND_MAX - 1)].up)
      pick = bi & (TANDEM_SYN_BIND_MAX - 1);
  }
  if (pick >= TANDEM_SYN_BIND_MAX) {
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  const __u32 be_addr = bind->b[pick].addr;
  const __u16 be_port = bind->b[pick].port;
  const __u32 cookie_mss = cfg->mss_table[index & 3];
  const int wscale_ok = ts && (ts_bits & TS_WSCALE_NONE) != TS_WSCALE_NONE;
  const __u32 wscale = wscale_ok ? (ts_bits & TS_WSCALE_NONE) : 0;
  const int sack_ok = ts && (ts_bits & TS_SACK);
  const int ecn_ok = ts && (ts_bits & TS_ECN);

  /* backendSyn(): MSS min(cookie, proxy), [SACK-permitted or NOP NOP, timestamps (TSval the
   * client's, TSecr 0)], [NOP, window scale (the client's)]. */
  __u8* nh = scratch->nh;
  __builtin_memset(nh, 0, sizeof scratch->nh);
  const __u32 nthl = put_syn_options(nh, cookie_mss < cfg->mss ? cookie_mss : cfg->mss, ts,
                                     sack_ok, pc.ts_val, 0, wscale_ok, (__u8)wscale);
  __builtin_memcpy(&nh[0], &th[0], 2);
  __builtin_memcpy(&nh[2], &be_port, 2);
  put32(nh, 4, seq - 1);
  put32(nh, 8, 0);
  nh[12] = (__u8)((nthl / 4) << 4);
  nh[13] = TCPF_SYN | (ecn_ok ? (TCPF_ECE | TCPF_CWR) : 0);
  {
    __u64 win = (__u64)(((__u32)th[14] << 8) | th[15]) << wscale;
    put16(nh, 14, win > 0xffff ? 0xffff : (__u16)win);
  }
  nh[16] = th[16];
  nh[17] = th[17];

  struct bpf_fib_lookup fib = {};
  __u32 out_ifindex = skb->ifindex;
  if (cfg->test_no_route) {
    /* Tests: out where it came from, back to the sender's MAC. */
    if (bpf_skb_load_bytes(skb, 6, fib.dmac, 6) < 0 || bpf_skb_load_bytes(skb, 0, fib.smac, 6) < 0)
      return PASS;
  } else {
    __u32 client_addr;
    __u16 client_port;
    __builtin_memcpy(&client_addr, &ip[12], 4);
    __builtin_memcpy(&client_port, &th[0], 2);
    if (route_tcp4(skb, &fib, client_addr, be_addr, client_port, be_port, 0, 60) !=
        BPF_FIB_LKUP_RET_SUCCESS) {
      count(TANDEM_SYN_ST_ACK_PASS);
      return PASS;
    }
    out_ifindex = fib.ifindex;
  }

  /* TCP checksum differences: the header, the pseudo header's length and destination. */
  __s64 hdr_diff, len_diff;
  if (header_diffs(pc.hdr, thl, nh, nthl, &hdr_diff, &len_diff) < 0) return PASS;
  __u32 old_daddr, new_daddr = be_addr;
  __builtin_memcpy(&old_daddr, &ip[16], 4);
  const __s64 addr_diff = bpf_csum_diff(&old_daddr, 4, &new_daddr, 4, 0);
  if (addr_diff < 0) return PASS;

  __u32 kid = 0, kflow = 0;
  struct tandem_fp_key bk;
  __builtin_memcpy(&bk.saddr, &be_addr, 4);
  __builtin_memcpy(&bk.daddr, &ip[12], 4);
  __builtin_memcpy(&bk.sport, &be_port, 2);
  __builtin_memcpy(&bk.dport, &th[0], 2);
  {
    __u64* ctr = bpf_map_lookup_elem(&tandem_syn_ids, &zero);
    if (!ctr) return PASS;
    const __u64 n = *ctr;
    *ctr = n + 1;
    kflow = 0x80000000u | ((__u32)(n & 0x1fffff) << 10) | (bpf_get_smp_processor_id() & 0x3ff);
    kid = (__u32)(n >> 21) + 1;
    struct tandem_fp_rewrite* v = scratch->val;
    __builtin_memset(v, 0, 2 * sizeof(struct tandem_fp_rewrite));
    const __u8 fl = TANDEM_FP_SYNACK | (bind->close_fast ? TANDEM_FP_CLOSE_FAST : 0);
    /* client -> backend */
    __builtin_memcpy(&v[0].saddr, &ip[12], 4);
    v[0].daddr = be_addr;
    __builtin_memcpy(&v[0].sport, &th[0], 2);
    v[0].dport = be_port;
    v[0].flags = fl;
    v[0].dir = 0;
    v[0].flow_id = kflow;
    v[0].generation = kid;
    /* backend -> client, armed */
    __builtin_memcpy(&v[1].saddr, &ip[16], 4);
    __builtin_memcpy(&v[1].daddr, &ip[12], 4);
    __builtin_memcpy(&v[1].sport, &th[2], 2);
    __builtin_memcpy(&v[1].dport, &th[0], 2);
    v[1].flags = fl;
    v[1].dir = 1;
    v[1].flow_id = kflow;
    v[1].generation = kid;
    v[1].arm_state = TANDEM_FP_ARM_WAITING;
    v[1].arm_ack = seq;
    v[1].arm_proxy_isn = c;
    v[1].arm_proxy_tsval = pc.ts_ok ? pc.ts_ecr : 0;
    v[1].arm_client_tsval = pc.ts_ok ? pc.ts_val : 0;
    v[1].arm_client_window = ((__u16)th[14] << 8) | th[15];
    v[1].arm_client_wscale = wscale_ok ? (cfg->wscale > MAX_WSCALE ? MAX_WSCALE : cfg->wscale) : 0;
    v[1].arm_flags = (seq != 0 && pc.ts_ok && pc.ts_ecr != 0 ? TANDEM_FP_ARM_F_TS : 0) |
                     (wscale_ok ? TANDEM_FP_ARM_F_WSCALE : 0);
    if (bpf_map_update_elem(&tandem_fp_flows, &fk, &v[0], BPF_NOEXIST) != 0) {
      count(TANDEM_SYN_ST_ACK_PASS);
      return PASS;
    }
    if (bpf_map_update_elem(&tandem_fp_flows, &bk, &v[1], BPF_NOEXIST) != 0) {
      bpf_map_delete_elem(&tandem_fp_flows, &fk);
      count(TANDEM_SYN_ST_ACK_PASS);
      return PASS;
    }
  }
  struct tandem_fp_bind_event* ev = bpf_ringbuf_reserve(&tandem_fp_events, sizeof(*ev), 0);
  if (!ev) {
    bpf_map_delete_elem(&tandem_fp_flows, &fk);
    bpf_map_delete_elem(&tandem_fp_flows, &bk);
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  const __u32 ntot = 20 + nthl;
  if (bpf_skb_change_tail(skb, ETH_HLEN + ntot, 0) < 0) {
    bpf_ringbuf_discard(ev, 0);
    bpf_map_delete_elem(&tandem_fp_flows, &fk);
    bpf_map_delete_elem(&tandem_fp_flows, &bk);
    count(TANDEM_SYN_ST_ACK_PASS);
    return PASS;
  }
  ev->head.ns = bpf_ktime_get_ns();
  ev->head.flow_id = kflow;
  ev->head.generation = kid;
  ev->head.seq = seq;
  ev->head.ack = c + 1;
  ev->head.payload_len = (__u16)thl;
  ev->head.window = ((__u16)th[14] << 8) | th[15];
  ev->head.tcp_flags = th[13];
  ev->head.dir = 0;
  ev->head.kind = TANDEM_FP_EV_BIND;
  __builtin_memcpy(&ev->saddr, &ip[12], 4);
  __builtin_memcpy(&ev->daddr, &ip[16], 4);
  ev->backend = pick;
  ev->reserved = 0;
  __builtin_memcpy(ev->tcp_hdr, pc.hdr, HDR_BUF);
  bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);

  __u8* frame = scratch->frame;
  __builtin_memcpy(&frame[0], fib.dmac, 6);
  __builtin_memcpy(&frame[6], fib.smac, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  put_ipv4(&frame[ETH_HLEN], ntot, &ip[12], &new_daddr, 64);
  const __u32 l4 = l3 + 20;
  int err = bpf_skb_store_bytes(skb, 0, frame, ETH_HLEN + 20, 0);
  if (!err) err = bpf_skb_store_bytes(skb, l4, nh, nthl, 0);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)len_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)addr_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)hdr_diff, 0);
  if (err) {
    count(TANDEM_SYN_ST_FAILED);
    return TC_ACT_SHOT;
  }
  count(TANDEM_SYN_ST_BOUND);
  return bpf_redirect(out_ifindex, 0);
}

static __noinline int handle_syn(struct __sk_buff* skb) {
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
    struct bpf_fib_lookup fib;
    __u32 vip, client;
    __u16 vport, cport;
    __builtin_memcpy(&vip, &ip[16], 4);
    __builtin_memcpy(&client, &ip[12], 4);
    __builtin_memcpy(&vport, &th[2], 2);
    __builtin_memcpy(&cport, &th[0], 2);
    const long rc = route_tcp4(skb, &fib, vip, client, vport, cport, 0, 60);
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
  const __u32 nthl =
      put_syn_options(nh, cfg->mss, ts_ok, sack_ok, tsval, pc.ts_val, wscale_ok,
                      cfg->wscale > MAX_WSCALE ? MAX_WSCALE : cfg->wscale); /* 24, 36 or 40 */
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
  __u8* frame = scratch->frame;
  __builtin_memcpy(&frame[0], out_dmac, 6);
  __builtin_memcpy(&frame[6], out_smac, 6);
  frame[12] = 0x08;
  frame[13] = 0x00;
  /* DF, IP ID 0, TOS 0 (as nf_synproxy_core.c), addresses swapped. */
  put_ipv4(&frame[ETH_HLEN], ntot, &ip[16], &ip[12], cfg->ttl);

  /* TCP checksum differences: the header, and the pseudo header's length (the addresses only
   * swap, which the sum does not see). */
  __s64 hdr_diff, len_diff;
  if (header_diffs(pc.hdr, thl, nh, nthl, &hdr_diff, &len_diff) < 0) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }

  /* Writes. The first (the length) fails, if anything does, before the packet changed. */
  if (bpf_skb_change_tail(skb, ETH_HLEN + ntot, 0) < 0) {
    count(TANDEM_SYN_ST_PASS_UNPARSED);
    return PASS;
  }
  const __u32 l4 = l3 + 20;
  int err = bpf_skb_store_bytes(skb, 0, frame, ETH_HLEN + 20, 0);
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

SEC("tc")
int tandem_syn_ingress(struct __sk_buff* skb) {
  /* A dispatcher with a small frame: the handlers' own frames stay within the stack limit. */
  __u8 b[2];
  if (skb->pkt_type != PACKET_HOST) return PASS;
  if (bpf_skb_load_bytes(skb, 12, b, 2) < 0 || b[0] != 0x08 || b[1] != 0x00) return PASS;
  if (bpf_skb_load_bytes(skb, ETH_HLEN, b, 1) < 0 || b[0] != 0x45) return handle_syn(skb);
  if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, b, 1) < 0 || b[0] != IPPROTO_TCP) return PASS;
  if (bpf_skb_load_bytes(skb, ETH_HLEN + 20 + 13, b, 1) < 0) return PASS;
  if (b[0] == TCPF_ACK) return handle_ack(skb);
  return handle_syn(skb);
}
