// Unit tests for server/nbd_path.h against a real nbdkit (memory plugin) on a Unix socket: the
// capabilities, data, the split of large commands, a dying server, retired connections, and a
// worker's lease on a connection's replies.
//
// Each test starts its own nbdkit by socket activation: the listening socket is made here, in a
// mkdtemp directory, before nbdkit runs, so a connect never races its start-up and nothing waits
// for a pid file. nbdkit runs with --exit-with-parent, and the Server destructor kills and reaps it
// even when a check failed. The Asio loop runs on the test thread, with a deadline.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio/io_context.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/loop_lock.h"
#include "server/nbd_path.h"
#include "server/reply_lease.h"
#include "tests/unit/io_wait.h"

using namespace std::chrono_literals;
using mp::test::run_for;
using mp::test::run_until;

namespace {

bool have_nbdkit() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    if (!dir.empty() && access((dir + "/nbdkit").c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

#define SKIP_WITHOUT_NBDKIT()                       \
  if (!have_nbdkit()) {                             \
    MESSAGE("nbdkit is not on PATH: test skipped"); \
    return;                                         \
  }

// One nbdkit, socket-activated: `args` go after "nbdkit --exit-with-parent".
class Server {
 public:
  explicit Server(const std::vector<std::string>& args) {
    char tmpl[] = "/tmp/mp-nbdpath-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    sock_ = dir_ + "/nbd.sock";
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock_.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(listen(fd, 16) == 0);

    std::vector<std::string> argv_s = {"nbdkit", "--exit-with-parent"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // The child: the socket becomes descriptor 3 (LISTEN_FDS_START).
      if (fd == 3)
        fcntl(3, F_SETFD, 0);
      else if (dup2(fd, 3) != 3)
        _exit(127);
      char pid[32];
      std::snprintf(pid, sizeof pid, "%d", static_cast<int>(getpid()));
      setenv("LISTEN_PID", pid, 1);
      setenv("LISTEN_FDS", "1", 1);
      execvp("nbdkit", argv.data());
      _exit(127);
    }
    close(fd);  // nbdkit holds it now: when it dies, connects are refused
  }
  ~Server() {
    kill_now();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // SIGKILL, then reaped.
  void kill_now() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string uri() const { return "nbd+unix:///?socket=" + sock_; }

 private:
  pid_t pid_ = -1;
  std::string dir_, sock_;
};

struct Listener final : mp::PathListener {
  int connected = 0;
  mp::PathCaps caps;
  std::vector<std::string> downs;
  void path_connected(mp::Path&, const mp::PathCaps& c) override {
    connected++;
    caps = c;
  }
  void path_down(mp::Path&, const std::string& reason) override { downs.push_back(reason); }
};

struct Sink final : mp::CommandSink {
  int calls = 0;
  mp::PathResult result = mp::PathResult::Ok;
  int err = -1;
  void command_done(mp::PathResult r, int e) override {
    calls++;
    result = r;
    err = e;
  }
};

mp::config::Path path_config(const Server& s) {
  mp::config::Path p;
  p.name = "a";
  p.uri = s.uri();
  return p;
}

mp::Command cmd(mp::Op op, std::uint64_t offset, std::vector<std::byte>& buf,
                std::uint32_t flags = 0) {
  mp::Command c;
  c.op = op;
  c.offset = offset;
  c.count = static_cast<std::uint32_t>(buf.size());
  c.flags = flags;
  c.data = buf.data();
  return c;
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; i++) b[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return b;
}

// Connects `path` and runs the loop until the listener hears of it.
void connect(asio::io_context& io, mp::NbdPath& path, Listener& l) {
  int before = l.connected;
  path.connect();
  REQUIRE(run_until(io, [&] { return l.connected > before || !l.downs.empty(); }));
  REQUIRE(l.downs.empty());
}

// Submits and runs the loop until the sink hears.
void roundtrip(asio::io_context& io, mp::NbdPath& path, const mp::Command& c, Sink& s) {
  int before = s.calls;
  REQUIRE(path.submit(c, &s));
  REQUIRE(run_until(io, [&] { return s.calls > before; }));
}

// A server, a loop on the test thread, a listener, and a path to the server, connected.
struct Rig {
  Server server;
  asio::io_context io;
  Listener l;
  mp::NbdPath path;
  explicit Rig(const std::vector<std::string>& args)
      : server(args), path(io, path_config(server), l) {
    connect(io, path, l);
  }
};

}  // namespace

TEST_CASE("connect reports path_connected with the export's capabilities") {
  SKIP_WITHOUT_NBDKIT();
  Server server({"memory", "size=1M"});
  asio::io_context io;
  Listener l;
  mp::NbdPath path(io, path_config(server), l);
  CHECK(path.name() == "a");
  CHECK(path.uri() == server.uri());
  connect(io, path, l);
  CHECK(l.connected == 1);
  CHECK(l.caps.size == 1u << 20);
  CHECK_FALSE(l.caps.read_only);
  CHECK(l.caps.can_flush);
  CHECK(l.caps.can_fua);
  CHECK(l.caps.can_trim);
  CHECK(l.caps.can_zero);
  CHECK(l.caps.can_fast_zero);
  CHECK(l.caps.can_cache);
  CHECK(l.caps.can_multi_conn);
  CHECK_FALSE(l.caps.is_rotational);
  CHECK(l.caps.min_block == 1);
  CHECK(l.caps.max_request == 32u << 20);  // the server names no usable maximum
  CHECK(l.caps.has_export_name);
  CHECK(l.caps.export_name.empty());
  CHECK(path.retired_connections() == 0);
}

TEST_CASE("a read-only export and its description reach the capabilities") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"-r", "--filter=exportname", "memory", "size=64K", "exportdesc=fixed:the test disk"});
  auto& [server, io, l, path] = rig;
  CHECK(l.caps.size == 64u << 10);
  CHECK(l.caps.read_only);
  CHECK(l.caps.has_description);
  CHECK(l.caps.description == "the test disk");
}

