#include "proxy/io/addr_netlink.h"

#include <net/if.h>  // before the linux/ headers, which then skip their own copy

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>

#include "proxy/io/log.h"

namespace tandem {
namespace {

/// The kernel may build dump datagrams of up to 32 KiB (netlink_dump); a smaller buffer would
/// truncate them (MSG_TRUNC, reported by libmnl as ENOSPC).
constexpr size_t kRxBufSize = 32768;
/// A dump that keeps being interrupted by concurrent changes is given up after this many tries.
constexpr int kMaxDumpAttempts = 4;

struct AttrScan {
  const nlattr* local = nullptr;
  const nlattr* address = nullptr;
};

int collectAddrAttr(const nlattr* attr, void* data) {
  auto* scan = static_cast<AttrScan*>(data);
  const uint16_t type = mnl_attr_get_type(attr);
  if (type != IFA_LOCAL && type != IFA_ADDRESS) return MNL_CB_OK;
  if (mnl_attr_get_payload_len(attr) != sizeof(uint32_t)) return MNL_CB_ERROR;
  (type == IFA_LOCAL ? scan->local : scan->address) = attr;
  return MNL_CB_OK;
}

uint32_t loadBe32(const nlattr* attr) noexcept {
  uint32_t be = 0;
  std::memcpy(&be, mnl_attr_get_payload(attr), sizeof(be));
  return ntohl(be);
}

}  // namespace

std::optional<Ipv4Prefix> Ipv4Prefix::parse(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;  // c_str() would cut it
  const size_t slash = text.find('/');
  const std::string addr_text(text.substr(0, slash));
  in_addr a{};
  if (inet_pton(AF_INET, addr_text.c_str(), &a) != 1) return std::nullopt;
  Ipv4Prefix p;
  p.addr = ntohl(a.s_addr);
  if (slash != std::string_view::npos) {
    const std::string_view len_text = text.substr(slash + 1);
    unsigned len = 0;
    const auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (len_text.empty() || ec != std::errc() || end != len_text.data() + len_text.size() ||
        len > 32) {
      return std::nullopt;
    }
    p.prefix_len = static_cast<uint8_t>(len);
  }
  return p;
}

std::string Ipv4Prefix::toString() const {
  in_addr a{};
  a.s_addr = htonl(addr);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(prefix_len);
}

size_t buildAddrRequest(std::span<uint8_t> buf, AddrOp op, uint32_t ifindex,
                        const Ipv4Prefix& address, uint32_t seq) noexcept {
  if (buf.size() < kAddrRequestMaxLen) return 0;
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  if (op == AddrOp::kAdd) {
    nlh->nlmsg_type = RTM_NEWADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
  } else {
    nlh->nlmsg_type = RTM_DELADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  }
  nlh->nlmsg_seq = seq;
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = address.prefix_len;
  ifa->ifa_flags = 0;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = ifindex;
  const uint32_t be = htonl(address.addr);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS the peer's on point-to-point links and
  // the same address elsewhere. The kernel's delete also matches the prefix via IFA_ADDRESS.
  mnl_attr_put(nlh, IFA_LOCAL, sizeof(be), &be);
  mnl_attr_put(nlh, IFA_ADDRESS, sizeof(be), &be);
  return nlh->nlmsg_len;
}

size_t buildAddrDumpRequest(std::span<uint8_t> buf, uint32_t seq) noexcept {
  if (buf.size() < kAddrRequestMaxLen) return 0;
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_GETADDR;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  nlh->nlmsg_seq = seq;
  auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
  ifa->ifa_family = AF_INET;
  return nlh->nlmsg_len;
}

NlReplyScan scanNlReply(std::span<const uint8_t> datagram, uint32_t seq, uint32_t ifindex,
                        std::vector<Ipv4Prefix>* addresses) {
  NlReplyScan r;
  int left = static_cast<int>(datagram.size());
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(datagram.data());
  for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left)) {
    if (nlh->nlmsg_seq != seq) {
      ++r.stale;
      continue;
    }
    if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) r.interrupted = true;
    switch (nlh->nlmsg_type) {
      case NLMSG_ERROR: {
        if (mnl_nlmsg_get_payload_len(nlh) < sizeof(int)) {
          r.error = EPROTO;
        } else {
          int err = 0;
          std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
          r.error = -err;
        }
        r.complete = true;
        return r;
      }
      case NLMSG_DONE: {
        // The DONE of a dump carries an int status (negative: the dump failed).
        int err = 0;
        if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(int)) {
          std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
        }
        r.error = err < 0 ? -err : 0;
        r.complete = true;
        return r;
      }
      case RTM_NEWADDR: {
        if (addresses == nullptr) break;
        if (mnl_nlmsg_get_payload_len(nlh) < sizeof(ifaddrmsg)) {
          r.error = EPROTO;
          r.complete = true;
          return r;
        }
        const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(nlh));
        if (ifa->ifa_family != AF_INET || ifa->ifa_index != ifindex) break;
        AttrScan scan;
        if (mnl_attr_parse(nlh, sizeof(ifaddrmsg), collectAddrAttr, &scan) != MNL_CB_OK) {
          r.error = EPROTO;
          r.complete = true;
          return r;
        }
        const nlattr* a = scan.local != nullptr ? scan.local : scan.address;
        if (a != nullptr) addresses->push_back({loadBe32(a), ifa->ifa_prefixlen});
        break;
      }
      default:
        break;
    }
  }
  return r;
}

