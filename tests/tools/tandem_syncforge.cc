// tandem_syncforge: plays the attacker on the proxy pair's sync channel, for the integration
// tests. It builds frames with the real sync library (so they are well formed for this version of
// the wire format) and seals them with a key the test chooses (a wrong one), or resends frames
// captured from the genuine nodes (replay). It links the sync library on purpose: a forger that
// knows the format exactly is the stronger test of the authentication.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/ip_addr.h"
#include "net_util.h"
#include "sync/auth.h"
#include "sync/wire.h"

namespace {

using namespace tandem;

constexpr const char* kUsage = R"(usage:
  tandem_syncforge forge --to ADDR:PORT --key HEX --key-id N [--node N]
                   [--client ADDR:PORT --vip ADDR:PORT --backend ADDR:PORT]
      Sends four frames, each sealed with KEY under KEY-ID (give a wrong key, or an unknown id):
        a heartbeat claiming ACTIVE with handover, priority 255 and epoch 1000000;
        a flow upsert (session 2^62) of the flow CLIENT -> VIP -> BACKEND (defaults made up);
        a flow delete of the same client leg;
        a bulk request.
      NODE is the sender node id in the header (default 1: impersonates node 1).
  tandem_syncforge replay --to ADDR:PORT --frames FILE
      Sends each line of FILE (a captured UDP payload in hex) as one datagram, in order.
  Prints 'tandem_syncforge: sent=N'. Exit status: 0 every datagram sent, 1 a send failed,
  2 usage error.
)";

int usageError(const std::string& msg) {
  std::fprintf(stderr, "tandem_syncforge: %s (tandem_syncforge --help)\n", msg.c_str());
  return 2;
}

std::vector<uint8_t> fromHex(std::string_view hex, bool& ok) {
  std::vector<uint8_t> out;
  ok = hex.size() % 2 == 0;
  for (size_t i = 0; ok && i + 1 < hex.size(); i += 2) {
    unsigned v = 0;
    ok = std::sscanf(std::string(hex.substr(i, 2)).c_str(), "%2x", &v) == 1;
    out.push_back(static_cast<uint8_t>(v));
  }
  return out;
}

class Sender {
 public:
  explicit Sender(const sockaddr_in& to) : to_(to), fd_(socket(AF_INET, SOCK_DGRAM, 0)) {}
  ~Sender() {
    if (fd_ >= 0) close(fd_);
  }
  bool send(std::span<const uint8_t> bytes) {
    if (fd_ < 0) return false;
    const ssize_t n = sendto(fd_, bytes.data(), bytes.size(), 0,
                             reinterpret_cast<const sockaddr*>(&to_), sizeof(to_));
    if (n != static_cast<ssize_t>(bytes.size())) {
      std::fprintf(stderr, "tandem_syncforge: sendto: %s\n", std::strerror(errno));
      return false;
    }
    ++sent_;
    return true;
  }
  int sent() const { return sent_; }

 private:
  sockaddr_in to_;
  int fd_;
  int sent_ = 0;
};

sync::FlowKey keyOf(const Endpoint& client, const Endpoint& vip) {
  return sync::FlowKey{client.addr, vip.addr, client.port, vip.port};
}