TEST_CASE("a write then a read returns the data; flush, trim and zero succeed") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"memory", "size=1M"});
  auto& [server, io, l, path] = rig;

  auto data = pattern(64 << 10, 7);
  Sink w;
  roundtrip(io, path, cmd(mp::Op::Write, 4096, data, mp::kFua), w);
  CHECK(w.calls == 1);
  CHECK(w.result == mp::PathResult::Ok);
  CHECK(w.err == 0);

  std::vector<std::byte> back(data.size());
  Sink r;
  roundtrip(io, path, cmd(mp::Op::Read, 4096, back), r);
  CHECK(r.result == mp::PathResult::Ok);
  CHECK(back == data);

  mp::Command flush;
  flush.op = mp::Op::Flush;
  Sink f;
  roundtrip(io, path, flush, f);
  CHECK(f.result == mp::PathResult::Ok);

  mp::Command trim;
  trim.op = mp::Op::Trim;
  trim.offset = 512 << 10;  // away from the data
  trim.count = 4096;
  Sink t;
  roundtrip(io, path, trim, t);
  CHECK(t.result == mp::PathResult::Ok);

  mp::Command zero;
  zero.op = mp::Op::Zero;
  zero.offset = 4096;
  zero.count = 4096;
  Sink z;
  roundtrip(io, path, zero, z);
  CHECK(z.result == mp::PathResult::Ok);
  Sink r2;
  roundtrip(io, path, cmd(mp::Op::Read, 4096, back), r2);
  CHECK(std::all_of(back.begin(), back.begin() + 4096,
                    [](std::byte b) { return b == std::byte{0}; }));
  CHECK(std::equal(back.begin() + 4096, back.end(), data.begin() + 4096));

  // libnbd refuses a read past the end before sending it: nothing was sent.
  std::vector<std::byte> tail(8192);
  Sink bad;
  CHECK_FALSE(path.submit(cmd(mp::Op::Read, (1u << 20) - 4096, tail), &bad));
  run_for(io, 20ms);
  CHECK(bad.calls == 0);
  CHECK(l.downs.empty());
}

