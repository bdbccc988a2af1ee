#include "proxy/tandemd/http_status.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <charconv>
#include <cstdio>
#include <stdexcept>
#include <string_view>

#include "common/version.h"
#include "proxy/io/log.h"
#include "proxy/io/raw_sender.h"
#include "proxy/tandemd/pair.h"
#include "proxy/tandemd/health.h"
#include "proxy/tandemd/fastpath_adapter.h"
#include "proxy/tandemd/syn_answer_adapter.h"
#include "proxy/tandemd/prom_text.h"

namespace tandem {
namespace {

constexpr const char* kDirectionNames[2] = {"from_client", "from_backend"};

/// Scalar fields of Counters that formatMetrics() exports; the assertion catches a new one.
constexpr size_t kScalarCounters = 41;
static_assert(sizeof(Counters) == sizeof(Counters::drops) + sizeof(Counters::packets) +
                                      sizeof(Counters::replay_pruned) +
                                      sizeof(Counters::replay_offset_unknown) +
                                      sizeof(Counters::bytes) + kScalarCounters * sizeof(uint64_t),
              "Counters changed: export the new field in formatMetrics() and count it here");

std::string jsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      out += esc;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string seconds(uint64_t ns) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.3f", static_cast<double>(ns) / 1e9);
  return buf;
}

}  // namespace

