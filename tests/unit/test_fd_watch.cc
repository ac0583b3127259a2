// Unit tests for server/fd_watch.h on socket pairs: waits fire once per
// readiness, a replaced descriptor's wait completes cancelled without
// disturbing the new one, the watch never closes what it watched, and
// completions run holding the loop lock.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include "server/fd_watch.h"
#include "tests/unit/io_wait.h"
#include "tests/unit/lock_probe.h"

namespace {

struct Pair {
  int fd[2] = {-1, -1};
  Pair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd) == 0); }
  ~Pair() {
    for (int f : fd)
      if (f >= 0) close(f);
  }
};

using mp::test::run_until;

bool is_open(int fd) {
  return fcntl(fd, F_GETFD) != -1;
}

// The events the process's epoll sets (Asio's reactor: one per io_context)
// watch on `fd`, read from /proc/self/fdinfo; -1 when none watches it.
long epoll_events(int fd) {
  namespace fs = std::filesystem;
  long found = -1;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;  // an entry may be closed by now: it does not match then
    if (fs::read_symlink(e.path(), ec) != "anon_inode:[eventpoll]") continue;
    std::ifstream info("/proc/self/fdinfo/" + e.path().filename().string());
    for (std::string line; std::getline(info, line);) {
      std::istringstream in(line);
      std::string tag, events_tag;
      int tfd = -1;
      if (in >> tag >> tfd >> events_tag && tag == "tfd:" && tfd == fd) in >> std::hex >> found;
    }
  }
  return found;
}

}  // namespace

TEST_CASE("a read wait fires once the peer writes, and readable() agrees") {
  asio::io_context io;
  Pair p;
  mp::FdWatch w(io);
  REQUIRE(w.follow(p.fd[0]));
  CHECK_FALSE(w.readable());
  int fired = 0, ok = 0;
  w.wait(mp::FdWatch::Read, [&](bool good) { fired++, ok += good; });
  w.wait(mp::FdWatch::Read, [&](bool) { FAIL("a second wait in one direction was started"); });
  io.poll();
  CHECK(fired == 0);
  REQUIRE(write(p.fd[1], "x", 1) == 1);
  REQUIRE(run_until(io, [&] { return fired == 1; }));
  CHECK(ok == 1);
  CHECK(w.readable());
  char c;
  REQUIRE(read(p.fd[0], &c, 1) == 1);
  CHECK_FALSE(w.readable());
  close(p.fd[1]), p.fd[1] = -1;
  CHECK(w.readable());  // EOF is something to read
}

TEST_CASE("a write wait on a socket with room fires at once") {
  asio::io_context io;
  Pair p;
  mp::FdWatch w(io);
  REQUIRE(w.follow(p.fd[0]));
  bool ok = false;
  w.wait(mp::FdWatch::Write, [&](bool good) { ok = good; });
  CHECK(run_until(io, [&] { return ok; }));
}

TEST_CASE("following another descriptor cancels the old wait, and only the new one counts") {
  asio::io_context io;
  Pair a, b;
  mp::FdWatch w(io);
  REQUIRE(w.follow(a.fd[0]));
  int old_calls = 0, old_ok = 0, new_calls = 0;
  w.wait(mp::FdWatch::Read, [&](bool good) { old_calls++, old_ok += good; });
  REQUIRE(w.follow(b.fd[0]));
  w.wait(mp::FdWatch::Read, [&](bool) { new_calls++; });
  REQUIRE(run_until(io, [&] { return old_calls == 1; }));
  CHECK(old_ok == 0);  // cancelled, not ready
  // The old wait's completion must not have cleared the new wait's flag:
  // another wait now is a no-op, so readiness is reported once.
  w.wait(mp::FdWatch::Read, [&](bool) { new_calls++; });
  REQUIRE(write(b.fd[1], "x", 1) == 1);
  REQUIRE(run_until(io, [&] { return new_calls >= 1; }));
  io.restart();
  io.poll();
  CHECK(new_calls == 1);
  CHECK(is_open(a.fd[0]));  // followed away from, not closed
}

