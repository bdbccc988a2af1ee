#include "proxy/io/shadow.h"

#include <net/if.h>  // before the linux/ headers, which then skip their own copy

#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "common/bytes.h"
#include "proxy/io/log.h"

namespace tandem {
namespace {

/// 64 blocks of 256 KiB: 16 MiB of kernel ring per interface, room for a 64 KiB GSO frame in a
/// block. A block is handed over when full or 4 ms after it opened, so a slow trickle of frames
/// uses a block per 4 ms: 64 blocks are a quarter of a second in which this process may not be
/// scheduled (on a loaded machine) before the kernel drops frames (counted: kernel_drops).
constexpr size_t kBlockSize = 256u << 10;
constexpr size_t kBlockCount = 64;
constexpr size_t kFrameSize = 2048;  // only checked by the kernel: block_size % frame_size
constexpr unsigned kRetireTimeoutMs = 4;
constexpr unsigned kSnapLen = 65535 + 64;

uint64_t realtimeMinusMonotonic() noexcept {
  timespec rt{};
  timespec mono{};
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  const int64_t r = static_cast<int64_t>(rt.tv_sec) * 1'000'000'000 + rt.tv_nsec;
  const int64_t m = static_cast<int64_t>(mono.tv_sec) * 1'000'000'000 + mono.tv_nsec;
  return static_cast<uint64_t>(r - m);
}

[[noreturn]] void fail(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

}  // namespace

ShadowCapture::~ShadowCapture() { close(); }

void ShadowCapture::close() noexcept {
  if (ring_ != nullptr) munmap(ring_, ring_size_);
  ring_ = nullptr;
  if (fd_ >= 0) ::close(fd_);  // also leaves the promiscuous membership
  fd_ = -1;
  current_ = 0;
}

void ShadowCapture::open() {
  close();
  const unsigned index = if_nametoindex(interface_.c_str());
  if (index == 0) fail(errno, "shadow: interface " + interface_);
  // Protocol 0: nothing is received before the filter is attached and the socket bound.
  const int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(errno, "shadow: AF_PACKET socket");
  fd_ = fd;
  auto check = [&](int rc, const char* what) {
    if (rc < 0) {
      const int err = errno;
      close();
      fail(err, std::string("shadow: ") + what + " on " + interface_);
    }
  };
  const uint32_t mac_hi = load32(vmac_.data());
  const uint16_t mac_lo = load16(vmac_.data() + 4);
  // Destination MAC = vMAC, EtherType IPv4, IP protocol TCP (offset 14 + 9).
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, mac_hi, 0, 7),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 4),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, mac_lo, 0, 5),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 3),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, kSnapLen),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  check(setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)), "SO_ATTACH_FILTER");
  int version = TPACKET_V3;
  check(setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)), "TPACKET_V3");
  tpacket_req3 req{};
  req.tp_block_size = kBlockSize;
  req.tp_block_nr = kBlockCount;
  req.tp_frame_size = kFrameSize;
  req.tp_frame_nr = static_cast<unsigned>(kBlockSize * kBlockCount / kFrameSize);
  req.tp_retire_blk_tov = kRetireTimeoutMs;
  check(setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)), "PACKET_RX_RING");
  ring_size_ = kBlockSize * kBlockCount;
  void* ring = mmap(nullptr, ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ring == MAP_FAILED) check(-1, "mmap");
  ring_ = static_cast<uint8_t*>(ring);
  block_size_ = kBlockSize;
  block_count_ = kBlockCount;
  int one = 1;
  (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_IP);
  sll.sll_ifindex = static_cast<int>(index);
  check(bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)), "bind");
  packet_mreq mr{};
  mr.mr_ifindex = static_cast<int>(index);
  mr.mr_type = PACKET_MR_PROMISC;
  check(setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)), "PACKET_MR_PROMISC");
}

void ShadowCapture::drain(const Sink& sink) noexcept {
  if (fd_ < 0) return;
  const uint64_t offset = realtimeMinusMonotonic();
  for (size_t n = 0; n < block_count_; ++n) {
    auto* bd = reinterpret_cast<tpacket_block_desc*>(ring_ + current_ * block_size_);
    auto* status = reinterpret_cast<std::atomic<uint32_t>*>(&bd->hdr.bh1.block_status);
    if ((status->load(std::memory_order_acquire) & TP_STATUS_USER) == 0) break;
    const uint32_t count = bd->hdr.bh1.num_pkts;
    auto* h = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(bd) +
                                              bd->hdr.bh1.offset_to_first_pkt);
    for (uint32_t i = 0; i < count; ++i) {
      ++counters_.frames;
      const uint8_t* frame = reinterpret_cast<const uint8_t*>(h) + h->tp_mac;
      if (h->tp_snaplen < h->tp_len) {
        ++counters_.truncated;
      } else if (h->tp_snaplen < ETH_HLEN + 20 || load16(frame + 12) != ETH_P_IP) {
        ++counters_.malformed;
      } else {
        const uint8_t* ip = frame + ETH_HLEN;
        const size_t avail = h->tp_snaplen - ETH_HLEN;
        const size_t total = load16(ip + 2);
        if (total < 20 || total > avail) {
          ++counters_.malformed;
        } else {
          const uint64_t ts_real =
              static_cast<uint64_t>(h->tp_sec) * 1'000'000'000ull + h->tp_nsec;
          // Ethernet padding is cut off: the raw socket would send it as payload.
          sink(std::span<const uint8_t>(ip, total), (h->tp_status & TP_STATUS_CSUMNOTREADY) != 0,
               ts_real - offset);
        }
      }
      h = reinterpret_cast<tpacket3_hdr*>(reinterpret_cast<uint8_t*>(h) + h->tp_next_offset);
    }
    status->store(TP_STATUS_KERNEL, std::memory_order_release);
    current_ = (current_ + 1) % block_count_;
  }
  tpacket_stats_v3 st{};
  socklen_t len = sizeof(st);
  if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
    counters_.kernel_drops += st.tp_drops;  // the kernel resets them on every read
  }
}

}  // namespace tandem
