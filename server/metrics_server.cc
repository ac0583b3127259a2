// Renders the engine's counters as Prometheus text and serves them over minimal HTTP.
#include "server/metrics.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <asio/buffer.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read_until.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iterator>
#include <list>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "server/errno_text.h"
#include "server/fd_limits.h"
#include "server/unix_socket_file.h"

namespace mp {
namespace {

// ---------------------------------------------------------------------------
// Rendering

using Out = fmt::memory_buffer;

constexpr const char* kStates[] = {"connecting", "probing", "held",    "active",
                                   "marginal",   "failed",  "draining"};

// A label value per the exposition format: backslash, double quote and
// line feed are escaped; everything else (UTF-8 included) goes as is.
std::string label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// A floating-point sample value: 15 significant digits, so that a unit
// conversion's rounding noise (123.4 us -> 0.00012340000000000002 s) is not
// printed; NaN and infinities spelt as the format wants.
std::string value_text(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{:.15g}", v);
}

// Microseconds from a histogram to seconds.
double seconds(double us) {
  return us / 1e6;
}

class Writer {
 public:
  // "# HELP" and "# TYPE" of one family. The help texts are fixed strings
  // with no backslash or line feed, so they need no escaping.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  // `labels` is already escaped: path="a",group="g" (or empty).
  void sample(std::string_view name, std::string_view labels, std::uint64_t v) {
    put(name, labels, fmt::format("{}", v));
  }
  void sample_real(std::string_view name, std::string_view labels, double v) {
    put(name, labels, value_text(v));
  }
  void put(std::string_view name, std::string_view labels, std::string_view value) {
    if (labels.empty())
      fmt::format_to(std::back_inserter(out_), "{} {}\n", name, value);
    else
      fmt::format_to(std::back_inserter(out_), "{}{{{}}} {}\n", name, labels, value);
  }
  std::string take() { return fmt::to_string(out_); }

