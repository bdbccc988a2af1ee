#include "proxy/io/garp.h"

#include <net/if.h>  // before the linux/ headers, which then skip their own copy

#include <arpa/inet.h>
#include <linux/if_arp.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

namespace tandem {
namespace {

constexpr MacAddress kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

void put16(uint8_t* p, uint16_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void put32(uint8_t* p, uint32_t v) noexcept {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

std::array<uint8_t, kGarpFrameLen> buildGarpFrame(const MacAddress& mac, uint32_t vip) noexcept {
  std::array<uint8_t, kGarpFrameLen> f{};
  uint8_t* p = f.data();
  // Ethernet: broadcast destination, our source, type ARP.
  std::memcpy(p, kBroadcast.data(), 6);
  std::memcpy(p + 6, mac.data(), 6);
  put16(p + 12, ETH_P_ARP);
  // ARP (RFC 826): Ethernet / IPv4, 6- and 4-byte addresses, request.
  uint8_t* a = p + 14;
  put16(a + 0, ARPHRD_ETHER);
  put16(a + 2, ETH_P_IP);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, ARPOP_REQUEST);
  std::memcpy(a + 8, mac.data(), 6);  // sender MAC
  put32(a + 14, vip);                 // sender IP
  // target MAC a[18..23] stays zero (RFC 5227 section 2.1.1)
  put32(a + 24, vip);  // target IP = sender IP: gratuitous
  return f;
}

std::string macToString(const MacAddress& mac) {
  char buf[18];
  std::snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return buf;
}

void GarpSchedule::start(uint64_t now_ns) noexcept {
  burst_left_ = config_.burst_count > 0 ? config_.burst_count : 1;
  next_ns_ = now_ns;
}

bool GarpSchedule::poll(uint64_t now_ns) noexcept {
  if (next_ns_ == kNever || now_ns < next_ns_) return false;
  if (burst_left_ > 0) --burst_left_;
  if (burst_left_ > 0) {
    next_ns_ = now_ns + config_.burst_spacing_ns;
  } else if (config_.refresh_interval_ns > 0) {
    next_ns_ = now_ns + config_.refresh_interval_ns;
  } else {
    next_ns_ = kNever;
  }
  return true;
}

GarpSender::~GarpSender() {
  if (fd_ >= 0) close(fd_);
}

void GarpSender::open() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  const unsigned index = if_nametoindex(interface_.c_str());
  if (index == 0) {
    throw std::system_error(errno, std::generic_category(), "garp: interface " + interface_);
  }
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "garp: AF_PACKET socket");

  ifreq ifr{};
  if (interface_.size() >= sizeof(ifr.ifr_name)) {
    close(fd);
    throw std::system_error(ENAMETOOLONG, std::generic_category(), "garp: " + interface_);
  }
  std::memcpy(ifr.ifr_name, interface_.c_str(), interface_.size() + 1);
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
    const int err = errno;
    close(fd);
    throw std::system_error(err, std::generic_category(), "garp: SIOCGIFHWADDR " + interface_);
  }
  if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER) {
    close(fd);
    throw std::system_error(EAFNOSUPPORT, std::generic_category(),
                            "garp: " + interface_ + " is not an Ethernet interface");
  }
  std::memcpy(mac_.data(), ifr.ifr_hwaddr.sa_data, mac_.size());
  fd_ = fd;
  ifindex_ = static_cast<int>(index);
}

int GarpSender::send(uint32_t vip) noexcept {
  if (fd_ < 0) {
    ++counters_.send_errors;
    counters_.last_errno = EBADF;
    return EBADF;
  }
  const auto frame = buildGarpFrame(mac_, vip);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = ifindex_;
  to.sll_halen = ETH_ALEN;
  std::memcpy(to.sll_addr, kBroadcast.data(), ETH_ALEN);
  const ssize_t n =
      sendto(fd_, frame.data(), frame.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  if (n < 0 || static_cast<size_t>(n) != frame.size()) {
    const int err = n < 0 ? errno : EMSGSIZE;
    ++counters_.send_errors;
    counters_.last_errno = err;
    return err;
  }
  ++counters_.sent;
  return 0;
}

}  // namespace tandem
