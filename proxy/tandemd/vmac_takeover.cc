#include "proxy/tandemd/vmac_takeover.h"

#include <event2/event.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "proxy/core/shadow_ring.h"
#include "proxy/io/garp.h"
#include "proxy/io/log.h"
#include "proxy/io/raw_sender.h"
#include "proxy/io/shadow.h"
#include "proxy/io/vmac.h"
#include "proxy/tandemd/prom_text.h"

namespace tandem {
namespace {

/// After the macvlans come up, the capture block still open then is handed over by the kernel
/// within two of its 4 ms retire timeouts; the tail pass waits a little longer.
constexpr uint64_t kTailDelayNs = 10'000'000;
/// The largest packet a replay handles (a GSO frame of 64 KiB plus headers).
constexpr size_t kScratch = 65536 + 256;

size_t interfaceMtu(const std::string& name) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "vmac: socket");
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name.c_str());
  const int rc = ioctl(fd, SIOCGIFMTU, &ifr);
  const int err = errno;
  close(fd);
  if (rc < 0) throw std::system_error(err, std::generic_category(), "vmac: MTU of " + name);
  return static_cast<size_t>(ifr.ifr_mtu);
}

}  // namespace

struct VmacTakeover::Impl {
  struct Interface {
    std::string name;
    ShadowSide side = ShadowSide::kBack;
    std::unique_ptr<ArpResponder> arp;
    std::unique_ptr<ShadowCapture> capture;
    event* arp_ev = nullptr;
    event* capture_ev = nullptr;
  };

  Impl(event_base* b, Engine& e, const SyncConfig& c)
      : base(b),
        engine(e),
        config(c),
        ring(ShadowRingConfig{c.shadow_bytes, std::max<size_t>(c.shadow_bytes / 128, 1024),
                              windowNs(c)}),
        announce_schedule(GarpScheduleConfig{c.garp_count, 20'000'000, 0}),
        scratch(kScratch) {}

  static uint64_t windowNs(const SyncConfig& c) {
    // The outage lasts up to miss_count intervals; two more and 50 ms cover a late tick.
    return c.heartbeat_interval_ns * (c.miss_count + 2) + 50'000'000;
  }

  void open();
  void openCaptures();
  /// `background`: the sockets are closed on a detached thread (the takeover's tail pass).
  void closeCaptures(bool background = false) noexcept;
  void drain() noexcept;
  void replay(uint64_t from_ns, uint64_t until_ns, uint64_t min_id) noexcept;

  event_base* base;
  Engine& engine;
  SyncConfig config;
  MacvlanLinks links;
  std::vector<Interface> interfaces;
  ShadowRing ring;
  std::optional<RawSender> raw;
  GarpSchedule announce_schedule;
  std::vector<uint8_t> scratch;
  std::vector<uint32_t> plan;
  uint64_t last_peer_hb_ns = 0;
  uint64_t replay_from_ns = 0;
  uint64_t tail_due_ns = 0;  ///< 0: no tail pass pending
  uint64_t tail_until_ns = 0;
  uint64_t tail_min_id = 0;
  uint64_t last_now_ns = 0;
  size_t mtu = 1500;  ///< smallest MTU of the group's interfaces: replayed segments fit it
  VmacTakeoverCounters counters;
  TakeoverTiming timing;         ///< the last takeover's steps
  uint64_t live_packets_at = 0;  ///< engine packets when the replay ended
  uint64_t live_wait_from = 0;   ///< != 0: waiting for the first live packet since then
  ShadowCaptureCounters closed_capture;  ///< counters of capture sockets since closed
};

