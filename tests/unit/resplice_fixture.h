#pragma once
// The splice service the re-splice tests run: one VIP, two backends, fixed cookie secret and
// hash seed so that golden values stay put.

#include <string>

#include "proxy/core/engine_config.h"

namespace tandem::test::resplice {

inline constexpr uint64_t kNow = 1'000'000'000ull;
inline const std::string kClient = "10.0.0.2:40000";
inline const std::string kVip = "10.0.0.100:80";
inline const std::string kBe1 = "10.1.0.2:8080";
inline const std::string kBe2 = "10.1.0.3:8080";

inline EngineConfig config(Addressing addressing, bool resplice = true) {
  EngineConfig c;
  ServiceConfig s;
  s.name = "web";
  s.vip = *Endpoint::parse(kVip);
  s.backends = {*Endpoint::parse(kBe1), *Endpoint::parse(kBe2)};
  s.mode = Mode::kSplice;
  s.addressing = addressing;
  s.snat_addr = *IpAddr::parse("10.1.0.1");
  s.resplice = resplice;
  c.services.push_back(s);
  c.max_flows = 64;
  c.hash_seed = 3;
  c.splice.cookie_secret.assign(32, 0x5a);
  c.splice.wscale = 7;
  return c;
}

}  // namespace tandem::test::resplice
