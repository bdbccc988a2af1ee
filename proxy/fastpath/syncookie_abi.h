/* The contract between tandemd and its kernel SYN answerer (proxy/fastpath/syncookie.bpf.c).
 *
 * Plain C, included by the BPF program and by C++. The program runs at tc ingress before the
 * fast path (tcx, first in the chain). For a pure SYN to a splice service's VIP:port on an
 * active node, it computes the SYN cookie exactly as tandem::SynCookie::make() does (same
 * SipHash-2-4 key of the period, same message, same option bits in TSval), turns the SYN into the
 * SYN-ACK tandem::buildSynAck() would write, and sends it where the routing table sends
 * traffic to the client (bpf_fib_lookup: interface and MAC addresses). Everything else goes on to the next program (the fast path) and the iptables rules
 * untouched; the SYNs it leaves are counted by reason. docs/fastpath.md, "SYN cookies in the
 * kernel".
 */
#ifndef TANDEM_SYNCOOKIE_ABI_H
#define TANDEM_SYNCOOKIE_ABI_H

#ifdef __cplusplus
#include <cstdint>
namespace tandem {
extern "C" {
typedef uint8_t tsc_u8;
typedef uint16_t tsc_u16;
typedef uint32_t tsc_u32;
typedef uint64_t tsc_u64;
#else
typedef __u8 tsc_u8;
typedef __u16 tsc_u16;
typedef __u32 tsc_u32;
typedef __u64 tsc_u64;
#endif

#define TANDEM_SYN_CONFIG_MAP "tandem_syn_config"
#define TANDEM_SYN_KEYS_MAP "tandem_syn_keys"
#define TANDEM_SYN_SERVICES_MAP "tandem_syn_services"
#define TANDEM_SYN_STATS_MAP "tandem_syn_stats"
#define TANDEM_SYN_PROG "tandem_syn_ingress"
/* The fast path's flow map (fastpath_abi.h), shared: a SYN on the tuple of a flow that is on the
 * fast path (established) goes to the engine, which handles it as a packet of that flow. */
#define TANDEM_SYN_FP_FLOWS_MAP "tandem_fp_flows"

/* config.enable: what the SYN-ACK may negotiate (SynCookieConfig's local enables). */
#define TANDEM_SYN_EN_TS 0x01u
#define TANDEM_SYN_EN_WSCALE 0x02u
#define TANDEM_SYN_EN_SACK 0x04u
#define TANDEM_SYN_EN_ECN 0x08u

/* TANDEM_SYN_CONFIG_MAP: an array of one. Host byte order. 48 bytes. */
struct tandem_syn_config {
  tsc_u64 period_ns;        /* SynCookieConfig::period_ns; 0: answer nothing */
  tsc_u64 clock_offset_ns;  /* added to bpf_ktime_get_ns() (two's complement): the engine's
                               cookie clock (Engine::setCookieClockOffset) */
  tsc_u64 test_now_ns;      /* tests only: when not 0, the cookie clock itself */
  tsc_u16 mss_table[4];     /* SynCookieConfig::mss_table, ascending */
  tsc_u16 mss;              /* SynAckParams::mss (the proxy's MSS to clients) */
  tsc_u16 window;           /* SynAckParams::window */
  tsc_u8 wscale;            /* SynAckParams::wscale */
  tsc_u8 ttl;               /* SynAckParams::ttl */
  tsc_u8 mss_table_size;    /* 1..4 */
  tsc_u8 enable;            /* TANDEM_SYN_EN_* */
  tsc_u8 active;            /* 1: this node answers; 0 (a standby, or not yet told): it does not */
  tsc_u8 test_no_route;     /* tests only: when not 0, no route lookup: the SYN-ACK leaves by the
                               interface the SYN came in on, to the SYN's source MAC */
  tsc_u8 no_bind;           /* 1: cookie ACKs are not bound in the kernel (a planned switchover
                               holds the data path: tandemd reads every flow it bound first) */
  tsc_u8 reserved[5];
};

/* TANDEM_SYN_KEYS_MAP: hash, key = the period count (tsc_u64, now / period_ns), value = the
 * 16-byte SipHash key SynCookie derives for that period (SHA-256 of label, secret, count).
 * tandemd keeps the previous, current and next periods' (the previous for cookie ACKs checked
 * in the kernel, fastpath_bind). */
struct tandem_syn_key {
  tsc_u8 bytes[16];
};

/* TANDEM_SYN_SERVICES_MAP: hash of splice services' VIP:port (network byte order); the value is a
 * tsc_u8 of TANDEM_SYN_SVC_* flags. */
#define TANDEM_SYN_SVC_ON 0x01u
/* The SYN-ACK offers window 0 instead of config.window (ServiceConfig::zero_window_handshake). */
#define TANDEM_SYN_SVC_ZERO_WINDOW 0x02u
/* Kernel binding (daemon.fastpath_bind): a bare cookie ACK to a service flagged
 * TANDEM_SYN_SVC_KBIND is checked here and turned into the backend SYN, with both fast-path entries
 * written armed (docs/fastpath.md, "The cookie ACK in the kernel"). */
#define TANDEM_SYN_SVC_KBIND 0x04u
#define TANDEM_SYN_BINDS_MAP "tandem_syn_binds"
#define TANDEM_SYN_EVENTS_MAP "tandem_fp_events"
#define TANDEM_SYN_BIND_MAX 16
struct tandem_syn_backend {
  tsc_u32 addr; /* wire order */
  tsc_u16 port; /* wire order */
  tsc_u8 up;    /* 1: the engine's state is UP */
  tsc_u8 reserved;
};
/* TANDEM_SYN_BINDS_MAP: hash, key tandem_syn_service, value this (host order but addresses). */
struct tandem_syn_bind {
  tsc_u32 n;          /* backends, 1..TANDEM_SYN_BIND_MAX, in the service's order */
  tsc_u32 rr_slot;    /* index of the service's round-robin counter (a per-CPU array) */
  tsc_u32 close_fast; /* 1: TANDEM_FP_CLOSE_FAST on the entries */
  tsc_u32 reserved;
  struct tandem_syn_backend b[TANDEM_SYN_BIND_MAX];
};
struct tandem_syn_service {
  tsc_u32 addr;
  tsc_u16 port;
  tsc_u16 zero;
};

/* TANDEM_SYN_STATS_MAP: a per-CPU array of tsc_u64, indexed by these. Only pure-looking SYNs
 * (SYN without ACK/RST/FIN, addressed to this host) are counted; every other packet goes on
 * uncounted. */
enum tandem_syn_stat {
  TANDEM_SYN_ST_ANSWERED = 0,   /* SYN-ACK sent from the kernel */
  TANDEM_SYN_ST_PASS_NO_SERVICE, /* not a splice service's VIP:port */
  TANDEM_SYN_ST_PASS_STANDBY,   /* the node is not active (or the config is not written yet) */
  TANDEM_SYN_ST_PASS_NO_KEY,    /* no key for the current period */
  TANDEM_SYN_ST_PASS_ODD,       /* payload (TFO), other flags, unknown or SACK options */
  TANDEM_SYN_ST_PASS_UNPARSED,  /* IP options, fragment, bad checksum or option lengths */
  TANDEM_SYN_ST_FAILED,         /* a helper failed after the first write: dropped (client resends) */
  TANDEM_SYN_ST_PASS_FAST_FLOW, /* the tuple is a flow on the fast path: the engine's (as before) */
  TANDEM_SYN_ST_PASS_ROUTE,     /* the route to the client needs the stack (no neighbour entry yet,
                                   not forwarded, forwarding off): the engine answers, the kernel
                                   routes its SYN-ACK */
  TANDEM_SYN_ST_DROP_UNROUTABLE, /* the client's address is blackholed, unreachable or prohibited:
                                    the SYN is dropped (the engine's SYN-ACK would be) */
  TANDEM_SYN_ST_BOUND,          /* cookie ACKs turned into backend SYNs (fastpath_bind) */
  TANDEM_SYN_ST_ACK_PASS,       /* bare ACKs to a bound service left to the engine */
  TANDEM_SYN_ST_COUNT
};

#ifdef __cplusplus
}  /* extern "C" */
static_assert(sizeof(tandem_syn_config) == 48);
static_assert(sizeof(tandem_syn_key) == 16);
static_assert(sizeof(tandem_syn_service) == 8);
}  /* namespace tandem */
#endif

#endif /* TANDEM_SYNCOOKIE_ABI_H */