void VmacTakeover::Impl::open() {
  for (const GroupMember& m : config.addresses.members) {
    auto it = std::find_if(interfaces.begin(), interfaces.end(),
                           [&](const Interface& i) { return i.name == m.interface; });
    if (it == interfaces.end()) {
      interfaces.push_back(Interface{});
      it = std::prev(interfaces.end());
      it->name = m.interface;
    }
    for (const ServiceConfig& s : engine.config().services) {
      if (s.vip.addr == IpAddr::fromV4(m.address.addr)) it->side = ShadowSide::kFront;
    }
  }
  for (Interface& i : interfaces) {
    std::vector<uint32_t> addresses;
    for (const GroupMember& m : config.addresses.members) {
      if (m.interface == i.name) addresses.push_back(m.address.addr);
    }
    links.create(i.name, config.vmac);
    i.arp = std::make_unique<ArpResponder>(i.name, config.vmac, std::move(addresses));
    i.arp->open();
    i.arp_ev = event_new(
        base, i.arp->fd(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { static_cast<ArpResponder*>(arg)->onReadable(); },
        i.arp.get());
    if (i.arp_ev == nullptr || event_add(i.arp_ev, nullptr) != 0) {
      throw std::runtime_error("vmac: cannot add the ARP responder to the loop");
    }
    i.capture = std::make_unique<ShadowCapture>(i.name, config.vmac);
  }
  for (const Interface& i : interfaces) mtu = std::min(mtu, interfaceMtu(i.name));
  raw.emplace();
  openCaptures();  // every node starts as a standby
  logf(LogLevel::kInfo,
       "vmac: takeover mode vmac %s, %zu interfaces, shadow ring %zu bytes, window %.0f ms",
       macToString(config.vmac).c_str(), interfaces.size(), ring.config().bytes,
       static_cast<double>(ring.config().window_ns) / 1e6);
}

void VmacTakeover::Impl::openCaptures() {
  for (Interface& i : interfaces) {
    if (i.capture->isOpen()) continue;
    i.capture->open();
    i.capture_ev = event_new(
        base, i.capture->fd(), EV_READ | EV_PERSIST,
        [](evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->drain(); }, this);
    if (i.capture_ev == nullptr || event_add(i.capture_ev, nullptr) != 0) {
      throw std::runtime_error("vmac: cannot add the shadow capture to the loop");
    }
  }
}

void VmacTakeover::Impl::closeCaptures(bool background) noexcept {
  for (Interface& i : interfaces) {
    if (i.capture_ev != nullptr) event_free(i.capture_ev);
    i.capture_ev = nullptr;
    if (i.capture->isOpen()) {
      const ShadowCaptureCounters& c = i.capture->counters();
      closed_capture.frames += c.frames;
      closed_capture.truncated += c.truncated;
      closed_capture.malformed += c.malformed;
      closed_capture.kernel_drops += c.kernel_drops;
      if (background) {
        // Closing a packet socket waits for an RCU grace period (packet_release), tens of ms on
        // a busy machine per socket: measured as a 50 ms stall of the new active's forwarding
        // right after the tail replay. Off the event loop it costs the loop nothing.
        try {
          std::thread([c = std::move(i.capture)]() mutable { c.reset(); }).detach();
        } catch (const std::system_error&) {
          if (i.capture) i.capture->close();  // no thread: close here, as before
        }
      } else {
        i.capture->close();
      }
      // A reopened capture starts its counters afresh.
      i.capture = std::make_unique<ShadowCapture>(i.name, config.vmac);
    }
  }
}

void VmacTakeover::Impl::drain() noexcept {
  const uint64_t now = monotonicNs();
  for (Interface& i : interfaces) {
    const ShadowSide side = i.side;
    i.capture->drain([&](std::span<const uint8_t> p, bool partial, uint64_t ts) {
      (void)ring.push(p, side, partial, ts, now);
      // The flow's window edges move as the active's do (read-only towards forwarding).
      if (engine.observeShadow(p.data(), p.size())) ++counters.windows_learnt;
    });
  }
}

void VmacTakeover::Impl::replay(uint64_t from_ns, uint64_t until_ns, uint64_t min_id) noexcept {
  ReplayPlanStats stats;
  try {
    // Classified by the flow table: splice flows are pruned through their offsets too.
    engine.planShadowReplay(ring, from_ns, until_ns, min_id, plan, stats);
  } catch (const std::bad_alloc&) {
    logf(LogLevel::kError, "vmac: out of memory planning the replay; nothing replayed");
    return;
  }
  counters.skipped_closed += stats.skipped_closed;
  counters.skipped_delivered +=
      stats.skipped_delivered + stats.skipped_superseded + stats.skipped_copies;
  counters.not_tcp += stats.not_tcp;
  uint64_t sent = 0;
  auto forward = [&](size_t len, bool csum_not_ready) {
    PacketMeta meta;
    meta.csum_not_ready = csum_not_ready;
    const Decision d = engine.process(scratch.data(), len, scratch.size(), meta, monotonicNs());
    if (d.verdict != Verdict::kAccept) {
      ++counters.engine_dropped;
      return;
    }
    const size_t out = d.len != 0 ? d.len : len;
    if (!raw->send(scratch.data(), out)) {
      ++counters.send_errors;
      return;
    }
    ++sent;
  };
  for (uint32_t index : plan) {
    const ShadowFrame f = ring.at(index);
    const size_t segments = tcpSegmentCount(f.packet, mtu);
    if (segments <= 1) {
      // As captured: the engine gives a partial checksum its full value (csum_not_ready).
      std::memcpy(scratch.data(), f.packet.data(), f.packet.size());
      forward(f.packet.size(), f.csum_not_ready);
      continue;
    }
    // A GRO/GSO super-packet: segmented here, with full checksums.
    ++counters.segmented;
    for (size_t i = 0; i < segments; ++i) {
      const size_t len = writeTcpSegmentOf(f.packet, mtu, i, scratch.data(), scratch.size());
      if (len == 0) {
        ++counters.send_errors;
        continue;
      }
      forward(len, false);
    }
  }
  counters.replayed += sent;
  logf(LogLevel::kInfo,
       "vmac: replayed %llu packets for %zu planned frames (%llu in the window; left out: %llu "
       "acknowledged by the other end, %llu superseded ACKs, %llu retransmitted copies, %llu "
       "SYNs of closed connections; kept unjudged, splice offset unknown: %llu)",
       static_cast<unsigned long long>(sent), plan.size(),
       static_cast<unsigned long long>(stats.considered),
       static_cast<unsigned long long>(stats.skipped_delivered),
       static_cast<unsigned long long>(stats.skipped_superseded),
       static_cast<unsigned long long>(stats.skipped_copies),
       static_cast<unsigned long long>(stats.skipped_closed),
       static_cast<unsigned long long>(stats.offset_unknown[0] + stats.offset_unknown[1]));
}

VmacTakeover::VmacTakeover(event_base* base, Engine& engine, const SyncConfig& config)
    : impl_(std::make_unique<Impl>(base, engine, config)) {
  impl_->open();
}

VmacTakeover::~VmacTakeover() {
  impl_->closeCaptures();
  for (Impl::Interface& i : impl_->interfaces) {
    if (i.arp_ev != nullptr) event_free(i.arp_ev);
  }
}

void VmacTakeover::onPeerHeartbeat(uint64_t now_ns) noexcept { impl_->last_peer_hb_ns = now_ns; }

namespace {
uint64_t acceptedPackets(const Engine& e) noexcept {
  return e.counters().packets[0] + e.counters().packets[1];
}
double ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }
}  // namespace

