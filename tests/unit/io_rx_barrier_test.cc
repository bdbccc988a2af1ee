// The receive-path barrier (proxy/io/rx_barrier.h) and the sync channel's kernel receive
// timestamps, on loopback. Waits for readability with poll() and a generous bound: nothing here
// asserts a duration.
#include "proxy/io/rx_barrier.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>

#include "proxy/io/udp_channel.h"

namespace tandem {
namespace {

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 5000) == 1;
}

uint64_t realtime() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Endpoint loopbackAnyPort() { return {*IpAddr::parse("127.0.0.1"), 0}; }

/// Polls and reads until the barrier completes (true) or nothing more arrives (false).
bool waitBarrier(RxBarrier& b) {
  for (int i = 0; i < 64; ++i) {
    if (!readable(b.fd())) return false;
    if (b.onReadable()) return true;
  }
  return false;
}

/// Reads until `n` stray datagrams were counted (false if they do not all arrive).
bool waitStray(RxBarrier& b, uint64_t n) {
  while (b.counters().stray < n) {
    if (!readable(b.fd())) return false;
    (void)b.onReadable();
  }
  return true;
}

TEST(RxBarrierTest, EveryCpuProbeComesBackAndCompletesTheBarrier) {
  RxBarrier b;
  b.open();
  ASSERT_GE(b.fd(), 0);
  EXPECT_FALSE(b.pending());
  ASSERT_TRUE(b.start());
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  EXPECT_EQ(b.cpus(), static_cast<uint32_t>(CPU_COUNT(&allowed)));
  EXPECT_TRUE(b.pending());
  ASSERT_TRUE(waitBarrier(b));
  EXPECT_FALSE(b.pending());
  EXPECT_EQ(b.counters().started, 1u);
  EXPECT_EQ(b.counters().completed, 1u);
  EXPECT_EQ(b.counters().send_errors, 0u);
  // The thread's affinity is restored after the probes.
  cpu_set_t after;
  ASSERT_EQ(sched_getaffinity(0, sizeof(after), &after), 0);
  EXPECT_TRUE(CPU_EQUAL(&allowed, &after));
}

TEST(RxBarrierTest, ForeignDatagramsAreCountedAsStray) {
  RxBarrier b;
  b.open();
  sockaddr_in self{};
  socklen_t len = sizeof(self);
  ASSERT_EQ(getsockname(b.fd(), reinterpret_cast<sockaddr*>(&self), &len), 0);
  const int other = socket(AF_INET, SOCK_DGRAM, 0);
  ASSERT_GE(other, 0);
  // Shaped like a probe of the barrier about to start (token 1, CPU 0), from another socket.
  const uint32_t forged[2] = {1, 0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(sendto(other, forged, sizeof(forged), 0, reinterpret_cast<sockaddr*>(&self),
                     sizeof(self)),
              static_cast<ssize_t>(sizeof(forged)));
  }
  close(other);
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(waitBarrier(b));
  ASSERT_TRUE(waitStray(b, 3));
  EXPECT_EQ(b.counters().stray, 3u);
  EXPECT_EQ(b.counters().completed, 1u);
}

TEST(RxBarrierTest, ProbesOfAnEarlierBarrierDoNotCompleteTheNext) {
  RxBarrier b;
  b.open();
  ASSERT_TRUE(b.start());  // its probes are not read before the next start
  ASSERT_TRUE(b.start());
  ASSERT_TRUE(waitBarrier(b));
  ASSERT_TRUE(waitStray(b, b.cpus()));  // the first barrier's probes
  EXPECT_EQ(b.counters().started, 2u);
  EXPECT_EQ(b.counters().completed, 1u);
  EXPECT_EQ(b.counters().stray, b.cpus());
}

TEST(RxBarrierTest, UnopenedBarrierRefusesToStart) {
  RxBarrier b;
  EXPECT_FALSE(b.start());
  EXPECT_FALSE(b.onReadable());
}

TEST(UdpChannelTimestampTest, DatagramsCarryTheKernelReceiveTime) {
  UdpChannelOptions o;
  o.bind = loopbackAnyPort();  // the kernel picks the port
  o.peer = *Endpoint::parse("127.0.0.1:9");
  UdpChannel rx(o);
  rx.open();
  UdpChannelOptions so;
  so.bind = loopbackAnyPort();
  so.peer = rx.localEndpoint();
  UdpChannel tx(so);
  tx.open();
  const uint64_t before = realtime();
  const uint8_t msg[4] = {1, 2, 3, 4};
  ASSERT_EQ(tx.send(msg), 0);
  ASSERT_TRUE(readable(rx.fd()));
  uint8_t buf[16];
  Datagram d;
  ASSERT_EQ(rx.recv(buf, d), 0);
  const uint64_t after = realtime();
  EXPECT_EQ(d.len, 4u);
  EXPECT_GE(d.kernel_rx_ns, before);
  EXPECT_LE(d.kernel_rx_ns, after);

  // Without the option the field stays 0.
  UdpChannelOptions no = o;
  no.rx_timestamps = false;
  UdpChannel plain(no);
  plain.open();
  UdpChannelOptions so2 = so;
  so2.peer = plain.localEndpoint();
  UdpChannel tx2(so2);
  tx2.open();
  ASSERT_EQ(tx2.send(msg), 0);
  ASSERT_TRUE(readable(plain.fd()));
  ASSERT_EQ(plain.recv(buf, d), 0);
  EXPECT_EQ(d.kernel_rx_ns, 0u);
}

}  // namespace
}  // namespace tandem
