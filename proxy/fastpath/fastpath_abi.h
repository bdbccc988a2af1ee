/* The contract between tandemd and its kernel fast path (proxy/fastpath/fastpath.bpf.c).
 *
 * Plain C, included by the BPF program (clang -target bpf) and by C++. Every field's byte order
 * is stated; the layouts are fixed (static sizes checked on both sides).
 *
 * The fast path is a tc ingress program on the proxy's interfaces. It looks up every IPv4/TCP
 * packet's wire tuple in TANDEM_FP_FLOWS. A hit on an established flow is translated in the
 * kernel exactly as translateSegment() would translate it (addresses, ports, seq/ack/SACK,
 * timestamps, window rescale, checksums), marked with TANDEM_FP_MARK and left to the kernel to
 * forward; NFQUEUE never sees it. Everything else (no entry, SYN, anything it cannot parse,
 * RST, FIN unless TANDEM_FP_CLOSE_FAST) goes on untouched to the iptables rules and so to
 * NFQUEUE, where the engine handles it as before. A flow armed with TANDEM_FP_SYNACK (a
 * zero-window splice still opening, daemon.fastpath_splice = on) is translated not at all: its
 * backend's SYN-ACK is answered in the kernel, everything else of it goes to NFQUEUE.
 */
#ifndef TANDEM_FASTPATH_ABI_H
#define TANDEM_FASTPATH_ABI_H

#ifdef __cplusplus
#include <cstdint>
namespace tandem {
extern "C" {
typedef uint8_t tfp_u8;
typedef uint16_t tfp_u16;
typedef uint32_t tfp_u32;
typedef uint64_t tfp_u64;
#else
typedef __u8 tfp_u8;
typedef __u16 tfp_u16;
typedef __u32 tfp_u32;
typedef __u64 tfp_u64;
#endif

/* skb->mark of a packet the fast path translated. The rules tandemd installs skip marked
 * packets (CT --notrack, no NFQUEUE); the program itself ignores packets already marked, so
 * attaching it to a macvlan and its lower device translates a packet once. */
#define TANDEM_FP_MARK 0x7464f001u

/* Map names as they appear in the BPF object. */
#define TANDEM_FP_FLOWS_MAP "tandem_fp_flows"
#define TANDEM_FP_STATS_MAP "tandem_fp_stats"
#define TANDEM_FP_EVENTS_MAP "tandem_fp_events"
#define TANDEM_FP_CONFIG_MAP "tandem_fp_config"
#define TANDEM_FP_PROG "tandem_fp_ingress"

/* Key: one direction of one flow, the tuple as the packet arrives (before translation).
 * Addresses and ports in network byte order, as on the wire. 12 bytes, no padding. */
struct tandem_fp_key {
  tfp_u32 saddr;
  tfp_u32 daddr;
  tfp_u16 sport;
  tfp_u16 dport;
};

/* TANDEM_FP_CONFIG_MAP: an array of one tfp_u32 of these bits. */
#define TANDEM_FP_CFG_TEST_NO_ROUTE 0x01u /* tests only: the ACK that opens a client's window leaves
                                             by the interface the SYN-ACK came in on, to its source
                                             MAC, instead of where the routing table says */
#define TANDEM_FP_CFG_REDIRECT 0x02u /* daemon.fastpath_redirect: a translated packet leaves by
                                        the interface the routing table names (bpf_fib_lookup),
                                        TTL decremented, instead of through the IP stack */

/* rewrite.flags */
#define TANDEM_FP_SEQ 0x01u        /* seq += seq_add; ack += ack_add (ACK set); SACK edges += ack_add */
#define TANDEM_FP_TS 0x02u         /* TSval += tsval_add; TSecr += tsecr_add (ACK set) */
#define TANDEM_FP_WIN 0x04u        /* window = min(0xffff, (window << win_shift_in) >> win_shift_out) */
#define TANDEM_FP_CLOSE_FAST 0x08u /* FINs are translated too, and reported in an event (RSTs never:
                                      the engine checks them against the window, RFC 5961) */
#define TANDEM_FP_SYNACK 0x10u     /* armed: a splice whose backend leg is opening (zero-window
                                      handshake). Nothing is translated: the backend direction's
                                      entry answers the backend's SYN-ACK in the kernel (below),
                                      every other packet of the flow goes to NFQUEUE */

/* Value: how to rewrite packets arriving with the key's tuple. The first part is written by
 * tandemd; the program only reads it. The "seen" part is written by the program on every
 * packet it translates (plain stores: a flow direction is normally served by one CPU at a time,
 * and tandemd treats these as hints, re-learning window edges liberally when a flow leaves the
 * fast path). */
