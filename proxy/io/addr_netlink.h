#pragma once
/// @file Adds and removes the pair's IPv4 addresses (VIPs) over rtnetlink with libmnl: no `ip`
/// subprocess, every request acknowledged (NLM_F_ACK) and its answer checked.
///
/// Idempotent by design: a takeover or a step-down may be retried, and the peer may already have
/// done half of it. Adding an address the interface already holds (the kernel answers EEXIST) and
/// removing one it does not hold (EADDRNOTAVAIL) are successes that report `changed = false`.
///
/// Two kernel facts the caller should know (net/ipv4/devinet.c):
///  - An address is identified by (interface, local address, prefix length): 10.0.0.5/32 and
///    10.0.0.5/24 are two different addresses, and `has` compares both.
///  - Deleting a *primary* address also deletes the secondaries of its subnet unless
///    net.ipv4.conf.IFACE.promote_secondaries = 1. A /32 VIP shares no subnet with the interface's
///    own /24 address, so it is never a secondary of it; a VIP inside the interface's subnet is.
///
/// The message builders and the reply scanner are pure (byte buffers in, bytes or results out)
/// so the wire format is unit-tested with golden bytes; AddrNetlink only moves them.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct mnl_socket;

namespace tandem {

/// An IPv4 address with its prefix length, as `ip addr` writes it ("10.0.1.100/32").
struct Ipv4Prefix {
  uint32_t addr = 0;        ///< host byte order
  uint8_t prefix_len = 32;  ///< 0..32

  /// Parses "A.B.C.D/LEN" or "A.B.C.D" (meaning /32). nullopt on anything else.
  static std::optional<Ipv4Prefix> parse(std::string_view text);
  std::string toString() const;
  friend bool operator==(const Ipv4Prefix&, const Ipv4Prefix&) noexcept = default;
};

/// One address of a group and the interface that carries it.
struct GroupMember {
  std::string interface;
  Ipv4Prefix address;
};

/// Addresses that move together between the two proxies: the front VIP and the back-side address
/// (the backends' gateway in transparent mode, the source address in SNAT mode). They usually sit
/// on different interfaces, so every member names its own.
struct AddressGroup {
  std::vector<GroupMember> members;
};

enum class AddrOp : uint8_t { kAdd, kRemove };

/// Largest request the builders write (header, ifaddrmsg, two address attributes).
inline constexpr size_t kAddrRequestMaxLen = 64;

/// Pure. Writes an RTM_NEWADDR (kAdd: NLM_F_CREATE | NLM_F_EXCL, so an existing address is
/// reported as EEXIST, not silently refreshed) or RTM_DELADDR request, with NLM_F_ACK, for
/// `address` on interface `ifindex`, scope global, IFA_LOCAL = IFA_ADDRESS = the address (as
/// `ip addr add A/N dev X` does: no peer, no broadcast). nlmsg_pid is 0 (the kernel fills it).
/// Returns the message length, or 0 if `buf` is shorter than kAddrRequestMaxLen.
size_t buildAddrRequest(std::span<uint8_t> buf, AddrOp op, uint32_t ifindex,
                        const Ipv4Prefix& address, uint32_t seq) noexcept;

/// Pure. Writes an RTM_GETADDR dump request for every IPv4 address (the kernel ignores the
/// index filter without NETLINK_GET_STRICT_CHK, so the scanner filters). Returns the length or 0.
size_t buildAddrDumpRequest(std::span<uint8_t> buf, uint32_t seq) noexcept;

/// What one received datagram said about request `seq`.
struct NlReplyScan {
  bool complete = false;     ///< an ack, an error or NLMSG_DONE ended the reply
  int error = 0;             ///< errno from NLMSG_ERROR (0 for a plain ack), EPROTO if malformed
  bool interrupted = false;  ///< a dump part carried NLM_F_DUMP_INTR: the table changed, retry
  uint32_t stale = 0;        ///< messages answering another sequence number (a late reply)
};

/// Pure. Walks the netlink messages of `datagram` that answer `seq`. If `addresses` is not
/// null, appends the IPv4 addresses of RTM_NEWADDR messages for interface `ifindex`.
NlReplyScan scanNlReply(std::span<const uint8_t> datagram, uint32_t seq, uint32_t ifindex,
                        std::vector<Ipv4Prefix>* addresses);

/// Outcome of an add or remove.
struct AddrResult {
  int error = 0;         ///< 0, or the errno that failed it (ENODEV: no such interface)
  bool changed = false;  ///< false when the address was already present (add) / absent (remove)
  bool ok() const noexcept { return error == 0; }
};

/// Outcome of a group operation.
struct GroupResult {
  int error = 0;             ///< 0, or the first failure's errno
  size_t failed_member = 0;  ///< index of that member in AddressGroup::members
  size_t changed = 0;        ///< members whose state this call changed (after any rollback)
  bool ok() const noexcept { return error == 0; }
};

struct AddrNetlinkCounters {
  uint64_t requests = 0;         ///< requests sent
  uint64_t changed = 0;          ///< adds and removes that changed the interface
  uint64_t already_present = 0;  ///< adds answered EEXIST (idempotent success)
  uint64_t already_absent = 0;   ///< removes answered EADDRNOTAVAIL (idempotent success)
  uint64_t errors = 0;           ///< requests that failed (send, receive, kernel error, timeout)
  uint64_t timeouts = 0;         ///< no answer within the ack timeout
  uint64_t stale = 0;            ///< replies to older requests, skipped
  uint64_t dump_retries = 0;     ///< dumps restarted after NLM_F_DUMP_INTR
};

/// A NETLINK_ROUTE socket used synchronously: each call sends one request and reads until its
/// answer (the kernel answers address requests inside sendmsg, so the wait is short; a bounded
/// poll guards against a lost reply). Not thread-safe; one per event loop.
class AddrNetlink {
 public:
  /// How long a call waits for the kernel's answer before it fails with ETIMEDOUT.
  static constexpr int kAckTimeoutMs = 1000;

