// NbdPath: drives libnbd handles from the Asio event loop.
//
// Callback rules (libnbd): completion callbacks run with the handle's lock
// held, so they only record the result; .free runs exactly once per command
// (also on failed submission and nbd_close) and queues the command on its
// connection's `done` list. After every libnbd call returns, report_done() reports
// the queued commands to their sinks, outside the lock: a sink may submit
// again at once. Everything runs holding the loop lock (server/loop_lock.h):
// handlers on the loop thread, and submit() also on an nbdkit worker that
// took the lock (libnbd handles are thread-safe; the lock keeps the calls
// and this bookkeeping in order).
#include "server/nbd_path.h"

#include <libnbd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "server/fd_watch.h"
#include "server/loop_lock.h"
#include "server/reply_lease.h"

namespace mp {

namespace {

struct Cmd {
  NbdPath::Conn* conn;
  CommandSink* sink;  // nullptr when part of a split
  SplitJoin* split;
  bool replied = false;  // the completion callback ran
  int err = 0;
};

std::string last_error() {
  const char* e = nbd_get_error();
  return e && *e ? e : "";
}

// What a connected handle says about its export.
PathCaps read_caps(nbd_handle* h) {
  PathCaps k;
  k.size = static_cast<std::uint64_t>(std::max<int64_t>(nbd_get_size(h), 0));
  k.read_only = nbd_is_read_only(h) == 1;
  k.can_flush = nbd_can_flush(h) == 1;
  k.can_fua = nbd_can_fua(h) == 1;
  k.can_trim = nbd_can_trim(h) == 1;
  k.can_zero = nbd_can_zero(h) == 1;
  k.can_fast_zero = nbd_can_fast_zero(h) == 1;
  k.can_cache = nbd_can_cache(h) == 1;
  k.can_multi_conn = nbd_can_multi_conn(h) == 1;
  k.is_rotational = nbd_is_rotational(h) == 1;
  int64_t v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  if (v > 0) k.min_block = static_cast<std::uint32_t>(v);
  v = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  if (v > 0) k.pref_block = static_cast<std::uint32_t>(v);
  v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);  // 32 MiB when the server names none
  if (v > 0 && v < k.max_request) k.max_request = static_cast<std::uint32_t>(v);
  if (char* name = nbd_get_export_name(h)) {
    k.export_name = name;
    k.has_export_name = true;
    free(name);
  }
  // Sent only when asked for: nbd_set_full_info before connecting.
  if (char* desc = nbd_get_export_description(h)) {
    k.description = desc;
    k.has_description = true;
    free(desc);
  }
  return k;
}

}  // namespace

struct NbdPath::Conn : std::enable_shared_from_this<Conn> {
  NbdPath* owner;  // nullptr once the path is gone
  nbd_handle* h = nullptr;
  FdWatch watch;
  bool connecting = true;
  bool dead = false;     // reported dead to the owner
  bool retired = false;  // no new commands
  bool close_posted = false;
  bool reporting = false;  // in report_done(): a nested call leaves the queue to the outer loop
  bool lent = false;       // a worker reads the replies (Lease); the loop does not
  bool quiet = false;      // idle after a lease: unwatched until the next command
  unsigned inflight = 0;
  std::vector<Cmd*> done;
  std::string error;  // why the connection died, from the libnbd call that saw it

  void note(int rc) {
    if (rc == -1 && error.empty()) error = last_error();
  }
  std::string why() const {
    return error.empty() ? std::string("the server closed the connection") : error;
  }

  Conn(NbdPath* o) : owner(o), watch(o->io_) {}
  ~Conn() { close_now(); }

  static int on_complete(void* ud, int* error) {
    auto* c = static_cast<Cmd*>(ud);
    c->replied = true;
    c->err = *error;
    return 1;
  }
  static void on_free(void* ud) {
    auto* c = static_cast<Cmd*>(ud);
    c->conn->done.push_back(c);
  }

  int64_t issue(const Command& cmd, std::uint64_t offset, std::uint32_t count, std::byte* data,
                Cmd* c) {
    nbd_completion_callback cb{on_complete, c, on_free};
    std::uint32_t fua = (cmd.flags & kFua) ? LIBNBD_CMD_FLAG_FUA : 0;
    switch (cmd.op) {
      case Op::Read:
        return nbd_aio_pread(h, data, count, offset, cb, 0);
      case Op::Write:
        return nbd_aio_pwrite(h, data, count, offset, cb, fua);
      case Op::Flush:
        return nbd_aio_flush(h, cb, 0);
      case Op::Trim:
        return nbd_aio_trim(h, count, offset, cb, fua);
      case Op::Zero:
        return nbd_aio_zero(h, count, offset, cb,
                            fua | ((cmd.flags & kMayTrim) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE) |
                                ((cmd.flags & kFastZero) ? LIBNBD_CMD_FLAG_FAST_ZERO : 0));
      case Op::Cache:
        return nbd_aio_cache(h, count, offset, cb, 0);
    }
    return -1;
  }

