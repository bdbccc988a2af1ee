// Fuzzes the packet core end to end: a sequence of packets, each either raw bytes or a mutation
// of a valid segment of one connection (so the fuzzer reaches the tracker and translator, not only
// the parsers), fed to an Engine with a small flow cap and a moving clock. Invariants: no crash
// or sanitizer report, the flow count stays within the cap, and every accepted packet still
// parses and has a valid IPv4 header checksum.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/checksum.h"
#include "common/packet.h"
#include "proxy/core/engine.h"
#include "tests/unit/packet_builder.h"

namespace {

using tandem::test::PacketBuilder;

tandem::EngineConfig config() {
  tandem::EngineConfig c;
  tandem::ServiceConfig s;
  s.name = "fuzz";
  s.vip = *tandem::Endpoint::parse("10.0.0.100:80");
  s.backends = {*tandem::Endpoint::parse("10.1.0.2:8080"), *tandem::Endpoint::parse("10.1.0.3:8080")};
  s.addressing = tandem::Addressing::kSnat;
  s.snat_addr = *tandem::IpAddr::parse("10.1.0.1");
  s.snat_port_min = 30000;
  s.snat_port_max = 30003;
  c.services.push_back(s);
  c.max_flows = 8;
  c.hash_seed = 1;
  c.timeouts.established_ns = 3'000'000'000ull;
  return c;
}

// Valid segments of one conversation (both legs, SNAT port 30000 for the first flow).
const std::vector<std::vector<uint8_t>>& templates() {
  static const std::vector<std::vector<uint8_t>> t = {
      PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(0x02).seq(1000)
          .mss(1460).wscale(7).sackPermitted().timestamp(1, 0).build(),
      PacketBuilder().src("10.1.0.2:8080").dst("10.1.0.1:30000").flags(0x12).seq(5000)
          .ack(1001).mss(1460).wscale(7).sackPermitted().timestamp(2, 1).build(),
      PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(0x10).seq(1001)
          .ack(5001).build(),
      PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(0x18).seq(1001)
          .ack(5001).timestamp(3, 2).payload("GET / HTTP/1.1\r\n\r\n").build(),
      PacketBuilder().src("10.1.0.2:8080").dst("10.1.0.1:30000").flags(0x10).seq(5001)
          .ack(1019).sack({{1100, 1200}}).build(),
      PacketBuilder().src("10.0.0.2:40000").dst("10.0.0.100:80").flags(0x11).seq(1019)
          .ack(5001).build(),
      PacketBuilder().src("10.1.0.2:8080").dst("10.1.0.1:30000").flags(0x04).seq(5001).build(),
  };
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tandem::Engine engine(config());
  uint64_t now = 1'000'000'000ull;
  size_t i = 0;
  while (i + 2 <= size) {
    const uint8_t op = data[i];
    const uint8_t arg = data[i + 1];
    i += 2;
    std::vector<uint8_t> pkt;
    if (op & 0x80) {  // raw bytes: arg is the length
      const size_t n = std::min<size_t>(arg, size - i);
      pkt.assign(data + i, data + i + n);
      i += n;
    } else {  // a template with up to (arg & 7) byte overwrites {position, value}
      pkt = templates()[op % templates().size()];
      for (int k = 0; k < (arg & 7) && i + 2 <= size; ++k, i += 2)
        pkt[data[i] % pkt.size()] = data[i + 1];
    }
    tandem::PacketMeta meta;
    meta.csum_not_ready = (op & 0x20) != 0;
    meta.gso = (op & 0x40) != 0 && meta.csum_not_ready;
    now += (arg >> 3) * 100'000'000ull;  // up to 3.1 s per packet: timeouts fire
    // What the packet promised on the way in: valid checksums stay valid on the way out.
    tandem::TcpPacket in;
    bool ip_ok = false, tcp_ok = false;
    if (tandem::parseTcpPacket(pkt.data(), pkt.size(), in) == tandem::ParseError::kNone) {
      ip_ok = tandem::ipv4HeaderChecksum(pkt.data(), in.ipHeaderLen()) == in.ipCheck();
      tcp_ok = tandem::tcpChecksumV4(in.saddr(), in.daddr(), in.tcp(), in.tcpLen()) ==
               in.tcpCheck();
    }
    const auto d = engine.process(pkt.data(), pkt.size(), meta, now);
    if (engine.activeFlows() > engine.maxFlows()) std::abort();
    if (d.verdict == tandem::Verdict::kAccept) {
      tandem::TcpPacket out;
      if (tandem::parseTcpPacket(pkt.data(), pkt.size(), out) != tandem::ParseError::kNone)
        std::abort();
      if (ip_ok && tandem::ipv4HeaderChecksum(pkt.data(), out.ipHeaderLen()) != out.ipCheck())
        std::abort();
      const bool must_be_valid = meta.csum_not_ready ? !meta.gso : tcp_ok;
      if (must_be_valid &&
          tandem::tcpChecksumV4(out.saddr(), out.daddr(), out.tcp(), out.tcpLen()) !=
              out.tcpCheck())
        std::abort();
    }
    if ((op & 0x1f) == 0x1f) engine.expire(now);
  }
  return 0;
}