TEST_CASE("a new socket under the old number is registered afresh when it may be reopened") {
  asio::io_context io;
  Pair a;
  mp::FdWatch w(io);
  REQUIRE(w.follow(a.fd[0]));
  int old_calls = 0, old_ok = 0;
  w.wait(mp::FdWatch::Read, [&](bool good) { old_calls++, old_ok += good; });
  io.poll();
  // What libnbd does when a host's first address fails: close the socket,
  // open another, which gets the lowest free number: the same one.
  const int number = a.fd[0];
  close(a.fd[0]);
  a.fd[0] = -1;
  Pair b;
  if (b.fd[0] != number) {  // make sure, whatever the allocator did
    REQUIRE(dup2(b.fd[0], number) == number);
    close(b.fd[0]);
    b.fd[0] = number;
  }
  REQUIRE(w.follow(number, true));
  REQUIRE(run_until(io, [&] { return old_calls == 1; }));
  CHECK(old_ok == 0);  // the old socket's wait was cancelled
  bool ok = false;
  w.wait(mp::FdWatch::Read, [&](bool good) { ok = good; });
  REQUIRE(write(b.fd[1], "x", 1) == 1);
  CHECK(run_until(io, [&] { return ok; }));
}

TEST_CASE("stop cancels pending waits and leaves the descriptor open") {
  asio::io_context io;
  Pair p;
  int calls = 0, ok = 0;
  {
    mp::FdWatch w(io);
    REQUIRE(w.follow(p.fd[0]));
    w.wait(mp::FdWatch::Read, [&](bool good) { calls++, ok += good; });
    w.stop();
    CHECK_FALSE(w.follow(-1));  // no descriptor: nothing to wait on
    w.wait(mp::FdWatch::Read, [&](bool) { FAIL("a wait without a descriptor was started"); });
    REQUIRE(run_until(io, [&] { return calls == 1; }));
  }
  CHECK(ok == 0);
  CHECK(is_open(p.fd[0]));
  REQUIRE(write(p.fd[1], "x", 1) == 1);  // still a working socket
  char c;
  CHECK(read(p.fd[0], &c, 1) == 1);
}

TEST_CASE("a wait's completion runs holding the loop lock, and may be started by another thread") {
  asio::io_context io;
  Pair p;
  mp::FdWatch w(io);
  std::mutex& lock = mp::loop_mutex(io);
  bool fired = false, was_held = false;
  std::thread([&] {  // as an nbdkit worker submitting under the lock does
    std::lock_guard<std::mutex> hold(lock);
    CHECK(w.follow(p.fd[0]));
    w.wait(mp::FdWatch::Read, [&](bool ok) {
      fired = ok;
      was_held = mp::test::held(lock);
    });
  })
      .join();
  REQUIRE(write(p.fd[1], "x", 1) == 1);
  REQUIRE(run_until(io, [&] { return fired; }));
  CHECK(was_held);
  CHECK_FALSE(mp::test::held(lock));
}

TEST_CASE(
    "after a write wait, the descriptor is watched for EPOLLOUT only until the owner drops it") {
  asio::io_context io;
  Pair p;
  mp::FdWatch w(io);
  REQUIRE(w.follow(p.fd[0]));
  REQUIRE(epoll_events(p.fd[0]) != -1);
  CHECK((epoll_events(p.fd[0]) & EPOLLOUT) == 0);
  bool wrote = false;
  w.wait(mp::FdWatch::Write, [&](bool good) { wrote = good; });
  REQUIRE(run_until(io, [&] { return wrote; }));
  CHECK((epoll_events(p.fd[0]) & EPOLLOUT) != 0);  // Asio keeps it

  // Not while a wait is pending: registering afresh would cancel it.
  int fired = 0;
  w.wait(mp::FdWatch::Read, [&](bool good) { fired += good; });
  w.drop_write_interest();
  CHECK((epoll_events(p.fd[0]) & EPOLLOUT) != 0);
  REQUIRE(write(p.fd[1], "x", 1) == 1);
  REQUIRE(run_until(io, [&] { return fired == 1; }));

  w.drop_write_interest();
  long ev = epoll_events(p.fd[0]);
  CHECK(ev != -1);
  CHECK((ev & EPOLLOUT) == 0);
  CHECK((ev & EPOLLIN) != 0);
  // The fresh registration still delivers reads.
  w.wait(mp::FdWatch::Read, [&](bool good) { fired += good; });
  REQUIRE(run_until(io, [&] { return fired == 2; }));
  CHECK(is_open(p.fd[0]));
}