std::string formatMetrics(const StatusSources& s, uint64_t now_ns) {
  const Counters& c = s.engine->counters();
  const NfQueueCounters& q = s.queue->counters();
  PromText m;

  m.family("tandem_info", "gauge", "Version of the running tandemd.");
  m.sample("tandem_info", 1, "version", kVersion);
  m.single("tandem_uptime_seconds", "gauge", "Seconds since tandemd started.",
           (now_ns - s.start_ns) / kNsPerSec);

  m.family("tandem_packets_total", "counter", "Packets accepted and translated, by origin.");
  for (size_t d = 0; d < 2; ++d) {
    m.sample("tandem_packets_total", c.packets[d], "direction", kDirectionNames[d]);
  }
  m.family("tandem_bytes_total", "counter", "IP bytes of accepted packets, by origin.");
  for (size_t d = 0; d < 2; ++d) {
    m.sample("tandem_bytes_total", c.bytes[d], "direction", kDirectionNames[d]);
  }
  m.family("tandem_drops_total", "counter", "Packets dropped by the engine, by reason.");
  for (size_t r = 1; r < kDropReasonCount; ++r) {
    m.sample("tandem_drops_total", c.drops[r], "reason",
             dropReasonName(static_cast<DropReason>(r)));
  }

  m.single("tandem_flows_active", "gauge", "Flows in the table.", s.engine->activeFlows());
  m.single("tandem_flows_max", "gauge", "Flow table capacity.", s.engine->maxFlows());
  m.single("tandem_flows_created_total", "counter", "Flows created.", c.flows_created);
  m.single("tandem_flows_closed_total", "counter", "Flows removed after FIN/RST teardown.",
           c.flows_closed);
  m.single("tandem_flows_expired_total", "counter", "Flows removed by an idle timeout.",
           c.flows_expired);
  m.single("tandem_flows_reopened_total", "counter",
           "Flows in TIME_WAIT or CLOSE replaced by a new SYN.", c.flows_reopened);
  m.single("tandem_gso_packets_total", "counter", "GSO super-packets seen.", c.gso_packets);
  m.single("tandem_full_checksums_total", "counter",
           "Partial-checksum packets given a full checksum.", c.full_checksums);
  m.single("tandem_rst_accepted_total", "counter", "RSTs that tore a flow down.", c.rst_accepted);
  m.single("tandem_rst_challenged_total", "counter",
           "In-window RSTs passed on without a state change.", c.rst_challenged);
  m.single("tandem_syn_in_established_total", "counter",
           "SYNs on a live flow passed on for a challenge ACK.", c.syn_in_established);
  m.single("tandem_window_scale_clamped_total", "counter",
           "Peers announcing a window scale above 14.", c.window_scale_clamped);
  m.single("tandem_seq_out_of_window_total", "counter",
           "Segments outside the tracked window, passed on.", c.seq_out_of_window);
  m.single("tandem_syncookies_sent_total", "counter",
           "Splice mode: client SYNs answered with a SYN cookie.", c.syncookies_sent);
  m.single("tandem_splices_completed_total", "counter",
           "Splice mode: backend handshakes the proxy completed.", c.splices_completed);
  m.single("tandem_splice_connect_timeouts_total", "counter",
           "Splice mode: clients reset because their backend never answered the SYN.",
           c.splice_connect_timeouts);
  m.single("tandem_splice_syn_retransmits_total", "counter",
           "Splice mode: backend SYNs sent again while the client retransmitted.",
           c.splice_syn_retransmits);
  m.single("tandem_splice_held_total", "counter",
           "Splice mode: client segments held while the backend leg opened.", c.splice_held);
  m.single("tandem_splice_windows_opened_total", "counter",
           "Splice mode, zero-window handshake: ACKs that opened the client's window once the "
           "backend leg was up.",
           c.splice_windows_opened);
  m.single("tandem_splice_opened_by_probe_total", "counter",
           "Splice mode: flows opened by a zero-window probe whose cookie ACK never arrived.",
           c.splice_opened_by_probe);
  m.single("tandem_sync_deferred_total", "counter",
           "Proxy pair: backend SYN-ACKs held until the standby acknowledged the new flow.",
           c.sync_deferred);
  m.single("tandem_splice_routed_total", "counter",
           "Splice mode, bind = data: backends chosen by a route rule (SNI, Host).",
           c.splice_routed);
  m.single("tandem_splice_route_misses_total", "counter",
           "Splice mode, bind = data: first data matched no route rule; the scheduler chose.",
           c.splice_route_misses);
  m.single("tandem_snat_ports_reused_total", "counter",
           "SNAT ports taken over from flows lingering in TIME_WAIT or CLOSE.",
           c.snat_ports_reused);
  m.single("tandem_resplices_started_total", "counter",
           "Quiescent flows given a new backend leg (backend down or draining).",
           c.resplices_started);
  m.single("tandem_resplices_completed_total", "counter",
           "Re-splices whose new backend handshake completed.", c.resplices_completed);
  m.family("tandem_flows_reset_total", "counter",
           "Flows reset on both legs because their backend left, by reason.");
  m.sample("tandem_flows_reset_total", c.flows_reset_in_flight, "reason", "in_flight");
  m.sample("tandem_flows_reset_total", c.flows_reset_resplice_off, "reason", "resplice_off");
  m.sample("tandem_flows_reset_total", c.flows_reset_no_backend, "reason", "no_backend");
  m.single("tandem_outbox_dropped_total", "counter",
           "Packets the engine originated that a full outbox refused.", c.outbox_dropped);
  constexpr const char* kLegNames[2] = {"client", "backend"};
  m.family("tandem_shadow_replay_pruned_total", "counter",
           "vmac takeover: shadowed frames left out of the replay, by reason and leg.");
  for (size_t r = 0; r < kReplayPruneCount; ++r) {
    for (size_t leg = 0; leg < 2; ++leg) {
      m.sample("tandem_shadow_replay_pruned_total",
               {{"reason", replayPruneName(static_cast<ReplayPrune>(r))}, {"leg", kLegNames[leg]}},
               c.replay_pruned[r][leg]);
    }
  }
  m.family("tandem_shadow_replay_offset_unknown_total", "counter",
           "vmac takeover: splice frames replayed unjudged, the backend leg's offset unknown.");
  for (size_t leg = 0; leg < 2; ++leg) {
    m.sample("tandem_shadow_replay_offset_unknown_total", c.replay_offset_unknown[leg], "leg",
             kLegNames[leg]);
  }
  m.single("tandem_fastpath_installs_total", "counter",
           "Flows put on the kernel fast path (both directions' entries written).",
           c.fastpath_installs);
  m.single("tandem_fastpath_removals_total", "counter",
           "Flows taken off the kernel fast path (entries erased).", c.fastpath_removals);
  m.single("tandem_fastpath_install_failed_total", "counter",
           "Fast path installs the map refused (full); no half entry kept.",
           c.fastpath_install_failed);
  m.single("tandem_fastpath_events_total", "counter",
           "Close events (FINs and acks of FINs the kernel translated) received.", c.fastpath_events);
  m.single("tandem_fastpath_events_stale_total", "counter",
           "Close events for no live fast flow of that generation (ignored).",
           c.fastpath_events_stale);
  m.single("tandem_fastpath_slow_packets_total", "counter",
           "Packets of a fast-path flow that still came through NFQUEUE.",
           c.fastpath_slow_packets);
  m.single("tandem_fastpath_splices_armed_total", "counter",
           "Zero-window splices whose entries were written armed with the backend SYN, so that "
           "the kernel may answer the backend's SYN-ACK.",
           c.fastpath_splices_armed);
  m.single("tandem_fastpath_splices_disarmed_total", "counter",
           "Armed splices the engine took back (the SYN-ACK or a RST came through NFQUEUE, client "
           "data was held, the flow ended).",
           c.fastpath_splices_disarmed);
  m.single("tandem_fastpath_bound_total", "counter",
           "Flows whose cookie ACK the kernel checked and turned into the backend SYN, taken by "
           "the engine from the kernel's report (daemon.fastpath_bind).",
           c.fastpath_bound);
  m.single("tandem_fastpath_bind_undone_total", "counter",
           "Flows the kernel bound that the engine could not take (table full, tuple clash, an "
           "existing flow of the tuple): the kernel's entries erased, both legs reset unless the "
           "engine has the tuple.",
           c.fastpath_bind_undone);
  m.single("tandem_fastpath_bind_stale_total", "counter",
           "Kernel bind reports the engine could not read.", c.fastpath_bind_stale);
  m.single("tandem_fastpath_kernel_splices_total", "counter",
           "Splices the kernel completed, applied to their flows.", c.fastpath_kernel_splices);
  m.single("tandem_fastpath_splice_events_stale_total", "counter",
           "Splice completions reported for a flow no longer waiting for them (ignored).",
           c.fastpath_splice_events_stale);

  m.single("tandem_nfq_held_total", "counter",
           "Packets held for the engine (client data during a splice handshake).", q.held);
  m.single("tandem_nfq_hold_released_total", "counter",
           "Held packets forwarded once their splice completed.", q.hold_released);
  m.single("tandem_nfq_hold_dropped_total", "counter",
           "Held packets dropped (store full, too large or too old); TCP resends them.",
           q.hold_dropped);
  if (s.raw != nullptr) {
    m.single("tandem_raw_sent_total", "counter",
             "Splice mode: packets the engine originated, sent through the raw socket.",
             s.raw->counters().sent);
    m.single("tandem_raw_send_errors_total", "counter",
             "Splice mode: originated packets the raw socket failed to send.",
             s.raw->counters().errors);
  }
  m.single("tandem_nfq_reads_total", "counter", "recvmmsg() calls that returned messages.",
           q.reads);
  m.single("tandem_nfq_packets_total", "counter", "Packets received from the queue.", q.packets);
  m.family("tandem_nfq_verdicts_total", "counter", "Verdicts sent, by verdict.");
  m.sample("tandem_nfq_verdicts_total", q.accepted, "verdict", "accept");
  m.sample("tandem_nfq_verdicts_total", q.dropped, "verdict", "drop");
  m.single("tandem_nfq_modified_total", "counter", "Accepts carrying the rewritten packet.",
           q.modified);
  m.single("tandem_nfq_sends_total", "counter", "sendmsg() calls carrying verdicts.", q.sends);
  m.single("tandem_nfq_truncated_total", "counter",
           "Packets beyond the 64 KiB copy range, dropped.", q.truncated);
  m.single("tandem_nfq_enobufs_total", "counter", "ENOBUFS reported by the netlink socket.",
           q.enobufs);
  m.single("tandem_nfq_foreign_total", "counter", "Netlink messages not from the kernel.",
           q.foreign);
  m.family("tandem_nfq_errors_total", "counter", "NFQUEUE I/O errors, by kind.");
  m.sample("tandem_nfq_errors_total", q.recv_errors, "kind", "recv");
  m.sample("tandem_nfq_errors_total", q.send_errors, "kind", "send");
  m.sample("tandem_nfq_errors_total", q.parse_errors, "kind", "parse");
  m.sample("tandem_nfq_errors_total", q.verdict_errors, "kind", "verdict");

  if (auto k = readNfQueueKernelStats(s.queue->options().queue)) {
    m.single("tandem_nfq_kernel_queued", "gauge", "Packets waiting in the kernel for a verdict.",
             k->queue_total);
    m.family("tandem_nfq_kernel_dropped_total", "counter",
             "Packets the kernel dropped before tandemd saw them, by cause.");
    m.sample("tandem_nfq_kernel_dropped_total", k->queue_dropped, "reason", "queue_full");
    m.sample("tandem_nfq_kernel_dropped_total", k->user_dropped, "reason", "socket_full");
  }
  std::string health = s.health != nullptr ? s.health->metricsText() : std::string();
  health += s.fastpath != nullptr ? s.fastpath->metricsText(c) : fastPathDisabledMetricsText();
  health += s.syn != nullptr ? s.syn->metricsText() : synAnswerDisabledMetricsText();
  if (s.pair != nullptr) {
    return m.take() + s.pair->metricsText() + s.pair->controlMetricsText() + health;
  }
  return m.take() + health;
}

