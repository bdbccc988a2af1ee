#include "common/ip_addr.h"

#include <arpa/inet.h>

#include <charconv>

namespace tandem {

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;  // c_str() would cut it
  std::string s(text);
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return IpAddr::fromV4(ntohl(v4.s_addr));
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) return IpAddr::fromV6(v6.s6_addr);
  return std::nullopt;
}

std::string IpAddr::toString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (isV4()) {
    in_addr v4{htonl(this->v4())};
    inet_ntop(AF_INET, &v4, buf, sizeof buf);
  } else {
    inet_ntop(AF_INET6, bytes_.data(), buf, sizeof buf);
  }
  return buf;
}

std::optional<Endpoint> Endpoint::parse(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    // An IPv6 host must be bracketed: "::1:80" is itself a valid address.
    if (host.find(':') != std::string_view::npos) return std::nullopt;
    port = text.substr(colon + 1);
  }
  auto addr = IpAddr::parse(host);
  if (!addr) return std::nullopt;
  unsigned value = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc{} || ptr != port.data() + port.size() || value == 0 || value > 65535)
    return std::nullopt;
  return Endpoint{*addr, static_cast<uint16_t>(value)};
}

std::string Endpoint::toString() const {
  if (addr.isV4()) return addr.toString() + ":" + std::to_string(port);
  return "[" + addr.toString() + "]:" + std::to_string(port);
}

}  // namespace tandem
