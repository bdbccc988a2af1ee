// libFuzzer harness for the packet parsers: parseTcpPacket() on arbitrary bytes, then
// parseTcpOptions() on the options of a parsed packet and on the raw input. Invariants are
// checked with check(), so a violated one is a crash that libFuzzer (or the replay test) reports.
//
// Build: tests/fuzz/CMakeLists.txt (replay binary always, libFuzzer binary with TANDEM_FUZZ=ON).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/packet.h"
#include "common/tcp_options.h"

namespace tandem {
namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_packet: invariant violated: %s\n", what);
    std::abort();
  }
}

/// Parses an options area and, if accepted, checks what a translator relies on: offsets inside
/// the area and pointing at their option, clamps applied, and the SYN subset round-tripping
/// through buildSynOptions().
void checkOptions(const uint8_t* opts, size_t len) {
  TcpOptions o;
  if (parseTcpOptions(opts, len, o) != OptionError::kNone) return;
  check(o.wscale <= tcpopt::kMaxWindowScale, "wscale clamped");
  check(!o.wscale_clamped || (o.has_wscale && o.wscale == tcpopt::kMaxWindowScale),
        "wscale_clamped implies 14");
  check(o.sack_count <= tcpopt::kMaxSackBlocks, "sack_count <= 4");
  if (len <= 0xffff) {  // offsets are 16-bit; real option areas are at most 40 bytes
    if (o.has_mss) {
      check(o.mss_offset >= 2 && o.mss_offset + 2u <= len, "mss_offset in bounds");
      check(opts[o.mss_offset - 2] == tcpopt::kMss && load16(opts + o.mss_offset) == o.mss,
            "mss_offset points at MSS");
    }
    if (o.has_timestamp) {
      check(o.ts_offset >= 2 && o.ts_offset + 8u <= len, "ts_offset in bounds");
      check(opts[o.ts_offset - 2] == tcpopt::kTimestamp &&
                load32(opts + o.ts_offset) == o.ts_val &&
                load32(opts + o.ts_offset + 4) == o.ts_ecr,
            "ts_offset points at TSval/TSecr");
    }
    if (o.sack_count > 0) {
      check(o.sack_offset >= 2 && o.sack_offset + 8u * o.sack_count <= len,
            "sack_offset in bounds");
      check(opts[o.sack_offset - 2] == tcpopt::kSack &&
                opts[o.sack_offset - 1] == 2 + 8 * o.sack_count,
            "sack_offset points at the SACK option");
      for (size_t b = 0; b < o.sack_count; ++b) {
        check(load32(opts + o.sack_offset + 8 * b) == o.sack[b].left &&
                  load32(opts + o.sack_offset + 8 * b + 4) == o.sack[b].right,
              "sack blocks match their bytes");
      }
    }
  }

  uint8_t built[40];
  const size_t n = buildSynOptions(o, built, sizeof built);
  check(n % 4 == 0 && n <= 24, "built length is a multiple of 4, at most 24");
  TcpOptions back;
  check(parseTcpOptions(built, n, back) == OptionError::kNone, "built options parse");
  check(back.has_mss == o.has_mss && (!o.has_mss || back.mss == o.mss), "round trip: MSS");
  check(back.has_wscale == o.has_wscale && (!o.has_wscale || back.wscale == o.wscale),
        "round trip: window scale");
  check(back.sack_permitted == o.sack_permitted, "round trip: SACK-permitted");
  check(back.has_timestamp == o.has_timestamp &&
            (!o.has_timestamp || (back.ts_val == o.ts_val && back.ts_ecr == o.ts_ecr)),
        "round trip: timestamps");
  check(back.sack_count == 0 && back.unknown_count == 0, "round trip: nothing else built");
}

/// Full checksums over the view, then RFC 1624 updates of seq and saddr against recomputation.
void checkChecksums(TcpPacket& p) {
  p.setIpCheck(ipv4HeaderChecksum(p.ip(), p.ipHeaderLen()));
  p.setTcpCheck(tcpChecksumV4(p.saddr(), p.daddr(), p.tcp(), p.tcpLen()));

  const uint32_t seq = p.seq();
  const uint32_t new_seq = ~seq ^ p.ack();
  p.setSeqRaw(new_seq);
  p.setTcpCheck(csumReplace32(p.tcpCheck(), seq, new_seq));
  check(p.tcpCheck() == tcpChecksumV4(p.saddr(), p.daddr(), p.tcp(), p.tcpLen()),
        "incremental seq update equals recomputation");

  const uint32_t saddr = p.saddr();
  const uint32_t new_saddr = saddr ^ 0xa5a5a5a5u ^ p.window();
  p.setSaddrRaw(new_saddr);
  p.setIpCheck(csumReplace32(p.ipCheck(), saddr, new_saddr));
  p.setTcpCheck(csumReplace32(p.tcpCheck(), saddr, new_saddr));
  check(p.ipCheck() == ipv4HeaderChecksum(p.ip(), p.ipHeaderLen()),
        "incremental address update of the IP checksum equals recomputation");
  check(p.tcpCheck() == tcpChecksumV4(p.saddr(), p.daddr(), p.tcp(), p.tcpLen()),
        "incremental address update of the TCP checksum equals recomputation");
}

}  // namespace
}  // namespace tandem

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem;
  // A writable, exact-size copy: parseTcpPacket() takes a mutable buffer, and ASan then sees any
  // access past the end.
  std::vector<uint8_t> buf(data, data + size);
  TcpPacket p;
  if (parseTcpPacket(buf.data(), buf.size(), p) == ParseError::kNone) {
    check(p.ipHeaderLen() >= 20 && p.tcpHeaderLen() >= 20, "header lengths at least 20");
    check(p.ipHeaderLen() + p.tcpHeaderLen() + p.payloadLen() == p.totalLen(), "lengths add up");
    check(p.totalLen() <= size, "view inside the buffer");
    checkOptions(p.options(), p.optionsLen());
    checkChecksums(p);
  }
  // The raw input as an options area too: reaches every option layout without first needing a
  // valid IPv4 header, and lengths beyond 40 bytes.
  checkOptions(data, size);
  return 0;
}
