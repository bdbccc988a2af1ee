/* tandem's kernel fast path: a tc ingress program (direct action) that translates packets of
 * established splice flows in the kernel, exactly as translateSegment() (proxy/core/
 * translator.cc) would, so that they never cross NFQUEUE. The contract with tandemd is
 * fastpath_abi.h; the loader is kernel_fastpath.cc. With daemon.fastpath_splice = on it also
 * completes a zero-window splice's backend handshake (splice_synack(): the backend's SYN-ACK
 * becomes the two ACKs the engine would send; docs/fastpath.md, "Splice completion in the
 * kernel").
 *
 * Shape: everything is read into stack copies first (IPv4 header, TCP header with options),
 * parsed and checked there, the new header computed there; only then is the packet written, in
 * one bpf_skb_store_bytes() per header and three checksum fixes. So every reason to leave a
 * packet to NFQUEUE is found before the first write, and the one write that can fail for want
 * of memory (the first, which makes a cloned skb private) fails before anything changed.
 *
 * Checksums: bpf_l3_csum_replace/bpf_l4_csum_replace with a precomputed difference
 * (inet_proto_csum_replace_by_diff) do the right thing for every skb->ip_summed: a complete
 * field is fixed (RFC 1624), a CHECKSUM_PARTIAL field (GSO super-packets, locally generated
 * traffic on veth) gets only the pseudo-header change, and skb->csum of a CHECKSUM_COMPLETE skb
 * follows the pseudo-header change (the header changes cancel with the check field's).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "proxy/fastpath/fastpath_abi.h"
#include "proxy/fastpath/tcp_hdr.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* The layouts tandemd writes and reads (fastpath_abi.h checks the same on the C++ side). */
_Static_assert(sizeof(struct tandem_fp_key) == 12, "tandem_fp_key layout");
_Static_assert(sizeof(struct tandem_fp_rewrite) == 96, "tandem_fp_rewrite layout");
_Static_assert(sizeof(struct tandem_fp_splice_event) == 96, "tandem_fp_splice_event layout");
_Static_assert(sizeof(struct tandem_fp_event) == 32, "tandem_fp_event layout");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1); /* set by the loader before load */
  __type(key, struct tandem_fp_key);
  __type(value, struct tandem_fp_rewrite);
} tandem_fp_flows SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, TANDEM_FP_ST_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} tandem_fp_stats SEC(".maps");

#define TANDEM_FP_RING_BYTES (256 * 1024)
/* Unread bytes in the ring from which a submission wakes tandemd (see the submit below). */
#define TANDEM_FP_RING_WAKE_BYTES (TANDEM_FP_RING_BYTES / 4)

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, TANDEM_FP_RING_BYTES);
} tandem_fp_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
} tandem_fp_config SEC(".maps");

/* The two ACKs a splice completed here sends, built off the stack (it holds 512 bytes). */
struct splice_scratch {
  __u8 frame[96]; /* Ethernet, IPv4, TCP with at most a timestamp option: 66 bytes */
  __u8 old[HDR_BUF]; /* the TCP header the second ACK replaces */
};

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct splice_scratch);
} tandem_fp_scratch SEC(".maps");

static __always_inline void count(__u32 idx, __u64 n) {
  __u64* v = bpf_map_lookup_elem(&tandem_fp_stats, &idx);
  if (v) *v += n;
}

/* The TCP header copy being parsed, and where the options the translation touches sit (offsets
 * in the copy; 0: absent). */
struct parse_ctx {
  __u8 hdr[HDR_BUF];
  __u32 thl;
  __u32 i;          /* next option byte */
  __u32 ts;         /* TSval; TSecr at +4 */
  __u32 sack;       /* first block's left edge */
  __u32 sack_count; /* 1..4 */
  __u32 ws;         /* window scale's shift (SYN-ACKs of armed flows) */
  __u32 err;
};

/* One option, like common/tcp_options.cc: EOL ends, NOP is one byte, every other option has a
 * length of at least 2 that must fit; TS must be 10 bytes, SACK 2 + 8n with n in 1..4, MSS 4,
 * window scale 3, SACK-permitted 2 (options the engine would refuse are left to it). A bpf_loop()
 * callback: the verifier checks it once instead of every path through 40 unrolled passes. */