AddrNetlink::AddrNetlink() : buf_(kRxBufSize) {
  nl_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
  if (nl_ == nullptr) throw std::system_error(errno, std::generic_category(), "netlink socket");
  // Errors echo only the request's header, not the whole request (smaller, never truncated).
  int one = 1;
  if (mnl_socket_setsockopt(nl_, NETLINK_CAP_ACK, &one, sizeof(one)) < 0) {
    logf(LogLevel::kDebug, "addr_netlink: NETLINK_CAP_ACK: %s", std::strerror(errno));
  }
  if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
    const int err = errno;
    mnl_socket_close(nl_);
    nl_ = nullptr;
    throw std::system_error(err, std::generic_category(), "netlink bind");
  }
}

AddrNetlink::~AddrNetlink() {
  if (nl_ != nullptr) mnl_socket_close(nl_);
}

int AddrNetlink::fd() const noexcept { return mnl_socket_get_fd(nl_); }

int AddrNetlink::transact(size_t len, uint32_t seq, uint32_t ifindex,
                          std::vector<Ipv4Prefix>* out) noexcept {
  ++counters_.requests;
  const ssize_t sent = mnl_socket_sendto(nl_, buf_.data(), len);
  if (sent < 0 || static_cast<size_t>(sent) != len) return sent < 0 ? errno : EMSGSIZE;

  const uint64_t deadline = monotonicNs() + uint64_t{kAckTimeoutMs} * 1'000'000u;
  for (;;) {
    const uint64_t now = monotonicNs();
    if (now >= deadline) {
      ++counters_.timeouts;
      return ETIMEDOUT;
    }
    pollfd pfd{fd(), POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>((deadline - now) / 1'000'000u) + 1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (ready == 0) continue;  // the deadline check above reports the timeout
    const ssize_t n = mnl_socket_recvfrom(nl_, buf_.data(), buf_.size());
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return errno;
    }
    const NlReplyScan scan = scanNlReply({buf_.data(), static_cast<size_t>(n)}, seq, ifindex, out);
    counters_.stale += scan.stale;
    if (scan.interrupted) return EINTR;  // list() retries
    if (scan.complete) return scan.error;
  }
}