  // Watches the handle's socket in the direction(s) libnbd wants.
  void arm() {
    // While connecting, libnbd may move to a host's next address on a new
    // socket with the old number.
    if (!h || close_posted || !watch.follow(nbd_aio_get_fd(h), connecting)) return;
    unsigned dir = nbd_aio_get_direction(h);
    auto self = shared_from_this();
    // libnbd waits to write only while connecting or when a request does
    // not fit the socket buffer.
    if (!(dir & LIBNBD_AIO_DIRECTION_WRITE)) watch.drop_write_interest();
    // Lent, the worker reads; quiet, nobody does (Lease).
    if ((dir & LIBNBD_AIO_DIRECTION_READ) && !lent && !(quiet && inflight == 0))
      watch.wait(FdWatch::Read, [self](bool ok) {
        if (!ok || !self->h || self->close_posted) return;
        if (self->lent) {  // a wait from before the lease: the worker reads
          self->watch.unwatch();
          return;
        }
        // The reactor's readiness may be stale: every wait re-arms the
        // edge-triggered registration, so a wait started while a reply was
        // waiting fires even after libnbd has read it. libnbd 1.14 trusts a
        // read notification: it leaves READY (or pauses a send) for
        // REPLY.START, and on EAGAIN stays there until a byte arrives, with
        // every new command queued behind it. With nothing else in flight no
        // byte ever comes and the path hangs (a paused send waits for a reply
        // the server cannot send before it has the whole request). So only
        // notify when there really is something to read.
        if (self->watch.readable()) self->note(nbd_aio_notify_read(self->h));
        self->after_io();
      });
    if (dir & LIBNBD_AIO_DIRECTION_WRITE)
      watch.wait(FdWatch::Write, [self](bool ok) {
        if (!ok || !self->h || self->close_posted) return;
        self->note(nbd_aio_notify_write(self->h));
        self->after_io();
      });
  }

  asio::io_context& owner_io() { return owner->io_; }

  // Reports finished commands, then connection state changes, then re-arms.
  void after_io() {
    auto self = shared_from_this();  // a sink may drop the owner's reference
    report_done();
    if (!owner || !h) return;
    bool is_dead = nbd_aio_is_dead(h) || nbd_aio_is_closed(h);
    if (connecting) {
      if (nbd_aio_is_ready(h)) {
        connecting = false;
        owner->conn_ready(*this);
      } else if (is_dead) {
        connecting = false;
        dead = true;
        owner->conn_dead(*this, "connect failed: " + why());
      }
    } else if (is_dead && !dead) {
      dead = true;
      owner->conn_dead(*this, "connection lost: " + why());
    }
    maybe_close();
    arm();
  }

  void report_done() {
    if (reporting) return;  // the outer loop picks up what a sink added
    reporting = true;
    while (!done.empty()) {
      std::vector<Cmd*> batch;
      batch.swap(done);
      bool is_dead = !h || nbd_aio_is_dead(h) || nbd_aio_is_closed(h);
      for (Cmd* c : batch) finish(c, is_dead);
    }
    reporting = false;
  }

  void finish(Cmd* c, bool is_dead) {
    inflight--;
    PathResult r;
    int err = c->err;
    if (c->replied && err == 0)
      r = PathResult::Ok;
    else if (!c->replied || (is_dead && (err == ENOTCONN || err == ESHUTDOWN || err == ECONNRESET ||
                                         err == EPIPE)))
      r = PathResult::TransportDead, err = err ? err : ENOTCONN;
    else
      r = PathResult::RemoteError;
    CommandSink* sink = c->sink;
    if (SplitJoin* s = c->split) sink = s->add(r, err);
    delete c;
    if (sink && owner) sink->command_done(r, err);
  }

  void maybe_close() {
    if (!retired || inflight || close_posted) return;
    close_posted = true;
    watch.cancel();
    auto self = shared_from_this();
    post_locked(owner_io(), [self] { self->close_now(); });
  }

  // Closes the handle. Commands still in flight are freed without a report
  // (only the path's destructor gets here with any).
  void close_now() {
    watch.stop();
    if (h) {
      nbd_close(h);
      h = nullptr;
    }
    for (Cmd* c : done) {
      if (c->split && --c->split->remaining == 0) delete c->split;
      delete c;
    }
    done.clear();
    if (owner) owner->conns_.remove(*this);
  }
};

// A worker's lease on a connection's reads (reply_lease.h). The socket
// leaves the loop's reactor, so that a reply wakes the worker alone. When the
// lease ends with nothing in flight the connection stays quiet, unwatched,
// until its next command: at queue depth 1 the socket is never registered
// again. A server that closes a quiet connection is noticed by that command,
// or by the checker's probe of the idle path (checker.interval).
class NbdPath::Lease final : public ReplyLease {
 public:
  explicit Lease(std::shared_ptr<Conn> c) : c_(std::move(c)) {
    c_->lent = true;
    c_->watch.unwatch();  // with the loop's wait pending: the loop wakes once more
  }
  int fd() const override {
    return c_->h && !c_->close_posted && !c_->dead ? nbd_aio_get_fd(c_->h) : -1;
  }
  // Called when the worker's poll saw the socket readable. Nobody else reads
  // a lent connection, so that readiness is fresh (FdWatch::readable() is the
  // loop's guard against stale readiness; not needed here).
  void read() override {
    if (fd() < 0) return;
    c_->note(nbd_aio_notify_read(c_->h));
    c_->after_io();
  }
  void end() override {
    c_->lent = false;
    c_->quiet = true;
    if (c_->h && !c_->close_posted) c_->after_io();
  }