std::string formatFlows(const StatusSources& s, uint64_t now_ns, size_t limit) {
  std::string out = "# service client vip backend source state idle_seconds\n";
  size_t shown = 0;
  size_t total = 0;
  s.engine->forEachFlow(
      [&](const FlowInfo& f) {
        if (++total > limit) return;
        ++shown;
        out += f.service + ' ' + f.client.toString() + ' ' + f.vip.toString() + ' ' +
               f.backend.toString() + ' ' + f.source.toString() + ' ' + tcpStateName(f.state) +
               ' ' + seconds(f.idle_ns) + '\n';
      },
      now_ns);
  if (total > shown) {
    out += "# " + std::to_string(total - shown) + " more flows not shown (/flows?limit=N)\n";
  }
  return out;
}

std::string formatStatus(const StatusSources& s, uint64_t now_ns) {
  const DaemonConfig& c = *s.config;
  std::string out = "{";
  out += "\"version\":" + jsonString(kVersion);
  out += ",\"uptime_seconds\":" + seconds(now_ns - s.start_ns);
  out += ",\"flows\":" + std::to_string(s.engine->activeFlows());
  out += ",\"max_flows\":" + std::to_string(s.engine->maxFlows());
  out += ",\"queue\":" + std::to_string(c.queue.queue);
  out += ",\"rules\":" + jsonString(rulesModeName(c.rules));
  if (s.pair != nullptr) out += "," + s.pair->statusJson();
  out += ",\"services\":[";
  for (size_t i = 0; i < c.engine.services.size(); ++i) {
    const ServiceConfig& svc = c.engine.services[i];
    if (i > 0) out += ',';
    out += "{\"name\":" + jsonString(svc.name);
    out += ",\"vip\":" + jsonString(svc.vip.toString());
    out += ",\"backends\":[";
    for (size_t b = 0; b < svc.backends.size(); ++b) {
      if (b > 0) out += ',';
      out += jsonString(svc.backends[b].toString());
    }
    out += "]";
    if (s.health != nullptr) out += ",\"backend_states\":" + s.health->statusJson(i);
    out += ",\"mode\":" + jsonString(modeName(svc.mode));
    out += ",\"addressing\":" + jsonString(addressingName(svc.addressing));
    out += ",\"scheduler\":" + jsonString(schedulerName(svc.scheduler));
    if (svc.mode == Mode::kSplice) out += ",\"bind\":" + jsonString(bindOnName(svc.bind));
    if (svc.addressing == Addressing::kSnat) {
      out += ",\"snat_address\":" + jsonString(svc.snat_addr.toString());
      out += ",\"snat_ports\":" + jsonString(std::to_string(svc.snat_port_min) + "-" +
                                             std::to_string(svc.snat_port_max));
    }
    out += '}';
  }
  out += "]}\n";
  return out;
}