 private:
  Out out_;
};

std::string count(std::uint64_t v) {
  return fmt::format("{}", v);
}

// One engine-wide sample without labels.
struct EngineMetric {
  const char* name;
  const char* type;
  const char* help;
  std::string (*value)(const EngineInfo&);
};

const EngineMetric kEngineMetrics[] = {
    {"nbd_multipath_requests_total", "counter",
     "Requests submitted to the engine (client requests and the engine's own write-backs).",
     [](const EngineInfo& e) { return count(e.requests); }},
    {"nbd_multipath_failed_requests_total", "counter", "Requests that completed with an error.",
     [](const EngineInfo& e) { return count(e.failed_requests); }},
    {"nbd_multipath_retries_total", "counter",
     "Requests sent again on another path after an attempt failed or timed out.",
     [](const EngineInfo& e) { return count(e.retries); }},
    {"nbd_multipath_group_switches_total", "counter", "Changes of the path group that serves I/O.",
     [](const EngineInfo& e) { return count(e.group_switches); }},
    {"nbd_multipath_queued_no_path_total", "counter",
     "Requests that had to wait because no path was usable.",
     [](const EngineInfo& e) { return count(e.queued_no_path); }},
    {"nbd_multipath_queued_no_path_seconds_total", "counter",
     "Total time requests waited because no path was usable, in seconds.",
     [](const EngineInfo& e) {
       return value_text(static_cast<double>(e.queued_no_path_ms) / 1e3);
     }},
    {"nbd_multipath_waiting_requests", "gauge",
     "Requests waiting now for a path (none usable, all busy, or held).",
     [](const EngineInfo& e) { return count(e.waiting); }},
    {"nbd_multipath_queueing", "gauge",
     "1 while requests queue when no path is usable, 0 while they fail at once.",
     [](const EngineInfo& e) { return count(e.queueing ? 1 : 0); }},
    {"nbd_multipath_abandoned_writes_total", "counter",
     "Write attempts abandoned on a failed path while their outcome was unknown.",
     [](const EngineInfo& e) { return count(e.abandoned_writes); }},
    {"nbd_multipath_abandoned_writes_pending", "gauge",
     "Abandoned writes not yet resolved (they may still land).",
     [](const EngineInfo& e) { return count(e.abandoned_pending); }},
    {"nbd_multipath_abandoned_writes_resolved_late_total", "counter",
     "Abandoned writes resolved because their late reply arrived.",
     [](const EngineInfo& e) { return count(e.resolved_late); }},
    {"nbd_multipath_abandoned_writes_resolved_by_death_total", "counter",
     "Abandoned writes resolved because their connection died.",
     [](const EngineInfo& e) { return count(e.resolved_by_death); }},
    {"nbd_multipath_abandoned_writes_reapplied_total", "counter",
     "Newer data written back over ranges that abandoned writes may have overwritten.",
     [](const EngineInfo& e) { return count(e.reapplied); }},
    {"nbd_multipath_abandoned_writes_unshadowed_total", "counter",
     "Abandoned writes whose newer data could not be kept because stale-writes.max-bytes was "
     "reached.",
     [](const EngineInfo& e) { return count(e.unshadowed); }},
    {"nbd_multipath_shadow_bytes", "gauge",
     "Memory held now for newer data over unresolved abandoned writes, in bytes.",
     [](const EngineInfo& e) { return count(e.shadow_bytes); }},
};

struct PathCounter {
  const char* name;
  const char* type;
  const char* help;
  std::uint64_t PathInfo::*field;
};

const PathCounter kPathCounters[] = {
    {"nbd_multipath_path_requests_total", "counter",
     "Attempts sent on this path (client requests, retries, write-backs and health probes).",
     &PathInfo::requests},
    {"nbd_multipath_path_bytes_total", "counter", "Bytes of the attempts sent on this path.",
     &PathInfo::bytes},
    {"nbd_multipath_path_errors_total", "counter", "Transport errors and EIO replies on this path.",
     &PathInfo::errors},
    {"nbd_multipath_path_transport_errors_total", "counter",
     "Of those, commands whose connection died under them.", &PathInfo::transport_errors},
    {"nbd_multipath_path_eio_errors_total", "counter", "Of those, EIO replies from the server.",
     &PathInfo::eio_errors},
    {"nbd_multipath_path_timeouts_total", "counter", "Attempts on this path that timed out.",
     &PathInfo::timeouts},
    {"nbd_multipath_path_failovers_total", "counter",
     "Attempts abandoned on this path and retried on another.", &PathInfo::failovers},
    {"nbd_multipath_path_failures_total", "counter",
     "Outages of this path: counted once when it fails, not per failed reconnect.",
     &PathInfo::failures},
    {"nbd_multipath_path_reconnects_total", "counter", "Reconnect attempts of this path.",
     &PathInfo::reconnects},
    {"nbd_multipath_path_reinstatements_total", "counter",
     "Times this path became usable again after a failure.", &PathInfo::reinstatements},
    {"nbd_multipath_path_marginal_total", "counter",
     "Times this path was made marginal (a latency outlier).", &PathInfo::marginal},
    {"nbd_multipath_path_abandoned_writes_pending", "gauge",
     "Abandoned writes sent on this path and not yet resolved.", &PathInfo::abandoned_pending},
    {"nbd_multipath_path_dirty_ranges", "gauge",
     "Ranges this path acknowledged that no flush on it covers yet (shared-cache false).",
     &PathInfo::dirty_ranges},
    {"nbd_multipath_path_dirty_bytes", "gauge", "Bytes in those ranges.", &PathInfo::dirty_bytes},
    {"nbd_multipath_path_affinity_requests_total", "counter",
     "Requests sent to this path because they overlapped its dirty ranges.",
     &PathInfo::affinity_requests},
    {"nbd_multipath_path_cleaning_flushes_total", "counter",
     "Flushes sent to this path alone to clean its dirty ranges.", &PathInfo::cleaning_flushes},
};

struct OpCounter {
  const char* name;
  const char* help;
  std::uint64_t OpCounters::*field;
};

const OpCounter kOpCounters[] = {
    {"nbd_multipath_op_requests_total", "Client requests of this type completed.",
     &OpCounters::requests},
    {"nbd_multipath_op_bytes_total", "Bytes of the client requests of this type completed.",
     &OpCounters::bytes},
    {"nbd_multipath_op_errors_total", "Client requests of this type that completed with an error.",
     &OpCounters::errors},
    {"nbd_multipath_op_eio_errors_total",
     "Client requests of this type that failed with EIO (timeouts and dead paths included).",
     &OpCounters::errors_eio},
    {"nbd_multipath_op_nospc_errors_total",
     "Client requests of this type that failed with ENOSPC from the server.",
     &OpCounters::errors_nospc},
    {"nbd_multipath_op_perm_errors_total",
     "Client requests of this type that failed with EPERM (or EROFS) from the server.",
     &OpCounters::errors_perm},
    {"nbd_multipath_op_other_errors_total",
     "Client requests of this type that failed with another errno (EINVAL, ENOTSUP).",
     &OpCounters::errors_other},
};

}  // namespace

std::string render_metrics(ControlApi& api) {
  const EngineInfo e = api.show_stats();
  const std::vector<GroupInfo> groups = api.show_groups();
  const std::vector<PathInfo> paths = api.show_paths();
  Writer w;

  for (const auto& m : kEngineMetrics) {
    w.family(m.name, m.type, m.help);
    w.put(m.name, "", m.value(e));
  }

  w.family("nbd_multipath_serving_group", "gauge",
           "1 for the path group that serves I/O now, 0 for the others.");
  for (const auto& g : groups)
    w.sample("nbd_multipath_serving_group", fmt::format("group=\"{}\"", label_value(g.name)),
             g.serving ? 1 : 0);

  std::vector<std::string> op_labels;
  for (const auto& o : e.ops) op_labels.push_back(fmt::format("op=\"{}\"", label_value(o.op)));
  for (const auto& c : kOpCounters) {
    w.family(c.name, "counter", c.help);
    for (std::size_t i = 0; i < e.ops.size(); ++i)
      w.sample(c.name, op_labels[i], e.ops[i].*c.field);
  }
  w.family("nbd_multipath_op_latency_p50_seconds", "gauge",
           "Median client-visible latency of this request type, in seconds.");
  for (std::size_t i = 0; i < e.ops.size(); ++i)
    w.sample_real("nbd_multipath_op_latency_p50_seconds", op_labels[i],
                  seconds(e.ops[i].latency_p50_us));
  w.family("nbd_multipath_op_latency_p99_seconds", "gauge",
           "99th percentile of the client-visible latency of this request type, in seconds.");
  for (std::size_t i = 0; i < e.ops.size(); ++i)
    w.sample_real("nbd_multipath_op_latency_p99_seconds", op_labels[i],
                  seconds(e.ops[i].latency_p99_us));

  std::vector<std::string> path_labels;
  for (const auto& p : paths)
    path_labels.push_back(
        fmt::format("path=\"{}\",group=\"{}\"", label_value(p.name), label_value(p.group)));
  for (const auto& c : kPathCounters) {
    w.family(c.name, c.type, c.help);
    for (std::size_t i = 0; i < paths.size(); ++i)
      w.sample(c.name, path_labels[i], paths[i].*c.field);
  }
  w.family("nbd_multipath_path_inflight", "gauge", "Attempts in flight on this path now.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample("nbd_multipath_path_inflight", path_labels[i], paths[i].inflight);
  w.family("nbd_multipath_path_state", "gauge",
           "1 for the state this path is in now, 0 for the other states.");
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const PathInfo& p = paths[i];
    bool known = false;
    for (const char* s : kStates) {
      known = known || p.state == s;
      w.sample("nbd_multipath_path_state", fmt::format("{},state=\"{}\"", path_labels[i], s),
               p.state == s ? 1 : 0);
    }
    // A state this renderer does not know still shows up, so the 1 is never lost.
    if (!known)
      w.sample("nbd_multipath_path_state",
               fmt::format("{},state=\"{}\"", path_labels[i], label_value(p.state)), 1);
  }
  w.family("nbd_multipath_path_latency_p50_seconds", "gauge",
           "Median latency of one attempt on this path, in seconds.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample_real("nbd_multipath_path_latency_p50_seconds", path_labels[i],
                  seconds(paths[i].latency_p50_us));
  w.family("nbd_multipath_path_latency_p99_seconds", "gauge",
           "99th percentile of the latency of one attempt on this path, in seconds.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample_real("nbd_multipath_path_latency_p99_seconds", path_labels[i],
                  seconds(paths[i].latency_p99_us));
  return w.take();
}

// ---------------------------------------------------------------------------
// Serving

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