static long parse_option(__u32 n, void* arg) {
  struct parse_ctx* c = arg;
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
  if (kind == OPT_TS) {
    if (olen != 10) goto bad;
    c->ts = i + 2;
  } else if (kind == OPT_SACK) {
    const __u32 blocks = (olen - 2) / 8;
    if ((olen - 2) % 8 != 0 || blocks == 0 || blocks > 4) goto bad;
    c->sack = i + 2;
    c->sack_count = blocks;
  } else if ((kind == 2 && olen != 4) || (kind == 3 && olen != 3) || (kind == 4 && olen != 2)) {
    goto bad;
  } else if (kind == OPT_WSCALE) {
    c->ws = i + 2;
  }
  c->i = i + olen;
  return 0;
bad:
  c->err = 1;
  return 1;
}

/* An ACK without payload: ports in wire order, the rest host order; options NOP NOP timestamp
 * when `ts`. Returns the TCP header's length (20 or 32). The check field is left as `check`. */
static __always_inline __u32 put_ack(__u8* th, __u16 sport, __u16 dport, __u32 seq, __u32 ack,
                                     __u16 window, int ts, __u32 tsval, __u32 tsecr,
                                     const __u8* check) {
  __builtin_memset(th, 0, 32);
  __builtin_memcpy(&th[0], &sport, 2);
  __builtin_memcpy(&th[2], &dport, 2);
  put32(th, 4, seq);
  put32(th, 8, ack);
  th[12] = ts ? 0x80 : 0x50;
  th[13] = TCPF_ACK;
  put16(th, 14, window);
  th[16] = check[0];
  th[17] = check[1];
  if (!ts) return 20;
  th[20] = OPT_NOP;
  th[21] = OPT_NOP;
  th[22] = OPT_TS;
  th[23] = 10;
  put32(th, 24, tsval);
  put32(th, 28, tsecr);
  return 32;
}

/* Turns the packet in the skb (IPv4 without options at ETH_HLEN, its TCP header `old` of
 * `old_thl` bytes, no payload, addresses `old_addrs`) into the frame in `f` (Ethernet, IPv4,
 * TCP of `new_thl` bytes). The TCP checksum is fixed by difference, as in syncookie.bpf.c, so
 * that a CHECKSUM_PARTIAL skb keeps a pseudo-header sum and a complete one gets the full sum.
 * Returns 0, or a negative error once the packet may have changed. */
static __always_inline int rewrite_as(struct __sk_buff* skb, const __u8* old, __u32 old_thl,
                                      const __u32* old_addrs, __u8* f, __u32 new_thl) {
  const __u32 l4 = ETH_HLEN + 20;
  const __u32 ohs = old_thl & 0x3c;
  const __u32 nhs = new_thl & 0x3c;
  if (ohs < 20 || nhs < 20 || nhs > 32) return -1;
  const __s64 hdr_diff = bpf_csum_diff((__be32*)old, ohs, (__be32*)&f[l4], nhs, 0);
  const __s64 addr_diff = bpf_csum_diff((__be32*)old_addrs, 8, (__be32*)&f[ETH_HLEN + 12], 8, 0);
  __u8 old_len[4] = {0, IPPROTO_TCP, 0, (__u8)ohs};
  __u8 new_len[4] = {0, IPPROTO_TCP, 0, (__u8)nhs};
  const __s64 len_diff = bpf_csum_diff((__be32*)old_len, 4, (__be32*)new_len, 4, 0);
  if (hdr_diff < 0 || addr_diff < 0 || len_diff < 0) return -1;
  int err = bpf_skb_change_tail(skb, l4 + nhs, 0);
  if (!err) err = bpf_skb_store_bytes(skb, 0, f, l4 + nhs, 0);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)addr_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)len_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)hdr_diff, 0);
  return err;
}

/* The backend's SYN-ACK of an armed flow (TANDEM_FP_SYNACK; fastpath_abi.h): the splice is
 * completed here, as proxy/core/splice.cc splicePending() and spliceOpenWindow() would complete
 * it. Every reason to leave the SYN-ACK to the engine is found before anything changes (the
 * entries, the packet, the ring); -1 then. Otherwise the tc action. */
