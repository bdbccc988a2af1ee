#include "proxy/tandemd/tandemctl_backend.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

namespace tandem {
namespace {

struct Reply {
  int code = 0;
  std::string body;
  event_base* base = nullptr;
};

void onDone(evhttp_request* req, void* arg) {
  auto* reply = static_cast<Reply*>(arg);
  if (req == nullptr) return;
  reply->code = evhttp_request_get_response_code(req);
  evbuffer* in = evhttp_request_get_input_buffer(req);
  const size_t len = evbuffer_get_length(in);
  reply->body.resize(len);
  if (len > 0 && evbuffer_remove(in, reply->body.data(), len) < 0) reply->body.clear();
  event_base_loopexit(reply->base, nullptr);  // do not wait for the kept-alive connection
}

std::string encoded(const std::string& s) {
  char* e = evhttp_uriencode(s.c_str(), static_cast<ev_ssize_t>(s.size()), 0);
  std::string out = e != nullptr ? e : "";
  std::free(e);
  return out;
}

}  // namespace

int backendCommand(const Endpoint& at, const std::vector<std::string>& args) {
  if (args.size() != 3 || (args[0] != "drain" && args[0] != "enable" && args[0] != "disable")) {
    std::fprintf(stderr, "tandemctl: usage: backend drain|enable|disable SERVICE ADDR:PORT\n");
    return 2;
  }
  const std::string path = "/backend?service=" + encoded(args[1]) +
                           "&backend=" + encoded(args[2]) + "&action=" + encoded(args[0]);
  const std::string host = at.addr.toString();
  Reply reply;
  event_base* base = event_base_new();
  reply.base = base;
  evhttp_connection* conn =
      base != nullptr ? evhttp_connection_base_new(base, nullptr, host.c_str(), at.port) : nullptr;
  evhttp_request* req = conn != nullptr ? evhttp_request_new(onDone, &reply) : nullptr;
  bool sent = false;
  if (req != nullptr) {
    evhttp_connection_set_timeout(conn, 5);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host.c_str());
    // No body: without a length the server would wait for the connection to close.
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", "0");
    sent = evhttp_make_request(conn, req, EVHTTP_REQ_POST, path.c_str()) == 0;
    if (sent) event_base_dispatch(base);
  }
  if (conn != nullptr) evhttp_connection_free(conn);
  if (base != nullptr) event_base_free(base);
  if (!sent || reply.code == 0) {
    std::fprintf(stderr, "tandemctl: cannot reach tandemd at %s\n", at.toString().c_str());
    return 1;
  }
  std::fwrite(reply.body.data(), 1, reply.body.size(), reply.code == 200 ? stdout : stderr);
  return reply.code == 200 ? 0 : 1;
}

}  // namespace tandem
