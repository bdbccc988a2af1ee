#pragma once
/// @file Virtual MAC takeover mode: the macvlan device that makes the active receive frames for
/// the virtual MAC, and the ARP responder that maps the group's addresses to it.
///
/// The VIP and the back-side address resolve to a virtual MAC (vMAC) that no proxy ever uses as
/// a frame *source*, so a learning switch never learns a port for it and floods every frame for
/// it to both proxies. The active owns a macvlan device with the vMAC on each interface of the
/// group: frames to the vMAC arrive on it as PACKET_HOST and enter raw PREROUTING (tandem's
/// NFQUEUE rules match on addresses only); the standby's macvlan is down, so the same frames are
/// PACKET_OTHERHOST there and dropped by IP (its shadow capture reads them from the parent).
///
/// What keeps the vMAC from ever being a source: the macvlan carries no IPv4 address (no route
/// leaves through it), IFF_NOARP, IPv6 disabled before it first goes up (no neighbour discovery,
/// no MLD, no link-local address), and everything this file sends leaves from the parent with
/// the parent's own MAC as Ethernet source; only the ARP *payload* names the vMAC.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/io/garp.h"

struct mnl_socket;

namespace tandem {

/// "02:00:5e:00:01:01". nullopt on anything else.
std::optional<MacAddress> parseMac(std::string_view text) noexcept;
/// Locally administered (bit 1 of the first byte) and unicast (bit 0 clear): a MAC no vendor
/// assigns, fit for a virtual MAC.
bool isLocalUnicastMac(const MacAddress& mac) noexcept;

/// An ARP request as the responder needs it.
struct ArpRequest {
  MacAddress sender_mac{};
  uint32_t sender_ip = 0;  ///< host byte order
  uint32_t target_ip = 0;
};

/// Pure. An Ethernet frame carrying an IPv4-over-Ethernet ARP request; nullopt otherwise
/// (replies, other protocols, short frames).
std::optional<ArpRequest> parseArpRequest(std::span<const uint8_t> frame) noexcept;

/// Pure. The reply to `req` saying `ip` is at `vmac`: Ethernet source `eth_src` (the parent's own
/// MAC), destination the requester; ARP sender = (vmac, ip), target = the requester.
std::array<uint8_t, kGarpFrameLen> buildVmacArpReply(const MacAddress& eth_src,
                                                     const MacAddress& vmac, uint32_t ip,
                                                     const ArpRequest& req) noexcept;

/// Pure. The gratuitous ARP request announcing `ip` at `vmac` (RFC 5227 announcement, as
/// buildGarpFrame), but with Ethernet source `eth_src`, so the switch never learns the vMAC.
std::array<uint8_t, kGarpFrameLen> buildVmacAnnouncement(const MacAddress& eth_src,
                                                         const MacAddress& vmac,
                                                         uint32_t ip) noexcept;

/// Pure. RTM_NEWLINK creating macvlan `name` (mode private) on `parent_ifindex` with address
/// `mac`, down and IFF_NOARP; NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK. Returns the length or 0 if
/// `buf` is too small (256 bytes always suffice).
size_t buildMacvlanCreate(std::span<uint8_t> buf, const std::string& name,
                          uint32_t parent_ifindex, const MacAddress& mac, uint32_t seq) noexcept;
/// Pure. RTM_NEWLINK setting IFF_UP on or off for `ifindex`, NLM_F_ACK.
size_t buildLinkSetUp(std::span<uint8_t> buf, uint32_t ifindex, bool up, uint32_t seq) noexcept;
/// Pure. RTM_DELLINK for `ifindex`, NLM_F_ACK.
size_t buildLinkDelete(std::span<uint8_t> buf, uint32_t ifindex, uint32_t seq) noexcept;

/// The macvlan devices of the virtual MAC mode, over rtnetlink (libmnl), used synchronously like
/// AddrNetlink. Not thread-safe.
class MacvlanLinks {
 public:
  MacvlanLinks();  ///< opens the netlink socket; throws std::system_error
  ~MacvlanLinks();
  MacvlanLinks(const MacvlanLinks&) = delete;
  MacvlanLinks& operator=(const MacvlanLinks&) = delete;

  /// The device name for a parent ("front" -> "tvfront"; at most 15 characters).
  static std::string deviceName(const std::string& parent);

  /// Creates the device (down) on `parent` with `mac`, replacing a stale one of the same name
  /// left by a killed daemon, and disables IPv6 on it and sets its forwarding and rp_filter
  /// before it can go up. Throws std::system_error (startup).
  void create(const std::string& parent, const MacAddress& mac);
  /// Brings every created device up or down. Returns 0 or the first errno.
  int setUp(bool up) noexcept;
  /// Deletes every created device (clean shutdown).
  void removeAll() noexcept;
  bool up() const noexcept { return up_; }
  const std::vector<std::string>& devices() const noexcept { return names_; }

 private:
  int transact(size_t len, uint32_t seq) noexcept;

  mnl_socket* nl_ = nullptr;
  uint32_t seq_ = 0;
  std::vector<uint8_t> buf_;
  std::vector<std::string> names_;
  bool up_ = false;
};

struct ArpResponderCounters {
  uint64_t requests = 0;       ///< ARP requests for one of our addresses
  uint64_t replies = 0;        ///< replies sent
  uint64_t announcements = 0;  ///< gratuitous announcements sent
  uint64_t send_errors = 0;
};

/// Answers ARP requests for `addresses` on one interface with the virtual MAC, and sends the
/// gratuitous announcements. AF_PACKET SOCK_RAW bound to ETH_P_ARP on the interface; both nodes
/// run one (the mapping is the same whoever is active, so a client that ARPs during an outage
/// still sends to the vMAC, where the standby's shadow ring sees it).
class ArpResponder {
 public:
  ArpResponder(std::string interface, const MacAddress& vmac, std::vector<uint32_t> addresses)
      : interface_(std::move(interface)), vmac_(vmac), addresses_(std::move(addresses)) {}
  ~ArpResponder();
  ArpResponder(const ArpResponder&) = delete;
  ArpResponder& operator=(const ArpResponder&) = delete;

  /// Opens the socket (non-blocking) and reads the interface's MAC. Throws std::system_error.
  void open();
  int fd() const noexcept { return fd_; }
  /// Reads every queued frame and answers the requests for our addresses.
  void onReadable() noexcept;
  /// One gratuitous announcement per address.
  void announce() noexcept;
  const ArpResponderCounters& counters() const noexcept { return counters_; }
  const std::string& interface() const noexcept { return interface_; }

 private:
  bool sendFrame(const uint8_t* frame, size_t len, const MacAddress& to) noexcept;

  std::string interface_;
  MacAddress vmac_;
  std::vector<uint32_t> addresses_;
  MacAddress own_mac_{};
  int ifindex_ = 0;
  int fd_ = -1;
  ArpResponderCounters counters_;
};

}  // namespace tandem
