// The control socket server: Unix socket set-up and sessions (async line I/O
// with back-pressure and timeouts); each line goes to control_requests.cc.
#include "server/control.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>
#include <vector>

#include "server/control_protocol.h"
#include "server/control_requests.h"
#include "server/errno_text.h"
#include "server/fd_limits.h"

namespace mp {

using json = nlohmann::json;
using asio::local::stream_protocol;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::string errno_sentence(int err) {
  return errno_text(err);
}

}  // namespace

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
  config::Control cfg;
  Log log;
  ControlLimits lim;
  stream_protocol::acceptor acceptor;
  FdReserve reserve;                // keeps the socket answering when descriptors run out
  asio::steady_timer accept_retry;  // after an accept error (EMFILE...), so as not to spin
  asio::steady_timer sweeper;       // idle and stalled sessions
  bool sweeping = false;
  bool running = false;
  bool accept_error_logged = false;  // for errors other than running out of descriptors
  bool refusal_logged = false;       // once per stretch at the session cap
  std::set<std::shared_ptr<Session>> sessions;
  // The socket file we created, so stop() never removes someone else's.
  bool own_file = false;
  dev_t dev = 0;
  ino_t ino = 0;

  void do_accept();
  void on_accept(std::error_code ec, stream_protocol::socket sock);
  void serve(stream_protocol::socket sock);  // a new connection: a session, or refused
  void arm_sweeper();
  void sweep();
  void remove_file();
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
    while (srv && !closing && unsent() <= srv->lim.max_output) {
      if (handled == kBatch) {
        flush();
        if (!resume_posted) {
          resume_posted = true;
          asio::post(sock.get_executor(), [self = shared_from_this()] {
            self->resume_posted = false;
            if (self->srv) self->guarded([&] { self->process(); });
          });
        }
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
      control::Outcome o = control::run_request(srv->api, line);
      consumed = end == in.size() ? end : end + 1;
      scanned = consumed;
      if (!o.audit.empty()) srv->log(false, o.audit);
      respond(control::dump(o.response));
      handled++;
    }
    if (!srv) return;
    if (consumed > 0) {  // drop handled lines at once, not one by one
      in.erase(0, consumed);
      scanned -= consumed;
      consumed = 0;
    }
    flush();
    if (closing || (eof && in.empty())) {
      if (!writing) close("");  // flushed: done
    } else {
      read();
    }
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
  if (ec == asio::error::operation_aborted) return;
  if (ec && FdReserve::exhausted(ec)) {
    switch (reserve.accept(acceptor, sock, ec)) {
      case FdReserve::Step::Accepted:
        break;  // served below
      case FdReserve::Step::BackOff:
        accept_retry.expires_after(FdReserve::kBackOff);
        accept_retry.async_wait([self = shared_from_this()](std::error_code e) {
          if (!e && self->running) self->do_accept();
        });
        return;
    }
  } else if (ec) {
    // Retry a little later rather than spin (the connection stays queued).
    if (!accept_error_logged) {
      log(true,
          "control socket " + cfg.socket + ": accept failed: " + ec.message() + " (retrying)");
      accept_error_logged = true;
    }
    accept_retry.expires_after(std::chrono::milliseconds(100));
    accept_retry.async_wait([self = shared_from_this()](std::error_code e) {
      if (!e && self->running) self->do_accept();
    });
    return;
  } else {
    reserve.accepted();
  }
  accept_error_logged = false;
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

void ControlServer::Impl::remove_file() {
  if (!own_file) return;
  own_file = false;
  struct stat st;
  if (::lstat(cfg.socket.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino)
    ::unlink(cfg.socket.c_str());
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

namespace {

// Is a server listening on the socket file at `path`? Answers false for a
// stale socket (connection refused). Never blocks (non-blocking connect).
bool socket_in_use(const std::string& path, int* err) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), addr.sun_path);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  *err = rc == 0 ? 0 : errno;
  ::close(fd);
  return rc == 0 || *err == EAGAIN || *err == EINPROGRESS;  // EAGAIN: backlog full, but alive
}

// Looks a group up by name (or number). Returns "" and sets *gid, or a sentence.
std::string find_group(const std::string& name, gid_t* gid) {
  std::vector<char> buf(1024);
  for (;;) {
    group gr{}, *res = nullptr;
    int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (rc == 0 && res) {
      *gid = res->gr_gid;
      return "";
    }
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos &&
        name.size() < 10) {
      *gid = static_cast<gid_t>(std::stoul(name));
      return "";
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH)
      return "cannot look up group '" + name + "': " + errno_sentence(rc);
    return "group '" + name + "' does not exist: set control.group to an existing group, or " +
           "leave it out to keep the server's group";
  }
}

}  // namespace

