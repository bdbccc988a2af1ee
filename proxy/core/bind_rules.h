#pragma once
/// @file Backend choice from the client's first bytes (splice mode, `bind = data`): the TLS
/// ClientHello's server name (RFC 8446 4.1.2, RFC 6066 section 3) and the HTTP/1 Host header
/// (RFC 9112 section 3.2). Pure and allocation-free on the packet path: the extractors read only
/// [data, data + len) and return views into it.
///
/// Only the first data segment is looked at. A ClientHello (or request head) split across
/// segments so that the name is not in the first one yields kIncomplete, and the service's
/// scheduler chooses instead: the proxy never buffers more than one segment before binding.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

enum class RouteKind : uint8_t { kSni, kHost };

/// `route.N = sni:NAME -> ADDRESS:PORT` or `host:NAME -> ADDRESS:PORT`. NAME is matched
/// case-insensitively; `*.example.com` matches any name ending in `.example.com` (not the bare
/// `example.com`).
struct RouteRule {
  RouteKind kind = RouteKind::kSni;
  std::string name;      ///< lower case, no trailing dot
  uint16_t backend = 0;  ///< index in the service's backend pool
};

enum class Extract : uint8_t {
  kFound,      ///< `name` holds the server name / host (not yet lower-cased)
  kAbsent,     ///< well-formed, but carries no name (no SNI extension, no Host header)
  kIncomplete, ///< the bytes end before the name could be found
  kMalformed,  ///< not a ClientHello / request head, or inconsistent lengths or characters
};

const char* extractName(Extract e) noexcept;

/// The host_name of the server_name extension of a TLS ClientHello that starts at data[0].
Extract extractSni(const uint8_t* data, size_t len, std::string_view& name) noexcept;

/// The Host header of an HTTP/1.x request head that starts at data[0], without a port.
Extract extractHttpHost(const uint8_t* data, size_t len, std::string_view& host) noexcept;

/// True if `name` (any case, optional trailing dot) matches `pattern` (lower case, possibly
/// `*.suffix`).
bool routeNameMatches(std::string_view pattern, std::string_view name) noexcept;

/// The backend the first rule matching the payload names, or -1 (the scheduler chooses).
/// Parses at most once per kind.
int chooseRoute(const std::vector<RouteRule>& rules, const uint8_t* payload, size_t len) noexcept;

/// Configuration helper (may throw std::invalid_argument with a message naming the problem):
/// parses `sni:NAME` / `host:NAME` (the part before `->`) into kind and normalised name.
RouteRule parseRouteMatch(std::string_view text);

}  // namespace tandem