bool VmacTakeover::take(uint64_t now_ns) noexcept {
  Impl& p = *impl_;
  const uint64_t t0 = monotonicNs();
  p.drain();
  const uint64_t t_drained = monotonicNs();
  p.tail_min_id = p.ring.nextId();
  // Up first: from now on the kernel queues new frames (and the answers to replayed ones) to
  // NFQUEUE, which this loop reads only after the replay below: the old frames leave first.
  if (p.links.setUp(true) != 0) {
    ++p.counters.link_failures;
    p.tail_due_ns = 0;
    return false;
  }
  const uint64_t up = monotonicNs();
  const uint64_t replayed_before = p.counters.replayed;
  // Since the last heartbeat the peer sent (or, never heard, the whole ring), minus a margin
  // for what it received but had not forwarded before that heartbeat. Everything drained so far
  // arrived before the macvlans came up: none of it was forwarded here.
  const uint64_t margin = 2 * p.config.heartbeat_interval_ns;
  p.replay_from_ns = p.last_peer_hb_ns > margin ? p.last_peer_hb_ns - margin : 0;
  p.replay(p.replay_from_ns, UINT64_MAX, 0);
  ++p.counters.replays;
  const uint64_t t_replayed = monotonicNs();
  // Where the outage went (issue 6's target): detection is the peer's last heartbeat to the
  // pair's decision (interval x miss + the tick), then each step here.
  TakeoverTiming& t = p.timing;
  t.since_heartbeat_ns = p.last_peer_hb_ns != 0 && now_ns > p.last_peer_hb_ns
                             ? now_ns - p.last_peer_hb_ns : 0;
  t.decision_to_take_ns = t0 > now_ns ? t0 - now_ns : 0;
  t.drain_ns = t_drained - t0;
  t.links_up_ns = up - t_drained;
  t.replay_ns = t_replayed - up;
  t.replayed = p.counters.replayed - replayed_before;
  t.first_live_ns = 0;
  p.live_packets_at = acceptedPackets(p.engine);
  p.live_wait_from = t_replayed;
  logf(LogLevel::kInfo,
       "vmac: takeover timing: %.1f ms from the peer's last heartbeat to the decision, then "
       "%.2f ms to take(), drain %.2f ms, macvlans up %.2f ms, replay %.2f ms (%llu packets): "
       "replay done %.1f ms after the last heartbeat",
       ms(t.since_heartbeat_ns), ms(t.decision_to_take_ns), ms(t.drain_ns), ms(t.links_up_ns),
       ms(t.replay_ns), static_cast<unsigned long long>(t.replayed),
       ms(t.since_heartbeat_ns + (t_replayed - now_ns)));
  p.tail_until_ns = up;
  p.tail_due_ns = up + kTailDelayNs;
  p.announce_schedule.start(up);
  if (p.announce_schedule.poll(up)) {
    for (Impl::Interface& i : p.interfaces) i.arp->announce();
  }
  logf(LogLevel::kInfo, "vmac: %zu macvlans up, announcing %s", p.links.devices().size(),
       macToString(p.config.vmac).c_str());
  return true;
}