int forge(Sender& out, const std::vector<uint8_t>& key, uint16_t key_id, uint32_t node,
          const Endpoint& client, const Endpoint& vip, const Endpoint& backend) {
  sync::KeyRing keys;
  keys.add(key_id, key);
  keys.setSendKey(key_id);
  // Far above any genuine counter (CLOCK_REALTIME ns): the replay check lets them through, so
  // they meet the MAC check.
  sync::Sealer sealer(keys, uint64_t{1} << 62);
  std::vector<uint8_t> buf;
  sync::FrameHeader header;
  header.node_id = node;
  header.epoch = 1'000'000;
  bool ok = true;
  auto frame = [&](auto&&... items) {
    sync::FrameWriter w(buf);
    const bool added = (w.add(items) && ...);
    if (!added || !sealer.seal(w, header)) {
      std::fprintf(stderr, "tandem_syncforge: cannot build a frame\n");
      ok = false;
      return;
    }
    const std::span<uint8_t> f = w.frame();
    ok = out.send(std::span<const uint8_t>(f.data(), f.size())) && ok;
  };

  sync::Heartbeat hb;
  hb.role = sync::Role::kActive;
  hb.priority = 255;
  hb.ready = true;
  hb.handover = true;
  hb.epoch = 1'000'000;
  hb.flows = 1;
  hb.interval_ms = 10;
  frame(hb);

  sync::FlowRecord r;
  r.key = keyOf(client, vip);
  r.backend_addr = backend.addr;
  r.backend_port = backend.port;
  r.source_addr = client.addr;
  r.source_port = client.port;
  r.tcp_state = 3;  // any valid state: the frame must fail on its MAC, not on its contents
  const sync::SeqBase base{uint64_t{1} << 62, 1};
  frame(base, sync::FlowUpsert{1, r});
  frame(base, sync::FlowDelete{2, r.key});
  frame(sync::BulkRequest{0x5eed});
  return ok ? 0 : 1;
}

int replay(Sender& out, const std::string& path) {
  std::ifstream in(path);
  if (!in) return usageError("cannot read " + path);
  std::string line;
  bool ok = true;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    bool hex_ok = false;
    const std::vector<uint8_t> bytes = fromHex(line, hex_ok);
    if (!hex_ok) return usageError("not hex: " + line.substr(0, 32));
    ok = out.send(bytes) && ok;
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usageError("missing command");
  const std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::optional<sockaddr_in> to;
  std::vector<uint8_t> key;
  long key_id = -1;
  uint32_t node = 1;
  std::string frames;
  Endpoint client{*IpAddr::parse("192.0.2.1"), 40000};
  Endpoint vip{*IpAddr::parse("192.0.2.100"), 80};
  Endpoint backend{*IpAddr::parse("192.0.2.200"), 8080};
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return usageError("missing value for " + std::string(arg));
    const char* v = argv[++i];
    if (arg == "--to") {
      to = tandem::tools::parseEndpoint(v);
      if (!to) return usageError(std::string("bad --to ") + v);
    } else if (arg == "--key") {
      bool ok = false;
      key = fromHex(v, ok);
      if (!ok || key.size() < sync::kMinKeyLen || key.size() > sync::kMaxKeyLen) {
        return usageError("--key: 16 to 64 bytes in hex");
      }
    } else if (arg == "--key-id") {
      key_id = std::strtol(v, nullptr, 10);
      if (key_id < 0 || key_id > 65535) return usageError("--key-id: 0 to 65535");
    } else if (arg == "--node") {
      node = static_cast<uint32_t>(std::strtoul(v, nullptr, 10));
    } else if (arg == "--frames") {
      frames = v;
    } else if (arg == "--client" || arg == "--vip" || arg == "--backend") {
      const auto ep = Endpoint::parse(v);
      if (!ep) return usageError("bad " + std::string(arg) + " " + v);
      (arg == "--client" ? client : arg == "--vip" ? vip : backend) = *ep;
    } else {
      return usageError("unknown argument " + std::string(arg));
    }
  }
  if (!to) return usageError("--to ADDR:PORT is required");
  Sender out(*to);
  int rc = 0;
  if (cmd == "forge") {
    if (key.empty() || key_id < 0) return usageError("forge needs --key and --key-id");
    rc = forge(out, key, static_cast<uint16_t>(key_id), node, client, vip, backend);
  } else if (cmd == "replay") {
    if (frames.empty()) return usageError("replay needs --frames FILE");
    rc = replay(out, frames);
  } else {
    return usageError("unknown command " + std::string(cmd));
  }
  std::printf("tandem_syncforge: sent=%d\n", out.sent());
  return rc;
}
