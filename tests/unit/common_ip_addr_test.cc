// Addresses and endpoints: parse and format, v4 kept v4-mapped, v6, and refusals.

#include "common/ip_addr.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tandem {
namespace {

using namespace std::string_literals;

TEST(IpAddrParse, Ipv4IsStoredV4Mapped) {
  const auto a = IpAddr::parse("10.1.2.3");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->isV4());
  EXPECT_EQ(a->v4(), 0x0a010203u);
  const std::array<uint8_t, 16> want = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};
  EXPECT_EQ(a->bytes(), want);
  EXPECT_EQ(*a, IpAddr::fromV4(0x0a010203));
  EXPECT_FALSE(a->isZero());
}

struct FormatCase {
  std::string text;
  std::string canonical;
  bool v4;
};

TEST(IpAddrParse, ValidTextFormatsCanonically) {
  const std::vector<FormatCase> cases = {
      {"0.0.0.0", "0.0.0.0", true},
      {"127.0.0.1", "127.0.0.1", true},
      {"255.255.255.255", "255.255.255.255", true},
      {"192.0.2.33", "192.0.2.33", true},
      {"::", "::", false},
      {"::1", "::1", false},
      {"2001:db8::1", "2001:db8::1", false},
      {"2001:DB8:0:0:0:0:0:1", "2001:db8::1", false},
      {"2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", false},
      {"fe80::1:2", "fe80::1:2", false},
      {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
      {"::ffff:10.0.0.1", "10.0.0.1", true},  // v4-mapped IPv6 is the IPv4 address
      {"::ffff:a00:1", "10.0.0.1", true},
  };
  for (const auto& c : cases) {
    const auto a = IpAddr::parse(c.text);
    ASSERT_TRUE(a.has_value()) << c.text;
    EXPECT_EQ(a->toString(), c.canonical) << c.text;
    EXPECT_EQ(a->isV4(), c.v4) << c.text;
    // Formatting then parsing gives the same address.
    EXPECT_EQ(IpAddr::parse(a->toString()), a) << c.text;
  }
}

TEST(IpAddrParse, BadTextIsRefused) {
  const std::vector<std::string> bad = {
      "",
      " ",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "1.2.3.-1",
      "010.0.0.1",        // leading zero: octal in some parsers, refused here
      "0x0a.0.0.1",
      "1.2.3.4 ",
      " 1.2.3.4",
      "1.2.3.4/24",
      "a.b.c.d",
      "localhost",
      "1.2.3.4:80",       // an endpoint is not an address
      ":::",
      "1::2::3",
      "::g",
      "1:2:3:4:5:6:7:8:9",
      "12345::1",
      "[::1]",
      "fe80::1%eth0",     // zone ids are not supported
      "1.2.3.4\0"s,       // embedded NUL: must not be cut at the C string end
      "::1\0garbage"s,
  };
  for (const auto& text : bad) {
    EXPECT_FALSE(IpAddr::parse(text).has_value()) << '"' << text << '"';
  }
}

TEST(IpAddr, DefaultIsZeroAndNotV4) {
  const IpAddr z;
  EXPECT_TRUE(z.isZero());
  EXPECT_FALSE(z.isV4());
  EXPECT_EQ(z.toString(), "::");
  EXPECT_EQ(IpAddr::parse("::"), z);
  // 0.0.0.0 is v4-mapped, hence not the all-zero (unset) address.
  EXPECT_FALSE(IpAddr::fromV4(0).isZero());
}

TEST(IpAddr, FromV6CopiesBytesAndEqualityIsBytewise) {
  uint8_t raw[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42};
  const IpAddr a = IpAddr::fromV6(raw);
  EXPECT_EQ(a.toString(), "2001:db8::42");
  EXPECT_FALSE(a.isV4());
  raw[15] = 0x43;
  EXPECT_EQ(a.toString(), "2001:db8::42");  // a copy, not a view
  EXPECT_NE(a, IpAddr::fromV6(raw));
  EXPECT_NE(IpAddr::fromV4(1), IpAddr::fromV4(2));
}

// ---- Endpoints ----

struct EndpointCase {
  std::string text;
  std::string addr;
  uint16_t port;
  std::string canonical;
};

TEST(EndpointParse, ValidEndpoints) {
  const std::vector<EndpointCase> cases = {
      {"10.0.0.1:80", "10.0.0.1", 80, "10.0.0.1:80"},
      {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
      {"255.255.255.255:65535", "255.255.255.255", 65535, "255.255.255.255:65535"},
      {"10.0.0.1:0080", "10.0.0.1", 80, "10.0.0.1:80"},
      {"[::1]:443", "::1", 443, "[::1]:443"},
      {"[2001:db8::1]:65535", "2001:db8::1", 65535, "[2001:db8::1]:65535"},
      {"[::]:9", "::", 9, "[::]:9"},
      {"[::ffff:10.0.0.1]:80", "10.0.0.1", 80, "10.0.0.1:80"},  // v4-mapped formats as v4
  };
  for (const auto& c : cases) {
    const auto e = Endpoint::parse(c.text);
    ASSERT_TRUE(e.has_value()) << c.text;
    EXPECT_EQ(e->addr.toString(), c.addr) << c.text;
    EXPECT_EQ(e->port, c.port) << c.text;
    EXPECT_EQ(e->toString(), c.canonical) << c.text;
    EXPECT_EQ(Endpoint::parse(e->toString()), e) << c.text;
  }
}

TEST(EndpointParse, BadEndpointsAreRefused) {
  const std::vector<std::string> bad = {
      "",
      ":",
      ":80",
      "10.0.0.1",              // missing port
      "10.0.0.1:",
      "10.0.0.1:0",            // port 0
      "10.0.0.1:65536",
      "10.0.0.1:99999999999999999999",
      "10.0.0.1:-1",
      "10.0.0.1:+80",
      "10.0.0.1: 80",
      "10.0.0.1:80 ",
      "10.0.0.1:0x50",
      "10.0.0.1:80:90",
      "10.0.0.1::80",
      "256.0.0.1:80",
      "host.example:80",
      "[::1]",                 // missing port
      "[::1]:",
      "[::1]:0",
      "[::1]:65536",
      "[::1]80",
      "[::1:80",
      "::1]:80",
      "[]:80",
      "[[::1]]:80",
      "[::1]:80]",
      "::1:80",                // unbracketed IPv6: "::1:80" is itself an address
      "2001:db8::1:443",
      "[10.0.0.1:80]",
      "10.0.0.1\0:80"s,
  };
  for (const auto& text : bad) {
    EXPECT_FALSE(Endpoint::parse(text).has_value()) << '"' << text << '"';
  }
}

TEST(Endpoint, EqualityComparesAddressAndPort) {
  EXPECT_EQ(*Endpoint::parse("10.0.0.1:80"), (Endpoint{IpAddr::fromV4(0x0a000001), 80}));
  EXPECT_NE(*Endpoint::parse("10.0.0.1:80"), *Endpoint::parse("10.0.0.1:81"));
  EXPECT_NE(*Endpoint::parse("10.0.0.1:80"), *Endpoint::parse("10.0.0.2:80"));
  EXPECT_EQ(*Endpoint::parse("[::ffff:10.0.0.1]:80"), *Endpoint::parse("10.0.0.1:80"));
}

}  // namespace
}  // namespace tandem