struct tandem_fp_rewrite {
  /* The tuple written into the packet, network byte order. */
  tfp_u32 saddr;
  tfp_u32 daddr;
  tfp_u16 sport;
  tfp_u16 dport;
  /* Sequence-space adjustment, host-order arithmetic modulo 2^32. */
  tfp_u32 seq_add;
  tfp_u32 ack_add;
  tfp_u32 tsval_add;
  tfp_u32 tsecr_add;
  tfp_u8 win_shift_in;
  tfp_u8 win_shift_out;
  tfp_u8 flags;      /* TANDEM_FP_* */
  tfp_u8 dir;        /* 0: from the client, 1: from the backend (tandem::Direction) */
  tfp_u32 flow_id;   /* the engine's slot, echoed in events */
  tfp_u32 generation; /* the engine's install count for that slot, echoed in events */
  /* Seen by the program (wire values, before translation, host byte order). */
  tfp_u64 last_ns;   /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last translated packet */
  tfp_u32 seq_end;   /* seq + payload (+1 for FIN) of the last translated packet */
  tfp_u32 ack;       /* its ack field, when ACK was set */
  tfp_u16 window;    /* its raw window field */
  tfp_u8 tcp_flags;  /* its flags */
  /* Close tracking (TANDEM_FP_CLOSE_FAST): the other direction's FIN, which a packet of this
   * direction acknowledges when its ack reaches peer_fin_ack (the FIN's end, in the space this
   * direction's ack field names: as the FIN's receiver saw it). Set by the program when it
   * translates that FIN, or by tandemd when the FIN came through NFQUEUE. The first packet that
   * acknowledges it is reported in an event (the "last ACK" of a close), once. */
  tfp_u8 fin_state;  /* TANDEM_FP_PEER_FIN* */
  tfp_u32 peer_fin_ack;
  /* Armed (TANDEM_FP_SYNACK, the backend direction's entry; zero otherwise). Written by tandemd
   * with the backend SYN, from the flow the engine created on the client's cookie ACK; host byte
   * order. The program completes the splice exactly as the engine's splicePending() would on
   * that SYN-ACK: it fills both entries' sequence, timestamp and window fields (the engine
   * prefills the rest), clears TANDEM_FP_SYNACK on both, turns the SYN-ACK into the ACK the
   * engine would send the backend, sends the client the ACK that opens its window
   * (spliceOpenWindow()), and reports the SYN-ACK in a splice event. */
  tfp_u64 arm_state;        /* TANDEM_FP_ARM_*: claimed atomically by the CPU that completes */
  tfp_u32 arm_ack;          /* the SYN-ACK's ack the engine expects: the backend SYN's seq + 1 */
  tfp_u32 arm_proxy_isn;    /* Flow::proxy_isn (the cookie) */
  tfp_u32 arm_proxy_tsval;  /* Flow::proxy_tsval (the cookie's TSval; 0: no timestamps) */
  tfp_u32 arm_client_tsval; /* Flow::client_tsval */
  tfp_u16 arm_client_window; /* Flow::client_window */
  tfp_u8 arm_client_wscale;  /* Flow::client_view_wscale */
  tfp_u8 arm_flags;          /* TANDEM_FP_ARM_F_* */
  tfp_u32 arm_reserved;
};

/* rewrite.arm_state */
#define TANDEM_FP_ARM_WAITING 1u  /* armed, no SYN-ACK taken yet */
#define TANDEM_FP_ARM_TAKEN 2u    /* a CPU took the SYN-ACK (a duplicate goes to NFQUEUE) */
/* rewrite.arm_flags */
#define TANDEM_FP_ARM_F_TS 0x01u      /* the client leg negotiated timestamps (the engine's test:
                                         a SYN-ACK with timestamps then gets a timestamp offset) */
#define TANDEM_FP_ARM_F_WSCALE 0x02u  /* the backend SYN offered window scaling */

/* rewrite.fin_state */
#define TANDEM_FP_PEER_FIN 0x01u        /* the other direction sent a FIN ending at peer_fin_ack */
#define TANDEM_FP_PEER_FIN_ACKED 0x02u  /* a packet of this direction acknowledged it (reported) */

