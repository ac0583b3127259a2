// The control socket server: Unix socket set-up and sessions (async line I/O
// with back-pressure and timeouts); each line goes to control_requests.cc.
#include "server/control.h"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "server/control_protocol.h"
#include "server/control_requests.h"
#include "server/errno_text.h"
#include "server/fd_limits.h"
#include "server/loop_lock.h"
#include "server/unix_socket_file.h"

namespace mp {

using json = nlohmann::json;
using asio::local::stream_protocol;
using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------------- server ----

// The listener and the set of sessions. Runs on the loop thread; pending
// handlers hold a shared_ptr, and after stop() they touch nothing else.
struct ControlServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, ControlApi& api, const config::Control& cfg, Log log,
       ControlLimits lim)
      : io(io),
        api(api),
        cfg(cfg),
        log(std::move(log)),
        lim(lim),
        acceptor(io),
        reserve(this->log),
        accept_retry(io),
        sweeper(io) {}

  asio::io_context& io;
  ControlApi& api;
  std::mutex& engine_lock = loop_mutex(io);  // held while calling api (loop_lock.h)
  config::Control cfg;
  Log log;
  ControlLimits lim;
  stream_protocol::acceptor acceptor;
  FdReserve reserve;                // keeps the socket answering when descriptors run out
  asio::steady_timer accept_retry;  // after an accept error (EMFILE...), so as not to spin
  asio::steady_timer sweeper;       // idle and stalled sessions
  bool sweeping = false;
  bool running = false;
  bool refusal_logged = false;  // once per stretch at the session cap
  std::set<std::shared_ptr<Session>> sessions;
  UnixSocketFile file;

  void do_accept();
  void on_accept(std::error_code ec, stream_protocol::socket sock);
  void serve(stream_protocol::socket sock);  // a new connection: a session, or refused
  void arm_sweeper();
  void sweep();
};

// One client connection. Runs on the loop thread. Handlers hold a shared_ptr
// to the session; `srv` is cleared when the session closes, after which a
// late handler touches nothing else.
struct ControlServer::Session : std::enable_shared_from_this<Session> {
  Session(ControlServer::Impl* srv, stream_protocol::socket sock)
      : srv(srv), sock(std::move(sock)) {}

  ControlServer::Impl* srv;
  stream_protocol::socket sock;
  std::array<char, 16384> rbuf;
  std::string in;            // received bytes; [0, consumed) already handled
  std::size_t consumed = 0;  // start of the first unhandled line
  std::size_t scanned = 0;   // no newline in [consumed, scanned)
  std::string wbuf;          // being written, from woff on
  std::size_t woff = 0;
  std::string pending;  // responses queued behind wbuf
  bool reading = false, writing = false;
  bool eof = false;            // the client shut down its write side
  bool closing = false;        // close once the output is flushed (oversized line)
  bool resume_posted = false;  // process() will run again soon (batch limit)
  bool awaiting = false;       // a request's answer comes later; the lines behind it wait
  bool in_process = false;     // process() is on the stack
  SteadyClock::time_point last_activity = SteadyClock::now();
  SteadyClock::time_point last_write = SteadyClock::now();

  std::size_t unsent() const { return wbuf.size() - woff + pending.size(); }

  // Runs a handler's body so that nothing it throws (out of memory) reaches
  // the event loop, where it would end the process: the session is closed
  // instead.
  template <class F>
  void guarded(F&& body) {
    try {
      body();
    } catch (const std::exception& e) {
      try {
        close(std::string("internal error: ") + e.what());
      } catch (...) {
      }
    } catch (...) {
      try {
        close("internal error");
      } catch (...) {
      }
    }
  }

  void read() {
    // Input is taken while unhandled requests are under max_input, also when
    // the output is backed up, so that a client that pipelines requests
    // before it reads finishes sending.
    if (!srv || reading || eof || closing || in.size() - consumed >= srv->lim.max_input) return;
    reading = true;
    sock.async_read_some(asio::buffer(rbuf),
                         [self = shared_from_this()](std::error_code ec, std::size_t n) {
                           self->guarded([&] { self->on_read(ec, n); });
                         });
  }

  void on_read(std::error_code ec, std::size_t n) {
    reading = false;
    if (!srv) return;
    if (ec == asio::error::eof) {
      eof = true;
    } else if (ec) {
      return close(gone(ec) ? "" : "read failed: " + ec.message());
    } else {
      last_activity = SteadyClock::now();
      in.append(rbuf.data(), n);
    }
    process();
  }