void VmacTakeover::release() noexcept {
  Impl& p = *impl_;
  p.announce_schedule.stop();
  p.tail_due_ns = 0;
  if (p.links.setUp(false) != 0) ++p.counters.link_failures;
  p.ring.clear();
  try {
    p.openCaptures();
  } catch (const std::exception& e) {
    logf(LogLevel::kError, "vmac: cannot reopen the shadow capture: %s", e.what());
  }
  logf(LogLevel::kInfo, "vmac: macvlans down, shadowing again");
}

void VmacTakeover::tick(uint64_t now_ns) noexcept {
  Impl& p = *impl_;
  p.last_now_ns = now_ns;
  p.ring.expire(now_ns);  // also when no frame arrives: the gauges show the window only
  if (p.live_wait_from != 0 && acceptedPackets(p.engine) != p.live_packets_at) {
    // The first live packet (NFQUEUE) forwarded after the replay, to within a pair tick.
    p.timing.first_live_ns = now_ns > p.live_wait_from ? now_ns - p.live_wait_from : 0;
    p.live_wait_from = 0;
    logf(LogLevel::kInfo, "vmac: takeover timing: first live packet at most %.1f ms after the "
         "replay", ms(p.timing.first_live_ns));
  }
  if (p.announce_schedule.poll(now_ns)) {
    for (Impl::Interface& i : p.interfaces) i.arp->announce();
  }
  if (p.tail_due_ns != 0 && now_ns >= p.tail_due_ns) {
    p.tail_due_ns = 0;
    p.drain();
    p.replay(p.replay_from_ns, p.tail_until_ns, p.tail_min_id);
    if (p.live_wait_from != 0) p.live_packets_at = acceptedPackets(p.engine);  // not live ones
    p.closeCaptures(true);
    p.ring.clear();
  }
}

void VmacTakeover::shutdown() noexcept {
  impl_->closeCaptures();
  impl_->links.removeAll();
}

