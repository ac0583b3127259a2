// Serves the Prometheus text (metrics.h) over minimal HTTP on a Unix socket or loopback TCP.
#include "server/metrics_server.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>
#include <charconv>
#include <cstring>
#include <list>
#include <mutex>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "server/errno_text.h"
#include "server/fd_limits.h"
#include "server/loop_lock.h"
#include "server/metrics.h"
#include "server/unix_socket_file.h"

namespace mp {
namespace {
using Protocol = asio::generic::stream_protocol;
using Acceptor = asio::basic_socket_acceptor<Protocol>;
using Socket = Protocol::socket;

// Matches the blank line that ends a request head: CRLF CRLF, or bare LF LF
// from a hand-typed request.
struct EndOfHead {
  template <class It>
  std::pair<It, bool> operator()(It begin, It end) const {
    for (It i = begin; i != end; ++i) {
      if (*i != '\n') continue;
      It j = i;
      ++j;
      if (j != end && *j == '\r') ++j;
      if (j == end) return {i, false};  // may complete with more data
      if (*j == '\n') return {++j, true};
    }
    return {end, false};
  }
};

std::string http_response(std::string_view status, std::string_view type, const std::string& body,
                          bool head_only, std::string_view extra = {}) {
  std::string r = fmt::format(
      "HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
      status, type, body.size(), extra);
  if (!head_only) r += body;
  return r;
}

}  // namespace

}  // namespace mp

template <>
struct asio::is_match_condition<mp::EndOfHead> : std::true_type {};

namespace mp {

struct MetricsServer::Impl : std::enable_shared_from_this<Impl> {
  struct Connection {
    explicit Connection(asio::io_context& io, Socket s) : socket(std::move(s)), timer(io) {}
    Socket socket;
    asio::steady_timer timer;
    std::string in, out;
    std::list<std::weak_ptr<Connection>>::iterator self;
    bool closed = false;
  };
  using ConnPtr = std::shared_ptr<Connection>;

  Impl(asio::io_context& io, ControlApi& api, const config::Metrics& cfg, Log log)
      : io(io),
        api(api),
        cfg(cfg),
        log(std::move(log)),
        acceptor(io),
        reserve(this->log),
        retry_timer(io) {}

  asio::io_context& io;
  ControlApi& api;
  std::mutex& engine_lock = loop_mutex(io);  // held while calling api (loop_lock.h)
  config::Metrics cfg;
  Log log;
  Acceptor acceptor;
  FdReserve reserve;               // keeps the endpoint answering when descriptors run out
  asio::steady_timer retry_timer;  // after an accept error such as EMFILE
  std::chrono::milliseconds timeout = kDefaultTimeout;
  std::list<std::weak_ptr<Connection>> conns;
  std::string where;
  bool started = false, stopped = false, accepting = false;
  UnixSocketFile file;  // when serving on a Unix socket

  std::string start_unix();
  std::string start_tcp();
  void accept();
  void serve(const ConnPtr& c);
  void on_head(const ConnPtr& c, std::error_code ec, std::size_t n);
  void answer(const ConnPtr& c, std::string response);
  void close(const ConnPtr& c);
  void shutdown();
};

std::string MetricsServer::Impl::start_unix() {
  UnixSocketFile::Spec spec{"metrics socket", cfg.socket, kSocketMode, "", ""};
  if (std::string err = file.open(spec); !err.empty()) return err;
  std::error_code ec;
  acceptor.assign(Protocol(AF_UNIX, SOCK_STREAM), file.take_fd(), ec);
  if (ec) {
    file.remove();
    return "metrics socket " + cfg.socket + ": cannot use the socket: " + error_text(ec);
  }
  where = cfg.socket;
  return "";
}

std::string MetricsServer::Impl::start_tcp() {
  // The loader gives the canonical "HOST:PORT" or "[HOST]:PORT".
  const std::string& text = cfg.listen;
  const std::string bad = "metrics listen address '" + text +
                          "' is not ADDRESS:PORT, such as 127.0.0.1:9100 or [::1]:9100";
  std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad;
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::string_view port_text = std::string_view(text).substr(colon + 1);
  unsigned port = 0;
  auto [ptr, perr] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || perr != std::errc() || ptr != port_text.data() + port_text.size() ||
      port > 65535)
    return bad;
  std::error_code ec;
  asio::ip::address addr = asio::ip::make_address(host, ec);
  if (ec) return bad;
  if (!addr.is_loopback())
    return "metrics listen address '" + text +
           "' is not a loopback address: the metrics endpoint has no authentication";

  asio::ip::tcp::endpoint tcp_ep(addr, static_cast<unsigned short>(port));
  Protocol::endpoint ep{tcp_ep};
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  Protocol::endpoint bound;
  if (!ec) bound = acceptor.local_endpoint(ec);
  if (ec) {
    acceptor.close();
    return "cannot listen on the metrics address " + text + ": " + error_text(ec);
  }
  // The generic endpoint holds the sockaddr the kernel chose; read the port
  // back through a TCP endpoint.
  asio::ip::tcp::endpoint actual;
  if (bound.size() <= actual.capacity()) {
    std::memcpy(actual.data(), bound.data(), bound.size());
    actual.resize(bound.size());
  }
  where = addr.is_v6() ? fmt::format("[{}]:{}", addr.to_string(), actual.port())
                       : fmt::format("{}:{}", addr.to_string(), actual.port());
  return "";
}