TEST_CASE("a command larger than the server's maximum is split, and its parts join") {
  SKIP_WITHOUT_NBDKIT();
  // Requests over 64 KiB fail with EINVAL at the server: only a split succeeds.
  Rig rig({"--filter=blocksize-policy", "memory", "size=1M", "blocksize-maximum=64K",
           "blocksize-error-policy=error"});
  auto& [server, io, l, path] = rig;
  REQUIRE(l.caps.max_request == 64u << 10);

  auto data = pattern((256 + 4) << 10, 3);  // four whole parts and a short one
  Sink w;
  roundtrip(io, path, cmd(mp::Op::Write, 8192, data), w);
  run_for(io, 50ms);  // a part reporting on its own would show now
  CHECK(w.calls == 1);
  CHECK(w.result == mp::PathResult::Ok);
  CHECK(w.err == 0);

  std::vector<std::byte> back(data.size());
  Sink r;
  roundtrip(io, path, cmd(mp::Op::Read, 8192, back), r);
  run_for(io, 50ms);
  CHECK(r.calls == 1);
  CHECK(r.result == mp::PathResult::Ok);
  CHECK(back == data);

  // A later part cannot be sent (libnbd refuses the part past the end): the part on the wire
  // still ends the command, once, as TransportDead.
  std::vector<std::byte> over(128 << 10);
  Sink o;
  REQUIRE(path.submit(cmd(mp::Op::Read, (1u << 20) - (64u << 10), over), &o));
  REQUIRE(run_until(io, [&] { return o.calls >= 1; }));
  run_for(io, 50ms);
  CHECK(o.calls == 1);
  CHECK(o.result == mp::PathResult::TransportDead);
  CHECK(o.err != 0);
}

TEST_CASE("a server's error is RemoteError with its errno, and the connection stays up") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"--filter=error", "memory", "size=1M", "error-pread=EIO", "error-pread-rate=100%"});
  auto& [server, io, l, path] = rig;
  std::vector<std::byte> buf(4096);
  Sink r;
  roundtrip(io, path, cmd(mp::Op::Read, 0, buf), r);
  CHECK(r.result == mp::PathResult::RemoteError);
  CHECK(r.err == EIO);
  auto data = pattern(4096, 1);
  Sink w;
  roundtrip(io, path, cmd(mp::Op::Write, 0, data), w);
  CHECK(w.result == mp::PathResult::Ok);
  CHECK(l.downs.empty());
}

TEST_CASE("a killed server ends commands in flight with TransportDead, and the path goes down") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"--filter=delay", "memory", "size=1M", "rdelay=30s"});
  auto& [server, io, l, path] = rig;

  std::vector<std::byte> bufs[3] = {std::vector<std::byte>(4096), std::vector<std::byte>(4096),
                                    std::vector<std::byte>(4096)};
  Sink sinks[3];
  for (int i = 0; i < 3; i++) REQUIRE(path.submit(cmd(mp::Op::Read, i * 4096, bufs[i]), &sinks[i]));
  run_for(io, 100ms);  // on the wire, and waiting on the server
  for (auto& s : sinks) CHECK(s.calls == 0);

  server.kill_now();
  REQUIRE(run_until(
      io, [&] { return sinks[0].calls && sinks[1].calls && sinks[2].calls && !l.downs.empty(); }));
  for (auto& s : sinks) {
    CHECK(s.calls == 1);
    CHECK(s.result == mp::PathResult::TransportDead);
    CHECK(s.err != 0);
  }
  REQUIRE(l.downs.size() == 1);
  CHECK(l.downs[0].find("connection lost") != std::string::npos);
  std::vector<std::byte> more(4096);
  Sink late;
  CHECK_FALSE(path.submit(cmd(mp::Op::Read, 0, more), &late));  // no ready connection
  run_for(io, 50ms);
  CHECK(late.calls == 0);
  CHECK(l.downs.size() == 1);
}

TEST_CASE("connecting to a socket nobody listens on reports path_down") {
  SKIP_WITHOUT_NBDKIT();
  Server server({"memory", "size=1M"});
  mp::config::Path cfg = path_config(server);
  server.kill_now();  // the socket file stays, refused
  asio::io_context io;
  Listener l;
  mp::NbdPath path(io, cfg, l);
  std::vector<std::byte> buf(512);
  Sink s;
  CHECK_FALSE(path.submit(cmd(mp::Op::Read, 0, buf), &s));  // never connected
  path.connect();
  REQUIRE(run_until(io, [&] { return !l.downs.empty(); }));
  CHECK(l.connected == 0);
  CHECK(l.downs.size() == 1);
  CHECK(l.downs[0].find("connect failed") != std::string::npos);
  CHECK_FALSE(path.submit(cmd(mp::Op::Read, 0, buf), &s));
  CHECK(s.calls == 0);
}