 private:
  std::shared_ptr<Conn> c_;
};

NbdPath::NbdPath(asio::io_context& io, config::Path cfg, PathListener& listener)
    : io_(io), cfg_(std::move(cfg)), listener_(listener) {}

NbdPath::~NbdPath() {
  for (auto& c : conns_.take_all()) {
    c->owner = nullptr;
    c->close_now();
  }
}

unsigned NbdPath::retired_connections() const {
  return conns_.retired_count();
}

void NbdPath::connect() {
  disconnect();
  auto c = std::make_shared<Conn>(this);
  conns_.start(c);
  c->h = nbd_create();
  std::string err;
  if (!c->h) {
    err = "cannot create a libnbd handle: " + last_error();
  } else {
    nbd_set_pread_initialize(c->h, false);
    nbd_set_request_structured_replies(c->h, false);
    nbd_set_full_info(c->h, true);  // the export description, checked on every connection
    if (nbd_aio_connect_uri(c->h, cfg_.uri.c_str()) == -1) err = "connect failed: " + last_error();
  }
  if (!err.empty()) {
    c->connecting = false;
    c->dead = true;
    // Reported from the loop, not from inside the caller's connect().
    post_locked(io_, [c, err] {
      if (c->owner && c->owner->conns_.is_current(c)) c->owner->listener_.path_down(*c->owner, err);
    });
    return;
  }
  c->after_io();
}

void NbdPath::conn_ready(Conn& c) {
  if (!conns_.is_current(c)) return;
  caps_ = read_caps(c.h);
  listener_.path_connected(*this, caps_);
}

void NbdPath::conn_dead(Conn& c, const std::string& reason) {
  if (conns_.is_current(c)) listener_.path_down(*this, reason);
}

void NbdPath::disconnect() {
  auto c = conns_.retire();
  if (!c) return;
  c->retired = true;
  c->maybe_close();
}

bool NbdPath::submit(const Command& cmd, CommandSink* sink) {
  Conn* c = conns_.current();
  if (!c || c->connecting || c->dead || !c->h) return false;
  std::uint32_t max = caps_.max_request;
  bool split = (cmd.op == Op::Read || cmd.op == Op::Write) && cmd.count > max;
  std::uint32_t n = split ? (cmd.count + max - 1) / max : 1;
  auto send_part = [&](std::uint32_t i, CommandSink* part_sink, SplitJoin* join, int* err) {
    std::uint32_t off = i * max;
    std::uint32_t len = split ? std::min(max, cmd.count - off) : cmd.count;
    auto* x = new Cmd{c, part_sink, join};
    c->inflight++;
    if (c->issue(cmd, cmd.offset + off, len, cmd.data ? cmd.data + off : nullptr, x) != -1)
      return true;
    // .free already queued x: take it back, it never reaches the sink.
    *err = nbd_get_errno();
    std::erase(c->done, x);
    c->inflight--;
    delete x;
    return false;
  };
  c->quiet = false;
  if (!send_in_parts(n, sink, send_part)) return false;
  // Nothing else in flight here: the worker that sent this may read its reply.
  if (c->inflight == 1 && !c->lent && ReplyLease::offered())
    ReplyLease::lend(std::make_shared<Lease>(c->shared_from_this()));
  if (!c->done.empty()) {
    auto self = c->shared_from_this();
    post_locked(io_, [self] { self->after_io(); });
  }
  c->arm();
  return true;
}

bool nbd_probe_caps(const std::string& uri, std::chrono::milliseconds timeout, PathCaps* caps,
                    std::string* error) {
  nbd_handle* h = nbd_create();
  if (!h) {
    *error = "cannot create a libnbd handle: " + last_error();
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  nbd_set_full_info(h, true);
  bool ok = nbd_aio_connect_uri(h, uri.c_str()) != -1;
  while (ok && nbd_aio_is_connecting(h)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      *error = "connect timed out after " + std::to_string(timeout.count()) + " ms";
      nbd_close(h);
      return false;
    }
    ok = nbd_poll(h, static_cast<int>(std::min<long long>(left.count(), 100))) != -1;
  }
  if (!ok || !nbd_aio_is_ready(h)) {
    *error = last_error();
    if (error->empty()) *error = "the server closed the connection during the handshake";
    nbd_close(h);
    return false;
  }
  *caps = read_caps(h);
  nbd_shutdown(h, 0);
  nbd_close(h);
  return true;
}

}  // namespace mp