  // Handles the complete lines received, unless the output is backed up; then
  // reads more, or closes when the client is done. At most kBatch requests
  // per turn of the loop: a client flooding requests delays I/O handlers by
  // no more than that.
  void process() {
    static constexpr int kBatch = 32;
    int handled = 0;
    in_process = true;
    while (srv && !closing && !awaiting && unsent() <= srv->lim.max_output) {
      if (handled == kBatch) {
        flush();
        if (!resume_posted) {
          resume_posted = true;
          asio::post(sock.get_executor(), [self = shared_from_this()] {
            self->resume_posted = false;
            if (self->srv) self->guarded([&] { self->process(); });
          });
        }
        in_process = false;
        return;
      }
      std::size_t nl = in.find('\n', scanned);
      std::size_t end = nl;
      if (nl == std::string::npos) {
        scanned = in.size();
        if (in.size() - consumed > control::kMaxLine) {
          oversized();
          break;
        }
        if (!eof || consumed == in.size()) break;
        end = in.size();  // the last line of a half-closed client needs no newline
      }
      if (end - consumed > control::kMaxLine) {
        oversized();
        break;
      }
      std::string_view line(in.data() + consumed, end - consumed);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      consumed = end == in.size() ? end : end + 1;
      scanned = consumed;
      handled++;
      bool later;
      control::Outcome o;
      {
        std::lock_guard<std::mutex> hold(srv->engine_lock);
        o = control::run_request(srv->api, line);
        later = static_cast<bool>(o.later);
        if (later) {
          awaiting = true;
          // The engine answers holding the loop lock; the answer is handled
          // in a handler of its own, where process() may take the lock again
          // for the lines behind it.
          o.later([self = shared_from_this()](control::Outcome answer) {
            asio::post(self->sock.get_executor(), [self, answer = std::move(answer)]() mutable {
              self->guarded([&] { self->answered(std::move(answer)); });
            });
          });
        }
      }
      if (!later) answered(std::move(o));
    }
    in_process = false;
    if (!srv) return;
    if (consumed > 0) {  // drop handled lines at once, not one by one
      in.erase(0, consumed);
      scanned -= consumed;
      consumed = 0;
    }
    flush();
    if (!awaiting && (closing || (eof && in.empty()))) {
      if (!writing) close("");  // flushed: done
    } else {
      read();
    }
  }

  // A request's answer, now or later. A later one lets the lines behind it
  // go on, so responses keep the order of the requests.
  void answered(control::Outcome o) {
    if (!srv) return;
    if (!o.audit.empty()) srv->log(false, o.audit);
    respond(control::dump(o.response));
    awaiting = false;
    if (!in_process) process();
  }

  void oversized() {
    respond(control::dump(
        json{{"ok", false},
             {"error", "request line longer than " + std::to_string(control::kMaxLine) +
                           " bytes: closing the connection; " + control::kRequestExample}}));
    srv->log(false, "control: closed a connection that sent a line longer than " +
                        std::to_string(control::kMaxLine) + " bytes");
    closing = true;
    in.clear();
    consumed = scanned = 0;
  }

  void respond(std::string line) {
    if (unsent() == 0) last_write = SteadyClock::now();  // the stall clock starts
    pending += line;
    pending += '\n';
  }

  void flush() {
    if (!srv || writing) return;
    if (woff == wbuf.size()) {
      if (pending.empty()) return;
      wbuf.swap(pending);
      pending.clear();
      woff = 0;
    }
    writing = true;
    sock.async_write_some(asio::buffer(wbuf.data() + woff, wbuf.size() - woff),
                          [self = shared_from_this()](std::error_code ec, std::size_t n) {
                            self->guarded([&] { self->on_write(ec, n); });
                          });
  }

  void on_write(std::error_code ec, std::size_t n) {
    writing = false;
    if (!srv) return;
    if (ec) return close(gone(ec) ? "" : "write failed: " + ec.message());
    last_write = last_activity = SteadyClock::now();
    woff += n;
    if (woff == wbuf.size()) {
      wbuf.clear();
      woff = 0;
    }
    process();  // may resume reading (back-pressure released) or close
  }

  // The client closed its socket: nothing worth a log line.
  static bool gone(std::error_code ec) {
    return ec == asio::error::broken_pipe || ec == asio::error::connection_reset;
  }

  // Closes at once; `why` is logged when not empty.
  void close(const std::string& why) {
    if (!srv) return;
    ControlServer::Impl* s = srv;
    srv = nullptr;
    std::error_code ignored;
    sock.shutdown(stream_protocol::socket::shutdown_both, ignored);
    s->reserve.close(sock);  // the descriptor may become the reserve
    if (!why.empty()) s->log(false, "control: dropped a connection: " + why);
    s->sessions.erase(shared_from_this());  // may free *this once handlers are done
  }
};

void ControlServer::Impl::do_accept() {
  acceptor.async_accept(
      [self = shared_from_this()](std::error_code ec, stream_protocol::socket sock) {
        self->on_accept(ec, std::move(sock));
      });
}