static __always_inline int splice_synack(struct __sk_buff* skb, struct tandem_fp_rewrite* rw,
                                         struct parse_ctx* pc, const __u8* ip, __u32 tot_len) {
  __u8* hdr = pc->hdr;
  const __u32 thl = pc->thl;
  const __u8 tflags = hdr[13];
  if (rw->dir != 1 || rw->arm_state != TANDEM_FP_ARM_WAITING ||
      (tflags & ~(TCPF_ECE | TCPF_CWR)) != (TCPF_SYN | TCPF_ACK) || tot_len != 20 + thl)
    return -1;
  const __u32 l4 = ETH_HLEN + 20;
  const __u32 optlen = (thl - 20) & 0x3f;
  if (optlen > 40) return -1; /* cannot happen; bounds the verifier */
  if (optlen > 0 && bpf_skb_load_bytes(skb, l4 + 20, &hdr[20], optlen) < 0) return -1;
  pc->i = 20;
  if (bpf_loop(40, parse_option, pc, 0) < 0 || pc->err) return -1;
  const __u32 backend_isn = get32(hdr, 4);
  const __u32 ack = get32(hdr, 8);
  if (ack != rw->arm_ack) return -1;

  /* The client direction's entry: keyed by this one's translated tuple, reversed. */
  struct tandem_fp_key rkey;
  rkey.saddr = rw->daddr;
  rkey.daddr = rw->saddr;
  rkey.sport = rw->dport;
  rkey.dport = rw->sport;
  struct tandem_fp_rewrite* peer = bpf_map_lookup_elem(&tandem_fp_flows, &rkey);
  if (!peer || !(peer->flags & TANDEM_FP_SYNACK) || peer->flow_id != rw->flow_id ||
      peer->generation != rw->generation)
    return -1;

  /* Where the two ACKs go: the backend's back where the SYN-ACK came from; the client's where
   * the routing table sends traffic from the VIP to the client (bpf_fib_lookup, as a forwarded
   * packet), or else the engine's. */
  __u8 eth[ETH_HLEN];
  if (bpf_skb_load_bytes(skb, 0, eth, ETH_HLEN) < 0) return -1;
  __u32 zero = 0;
  const __u32* cfg = bpf_map_lookup_elem(&tandem_fp_config, &zero);
  __u32 client_if = skb->ifindex;
  __u8 client_dmac[6], client_smac[6];
  __builtin_memcpy(client_dmac, &eth[6], 6);
  __builtin_memcpy(client_smac, &eth[0], 6);
  if (!cfg || !(*cfg & TANDEM_FP_CFG_TEST_NO_ROUTE)) {
    struct bpf_fib_lookup fib;
    if (route_tcp4(skb, &fib, rw->saddr, rw->daddr, rw->sport, rw->dport, 0, 52) !=
        BPF_FIB_LKUP_RET_SUCCESS)
      return -1;
    client_if = fib.ifindex;
    __builtin_memcpy(client_dmac, fib.dmac, 6);
    __builtin_memcpy(client_smac, fib.smac, 6);
  }
  struct splice_scratch* sc = bpf_map_lookup_elem(&tandem_fp_scratch, &zero);
  if (!sc) return -1;

  struct tandem_fp_splice_event* ev = bpf_ringbuf_reserve(&tandem_fp_events, sizeof(*ev), 0);
  if (!ev) {
    count(TANDEM_FP_ST_EVENTS_FULL, 1);
    return -1;
  }
  /* One CPU takes the SYN-ACK; a duplicate on another goes to the engine, which sees the flow
   * completed once it has read this event (the ring is read before every NFQUEUE batch). */
  if (__sync_val_compare_and_swap(&rw->arm_state, TANDEM_FP_ARM_WAITING, TANDEM_FP_ARM_TAKEN) !=
      TANDEM_FP_ARM_WAITING) {
    bpf_ringbuf_discard(ev, 0);
    return -1;
  }

  /* splicePending(): backend bytes shift into the cookie's sequence space, backend timestamps
   * into the clock the client saw, backend windows into the scale the proxy offered. */
  const __u32 off = rw->arm_proxy_isn - backend_isn;
  const int ts = (rw->arm_flags & TANDEM_FP_ARM_F_TS) && pc->ts;
  const __u32 ts_val = pc->ts ? get32(hdr, pc->ts) : 0;
  const __u32 ts_off = rw->arm_proxy_tsval - ts_val;
  __u8 backend_ws = 0;
  if ((rw->arm_flags & TANDEM_FP_ARM_F_WSCALE) && pc->ws) {
    backend_ws = hdr[pc->ws & HDR_MASK];
    if (backend_ws > 14) backend_ws = 14; /* RFC 7323 2.3 */
  }
  const __u8 client_ws = rw->arm_client_wscale;
  const __u16 synack_window = (__u16)(((__u16)hdr[14] << 8) | hdr[15]);
  const __u32 client_tsval = rw->arm_client_tsval;
  const __u32 proxy_tsval = rw->arm_proxy_tsval;
  const __u32 proxy_isn = rw->arm_proxy_isn;
  const __u16 client_window = rw->arm_client_window;

  /* Both entries as fastPathEntry() writes them for the spliced flow (the engine prefilled the
   * client leg's own adjustment). */
  rw->seq_add = off;
  peer->ack_add = -off;
  __u8 rflags = (rw->flags & ~TANDEM_FP_SYNACK) | TANDEM_FP_SEQ;
  __u8 pflags = (peer->flags & ~TANDEM_FP_SYNACK) | TANDEM_FP_SEQ;
  if (ts) {
    rw->tsval_add = ts_off;
    peer->tsecr_add = -ts_off;
    rflags |= TANDEM_FP_TS;
    pflags |= TANDEM_FP_TS;
  }
  if (backend_ws != client_ws) {
    rw->win_shift_in = backend_ws;
    rw->win_shift_out = client_ws;
    rflags |= TANDEM_FP_WIN;
  }
  /* The fields before the flags that let other CPUs translate with them (x86 keeps stores in
   * order; this keeps the compiler from moving them). */
  asm volatile("" ::: "memory");
  peer->flags = pflags;
  rw->flags = rflags;

  ev->head.ns = bpf_ktime_get_ns();
  ev->head.flow_id = rw->flow_id;
  ev->head.generation = rw->generation;
  ev->head.seq = backend_isn;
  ev->head.ack = ack;
  ev->head.payload_len = (__u16)thl;
  ev->head.window = synack_window;
  ev->head.tcp_flags = tflags;
  ev->head.dir = 1;
  ev->head.kind = TANDEM_FP_EV_SPLICE;
  __builtin_memcpy(ev->tcp_hdr, hdr, HDR_BUF);
  const __u64 unread = bpf_ringbuf_query(&tandem_fp_events, BPF_RB_AVAIL_DATA);
  bpf_ringbuf_submit(ev, unread >= TANDEM_FP_RING_WAKE_BYTES ? BPF_RB_FORCE_WAKEUP
                                                             : BPF_RB_NO_WAKEUP);
  count(TANDEM_FP_ST_SPLICED, 1);

  /* From here the splice is complete whatever happens to the packets: an ACK that fails to
   * leave is one lost on the wire (the client's persist timer probes; the backend's SYN-ACK
   * comes again, to the engine). */
  __u8* f = sc->frame;
  __u32 old_addrs[2];
  __builtin_memcpy(old_addrs, &ip[12], 8);
  const __u8 check[2] = {hdr[16], hdr[17]};

  /* First the ACK that completes the backend's handshake in the client's name (a copy, sent
   * back where the SYN-ACK came from), as the engine's verdict would: the backend's socket is
   * established before the client's first data, sent on the next ACK, can reach it. */
  const __u32 backend_if = skb->ifindex;
  __builtin_memcpy(&f[0], &eth[6], 6);
  __builtin_memcpy(&f[6], &eth[0], 6);
  f[12] = 0x08;
  f[13] = 0x00;
  __u16 sport, dport;
  __builtin_memcpy(&sport, &hdr[2], 2);
  __builtin_memcpy(&dport, &hdr[0], 2);
  const __u32 bthl = put_ack(&f[l4], sport, dport, ack, backend_isn + 1, client_window, ts,
                             client_tsval, ts_val, check);
  __u32 saddr, daddr;
  __builtin_memcpy(&saddr, &ip[16], 4);
  __builtin_memcpy(&daddr, &ip[12], 4);
  put_ipv4(&f[ETH_HLEN], 20 + bthl, &saddr, &daddr, 64); /* writeTcpSegment()'s TTL */
  int err = rewrite_as(skb, hdr, thl, old_addrs, f, bthl);
  if (!err) err = bpf_clone_redirect(skb, backend_if, 0);
  if (err) {
    count(TANDEM_FP_ST_PASS_FAILED, 1);
    return TC_ACT_SHOT;
  }

  /* Then spliceOpenWindow()'s: the backend's window in the scale the client applies to the
   * proxy's; never more than the backend offered, not zero unless the backend's is. */
  __u8 chk[2];
  if (bpf_skb_load_bytes(skb, l4 + 16, chk, 2) < 0) return TC_ACT_SHOT;
  __u8* old_th = sc->old;
  __builtin_memcpy(old_th, &f[l4], 32);
  old_th[16] = chk[0]; /* the check field as the packet now holds it: unchanged by the diff */
  old_th[17] = chk[1];
  const __u32 backend_addrs[2] = {saddr, daddr};
  __u32 window = (__u32)synack_window >> (client_ws & 15);
  if (window == 0 && synack_window != 0) window = 1;
  __builtin_memcpy(&f[0], client_dmac, 6);
  __builtin_memcpy(&f[6], client_smac, 6);
  const __u32 cthl = put_ack(&f[l4], rw->sport, rw->dport, proxy_isn + 1, ack, (__u16)window,
                             proxy_tsval != 0, proxy_tsval, client_tsval, chk);
  put_ipv4(&f[ETH_HLEN], 20 + cthl, &rw->saddr, &rw->daddr, 64);
  if (rewrite_as(skb, old_th, bthl, backend_addrs, f, cthl)) {
    count(TANDEM_FP_ST_PASS_FAILED, 1);
    return TC_ACT_SHOT;
  }
  return bpf_redirect(client_if, 0);
}