// Runs on the loop thread.
void MetricsServer::Impl::accept() {
  if (stopped || accepting) return;
  if (conns.size() >= kMaxConnections) return;  // resumed by close()
  accepting = true;
  acceptor.async_accept([self = shared_from_this()](std::error_code ec, Socket socket) {
    self->accepting = false;
    if (self->stopped) return;
    std::chrono::milliseconds delay;
    switch (self->reserve.after_accept(self->acceptor, socket, ec, &delay)) {
      case FdReserve::After::Closed:
        return;
      case FdReserve::After::Retry:
        self->retry_timer.expires_after(delay);
        self->retry_timer.async_wait([self](std::error_code tec) {
          if (!tec) self->accept();
        });
        return;
      case FdReserve::After::Serve:
        break;
    }
    auto c = std::make_shared<Connection>(self->io, std::move(socket));
    self->conns.push_front(c);
    c->self = self->conns.begin();
    self->serve(c);
    self->accept();
  });
}

// Runs on the loop thread.
void MetricsServer::Impl::serve(const ConnPtr& c) {
  c->timer.expires_after(timeout);
  c->timer.async_wait([self = shared_from_this(), c](std::error_code ec) {
    if (!ec) self->close(c);  // silent or slow client: its time is up
  });
  asio::async_read_until(c->socket, asio::dynamic_buffer(c->in, kMaxHead), EndOfHead{},
                         [self = shared_from_this(), c](std::error_code ec, std::size_t n) {
                           self->on_head(c, ec, n);
                         });
}

// Runs on the loop thread.
void MetricsServer::Impl::on_head(const ConnPtr& c, std::error_code ec, std::size_t n) {
  if (stopped || c->closed) return;
  const std::string text_type = "text/plain; charset=utf-8";
  if (ec == asio::error::not_found) {  // kMaxHead bytes and still no blank line
    answer(c, http_response("431 Request Header Fields Too Large", text_type,
                            "request head too large\n", false));
    return;
  }
  if (ec) {  // closed before finishing the request, or reset
    close(c);
    return;
  }
  std::string_view head(c->in.data(), n);
  std::string_view line = head.substr(0, head.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // METHOD SP TARGET SP HTTP/x.y
  std::size_t sp1 = line.find(' ');
  std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string_view::npos || sp2 == sp1 + 1 ||
      line.find(' ', sp2 + 1) != std::string_view::npos ||
      !line.substr(sp2 + 1).starts_with("HTTP/")) {
    answer(c, http_response("400 Bad Request", text_type, "bad request line\n", false));
    return;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view path = target.substr(0, target.find('?'));
  const bool head_only = method == "HEAD";
  if (path != "/metrics") {
    answer(c, http_response("404 Not Found", text_type, "not found: the metrics are at /metrics\n",
                            head_only));
    return;
  }
  if (method != "GET" && !head_only) {
    answer(c, http_response("405 Method Not Allowed", text_type, "use GET /metrics\n", false,
                            "Allow: GET, HEAD\r\n"));
    return;
  }
  std::string body;
  try {
    std::lock_guard<std::mutex> hold(engine_lock);
    body = render_metrics(api);
  } catch (const std::exception& e) {
    log(true, std::string("metrics: cannot render the metrics: ") + e.what());
    answer(c, http_response("500 Internal Server Error", text_type, "cannot render the metrics\n",
                            head_only));
    return;
  }
  answer(c, http_response("200 OK", "text/plain; version=0.0.4", body, head_only));
}

// Runs on the loop thread.
void MetricsServer::Impl::answer(const ConnPtr& c, std::string response) {
  c->out = std::move(response);
  asio::async_write(c->socket, asio::buffer(c->out),
                    [self = shared_from_this(), c](std::error_code ec, std::size_t) {
                      if (!ec && !c->closed) c->socket.shutdown(Socket::shutdown_send, ec);
                      self->close(c);
                    });
}

// Runs on the loop thread.
void MetricsServer::Impl::close(const ConnPtr& c) {
  if (c->closed) return;
  c->closed = true;
  reserve.close(c->socket);  // the descriptor may become the reserve
  c->timer.cancel();
  conns.erase(c->self);
  if (!stopped) accept();  // a slot is free again
}

void MetricsServer::Impl::shutdown() {
  if (stopped) return;
  stopped = true;
  std::error_code ec;
  retry_timer.cancel();
  acceptor.close(ec);
  std::vector<ConnPtr> live;
  for (auto& w : conns)
    if (auto c = w.lock()) live.push_back(std::move(c));
  for (auto& c : live) close(c);
  conns.clear();
  reserve.release();
  file.remove();
}

MetricsServer::MetricsServer(asio::io_context& io, ControlApi& api, const config::Metrics& cfg,
                             Log log)
    : impl_(std::make_shared<Impl>(io, api, cfg, std::move(log))) {}

MetricsServer::~MetricsServer() {
  stop();
}

std::string MetricsServer::start() {
  Impl& s = *impl_;
  if (s.started || s.stopped) return "the metrics endpoint was already started";
  if (!s.cfg.socket.empty() && !s.cfg.listen.empty())
    return "metrics has both socket and listen: keep one";
  if (s.cfg.socket.empty() && s.cfg.listen.empty())
    return "the metrics endpoint has neither socket nor listen";
  std::string err = s.cfg.socket.empty() ? s.start_tcp() : s.start_unix();
  if (!err.empty()) return err;
  s.started = true;
  s.reserve.hold("metrics " + std::string(s.cfg.socket.empty() ? "address " : "socket ") + s.where);
  s.log(false, s.cfg.socket.empty()
                   ? "metrics: listening on " + s.where + " (GET /metrics)"
                   : "metrics: listening on unix socket " + s.where + " (GET /metrics)");
  s.accept();
  return "";
}

void MetricsServer::stop() {
  impl_->shutdown();
}

const std::string& MetricsServer::where() const {
  return impl_->where;
}

void MetricsServer::set_timeout(std::chrono::milliseconds t) {
  impl_->timeout = t;
}

}  // namespace mp