TEST_CASE("disconnect keeps the retired connection until its commands finish") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"--filter=delay", "memory", "size=1M", "rdelay=500ms"});
  auto& [server, io, l, path] = rig;

  std::vector<std::byte> buf(4096, std::byte{0xee});
  Sink s;
  REQUIRE(path.submit(cmd(mp::Op::Read, 0, buf), &s));
  path.disconnect();
  CHECK(path.retired_connections() == 1);
  std::vector<std::byte> other(4096);
  Sink refused;
  CHECK_FALSE(path.submit(cmd(mp::Op::Read, 0, other), &refused));  // no current connection

  // A new current connection while the old one still carries the read.
  connect(io, path, l);
  CHECK(l.connected == 2);
  CHECK(s.calls == 0);
  CHECK(path.retired_connections() == 1);

  // The server answers late: the read completes, then the old connection closes.
  REQUIRE(run_until(io, [&] { return s.calls == 1; }));
  CHECK(s.result == mp::PathResult::Ok);
  CHECK(buf == std::vector<std::byte>(4096, std::byte{0}));
  REQUIRE(run_until(io, [&] { return path.retired_connections() == 0; }));
  CHECK(l.downs.empty());
  CHECK(refused.calls == 0);

  // The new connection works.
  auto data = pattern(4096, 9);
  Sink w;
  roundtrip(io, path, cmd(mp::Op::Write, 0, data), w);
  CHECK(w.result == mp::PathResult::Ok);

  // An idle connection closes at once when retired.
  path.disconnect();
  REQUIRE(run_until(io, [&] { return path.retired_connections() == 0; }));
}

TEST_CASE("destroying the path with commands in flight never calls their sinks") {
  SKIP_WITHOUT_NBDKIT();
  Server server({"--filter=delay", "memory", "size=1M", "rdelay=30s"});
  asio::io_context io;
  Listener l;
  Sink s;
  std::vector<std::byte> buf(4096);
  {
    mp::NbdPath path(io, path_config(server), l);
    connect(io, path, l);
    REQUIRE(path.submit(cmd(mp::Op::Read, 0, buf), &s));
    run_for(io, 50ms);
  }
  run_for(io, 50ms);  // whatever the path left posted runs without it
  CHECK(s.calls == 0);
  CHECK(l.downs.empty());
}

// The test thread plays the worker: it submits under an offer, then reads through the lease
// holding the loop lock, as Request::wait_reading does.
namespace {
bool wait_readable(int fd, int ms = 10000) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, ms) == 1;
}

// Submits `c` under an offer, holding the loop lock, and returns the lease (null: not lent).
std::shared_ptr<mp::ReplyLease> submit_offered(asio::io_context& io, mp::NbdPath& path,
                                               const mp::Command& c, Sink& s) {
  std::lock_guard<std::mutex> hold(mp::loop_mutex(io));
  mp::ReplyLease::Offer offer;
  REQUIRE(path.submit(c, &s));
  return offer.take();
}

// Reads through the lease until the sink heard (a reply may come in more than one piece).
void read_until_done(asio::io_context& io, mp::ReplyLease& lease, int fd, const Sink& s) {
  for (int i = 0; i < 100 && s.calls == 0 && wait_readable(fd); i++) {
    std::lock_guard<std::mutex> hold(mp::loop_mutex(io));
    lease.read();
  }
}

// Ends the lease and drops it, holding the loop lock.
void end_lease(asio::io_context& io, std::shared_ptr<mp::ReplyLease>& lease) {
  std::lock_guard<std::mutex> hold(mp::loop_mutex(io));
  lease->end();
  lease.reset();
}
}  // namespace

TEST_CASE("a command sent under an offer lends its reply to the sender; the loop leaves it") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"memory", "size=1M"});
  auto& [server, io, l, path] = rig;

  auto data = pattern(4096, 5);
  Sink w;
  roundtrip(io, path, cmd(mp::Op::Write, 0, data), w);

  std::vector<std::byte> back(4096);
  Sink r;
  auto lease = submit_offered(io, path, cmd(mp::Op::Read, 0, back), r);
  REQUIRE(lease);
  int fd = lease->fd();
  REQUIRE(fd >= 0);
  REQUIRE(wait_readable(fd));
  // The reply is there, but the loop does not read a lent connection.
  run_for(io, 50ms);
  CHECK(r.calls == 0);
  read_until_done(io, *lease, fd, r);
  CHECK(r.calls == 1);
  CHECK(r.result == mp::PathResult::Ok);
  CHECK(back == data);

  // Sent without an offer while still lent: nobody reads it until the lease ends, then the loop.
  Sink r2;
  REQUIRE(path.submit(cmd(mp::Op::Read, 0, back), &r2));
  run_for(io, 50ms);
  CHECK(r2.calls == 0);
  end_lease(io, lease);
  REQUIRE(run_until(io, [&] { return r2.calls == 1; }));
  CHECK(r2.result == mp::PathResult::Ok);
  CHECK(l.downs.empty());
}

