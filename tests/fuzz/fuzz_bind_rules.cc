// libFuzzer harness for the bind = data parsers (proxy/core/bind_rules): the TLS ClientHello SNI
// and HTTP/1 Host extractors and chooseRoute() on arbitrary first-segment bytes. Invariants are
// checked with check(), so a violated one is a crash that libFuzzer (or the replay test) reports.
// The input is copied into a buffer of exactly its size, so ASan catches any overread.
//
// Build: tests/fuzz/CMakeLists.txt (replay binary always, libFuzzer binary with TANDEM_FUZZ=ON).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "proxy/core/bind_rules.h"

namespace tandem {
namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_bind_rules: invariant violated: %s\n", what);
    std::abort();
  }
}

bool inside(std::string_view v, const uint8_t* data, size_t len) {
  const auto* p = reinterpret_cast<const uint8_t*>(v.data());
  return p >= data && p + v.size() <= data + len;
}

void checkName(Extract e, std::string_view name, const uint8_t* data, size_t len) {
  if (e != Extract::kFound) return;
  check(!name.empty() && name.size() <= 255, "a found name is 1 to 255 bytes");
  check(inside(name, data, len), "a found name lies inside the input");
}

}  // namespace
}  // namespace tandem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* in, size_t size) {
  using namespace tandem;
  std::unique_ptr<uint8_t[]> copy(new uint8_t[size > 0 ? size : 1]);
  std::copy(in, in + size, copy.get());
  const uint8_t* data = copy.get();

  std::string_view sni, host;
  const Extract s = extractSni(data, size, sni);
  checkName(s, sni, data, size);
  const Extract h = extractHttpHost(data, size, host);
  checkName(h, host, data, size);
  check(!(s == Extract::kFound && h == Extract::kFound), "one segment is not both TLS and HTTP");

  // Every prefix of a found SNI input up to the name is incomplete or found, never malformed:
  // a ClientHello split across segments must not be mistaken for garbage. (Checked on a few
  // prefixes to keep the harness fast.)
  if (s == Extract::kFound) {
    for (size_t cut : {size / 2, size / 3, size_t{5}, size_t{9}}) {
      if (cut >= size) continue;
      std::string_view n;
      const Extract e = extractSni(data, cut, n);
      check(e != Extract::kAbsent, "a prefix of a hello with SNI never reads as without");
      checkName(e, n, data, cut);
    }
  }

  std::vector<RouteRule> rules(3);
  rules[0] = {RouteKind::kSni, "a.example", 0};
  rules[1] = {RouteKind::kHost, "*.example", 1};
  rules[2] = {RouteKind::kSni, "*.test", 2};
  const int r = chooseRoute(rules, data, size);
  check(r >= -1 && r <= 2, "chooseRoute returns a rule's backend or -1");
  if (r >= 0) check(s == Extract::kFound || h == Extract::kFound, "a route needs a name");
  return 0;
}