void ControlServer::Impl::on_accept(std::error_code ec, stream_protocol::socket sock) {
  if (!running) return;
  std::chrono::milliseconds delay;
  switch (reserve.after_accept(acceptor, sock, ec, &delay)) {
    case FdReserve::After::Closed:
      return;
    case FdReserve::After::Retry:
      accept_retry.expires_after(delay);
      accept_retry.async_wait([self = shared_from_this()](std::error_code e) {
        if (!e && self->running) self->do_accept();
      });
      return;
    case FdReserve::After::Serve:
      break;
  }
  try {
    serve(std::move(sock));
  } catch (const std::exception& e) {  // out of memory: this connection only
    log(true, std::string("control: cannot serve a connection: ") + e.what());
  }
  do_accept();
}

void ControlServer::Impl::serve(stream_protocol::socket sock) {
  if (sessions.size() >= lim.max_sessions) {
    // One small line into an empty socket buffer: never blocks.
    std::string msg = control::dump(json{{"ok", false},
                                         {"error", "too many control connections (" +
                                                       std::to_string(lim.max_sessions) +
                                                       " open): close idle ones and retry"}}) +
                      "\n";
    std::error_code ignored;
    sock.non_blocking(true, ignored);
    sock.write_some(asio::buffer(msg), ignored);
    reserve.close(sock);
    if (!refusal_logged)
      log(false, "control: refusing connections: " + std::to_string(lim.max_sessions) +
                     " sessions already open");
    refusal_logged = true;
    return;
  }
  refusal_logged = false;
  auto s = std::make_shared<Session>(this, std::move(sock));
  sessions.insert(s);
  arm_sweeper();
  s->guarded([&] { s->process(); });  // starts reading
}

void ControlServer::Impl::arm_sweeper() {
  if (sweeping || sessions.empty()) return;
  sweeping = true;
  auto period = std::min(lim.idle, lim.write_stall) / 4;
  period = std::clamp(period, std::chrono::milliseconds(5), std::chrono::milliseconds(1000));
  sweeper.expires_after(period);
  sweeper.async_wait([self = shared_from_this()](std::error_code ec) {
    self->sweeping = false;
    if (!ec && self->running) self->sweep();
  });
}

void ControlServer::Impl::sweep() {
  auto now = SteadyClock::now();
  std::vector<std::shared_ptr<Session>> stalled, idle;
  for (const auto& s : sessions) {
    if (s->unsent() > 0) {
      if (now - s->last_write >= lim.write_stall) stalled.push_back(s);
    } else if (now - s->last_activity >= lim.idle) {
      idle.push_back(s);
    }
  }
  for (auto& s : stalled)
    s->close("the client stopped reading its responses (" + std::to_string(s->unsent()) +
             " bytes unsent for " + std::to_string(lim.write_stall.count()) + " ms)");
  for (auto& s : idle) s->close("");
  arm_sweeper();
}

ControlServer::ControlServer(asio::io_context& io, ControlApi& api, const config::Control& cfg,
                             Log log, ControlLimits limits)
    : impl_(std::make_shared<Impl>(io, api, cfg, std::move(log), limits)) {}

ControlServer::~ControlServer() {
  stop();
}

std::size_t ControlServer::sessions() const {
  return impl_->sessions.size();
}
const std::string& ControlServer::socket_path() const {
  return impl_->cfg.socket;
}

std::string ControlServer::start() {
  Impl& m = *impl_;
  if (m.cfg.socket.empty() || m.running) return "";
  UnixSocketFile::Spec spec{"control socket", m.cfg.socket, m.cfg.mode, m.cfg.group,
                            "control.group"};
  if (std::string err = m.file.open(spec); !err.empty()) return err;
  std::error_code ec;
  m.acceptor.assign(stream_protocol(), m.file.take_fd(), ec);
  if (ec) {
    m.file.remove();
    return "control socket " + m.cfg.socket + ": cannot use the socket: " + error_text(ec);
  }
  m.running = true;
  m.reserve.hold("control socket " + m.cfg.socket);
  m.do_accept();
  return "";
}

void ControlServer::stop() {
  Impl& m = *impl_;
  std::error_code ignored;
  m.running = false;
  m.acceptor.close(ignored);
  m.accept_retry.cancel();
  m.sweeper.cancel();
  auto sessions = m.sessions;  // close() erases from the set
  for (const auto& s : sessions) s->close("");
  m.sessions.clear();
  m.reserve.release();
  m.file.remove();
}

std::string ControlServer::handle_line(ControlApi& api, std::string_view line) {
  control::Outcome o = control::run_request(api, line);
  if (o.later) {
    auto answer = std::make_shared<std::string>("{\"ok\":false,\"error\":\"no answer yet\"}");
    o.later([answer](control::Outcome late) { *answer = control::dump(late.response); });
    return *answer;  // an API that answers at once (tests) has answered
  }
  return control::dump(o.response);
}

}  // namespace mp