TEST_CASE("a connection with a command in flight is not lent; one offer takes one lease") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"--filter=delay", "memory", "size=1M", "rdelay=200ms"});
  auto& [server, io, l, path] = rig;
  std::vector<std::byte> a(4096), b(4096), c(4096);
  Sink sa, sb, sc;
  REQUIRE(path.submit(cmd(mp::Op::Read, 0, a), &sa));  // in flight, read by the loop
  {
    mp::ReplyLease::Offer offer;
    REQUIRE(path.submit(cmd(mp::Op::Read, 4096, b), &sb));
    CHECK_FALSE(offer.take());
  }
  REQUIRE(run_until(io, [&] { return sa.calls == 1 && sb.calls == 1; }));
  std::shared_ptr<mp::ReplyLease> lease;
  {
    mp::ReplyLease::Offer offer;
    REQUIRE(path.submit(cmd(mp::Op::Read, 0, c), &sc));
    CHECK_FALSE(mp::ReplyLease::offered());  // taken
    lease = offer.take();
  }
  REQUIRE(lease);
  lease->end();
  lease.reset();
  REQUIRE(run_until(io, [&] { return sc.calls == 1; }));
  CHECK(sc.result == mp::PathResult::Ok);
}

TEST_CASE("a lent connection whose server dies ends its command as TransportDead") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"--filter=delay", "memory", "size=1M", "rdelay=30s"});
  auto& [server, io, l, path] = rig;
  std::mutex& mu = mp::loop_mutex(io);
  std::vector<std::byte> buf(4096);
  Sink s;
  auto lease = submit_offered(io, path, cmd(mp::Op::Read, 0, buf), s);
  REQUIRE(lease);
  int fd = lease->fd();
  server.kill_now();
  REQUIRE(wait_readable(fd));  // EOF
  {
    std::lock_guard<std::mutex> hold(mu);
    lease->read();
    CHECK(lease->fd() == -1);  // nothing more to poll there
  }
  CHECK(s.calls == 1);
  CHECK(s.result == mp::PathResult::TransportDead);
  REQUIRE(l.downs.size() == 1);
  CHECK(l.downs[0].find("connection lost") != std::string::npos);
  end_lease(io, lease);
  run_for(io, 50ms);
  CHECK(l.downs.size() == 1);
}

TEST_CASE(
    "a quiet connection is unwatched; a server that closed it is noticed by the next command") {
  SKIP_WITHOUT_NBDKIT();
  Rig rig({"memory", "size=1M"});
  auto& [server, io, l, path] = rig;
  std::vector<std::byte> buf(4096);
  Sink s;
  auto lease = submit_offered(io, path, cmd(mp::Op::Read, 0, buf), s);
  REQUIRE(lease);
  int fd = lease->fd();
  REQUIRE(wait_readable(fd));
  // The loop's wait from before the lease (the idle connection's) fires with the reply, and
  // leaves the socket to the worker: out of the reactor.
  run_for(io, 50ms);
  CHECK(s.calls == 0);
  read_until_done(io, *lease, fd, s);
  REQUIRE(s.calls == 1);
  end_lease(io, lease);  // nothing in flight: quiet
  server.kill_now();
  REQUIRE(wait_readable(fd));  // EOF is there, and no wait of the loop's sees it
  run_for(io, 100ms);
  CHECK(l.downs.empty());

  // The next command (a checker probe, or a client request) finds the connection dead: it ends as
  // TransportDead, which the engine fails over, and the path goes down.
  Sink next;
  if (path.submit(cmd(mp::Op::Read, 0, buf), &next))
    REQUIRE(run_until(io, [&] { return next.calls == 1; }));
  REQUIRE(run_until(io, [&] { return !l.downs.empty(); }));
  CHECK((next.calls == 0 || next.result == mp::PathResult::TransportDead));
  CHECK(l.downs[0].find("connection lost") != std::string::npos);
}
