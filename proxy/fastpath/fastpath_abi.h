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
 * NFQUEUE, where the engine handles it as before.
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
#define TANDEM_FP_PROG "tandem_fp_ingress"

/* Key: one direction of one flow, the tuple as the packet arrives (before translation).
 * Addresses and ports in network byte order, as on the wire. 12 bytes, no padding. */
struct tandem_fp_key {
  tfp_u32 saddr;
  tfp_u32 daddr;
  tfp_u16 sport;
  tfp_u16 dport;
};

/* rewrite.flags */
#define TANDEM_FP_SEQ 0x01u        /* seq += seq_add; ack += ack_add (ACK set); SACK edges += ack_add */
#define TANDEM_FP_TS 0x02u         /* TSval += tsval_add; TSecr += tsecr_add (ACK set) */
#define TANDEM_FP_WIN 0x04u        /* window = min(0xffff, (window << win_shift_in) >> win_shift_out) */
#define TANDEM_FP_CLOSE_FAST 0x08u /* FINs are translated too, and reported in an event (RSTs never:
                                      the engine checks them against the window, RFC 5961) */

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
};

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
  TANDEM_FP_ST_COUNT
};

/* TANDEM_FP_EVENTS_MAP (a ring buffer): one record per FIN the program translated, and one for
 * the first packet that acknowledged the other direction's FIN (TANDEM_FP_CLOSE_FAST), so that
 * tandemd's tracker sees every close through to TIME_WAIT. Wire values, before
 * translation, host byte order. 32 bytes. */
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
  tfp_u16 reserved;
};

#ifdef __cplusplus
}  /* extern "C" */
static_assert(sizeof(tandem_fp_key) == 12);
static_assert(sizeof(tandem_fp_rewrite) == 64);
static_assert(sizeof(tandem_fp_event) == 32);
}  /* namespace tandem */
#endif

#endif /* TANDEM_FASTPATH_ABI_H */