std::string ControlServer::start() {
  Impl& m = *impl_;
  const std::string& path = m.cfg.socket;
  if (path.empty() || m.running) return "";
  const std::string what = "control socket " + path + ": ";
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return what + "the path is " + std::to_string(path.size()) +
           " bytes long, but a Unix socket path must be shorter than " +
           std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes: choose a shorter path";
  if (path.front() != '/') return what + "the path must be absolute";
  if (m.cfg.mode > 07777)
    return what + "mode " + std::to_string(m.cfg.mode) + " is not a permission mode (0000..07777)";
  gid_t gid = 0;
  if (!m.cfg.group.empty()) {
    if (std::string err = find_group(m.cfg.group, &gid); !err.empty()) return what + err;
  }

  // A leftover socket from a server that exited is removed; a live one is not.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return what + "the path exists and is not a socket: remove it, or choose another path";
    int err = 0;
    if (socket_in_use(path, &err))
      return what + "another server is listening on it: stop that server, or choose another path";
    if (err != ECONNREFUSED)
      return what + "cannot tell whether the existing socket is in use (" + errno_sentence(err) +
             "): remove it if no server uses it";
    if (::unlink(path.c_str()) != 0)
      return what + "cannot remove the stale socket: " + errno_sentence(errno);
  } else if (errno != ENOENT) {
    return what + "cannot examine the path: " + errno_sentence(errno);
  }

  // Permissions are set before listen(): until then every connect is refused,
  // so nobody connects under the wrong mode or group.
  std::error_code ec;
  auto fail = [&](const std::string& sentence) {
    std::error_code ignored;
    m.acceptor.close(ignored);
    if (m.own_file) {
      m.remove_file();
    }
    return what + sentence;
  };
  m.acceptor.open(stream_protocol(), ec);
  if (ec) return fail("cannot create a socket: " + ec.message());
  m.acceptor.bind(stream_protocol::endpoint(path), ec);
  if (ec) {
    int err = ec.value();
    std::string dir = path.substr(0, std::max<std::size_t>(path.rfind('/'), 1));
    if (err == ENOENT)
      return fail("cannot bind: the directory " + dir + " does not exist: create it");
    if (err == EACCES)
      return fail("cannot bind: permission denied in " + dir +
                  ": run the server as a user who may write there, or choose another directory");
    return fail("cannot bind: " + ec.message());
  }
  if (::lstat(path.c_str(), &st) == 0) {
    m.own_file = true;
    m.dev = st.st_dev;
    m.ino = st.st_ino;
  }
  if (::chmod(path.c_str(), m.cfg.mode) != 0)
    return fail("cannot set its mode: " + errno_sentence(errno));
  if (!m.cfg.group.empty() && ::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    int err = errno;
    return fail("cannot give it to group " + m.cfg.group + ": " + errno_sentence(err) +
                (err == EPERM ? ": run the server as root or as a member of that group" : ""));
  }
  m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("cannot listen: " + ec.message());
  m.running = true;
  m.reserve.hold("control socket " + path);
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
  m.remove_file();
}

std::string ControlServer::handle_line(ControlApi& api, std::string_view line) {
  return control::dump(control::run_request(api, line).response);
}

}  // namespace mp