StatusServer::StatusServer(event_base* base, StatusSources sources)
    : sources_(sources), http_(evhttp_new(base)) {
  if (http_ == nullptr) throw std::runtime_error("status server: evhttp_new failed");
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
  evhttp_set_gencb(http_, &StatusServer::onRequest, this);
}

StatusServer::~StatusServer() { evhttp_free(http_); }

void StatusServer::bind(const Endpoint& at) {
  const std::string addr = at.addr.toString();
  if (evhttp_bind_socket_with_handle(http_, addr.c_str(), at.port) == nullptr) {
    throw std::runtime_error("status server: cannot listen on " + at.toString() +
                             " (daemon.metrics): address in use or not local?");
  }
}

void StatusServer::onRequest(evhttp_request* req, void* self) noexcept {
  try {
    static_cast<StatusServer*>(self)->handle(req);
  } catch (const std::exception& e) {
    // Only allocation can throw here; the status page must not take the packet loop down.
    logf(LogLevel::kWarn, "status server: %s", e.what());
    evhttp_send_error(req, HTTP_INTERNAL, nullptr);
  }
}

namespace {

/// daemon.metrics may listen beyond loopback for a Prometheus scraper; control requests
/// (POST /switchover, POST /backend) are accepted from loopback only.
bool fromLoopback(evhttp_request* req) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  char* peer = nullptr;  // libevent 2.1: char**, owned by the connection
  ev_uint16_t peer_port = 0;
  if (conn != nullptr) evhttp_connection_get_peer(conn, &peer, &peer_port);
  const std::string_view from = peer != nullptr ? peer : "";
  return from.rfind("127.", 0) == 0 || from == "::1" || from.rfind("::ffff:127.", 0) == 0;
}

}  // namespace