AddrResult AddrNetlink::change(AddrOp op, const std::string& interface,
                               const Ipv4Prefix& address) noexcept {
  AddrResult r;
  const unsigned ifindex = if_nametoindex(interface.c_str());
  if (ifindex == 0) {
    r.error = errno != 0 ? errno : ENODEV;
    ++counters_.errors;
    return r;
  }
  const uint32_t seq = ++seq_;
  const size_t len = buildAddrRequest(buf_, op, ifindex, address, seq);
  const int err = transact(len, seq, 0, nullptr);
  if (err == 0) {
    r.changed = true;
    ++counters_.changed;
  } else if (op == AddrOp::kAdd && err == EEXIST) {
    ++counters_.already_present;
  } else if (op == AddrOp::kRemove && err == EADDRNOTAVAIL) {
    ++counters_.already_absent;
  } else {
    r.error = err;
    ++counters_.errors;
  }
  return r;
}

AddrResult AddrNetlink::add(const std::string& interface, const Ipv4Prefix& address) noexcept {
  return change(AddrOp::kAdd, interface, address);
}

AddrResult AddrNetlink::remove(const std::string& interface, const Ipv4Prefix& address) noexcept {
  return change(AddrOp::kRemove, interface, address);
}

int AddrNetlink::list(const std::string& interface, std::vector<Ipv4Prefix>& out) noexcept {
  const unsigned ifindex = if_nametoindex(interface.c_str());
  if (ifindex == 0) {
    ++counters_.errors;
    return errno != 0 ? errno : ENODEV;
  }
  int err = 0;
  for (int attempt = 0; attempt < kMaxDumpAttempts; ++attempt) {
    out.clear();
    const uint32_t seq = ++seq_;
    const size_t len = buildAddrDumpRequest(buf_, seq);
    err = transact(len, seq, ifindex, &out);
    if (err != EINTR) break;
    ++counters_.dump_retries;
  }
  if (err != 0) {
    out.clear();
    ++counters_.errors;
  }
  return err;
}

int AddrNetlink::has(const std::string& interface, const Ipv4Prefix& address,
                     bool& present) noexcept {
  present = false;
  std::vector<Ipv4Prefix> addresses;
  const int err = list(interface, addresses);
  if (err != 0) return err;
  for (const Ipv4Prefix& a : addresses) {
    if (a == address) present = true;
  }
  return 0;
}

GroupResult AddrNetlink::apply(const AddressGroup& group) noexcept {
  GroupResult g;
  std::vector<size_t> added;
  for (size_t i = 0; i < group.members.size(); ++i) {
    const GroupMember& m = group.members[i];
    const AddrResult r = add(m.interface, m.address);
    if (!r.ok()) {
      g.error = r.error;
      g.failed_member = i;
      logf(LogLevel::kError, "addr_netlink: adding %s to %s failed: %s; rolling the group back",
           m.address.toString().c_str(), m.interface.c_str(), std::strerror(r.error));
      for (auto it = added.rbegin(); it != added.rend(); ++it) {
        const GroupMember& undo = group.members[*it];
        const AddrResult u = remove(undo.interface, undo.address);
        if (u.ok()) {
          --g.changed;
        } else {  // still added: g.changed tells the caller
          logf(LogLevel::kError, "addr_netlink: rollback of %s on %s failed: %s",
               undo.address.toString().c_str(), undo.interface.c_str(), std::strerror(u.error));
        }
      }
      return g;
    }
    if (r.changed) {
      added.push_back(i);
      ++g.changed;
    }
  }
  return g;
}

GroupResult AddrNetlink::withdraw(const AddressGroup& group) noexcept {
  GroupResult g;
  for (size_t i = group.members.size(); i-- > 0;) {
    const GroupMember& m = group.members[i];
    const AddrResult r = remove(m.interface, m.address);
    if (r.changed) ++g.changed;
    if (!r.ok()) {
      logf(LogLevel::kError, "addr_netlink: removing %s from %s failed: %s",
           m.address.toString().c_str(), m.interface.c_str(), std::strerror(r.error));
      if (g.error == 0) {
        g.error = r.error;
        g.failed_member = i;
      }
    }
  }
  return g;
}

}  // namespace tandem