  /// Opens and binds the socket. Throws std::system_error (startup only).
  AddrNetlink();
  ~AddrNetlink();
  AddrNetlink(const AddrNetlink&) = delete;
  AddrNetlink& operator=(const AddrNetlink&) = delete;

  /// Adds `address` to `interface`; already present is success with changed = false.
  AddrResult add(const std::string& interface, const Ipv4Prefix& address) noexcept;
  /// Removes `address` from `interface`; already absent is success with changed = false.
  AddrResult remove(const std::string& interface, const Ipv4Prefix& address) noexcept;
  /// Sets `present` to whether `interface` holds `address` (same address and prefix length).
  /// Returns 0 or an errno.
  int has(const std::string& interface, const Ipv4Prefix& address, bool& present) noexcept;
  /// Replaces `out` with the IPv4 addresses of `interface`. Returns 0 or an errno.
  int list(const std::string& interface, std::vector<Ipv4Prefix>& out) noexcept;

  /// Adds every member, in order. On a failure, removes again the members this call added (a
  /// half-applied group would answer for the VIP without its back-side address) and reports the
  /// failing member.
  GroupResult apply(const AddressGroup& group) noexcept;
  /// Removes every member, in reverse order, continuing past failures (a node stepping down must
  /// drop all it can); reports the first failure.
  GroupResult withdraw(const AddressGroup& group) noexcept;

  int fd() const noexcept;
  const AddrNetlinkCounters& counters() const noexcept { return counters_; }

 private:
  AddrResult change(AddrOp op, const std::string& interface, const Ipv4Prefix& address) noexcept;
  /// Sends `len` bytes of buf_ and reads the reply to seq; collects addresses for `ifindex`.
  int transact(size_t len, uint32_t seq, uint32_t ifindex, std::vector<Ipv4Prefix>* out) noexcept;

  mnl_socket* nl_ = nullptr;
  uint32_t seq_ = 0;
  std::vector<uint8_t> buf_;
  AddrNetlinkCounters counters_;
};

}  // namespace tandem
