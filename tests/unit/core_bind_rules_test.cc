// Backend choice from the first bytes (splice, bind = data): golden ClientHello and HTTP request
// heads, every truncation of them, and malformed variants that must be refused, never overread.
#include "proxy/core/bind_rules.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace tandem {
namespace {

/// A ClientHello captured from `openssl s_client -connect ... -servername a.example`
/// (OpenSSL 3.0), 315 bytes: one record, SNI the 1st extension.
const char* const kClientHelloHex =
    "1603010136010001320303e6dea9606952864f7516e56a6a76df2f41d8406f193643eb08459c8045e8a80820"
    "cedd1074f7c9031bcee52cbc1921a36563a66d2bcef76c6acb418e35e9e842bd003e130213031301c02cc030"
    "009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d"
    "003c0035002f00ff010000ab0000000e000c000009612e6578616d706c65000b000403000102000a00160014"
    "001d0017001e0019001801000101010201030104002300000016000000170000000d002a0028040305030603"
    "080708080809080a080b080408050806040105010601030303010302040205020602002b0009080304030303"
    "020301002d00020101003300260024001d00209ddd2acda477d2ef28962aa86b4741ff52e14be814477dff8d"
    "087a198b85be28";

std::vector<uint8_t> fromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

/// The offset of the SNI host name in the golden hello.
size_t nameOffset(const std::vector<uint8_t>& h) {
  const std::string s(h.begin(), h.end());
  const size_t at = s.find("a.example");
  EXPECT_NE(at, std::string::npos);
  return at;
}

TEST(BindRules, GoldenClientHello) {
  const auto h = fromHex(kClientHelloHex);
  ASSERT_EQ(h.size(), 315u);
  std::string_view name;
  EXPECT_EQ(extractSni(h.data(), h.size(), name), Extract::kFound);
  EXPECT_EQ(name, "a.example");
}

TEST(BindRules, EveryTruncationIsIncompleteUntilTheName) {
  // A ClientHello cut anywhere before the end of its name (a split across segments) is
  // incomplete, never malformed and never a wrong name; from the end of the name on, found.
  const auto h = fromHex(kClientHelloHex);
  const size_t end_of_name = nameOffset(h) + 9;
  for (size_t n = 0; n <= h.size(); ++n) {
    std::vector<uint8_t> cut(h.begin(), h.begin() + static_cast<long>(n));  // exact size: ASan
    std::string_view name;
    const Extract e = extractSni(cut.data(), cut.size(), name);
    if (n < end_of_name) {
      EXPECT_EQ(e, Extract::kIncomplete) << "cut at " << n;
    } else {
      EXPECT_EQ(e, Extract::kFound) << "cut at " << n;
      EXPECT_EQ(name, "a.example");
    }
  }
}

TEST(BindRules, MalformedHellosAreRefused) {
  const auto golden = fromHex(kClientHelloHex);
  struct Case {
    const char* what;
    size_t offset;
    uint8_t value;
  };
  const size_t sni_len_at = nameOffset(golden) - 2;
  const Case cases[] = {
      {"not a handshake record", 0, 23},
      {"SSLv2-style major version", 1, 2},
      {"not a ClientHello", 5, 2},
      {"session id longer than 32", 5 + 4 + 34, 33},
      {"odd cipher suite length", 5 + 4 + 34 + 1 + 32 + 1, 0x3f},
      {"name longer than its list", sni_len_at + 1, 200},
      {"name with a bad character", sni_len_at + 2, '/'},
      {"handshake length beyond the record and its own fields", 6, 0x7f},
  };
  for (const Case& c : cases) {
    auto h = golden;
    h[c.offset] = c.value;
    std::string_view name;
    EXPECT_EQ(extractSni(h.data(), h.size(), name), Extract::kMalformed) << c.what;
  }
  std::string_view name;
  const auto http = bytes("GET / HTTP/1.1\r\n");
  EXPECT_EQ(extractSni(http.data(), http.size(), name), Extract::kMalformed);
}

TEST(BindRules, HelloWithoutServerName) {
  // A minimal TLS 1.2 hello: no extensions at all, then one with an unrelated extension.
  std::vector<uint8_t> body = {3, 3};
  body.insert(body.end(), 32, 0xab);                  // random
  body.insert(body.end(), {0, 0, 2, 0x13, 0x01, 1, 0});  // no session id, 1 suite, null comp.
  auto wrap = [](std::vector<uint8_t> b) {
    std::vector<uint8_t> hs = {1, 0, static_cast<uint8_t>(b.size() >> 8),
                               static_cast<uint8_t>(b.size())};
    hs.insert(hs.end(), b.begin(), b.end());
    std::vector<uint8_t> rec = {22, 3, 1, static_cast<uint8_t>(hs.size() >> 8),
                                static_cast<uint8_t>(hs.size())};
    rec.insert(rec.end(), hs.begin(), hs.end());
    return rec;
  };
  std::string_view name;
  auto bare = wrap(body);
  EXPECT_EQ(extractSni(bare.data(), bare.size(), name), Extract::kAbsent);
  auto with_ext = body;
  with_ext.insert(with_ext.end(), {0, 5, 0, 0x17, 0, 1, 0});  // extended_master_secret + 1 byte
  auto rec = wrap(with_ext);
  EXPECT_EQ(extractSni(rec.data(), rec.size(), name), Extract::kAbsent);
  // The extensions block longer than the hello: malformed, not read past the hello.
  with_ext[with_ext.size() - 6] = 9;
  rec = wrap(with_ext);
  EXPECT_EQ(extractSni(rec.data(), rec.size(), name), Extract::kMalformed);
}

struct HostCase {
  const char* what;
  std::string head;
  Extract expected;
  const char* host;
};

class HttpHost : public testing::TestWithParam<HostCase> {};

TEST_P(HttpHost, Extracts) {
  const HostCase& c = GetParam();
  const auto b = bytes(c.head);
  std::string_view host;
  EXPECT_EQ(extractHttpHost(b.data(), b.size(), host), c.expected) << c.what;
  if (c.expected == Extract::kFound) {
    EXPECT_EQ(host, c.host) << c.what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Golden, HttpHost,
    testing::Values(
        HostCase{"curl", "GET / HTTP/1.1\r\nHost: b.example:8080\r\nUser-Agent: curl/8\r\n"
                 "Accept: */*\r\n\r\n", Extract::kFound, "b.example"},
        HostCase{"case and blanks", "POST /x HTTP/1.0\r\nX-A: 1\r\nhOsT: \t A.Example \r\n\r\n",
                 Extract::kFound, "A.Example"},
        HostCase{"bare LF", "GET / HTTP/1.1\nHost: a.example\n\n", Extract::kFound, "a.example"},
        HostCase{"IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Extract::kFound,
                 "[::1]"},
        HostCase{"no Host", "GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", Extract::kAbsent, ""},
        HostCase{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", Extract::kAbsent, ""},
        HostCase{"cut in the request line", "GET /index.ht", Extract::kIncomplete, ""},
        HostCase{"cut in the method", "GE", Extract::kIncomplete, ""},
        HostCase{"cut in Host", "GET / HTTP/1.1\r\nHost: a.exa", Extract::kIncomplete, ""},
        HostCase{"cut before Host", "GET / HTTP/1.1\r\nAccept: */*\r\n", Extract::kIncomplete, ""},
        HostCase{"TLS, not HTTP", std::string("\x16\x03\x01\x00\x05", 5), Extract::kMalformed,
                 ""},
        HostCase{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Extract::kMalformed, ""},
        HostCase{"header without colon", "GET / HTTP/1.1\r\nHost a.example\r\n\r\n",
                 Extract::kMalformed, ""},
        HostCase{"bad host character", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Extract::kMalformed,
                 ""},
        HostCase{"bad port", "GET / HTTP/1.1\r\nHost: a.example:80x\r\n\r\n",
                 Extract::kMalformed, ""},
        HostCase{"space before the method", " GET / HTTP/1.1\r\n", Extract::kMalformed, ""},
        HostCase{"control byte in the request line", std::string("GET /\x01", 6),
                 Extract::kMalformed, ""}));

TEST(BindRules, NameMatching) {
  EXPECT_TRUE(routeNameMatches("a.example", "A.EXAMPLE"));
  EXPECT_TRUE(routeNameMatches("a.example", "a.example."));
  EXPECT_FALSE(routeNameMatches("a.example", "b.example"));
  EXPECT_FALSE(routeNameMatches("a.example", "xa.example"));
  EXPECT_TRUE(routeNameMatches("*.example", "www.Example"));
  EXPECT_TRUE(routeNameMatches("*.example", "a.b.example"));
  EXPECT_FALSE(routeNameMatches("*.example", "example"));
  EXPECT_FALSE(routeNameMatches("*.example", "xexample"));
}

TEST(BindRules, ChooseRouteFirstMatchWins) {
  std::vector<RouteRule> rules = {parseRouteMatch("host:b.example"),
                                  parseRouteMatch(" sni:A.Example. "),
                                  parseRouteMatch("sni:*.example")};
  rules[0].backend = 2;
  rules[1].backend = 0;
  rules[2].backend = 1;
  EXPECT_EQ(rules[1].name, "a.example");
  const auto hello = fromHex(kClientHelloHex);  // a.example
  EXPECT_EQ(chooseRoute(rules, hello.data(), hello.size()), 0);
  auto other = hello;
  other[nameOffset(other)] = 'c';  // c.example
  EXPECT_EQ(chooseRoute(rules, other.data(), other.size()), 1);
  const auto get = bytes("GET / HTTP/1.1\r\nHost: b.example\r\n\r\n");
  EXPECT_EQ(chooseRoute(rules, get.data(), get.size()), 2);
  const auto miss = bytes("GET / HTTP/1.1\r\nHost: z.test\r\n\r\n");
  EXPECT_EQ(chooseRoute(rules, miss.data(), miss.size()), -1);
  // A hello split so the name is in the next segment: the scheduler chooses.
  EXPECT_EQ(chooseRoute(rules, hello.data(), 100), -1);
  EXPECT_EQ(chooseRoute(rules, nullptr, 0), -1);
}

TEST(BindRules, ParseRouteMatchRefusesNonsense) {
  for (const char* bad : {"sni", "sni:", "tls:a.example", "host:a b", "host:*.", "sni:.a",
                          "host:a/b", "sni:*a.example"}) {
    EXPECT_THROW(parseRouteMatch(bad), std::invalid_argument) << bad;
  }
  EXPECT_EQ(parseRouteMatch("host:*.Example").name, "*.example");
  EXPECT_EQ(parseRouteMatch("host:*.Example").kind, RouteKind::kHost);
}

}  // namespace
}  // namespace tandem