/* daemon.fastpath_redirect (TANDEM_FP_CFG_REDIRECT): the translated packet leaves by the
 * interface ip_forward() would send it out of, found as ip_forward() would find it
 * (bpf_fib_lookup: the FIB rules and tables, forwarding enabled on the interface it came in on,
 * a unicast route, the output MTU) and to the neighbour's MAC, its TTL decremented as
 * ip_decrease_ttl() does. A GSO packet is held to ip_forward()'s rule, each segment within the
 * MTU (skb_gso_validate_network_len()): the helper, given tot_len 0, lets any GSO packet pass.
 * It skips the IP stack: ip_rcv(), the route lookup, and netfilter's PREROUTING, FORWARD and
 * POSTROUTING hooks. `ip` is the IPv4 header as it came in (translation changes neither TTL nor
 * protocol), `addrs` the translated addresses, `thl` the TCP header's length. Returns the
 * tc action; -1 when the stack must forward it (it then sends any ICMP error, resolves the
 * neighbour, fragments); -2 when a write failed half done (it cannot, the packet being written
 * already: drop). */
static __always_inline int forward_direct(struct __sk_buff* skb, const __u8* ip,
                                          const __u32* addrs, __u16 sport, __u16 dport,
                                          __u32 thl) {
  if (ip[8] <= 1) return -1; /* ip_forward(): ICMP time exceeded */
  struct bpf_fib_lookup fib;
  if (route_tcp4(skb, &fib, addrs[0], addrs[1], sport, dport, ip[1], 0) !=
      BPF_FIB_LKUP_RET_SUCCESS)
    return -1;
  if (skb->gso_size != 0 && skb->gso_size + 20 + thl > fib.mtu_result) return -1;
  __u16 old_word, new_word; /* TTL and protocol: the header checksum changes by RFC 1624 */
  __builtin_memcpy(&old_word, &ip[8], 2);
  const __u8 ttl_proto[2] = {(__u8)(ip[8] - 1), ip[9]};
  __builtin_memcpy(&new_word, ttl_proto, 2);
  if (bpf_skb_store_bytes(skb, ETH_HLEN + 8, ttl_proto, 1, 0) < 0 ||
      bpf_l3_csum_replace(skb, ETH_HLEN + 10, old_word, new_word, 2) < 0 ||
      bpf_skb_store_bytes(skb, 0, fib.dmac, 6, 0) < 0 ||
      bpf_skb_store_bytes(skb, 6, fib.smac, 6, 0) < 0)
    return -2; /* half written: dropped, as on a wire (the senders retransmit) */
  return bpf_redirect(fib.ifindex, 0);
}

