#pragma once
/// @file Gratuitous ARP for VIP takeover: the frame (pure), the burst-and-refresh schedule (pure,
/// time passed in), and the AF_PACKET sender.
///
/// The frame is the classic form, an ARP *request* broadcast with sender IP = target IP = the VIP
/// and sender MAC = the interface's MAC (RFC 5227 section 3 calls it an ARP Announcement; the
/// target MAC is zero, as its section 2.1.1 says). Why a request and not a reply:
///  - Every host processes a broadcast request; unsolicited replies are ignored by some stacks.
///  - Linux (net/ipv4/arp.c, arp_is_garp) treats a request with sip == tip as gratuitous without
///    further conditions, but a *reply* only if its target MAC also equals its sender MAC. A
///    gratuitous update overrides the entry even inside neigh locktime (1 s by default: "use the
///    first of back-to-back replies"), which a failover right after a client resolved the old
///    active would otherwise hit.
///  - On Linux a gratuitous ARP updates an *existing* neighbour entry whatever arp_accept says;
///    arp_accept only decides whether an entry is *created* for an address not in the cache.
///    Clients that never talked to the VIP are unaffected either way: they ARP when they do.
///
/// A burst (several frames, spaced) covers the loss of one; a periodic refresh (off by default, as
/// in keepalived) keeps switches' MAC tables and caches that missed the burst converging.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace tandem {

using MacAddress = std::array<uint8_t, 6>;

/// Ethernet header (14) + ARP for IPv4 over Ethernet (28), zero-padded to the 60-byte Ethernet
/// minimum (ETH_ZLEN) so the frame is valid even where the driver does not pad short frames.
inline constexpr size_t kGarpFrameLen = 60;
/// The meaningful part of the frame; the rest is padding.
inline constexpr size_t kGarpPayloadEnd = 42;

/// Pure. The gratuitous ARP request announcing `vip` (host byte order) at `mac`.
std::array<uint8_t, kGarpFrameLen> buildGarpFrame(const MacAddress& mac, uint32_t vip) noexcept;

/// "aa:bb:cc:dd:ee:ff".
std::string macToString(const MacAddress& mac);

struct GarpScheduleConfig {
  uint32_t burst_count = 5;                ///< rounds sent at takeover (>= 1)
  uint64_t burst_spacing_ns = 20'000'000;  ///< between rounds of the burst
  uint64_t refresh_interval_ns = 0;        ///< afterwards, one round per interval; 0 = off
};

/// Pure: when to send a round of gratuitous ARPs (one frame per VIP). Driven by the caller's
/// timer: after start(), call poll(now) when nextDueNs() has passed. Late timers coalesce: an
/// overdue schedule sends one round, and the next is spaced from that send, so a stalled loop
/// never produces a back-to-back storm.
class GarpSchedule {
 public:
  static constexpr uint64_t kNever = UINT64_MAX;

  explicit GarpSchedule(const GarpScheduleConfig& config) noexcept : config_(config) {}

  /// Takeover: the first round is due at `now_ns`. Restarts a running schedule.
  void start(uint64_t now_ns) noexcept;
  /// Step-down: nothing more is due.
  void stop() noexcept { next_ns_ = kNever; }
  /// True if a round is due at `now_ns`; the caller sends it. At most one round per call.
  bool poll(uint64_t now_ns) noexcept;
  /// When the next round is due, or kNever.
  uint64_t nextDueNs() const noexcept { return next_ns_; }
  /// Rounds of the current burst not yet sent.
  uint32_t burstLeft() const noexcept { return burst_left_; }

 private:
  GarpScheduleConfig config_;
  uint64_t next_ns_ = kNever;
  uint32_t burst_left_ = 0;
};

struct GarpCounters {
  uint64_t sent = 0;         ///< frames the kernel accepted
  uint64_t send_errors = 0;  ///< frames refused (ENETDOWN, ENOBUFS, EAGAIN, ENXIO...)
  int last_errno = 0;
};

/// Sends gratuitous ARPs out of one interface through an AF_PACKET SOCK_RAW socket.
///
/// The socket is opened with protocol 0 and the frames carry ETH_P_ARP in their sockaddr_ll: a
/// socket opened with ETH_P_ARP would also *receive* a copy of every ARP frame on the interface,
/// which no one reads here. Non-blocking: a full device queue is a counted error, never a stall.
class GarpSender {
 public:
  explicit GarpSender(std::string interface) : interface_(std::move(interface)) {}
  ~GarpSender();
  GarpSender(const GarpSender&) = delete;
  GarpSender& operator=(const GarpSender&) = delete;

  /// Opens the socket, looks up the interface index and MAC (must be Ethernet). Throws
  /// std::system_error (startup; needs CAP_NET_RAW). Reopening picks up a re-created interface.
  void open();

  /// Sends one gratuitous ARP for `vip` (host byte order). Returns 0 or the errno (counted).
  int send(uint32_t vip) noexcept;

  const MacAddress& mac() const noexcept { return mac_; }
  int ifindex() const noexcept { return ifindex_; }
  const std::string& interface() const noexcept { return interface_; }
  const GarpCounters& counters() const noexcept { return counters_; }

 private:
  std::string interface_;
  int fd_ = -1;
  int ifindex_ = 0;
  MacAddress mac_{};
  GarpCounters counters_;
};

}  // namespace tandem