std::string VmacTakeover::metricsText() const {
  const Impl& p = *impl_;
  ShadowCaptureCounters cap = p.closed_capture;
  uint64_t arp_replies = 0;
  uint64_t announcements = 0;
  uint64_t arp_errors = 0;
  for (const Impl::Interface& i : p.interfaces) {
    cap.frames += i.capture->counters().frames;
    cap.truncated += i.capture->counters().truncated;
    cap.malformed += i.capture->counters().malformed;
    cap.kernel_drops += i.capture->counters().kernel_drops;
    arp_replies += i.arp->counters().replies;
    announcements += i.arp->counters().announcements;
    arp_errors += i.arp->counters().send_errors;
  }
  const ShadowRingCounters& r = p.ring.counters();
  const VmacTakeoverCounters& c = p.counters;
  PromText m;
  m.single("tandem_vmac_links_up", "gauge", "1 while this node's macvlans (vMAC) are up.",
           p.links.up() ? 1 : 0);
  m.single("tandem_vmac_arp_replies_total", "counter", "ARP requests answered with the vMAC.",
           arp_replies);
  m.single("tandem_vmac_announcements_total", "counter", "Gratuitous ARPs announcing the vMAC.",
           announcements);
  m.single("tandem_vmac_arp_send_errors_total", "counter", "ARP frames the kernel refused.",
           arp_errors);
  m.single("tandem_shadow_frames_total", "counter", "Frames to the vMAC shadowed into the ring.",
           r.stored);
  m.single("tandem_shadow_ring_dropped_total", "counter",
           "Frames dropped from a full shadow ring inside its window.", r.dropped_full + r.too_big);
  m.single("tandem_shadow_ring_expired_total", "counter", "Frames that aged out of the window.",
           r.expired);
  m.single("tandem_shadow_ring_frames", "gauge", "Frames in the shadow ring.", p.ring.size());
  m.single("tandem_shadow_ring_bytes", "gauge", "Bytes in the shadow ring.", p.ring.bytesUsed());
  m.single("tandem_shadow_capture_kernel_drops_total", "counter",
           "Frames the kernel dropped from a full capture ring.", cap.kernel_drops);
  m.single("tandem_shadow_capture_truncated_total", "counter",
           "Captured frames longer than the snapshot length or malformed.",
           cap.truncated + cap.malformed);
  m.single("tandem_shadow_windows_learnt_total", "counter",
           "Shadowed frames whose flow's window edges the standby learnt from.", c.windows_learnt);
  m.single("tandem_shadow_replays_total", "counter", "Takeovers that replayed the outage window.",
           c.replays);
  m.single("tandem_shadow_replayed_total", "counter", "Frames replayed (translated and sent).",
           c.replayed);
  m.family("tandem_shadow_replay_skipped_total", "counter",
           "Ring frames of the window not replayed.");
  const std::pair<const char*, uint64_t> skipped[] = {{"closed_syn", c.skipped_closed},
                                                      {"delivered", c.skipped_delivered},
                                                      {"engine_drop", c.engine_dropped},
                                                      {"not_tcp", c.not_tcp},
                                                      {"send_error", c.send_errors}};
  for (const auto& [reason, value] : skipped) {
    m.sample("tandem_shadow_replay_skipped_total", value, "reason", reason);
  }
  m.single("tandem_shadow_replay_segmented_total", "counter",
           "Replayed super-packets (GRO/GSO) split into MTU-sized segments.", c.segmented);
  m.single("tandem_vmac_link_failures_total", "counter", "macvlan up/down requests that failed.",
           c.link_failures);
  const TakeoverTiming& t = p.timing;
  m.family("tandem_vmac_takeover_step_us", "gauge",
           "The last takeover's steps, microseconds.");
  auto step = [&](const char* name, uint64_t ns) {
    m.sample("tandem_vmac_takeover_step_us", ns / 1000, "step", name);
  };
  step("detection", t.since_heartbeat_ns);
  step("to_take", t.decision_to_take_ns);
  step("drain", t.drain_ns);
  step("links_up", t.links_up_ns);
  step("replay", t.replay_ns);
  step("first_live", t.first_live_ns);
  return m.take();
}

}  // namespace tandem