SEC("tc")
int tandem_fp_ingress(struct __sk_buff* skb) {
  if (skb->mark == TANDEM_FP_MARK) return TC_ACT_OK; /* translated once already */

  /* Ethernet. An 802.1Q tag never shows here: __netif_receive_skb_core() moves it to
   * skb->vlan_tci (skb_vlan_untag) before tc ingress runs. */
  const __u32 l3 = ETH_HLEN;
  __u16 proto;
  if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0) return TC_ACT_OK;
  if (proto != bpf_htons(ETH_P_IP)) return TC_ACT_OK;

  __u8 ip[20];
  if (bpf_skb_load_bytes(skb, l3, ip, 20) < 0) return TC_ACT_OK;
  if (ip[9] != IPPROTO_TCP) return TC_ACT_OK;
  /* Options and fragments are the engine's; so is BIG TCP (tot_len 0). */
  __u32 tot_len = ((__u32)ip[2] << 8) | ip[3];
  if (ip[0] != 0x45 || (((__u32)ip[6] << 8 | ip[7]) & 0x3fff) != 0 || tot_len < 40) {
    count(TANDEM_FP_ST_PASS_UNPARSED, 1);
    return TC_ACT_OK;
  }
  const __u32 l4 = l3 + 20;

  struct parse_ctx pc = {};
  __u8* hdr = pc.hdr;
  if (bpf_skb_load_bytes(skb, l4, hdr, 20) < 0) {
    count(TANDEM_FP_ST_PASS_UNPARSED, 1);
    return TC_ACT_OK;
  }
  __u32 thl = (__u32)(hdr[12] >> 4) * 4;
  if (thl < 20 || thl > tot_len - 20) {
    count(TANDEM_FP_ST_PASS_UNPARSED, 1);
    return TC_ACT_OK;
  }

  struct tandem_fp_key key;
  __builtin_memcpy(&key.saddr, &ip[12], 4);
  __builtin_memcpy(&key.daddr, &ip[16], 4);
  __builtin_memcpy(&key.sport, &hdr[0], 2);
  __builtin_memcpy(&key.dport, &hdr[2], 2);
  struct tandem_fp_rewrite* rw = bpf_map_lookup_elem(&tandem_fp_flows, &key);
  if (!rw) {
    count(TANDEM_FP_ST_PASS_NO_FLOW, 1);
    return TC_ACT_OK;
  }

  const __u8 tflags = hdr[13];
  const __u8 rflags = rw->flags;
  if (rflags & TANDEM_FP_SYNACK) {
    pc.thl = thl;
    const int rc = splice_synack(skb, rw, &pc, ip, tot_len);
    if (rc >= 0) return rc;
    count(TANDEM_FP_ST_PASS_ARMED, 1);
    return TC_ACT_OK;
  }
  if (tflags & TCPF_SYN) {
    count(TANDEM_FP_ST_PASS_SYN, 1);
    return TC_ACT_OK;
  }
  /* A RST always goes to the engine, close-fast or not: only the engine judges it against the
   * receiver's window (RFC 5961 3.2), so a blind RST from an attacker never reaches the far end
   * through the kernel. RSTs are rare; closes are FINs. */
  if (tflags & TCPF_RST) {
    count(TANDEM_FP_ST_PASS_RST, 1);
    return TC_ACT_OK;
  }
  const int closing = (tflags & TCPF_FIN) != 0;
  if (closing && !(rflags & TANDEM_FP_CLOSE_FAST)) {
    count(TANDEM_FP_ST_PASS_CLOSE, 1);
    return TC_ACT_OK;
  }
  /* A FIN taken here arms the other direction's entry to report the FIN's acknowledgement
   * (below). That entry may not be in the map yet: tandemd writes a flow's two entries at
   * different moments (the direction of the segment that put it on the fast path only once
   * that segment's verdict is sent). Without it the acknowledgement would pass unreported and
   * the engine's flow would wait in LAST_ACK: the FIN goes to NFQUEUE instead. */
  struct tandem_fp_rewrite* peer = 0;
  if (closing) {
    struct tandem_fp_key rkey;
    rkey.saddr = rw->daddr;
    rkey.daddr = rw->saddr;
    rkey.sport = rw->dport;
    rkey.dport = rw->sport;
    peer = bpf_map_lookup_elem(&tandem_fp_flows, &rkey);
    if (!peer) {
      count(TANDEM_FP_ST_PASS_NO_PEER, 1);
      return TC_ACT_OK;
    }
  }

  /* The options (40 bytes at most: thl <= 60). */
  __u32 optlen = (thl - 20) & 0x3f;
  if (optlen > 40) return TC_ACT_OK; /* cannot happen; bounds the verifier */
  if (optlen > 0 && bpf_skb_load_bytes(skb, l4 + 20, &hdr[20], optlen) < 0) {
    count(TANDEM_FP_ST_PASS_UNPARSED, 1);
    return TC_ACT_OK;
  }
  pc.thl = thl;
  pc.i = 20;
  /* Each pass consumes at least one byte of at most 40. */
  if (bpf_loop(40, parse_option, &pc, 0) < 0 || pc.err) {
    count(TANDEM_FP_ST_PASS_UNPARSED, 1);
    return TC_ACT_OK;
  }

  /* Wire values, before translation. */
  const __u32 seq = get32(hdr, 4);
  const __u32 ack = get32(hdr, 8);
  const __u16 window = (__u16)(((__u16)hdr[14] << 8) | hdr[15]);
  const __u32 payload = tot_len - 20 - thl;

  /* The new TCP header, in a second copy; the checksum difference is taken over both. */
  __u8 nh[HDR_BUF];
  __builtin_memcpy(nh, hdr, HDR_BUF);
  __builtin_memcpy(&nh[0], &rw->sport, 2);
  __builtin_memcpy(&nh[2], &rw->dport, 2);
  if (rflags & TANDEM_FP_SEQ) {
    const __u32 ack_add = rw->ack_add;
    put32(nh, 4, seq + rw->seq_add);
    if (tflags & TCPF_ACK) put32(nh, 8, ack + ack_add);
    /* SACK edges name the peer's bytes, like the ack (RFC 2018 section 3). */
    if (pc.sack) {
      for (__u32 e = 0; e < 8; e++) {
        if (e >= pc.sack_count * 2) break;
        const __u32 off = pc.sack + 4 * e;
        put32(nh, off, get32(hdr, off) + ack_add);
      }
    }
  }
  if ((rflags & TANDEM_FP_TS) && pc.ts) {
    put32(nh, pc.ts, get32(hdr, pc.ts) + rw->tsval_add);
    if (tflags & TCPF_ACK) put32(nh, pc.ts + 4, get32(hdr, pc.ts + 4) + rw->tsecr_add);
  }
  if (rflags & TANDEM_FP_WIN) {
    /* RFC 7323 2.3: the same byte count in the client's scale, rounded down, clamped. */
    __u64 field = ((__u64)window << (rw->win_shift_in & 31)) >> (rw->win_shift_out & 31);
    __u16 nwin = field > 0xffff ? 0xffff : (__u16)field;
    nh[14] = (__u8)(nwin >> 8);
    nh[15] = (__u8)nwin;
  }

  __u32 addrs[2] = {rw->saddr, rw->daddr};
  __u32 old_addrs[2];
  __builtin_memcpy(old_addrs, &ip[12], 8);
  const __s64 addr_diff = bpf_csum_diff(old_addrs, 8, addrs, 8, 0);
  const __u32 hsize = thl & 0x3c;
  if (hsize < 20) return TC_ACT_OK; /* cannot happen; bounds the verifier */
  const __s64 hdr_diff = bpf_csum_diff((__be32*)hdr, hsize, (__be32*)nh, hsize, 0);
  if (addr_diff < 0 || hdr_diff < 0) {
    count(TANDEM_FP_ST_PASS_FAILED, 1);
    return TC_ACT_OK;
  }

  /* The first packet of this direction that acknowledges the other direction's FIN (the last
   * ACK of a close, or the FIN+ACK of the second FIN) is reported too, once. */
  const int acks_peer_fin =
      (rflags & TANDEM_FP_CLOSE_FAST) && (tflags & TCPF_ACK) &&
      (rw->fin_state & (TANDEM_FP_PEER_FIN | TANDEM_FP_PEER_FIN_ACKED)) == TANDEM_FP_PEER_FIN &&
      (__s32)(ack - rw->peer_fin_ack) >= 0;

  /* A close is reported before it is translated: no room, no fast close. */
  struct tandem_fp_event* ev = 0;
  if (closing || acks_peer_fin) {
    ev = bpf_ringbuf_reserve(&tandem_fp_events, sizeof(*ev), 0);
    if (!ev) {
      count(TANDEM_FP_ST_EVENTS_FULL, 1);
      return TC_ACT_OK;
    }
  }

  /* Writes: the TCP header first (its check field unchanged), then the addresses, then the
   * three checksum fixes. */
  int err = bpf_skb_store_bytes(skb, l4, nh, hsize, 0);
  if (!err) err = bpf_skb_store_bytes(skb, l3 + 12, addrs, 8, 0);
  if (!err) err = bpf_l3_csum_replace(skb, l3 + 10, 0, (__u32)addr_diff, 0);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)addr_diff, BPF_F_PSEUDO_HDR);
  if (!err) err = bpf_l4_csum_replace(skb, l4 + 16, 0, (__u32)hdr_diff, 0);
  if (err) {
    if (ev) bpf_ringbuf_discard(ev, 0);
    count(TANDEM_FP_ST_PASS_FAILED, 1);
    return TC_ACT_OK;
  }

  const __u64 now = bpf_ktime_get_ns();
  rw->last_ns = now;
  rw->seq_end = seq + payload + ((tflags & TCPF_FIN) ? 1 : 0);
  if (tflags & TCPF_ACK) rw->ack = ack;
  rw->window = window;
  rw->tcp_flags = tflags;
  if (acks_peer_fin) rw->fin_state |= TANDEM_FP_PEER_FIN_ACKED;
  if (peer) {
    /* The other direction's entry (keyed by this one's translated tuple, reversed). Its
     * packets acknowledge this FIN in the space the receiver saw: after this direction's
     * sequence adjustment. */
    const __u32 fin_end = rw->seq_end + ((rflags & TANDEM_FP_SEQ) ? rw->seq_add : 0);
    if (!(peer->fin_state & TANDEM_FP_PEER_FIN) || peer->peer_fin_ack != fin_end) {
      peer->peer_fin_ack = fin_end;
      peer->fin_state = TANDEM_FP_PEER_FIN;
    }
  }

  if (ev) {
    ev->ns = now;
    ev->flow_id = rw->flow_id;
    ev->generation = rw->generation;
    ev->seq = seq;
    ev->ack = (tflags & TCPF_ACK) ? ack : 0;
    ev->payload_len = (__u16)payload;
    ev->window = window;
    ev->tcp_flags = tflags;
    ev->dir = rw->dir;
    ev->kind = TANDEM_FP_EV_CLOSE;
    /* No wake-up per event: a wake-up is an interrupt raised on this CPU (irq_work), which in
     * a VM traps to the hypervisor and cost 18 us per connection on the benchmark's veths
     * (perf, bench/RESULTS.md). tandemd reads the ring before every NFQUEUE batch and on a
     * short timer (docs/fastpath.md); a ring a quarter full wakes it at once. */
    const __u64 unread = bpf_ringbuf_query(&tandem_fp_events, BPF_RB_AVAIL_DATA);
    bpf_ringbuf_submit(ev, unread >= TANDEM_FP_RING_WAKE_BYTES ? BPF_RB_FORCE_WAKEUP
                                                               : BPF_RB_NO_WAKEUP);
    count(TANDEM_FP_ST_EVENTS, 1);
  }

  skb->mark = TANDEM_FP_MARK;
  count(TANDEM_FP_ST_TRANSLATED, 1);
  count(TANDEM_FP_ST_BYTES, skb->len - l3);
  __u32 zero = 0;
  const __u32* cfg = bpf_map_lookup_elem(&tandem_fp_config, &zero);
  if (cfg && (*cfg & TANDEM_FP_CFG_REDIRECT)) {
    const int rc = forward_direct(skb, ip, addrs, rw->sport, rw->dport, thl);
    if (rc >= 0) {
      count(TANDEM_FP_ST_REDIRECTED, 1);
      return rc;
    }
    if (rc == -2) {
      count(TANDEM_FP_ST_DROPPED_REDIRECT, 1);
      return TC_ACT_SHOT;
    }
    count(TANDEM_FP_ST_ROUTED_STACK, 1);
  }
  return TC_ACT_OK;
}