/* TANDEM_FP_STATS_MAP: a per-CPU array of tfp_u64, indexed by these. */
enum tandem_fp_stat {
  TANDEM_FP_ST_TRANSLATED = 0,   /* packets translated and forwarded by the kernel */
  TANDEM_FP_ST_BYTES,            /* their IP bytes (GSO super-packets count whole) */
  TANDEM_FP_ST_PASS_NO_FLOW,     /* IPv4/TCP, no entry: left to NFQUEUE */
  TANDEM_FP_ST_PASS_SYN,         /* entry, SYN set: left to NFQUEUE */
  TANDEM_FP_ST_PASS_CLOSE,       /* entry, FIN without TANDEM_FP_CLOSE_FAST */
  TANDEM_FP_ST_PASS_UNPARSED,    /* IPv4/TCP it could not parse (IP options, fragments, short) */
  TANDEM_FP_ST_PASS_FAILED,      /* a rewrite helper failed: left untouched to NFQUEUE */
  TANDEM_FP_ST_EVENTS,           /* close events submitted (FINs and acks of FINs) */
  TANDEM_FP_ST_EVENTS_FULL,      /* ring full: the packet was left to NFQUEUE instead */
  TANDEM_FP_ST_PASS_RST,         /* entry, RST: always the engine's (RFC 5961 window check) */
  TANDEM_FP_ST_PASS_NO_PEER,     /* entry, FIN, the other direction's entry not written yet */
  TANDEM_FP_ST_SPLICED,          /* backend SYN-ACKs answered in the kernel (splice completed) */
  TANDEM_FP_ST_PASS_ARMED,       /* armed flow: any packet but its SYN-ACK, or a SYN-ACK the
                                    program leaves to the engine (unexpected ack or options, no
                                    route, ring full, a duplicate) */
  TANDEM_FP_ST_REDIRECTED,       /* translated packets sent straight out (TANDEM_FP_CFG_REDIRECT) */
  TANDEM_FP_ST_ROUTED_STACK,     /* translated packets TANDEM_FP_CFG_REDIRECT left to the IP stack
                                    to forward (no forwarding route, TTL 1, neighbour unresolved,
                                    larger than the MTU) */
  TANDEM_FP_ST_DROPPED_REDIRECT, /* dropped: a write of TANDEM_FP_CFG_REDIRECT failed half done */
  TANDEM_FP_ST_COUNT
};

/* TANDEM_FP_EVENTS_MAP (a ring buffer): one record per FIN the program translated, and one for
 * the first packet that acknowledged the other direction's FIN (TANDEM_FP_CLOSE_FAST), so that
 * tandemd's tracker sees every close through to TIME_WAIT. Wire values, before
 * translation, host byte order. 32 bytes. A splice the program completed is reported in a
 * tandem_fp_splice_event (kind TANDEM_FP_EV_SPLICE). */
struct tandem_fp_event {
  tfp_u64 ns;          /* bpf_ktime_get_ns() */
  tfp_u32 flow_id;
  tfp_u32 generation;
  tfp_u32 seq;
  tfp_u32 ack;
  tfp_u16 payload_len;
  tfp_u16 window;
  tfp_u8 tcp_flags;
  tfp_u8 dir;
  tfp_u16 kind;        /* TANDEM_FP_EV_* */
};

#define TANDEM_FP_EV_CLOSE 0u
#define TANDEM_FP_EV_SPLICE 1u
#define TANDEM_FP_EV_BIND 2u

/* A cookie ACK the SYN program checked and turned into the backend SYN, with both of the flow's
 * entries written armed (syncookie.bpf.c, daemon.fastpath_bind): head.kind TANDEM_FP_EV_BIND,
 * head.flow_id / generation the kernel's id for the flow (bit 31 set in flow_id; the same in the
 * entries, so in their events too), head.ns the clock it was checked at, head.seq/ack/window the
 * ACK's, head.payload_len its TCP header's length; saddr/daddr its addresses (wire order),
 * tcp_hdr its TCP header as it arrived; backend the index in the service's backends the kernel
 * sent the SYN to. 112 bytes. */
struct tandem_fp_bind_event {
  struct tandem_fp_event head;
  tfp_u32 saddr;
  tfp_u32 daddr;
  tfp_u32 backend;
  tfp_u32 reserved;
  tfp_u8 tcp_hdr[64];
};

/* A splice the program completed (TANDEM_FP_SYNACK): head.kind TANDEM_FP_EV_SPLICE, head.dir 1,
 * head.seq/ack/window/tcp_flags the backend's SYN-ACK's, head.payload_len its TCP header's length
 * (20..60), tcp_hdr that header as it arrived. 96 bytes. */
struct tandem_fp_splice_event {
  struct tandem_fp_event head;
  tfp_u8 tcp_hdr[64];
};

#ifdef __cplusplus
}  /* extern "C" */
static_assert(sizeof(tandem_fp_key) == 12);
static_assert(sizeof(tandem_fp_rewrite) == 96);
static_assert(sizeof(tandem_fp_event) == 32);
static_assert(sizeof(tandem_fp_splice_event) == 96);
static_assert(sizeof(tandem_fp_bind_event) == 112);
}  /* namespace tandem */
#endif

#endif /* TANDEM_FASTPATH_ABI_H */
