#include "proxy/core/bind_rules.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace tandem {
namespace {

constexpr size_t kMaxName = 255;          // RFC 1035 2.3.4 (and RFC 6066 HostName <1..2^16-1>)
constexpr size_t kMaxTlsRecord = 16384 + 2048;  // RFC 8446 5.2: TLSCiphertext, the largest
constexpr size_t kMaxMethod = 16;

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool nameChar(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

bool validName(std::string_view n) noexcept {
  return !n.empty() && n.size() <= kMaxName && n.front() != '.' &&
         std::all_of(n.begin(), n.end(), nameChar);
}

/// A bounded reader over a TLS structure: `limit` is where the enclosing length field says the
/// structure ends, `have` where the bytes we hold end. Reading past `limit` means the lengths
/// contradict each other (malformed); past `have` only, that the rest is in a later segment.
struct Cursor {
  const uint8_t* p;
  const uint8_t* limit;
  const uint8_t* have;

  Extract need(size_t n) const noexcept {
    if (static_cast<size_t>(limit - p) < n) return Extract::kMalformed;
    // sub() may have skipped past `have` (a structure that ends in a later segment).
    if (p > have || static_cast<size_t>(have - p) < n) return Extract::kIncomplete;
    return Extract::kFound;
  }
  uint32_t take(size_t n) noexcept {  // after need(n) == kFound, n <= 3
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) v = v << 8 | *p++;
    return v;
  }
  /// The next n bytes as a nested structure (its length field already read); this one skips
  /// past them. Malformed if they do not fit the declared length of this one.
  bool sub(size_t n, Cursor& out) noexcept {
    if (static_cast<size_t>(limit - p) < n) return false;
    out.p = p;
    out.limit = p + n;
    out.have = std::min(have, out.limit);
    p += n;
    return true;
  }
  bool atEnd() const noexcept { return p == limit; }
};

// Reads an n-byte big-endian length into v, or returns from the caller with the reason.
#define TANDEM_READ(cur, n, v)                                           \
  do {                                                                   \
    if (const Extract e_ = (cur).need(n); e_ != Extract::kFound) return e_; \
    (v) = (cur).take(n);                                                 \
  } while (0)

// Skips n bytes, returning kMalformed/kIncomplete from the caller when they are not there.
#define TANDEM_SKIP(cur, n)                                              \
  do {                                                                   \
    if (const Extract e_ = (cur).need(n); e_ != Extract::kFound) return e_; \
    (cur).p += (n);                                                      \
  } while (0)

Extract serverNameList(Cursor ext, std::string_view& name) noexcept {
  // RFC 6066 3: ServerName server_name_list<1..2^16-1>; { NameType name_type; HostName }.
  uint32_t list_len = 0;
  TANDEM_READ(ext, 2, list_len);
  Cursor list;
  if (list_len == 0 || !ext.sub(list_len, list) || !ext.atEnd()) return Extract::kMalformed;
  while (!list.atEnd()) {
    uint32_t type = 0, n = 0;
    TANDEM_READ(list, 1, type);
    TANDEM_READ(list, 2, n);
    if (const Extract e = list.need(n); e != Extract::kFound) return e;
    if (type == 0) {  // host_name
      name = std::string_view(reinterpret_cast<const char*>(list.p), n);
      return validName(name) ? Extract::kFound : Extract::kMalformed;
    }
    list.p += n;
  }
  return Extract::kAbsent;
}

bool ieq(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool tchar(char c) noexcept {  // RFC 9110 5.6.2, the token characters
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

/// The host part of a Host field value: `name`, `name:port`, `[v6]` or `[v6]:port`.
Extract hostOfValue(std::string_view v, std::string_view& host) noexcept {
  if (v.empty()) return Extract::kAbsent;  // RFC 9112 3.2: empty when the URI has no authority
  std::string_view rest;
  if (v.front() == '[') {
    const size_t close = v.find(']');
    if (close == std::string_view::npos) return Extract::kMalformed;
    host = v.substr(0, close + 1);
    rest = v.substr(close + 1);
    if (host.size() < 3 || host.size() > 2 + 45) return Extract::kMalformed;  // INET6_ADDRSTRLEN
    for (char c : host.substr(1, host.size() - 2))
      if (!(std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.'))
        return Extract::kMalformed;
  } else {
    const size_t colon = v.find(':');
    host = v.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : v.substr(colon);
    if (!validName(host)) return Extract::kMalformed;
  }
  if (!rest.empty()) {
    if (rest.front() != ':' || rest.size() > 6) return Extract::kMalformed;
    for (char c : rest.substr(1))
      if (c < '0' || c > '9') return Extract::kMalformed;
  }
  return Extract::kFound;
}

}  // namespace

const char* extractName(Extract e) noexcept {
  switch (e) {
    case Extract::kFound: return "found";
    case Extract::kAbsent: return "absent";
    case Extract::kIncomplete: return "incomplete";
    case Extract::kMalformed: return "malformed";
  }
  return "?";
}

Extract extractSni(const uint8_t* data, size_t len, std::string_view& name) noexcept {
  // RFC 8446 5.1: TLSPlaintext { ContentType type = 22; ProtocolVersion; uint16 length; }.
  if (len == 0) return Extract::kIncomplete;
  if (data[0] != 22) return Extract::kMalformed;
  Cursor all{data, data + std::max<size_t>(len, 5), data + len};
  uint32_t major = 0, minor = 0, rec_len = 0;
  TANDEM_SKIP(all, 1);
  TANDEM_READ(all, 1, major);
  TANDEM_READ(all, 1, minor);
  TANDEM_READ(all, 2, rec_len);
  (void)minor;
  if (major != 3 || rec_len == 0 || rec_len > kMaxTlsRecord) return Extract::kMalformed;
  // Only the first record's bytes are the handshake's; a ClientHello fragmented over several
  // records reads as incomplete.
  Cursor rec{all.p, all.p + rec_len, std::min(all.have, all.p + rec_len)};

  // RFC 8446 4: Handshake { HandshakeType msg_type = 1; uint24 length; ClientHello body }.
  uint32_t type = 0, hs_len = 0;
  TANDEM_READ(rec, 1, type);
  if (type != 1) return Extract::kMalformed;
  TANDEM_READ(rec, 3, hs_len);
  if (hs_len < 2 + 32 + 1 + 2 + 1) return Extract::kMalformed;
  Cursor hello{rec.p, rec.p + hs_len, std::min(rec.have, rec.p + hs_len)};

  // RFC 8446 4.1.2: legacy_version, random, legacy_session_id<0..32>,
  // cipher_suites<2..2^16-2>, legacy_compression_methods<1..2^8-1>, extensions<8..2^16-1>.
  uint32_t n = 0;
  TANDEM_SKIP(hello, 2 + 32);
  TANDEM_READ(hello, 1, n);
  if (n > 32) return Extract::kMalformed;
  TANDEM_SKIP(hello, n);
  TANDEM_READ(hello, 2, n);
  if (n < 2 || n % 2 != 0) return Extract::kMalformed;
  TANDEM_SKIP(hello, n);
  TANDEM_READ(hello, 1, n);
  if (n < 1) return Extract::kMalformed;
  TANDEM_SKIP(hello, n);
  if (hello.atEnd()) return Extract::kAbsent;  // TLS 1.2 allows a hello without extensions
  TANDEM_READ(hello, 2, n);
  Cursor exts;
  if (!hello.sub(n, exts) || !hello.atEnd()) return Extract::kMalformed;
  while (!exts.atEnd()) {
    uint32_t ext_type = 0, ext_len = 0;
    TANDEM_READ(exts, 2, ext_type);
    TANDEM_READ(exts, 2, ext_len);
    Cursor ext;
    if (!exts.sub(ext_len, ext)) return Extract::kMalformed;
    if (ext_type == 0) return serverNameList(ext, name);  // server_name, RFC 6066 3
  }
  return Extract::kAbsent;
}

Extract extractHttpHost(const uint8_t* data, size_t len, std::string_view& host) noexcept {
  const std::string_view s(reinterpret_cast<const char*>(data), len);
  // RFC 9112 3: request-line = method SP request-target SP HTTP-version CRLF.
  size_t i = 0;
  while (i < s.size() && s[i] != ' ') {
    if (!tchar(s[i]) || i >= kMaxMethod) return Extract::kMalformed;
    ++i;
  }
  if (i == s.size()) return Extract::kIncomplete;
  if (i == 0) return Extract::kMalformed;
  size_t eol = s.find('\n', i);
  if (eol == std::string_view::npos) {
    for (; i < s.size(); ++i)
      if (static_cast<unsigned char>(s[i]) < 0x20 && s[i] != '\r') return Extract::kMalformed;
    return Extract::kIncomplete;
  }
  const std::string_view line = s.substr(0, eol);
  if (line.find(" HTTP/1.") == std::string_view::npos) return Extract::kMalformed;  // not 0.9/2
  size_t pos = eol + 1;
  // RFC 9112 5: field-line = field-name ":" OWS field-value OWS, each ended by CRLF (a bare LF
  // is accepted, RFC 9112 2.2); an empty line ends the head.
  while (true) {
    eol = s.find('\n', pos);
    if (eol == std::string_view::npos) return Extract::kIncomplete;
    std::string_view field = s.substr(pos, eol - pos);
    pos = eol + 1;
    if (!field.empty() && field.back() == '\r') field.remove_suffix(1);
    if (field.empty()) return Extract::kAbsent;
    const size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return Extract::kMalformed;
    const std::string_view fname = field.substr(0, colon);
    if (!std::all_of(fname.begin(), fname.end(), tchar)) return Extract::kMalformed;
    if (!ieq(fname, "host")) continue;
    std::string_view v = field.substr(colon + 1);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return hostOfValue(v, host);
  }
}

bool routeNameMatches(std::string_view pattern, std::string_view name) noexcept {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (pattern.size() >= 2 && pattern[0] == '*' && pattern[1] == '.') {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return name.size() > suffix.size() && ieq(name.substr(name.size() - suffix.size()), suffix);
  }
  return ieq(pattern, name);
}

int chooseRoute(const std::vector<RouteRule>& rules, const uint8_t* payload, size_t len) noexcept {
  std::string_view sni, host;
  int sni_state = -1, host_state = -1;  // -1 not parsed yet, 0 no name, 1 name found
  for (const RouteRule& r : rules) {
    if (r.kind == RouteKind::kSni) {
      if (sni_state < 0) sni_state = extractSni(payload, len, sni) == Extract::kFound ? 1 : 0;
      if (sni_state == 1 && routeNameMatches(r.name, sni)) return r.backend;
    } else {
      if (host_state < 0)
        host_state = extractHttpHost(payload, len, host) == Extract::kFound ? 1 : 0;
      if (host_state == 1 && routeNameMatches(r.name, host)) return r.backend;
    }
  }
  return -1;
}

RouteRule parseRouteMatch(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  RouteRule r;
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  if (colon == std::string_view::npos || (kind != "sni" && kind != "host"))
    throw std::invalid_argument("expected sni:NAME or host:NAME before '->', got '" +
                                std::string(text) + "'");
  r.kind = kind == "sni" ? RouteKind::kSni : RouteKind::kHost;
  std::string_view name = text.substr(colon + 1);
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  const std::string_view plain = name.substr(0, 2) == "*." ? name.substr(2) : name;
  if (!validName(plain))
    throw std::invalid_argument("'" + std::string(name) +
                                "' is not a host name (letters, digits, '-', '_', '.', an "
                                "optional leading '*.')");
  r.name.reserve(name.size());
  for (char c : name) r.name += lower(c);
  return r;
}

}  // namespace tandem
