#pragma once
/// @file One tracked flow: both legs' addresses, TCP tracking state per direction and the
/// sequence adjustment per direction. Kept small (208 bytes; a unit test
/// holds the whole table under 256 bytes per flow at a million flows).

#include <cstdint>
#include <type_traits>

#include "common/ip_addr.h"
#include "proxy/core/counters.h"

namespace tandem {

enum class TcpState : uint8_t {
  kNone, kSynSent, kSynRecv, kEstablished, kFinWait, kCloseWait, kLastAck, kTimeWait, kClose,
  kCount
};
const char* tcpStateName(TcpState s) noexcept;

/// A leg's tuple as it appears on the wire (source then destination).
struct FlowKey {
  IpAddr saddr;
  IpAddr daddr;
  uint16_t sport = 0;
  uint16_t dport = 0;
  friend bool operator==(const FlowKey&, const FlowKey&) noexcept = default;
};

/// Per-direction window tracking, after Linux's ip_ct_tcp_state (nf_conntrack_proto_tcp.c).
struct TcpWindow {
  uint32_t td_end = 0;     ///< highest seq + len this direction has sent
  uint32_t td_maxend = 0;  ///< highest ack + window the peer has granted it
  uint32_t td_maxwin = 0;  ///< largest window this direction has advertised (scaled)
  uint32_t last_ack = 0;   ///< highest ack this direction has sent (≈ its RCV.NXT)
  uint32_t fin_end = 0;    ///< seq just past this direction's FIN, when fin_seen
  uint8_t td_scale = 0;    ///< window shift this direction uses
  bool seen = false;       ///< any segment seen in this direction
  bool wscale_offered = false;
  bool ack_seen = false;   ///< last_ack is valid
  bool fin_seen = false;
  bool fin_acked = false;  ///< the peer acknowledged fin_end
};

/// Sequence adjustment of one direction, after nf_conntrack_seqadj.c: segments of this
/// direction at or before correction_pos shift by offset_before, later ones by offset_after.
struct SeqAdj {
  uint32_t correction_pos = 0;
  int32_t offset_before = 0;
  int32_t offset_after = 0;
};

struct Flow {
  // Client leg: client -> vip. Backend leg: backend -> source (client or SNAT address).
  IpAddr client_addr;
  IpAddr vip_addr;
  IpAddr backend_addr;
  IpAddr source_addr;
  uint16_t client_port = 0;
  uint16_t vip_port = 0;
  uint16_t backend_port = 0;
  uint16_t source_port = 0;
  uint64_t last_seen_ns = 0;  ///< the flow expires stateTimeout(state) after this
  TcpWindow win[2];        ///< indexed by Direction
  SeqAdj adj[2];           ///< indexed by Direction
  uint16_t service = 0;
  uint16_t backend = 0;    ///< index in the service's pool
  TcpState state = TcpState::kNone;
  bool in_use = false;
  bool has_seqadj = false; ///< any non-zero offset: the translator must touch seq space
  bool dirty = false;      ///< hard state changed since the last Engine::drainChanges()

  // Splice mode: the client completed its handshake with the proxy's SYN cookie, the backend
  // leg's with the proxy on the client's behalf, so the two legs differ in sequence space (the
  // backend's ISN vs the cookie: adj[kFromBackend]), timestamp clock and window scale.
  bool splice = false;
  bool splice_pending = false;  ///< the backend's SYN-ACK has not arrived yet
  bool has_ts_adj = false;      ///< rewrite TSval (backend->client) and TSecr (client->backend)
  bool rescale_window = false;  ///< backend windows are re-expressed in the client's scale
  uint8_t backend_wscale = 0;   ///< the shift the backend applies to its window fields
  uint8_t client_view_wscale = 0;  ///< the shift the client applies (what the proxy offered)
  uint32_t ts_offset = 0;       ///< added to backend TSvals, subtracted from client TSecrs
  uint32_t proxy_isn = 0;       ///< the cookie: the client leg's ISN for the server side
  uint32_t client_tsval = 0;    ///< latest client TSval, for the ACK the proxy sends
  uint32_t proxy_tsval = 0;     ///< the cookie's TSval (the client's TSecr in its ACK)
  uint16_t client_window = 0;   ///< the client's last raw window field
  // The backend SYN's options, kept to send it again if it is lost (the client, whose own
  // handshake completed with the proxy, retransmits only its data).
  uint16_t syn_mss = 0;
  bool syn_sack = false;
  bool syn_ecn = false;
  uint8_t syn_retries = 0;
  /// Deferral (Engine::setSyncDeferral): the standby has not acknowledged this new flow yet,
  /// so the backend's SYN-ACK is held (Verdict::kHold) until Engine::markSynced().
  bool sync_pending = false;
  bool splice_await_data : 1 = false;  ///< bind = data: no backend SYN until the client's first data
  // Re-splicing (resplice.cc). proxy_tsval doubles as the newest TSval the client has seen
  // (the cookie's, then every backend TSval forwarded), so a new backend leg's timestamps
  // continue above it (PAWS, RFC 7323 5.3).
  bool moving : 1 = false;  ///< splice_pending belongs to a re-splice, not the first handshake
  bool client_spoke_last : 1 = false;  ///< the last payload was the client's: unanswered
  bool quiet_seen : 1 = false;          ///< quiet_client is valid
  bool client_waiting : 1 = false;  ///< client bytes await the backend's ack (wait_since_ms)
  bool stall_noted : 1 = false;  ///< this wait for the backend was counted as a stall
  /// A client segment with data or a FIN waits (Verdict::kHold) for this splice's backend leg:
  /// the segments released then put the flow on the fast path, not the leg's completion.
  bool client_held : 1 = false;
  /// Kernel fast path (fastpath_port.h): both directions' entries are in the map, so the
  /// engine sees only what the kernel leaves to NFQUEUE and its edges go stale (fastpath.cc).
  bool fast_path : 1 = false;
  /// This incarnation of the flow went on the fast path at fp_generation (engine_impl.h): the
  /// kernel's close events of that generation still apply after it left (they describe packets
  /// the kernel forwarded before the entries were erased).
  bool fast_path_ever : 1 = false;
  /// Kernel fast path, zero-window splice: both entries are in the map, armed
  /// (TANDEM_FP_SYNACK): the kernel may answer the backend's SYN-ACK and complete the splice,
  /// which it reports (Engine::fastPathSpliced). Nothing is translated meanwhile.
  bool fast_path_armed : 1 = false;
  /// Since when the client waits for the backend (units of 2^22 ns, about 4 ms, wrapping every
  /// 275 s): the backend's last packet, or the client data that started the wait. Client data
  /// while bytes are still unacknowledged long after is a stall, a passive health signal
  /// (BackendStats::stalls).
  uint16_t wait_since = 0;
  /// win[client].td_end at the last quiescent point: a request sent to a backend that then died
  /// without acknowledging it is replayed, by the client's own retransmission, from there.
  uint32_t quiet_client = 0;

  Endpoint client() const noexcept { return {client_addr, client_port}; }
  Endpoint vip() const noexcept { return {vip_addr, vip_port}; }
  Endpoint backendEp() const noexcept { return {backend_addr, backend_port}; }
  Endpoint source() const noexcept { return {source_addr, source_port}; }
};

static_assert(std::is_trivially_destructible_v<Flow>, "flow chunks are unmapped, not destroyed");

inline constexpr size_t dirIndex(Direction d) noexcept { return static_cast<size_t>(d); }
inline constexpr Direction other(Direction d) noexcept {
  return d == Direction::kFromClient ? Direction::kFromBackend : Direction::kFromClient;
}

}  // namespace tandem