void StatusServer::handle(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* path_c = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  const std::string_view path = path_c != nullptr ? path_c : "";
  const uint64_t now_ns = monotonicNs();
  if (path == "/backend" && sources_.health != nullptr) {
    if (evhttp_request_get_command(req) == EVHTTP_REQ_POST && !fromLoopback(req)) {
      evhttp_send_error(req, 403, "control requests are accepted from loopback only");
      return;
    }
    sources_.health->handleRequest(req);  // drain | disable | enable (POST)
    return;
  }

  int code = HTTP_OK;
  const char* reason = "OK";
  std::string body;
  const char* type = "text/plain; charset=utf-8";
  if (path == "/metrics") {
    body = formatMetrics(sources_, now_ns);
    type = "text/plain; version=0.0.4; charset=utf-8";
  } else if (path == "/flows") {
    size_t limit = kDefaultFlowLimit;
    const char* query = evhttp_uri_get_query(uri);
    evkeyvalq params{};
    if (query != nullptr && evhttp_parse_query_str(query, &params) == 0) {
      if (const char* l = evhttp_find_header(&params, "limit")) {
        std::string_view sv(l);
        size_t v = 0;
        auto [ptr, ec] = std::from_chars(sv.data(), sv.data() + sv.size(), v);
        if (ec == std::errc() && ptr == sv.data() + sv.size()) limit = v;
      }
      evhttp_clear_headers(&params);
    }
    body = formatFlows(sources_, now_ns, limit);
  } else if (path == "/status") {
    body = formatStatus(sources_, now_ns);
    type = "application/json";
  } else if (path == "/switchover") {
    handleSwitchover(req);
    return;
  } else if (evhttp_request_get_command(req) == EVHTTP_REQ_POST) {
    code = HTTP_BADMETHOD;
    reason = "Method Not Allowed";
    body = "only /switchover and /backend take POST\n";
  } else if (path == "/pair" && sources_.pair != nullptr) {
    body = sources_.pair->pairText();
  } else if (path == "/pair") {
    code = HTTP_NOTFOUND;
    reason = "Not Found";
    body = "this tandemd has no [sync] section: it is not part of a proxy pair\n";
  } else {
    code = HTTP_NOTFOUND;
    reason = "Not Found";
    body = "not found: try /metrics, /flows, /status, /pair or POST /switchover\n";
  }

  evbuffer* buf = evbuffer_new();
  if (buf == nullptr || evbuffer_add(buf, body.data(), body.size()) != 0 ||
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type) != 0) {
    if (buf != nullptr) evbuffer_free(buf);
    evhttp_send_error(req, HTTP_INTERNAL, nullptr);
    return;
  }
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

namespace {

void sendText(evhttp_request* req, int code, const char* reason, const std::string& text) {
  evbuffer* buf = evbuffer_new();
  if (buf == nullptr || evbuffer_add(buf, text.data(), text.size()) != 0 ||
      evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                        "text/plain; charset=utf-8") != 0) {
    if (buf != nullptr) evbuffer_free(buf);
    evhttp_send_error(req, HTTP_INTERNAL, nullptr);
    return;
  }
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

/// A reply that waits for the switchover's outcome; the client may go away meanwhile.
struct PendingReply {
  evhttp_request* req = nullptr;
  evhttp_connection* conn = nullptr;
  bool closed = false;
};

void onPendingClosed(evhttp_connection*, void* arg) {
  static_cast<PendingReply*>(arg)->closed = true;
}

const char* reasonPhrase(int code) {
  switch (code) {
    case 200: return "OK";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Error";
}

}  // namespace

void StatusServer::handleSwitchover(evhttp_request* req) {
  if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
    sendText(req, 405, reasonPhrase(405), "use POST /switchover (tandemctl switchover)\n");
    return;
  }
  if (!fromLoopback(req)) {
    sendText(req, 403, reasonPhrase(403),
             "switchover refused: control requests are accepted from loopback only\n");
    return;
  }
  if (sources_.control == nullptr) {
    sendText(req, 404, reasonPhrase(404),
             "switchover refused: this tandemd has no [sync] section, it is not part of a "
             "proxy pair\n");
    return;
  }
  auto* pending = new PendingReply{req, evhttp_request_get_connection(req), false};
  if (pending->conn != nullptr) {
    evhttp_connection_set_closecb(pending->conn, onPendingClosed, pending);
  }
  sources_.control->requestSwitchover([pending](const PairController::SwitchoverResult& r) {
    if (!pending->closed) {
      if (pending->conn != nullptr) evhttp_connection_set_closecb(pending->conn, nullptr, nullptr);
      sendText(pending->req, r.http_status, reasonPhrase(r.http_status), r.message + "\n");
    }
    delete pending;
  });
}

}  // namespace tandem
