// Unit tests for server/request.cc and server/wake_fd.cc: a worker that reads its own reply
// (Request::wait_reading) returns when its request completed, whichever thread completed it,
// and leaves no wake-up behind; wake descriptors go back to a pool and are never closed.
//
// The engine runs over FakePaths with the fake clock; a std::mutex plays the loop lock. A worker
// thread submits and waits; the test thread plays the loop. Every wait is bounded: a worker that
// does not return in time is released through its lease's descriptor, and the test fails.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "server/wake_fd.h"
#include "tests/unit/fakes.h"

using namespace mp;
using namespace mp::test;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    close(r);
    close(w);
  }
  void poke() const {
    char c = 1;
    REQUIRE(write(w, &c, 1) == 1);
  }
  void drain() const {
    char buf[16];
    while (read(r, buf, sizeof buf) > 0) {
    }
  }
};

// What the worker saw.
struct Outcome {
  int err = -1;
  bool lent = false;
  bool wake_left = true;  // its wake descriptor still signalled after it returned
};

// A worker: submits a 4 KiB read holding `mu`, as Service::io does, and waits for it.
Outcome worker(Engine& e, std::mutex& mu) {
  Outcome o;
  Request r;
  r.op = Op::Read;
  r.count = 4096;
  std::unique_lock<std::mutex> lock(mu);
  REQUIRE(thread_wake_fd() >= 0);
  std::shared_ptr<ReplyLease> lease;
  {
    ReplyLease::Offer offer;
    e.submit(r);
    lease = offer.take();
  }
  o.lent = lease != nullptr;
  if (lease)
    r.wait_reading(std::move(lease), lock);
  else
    lock.unlock();
  r.wait();
  o.err = r.err;
  pollfd p{thread_wake_fd(), POLLIN, 0};
  o.wake_left = poll(&p, 1, 0) == 1;
  return o;
}

// One path, A, up, lending its replies through `pipe`.
struct Rig {
  Harness h{make_config({"A"})};
  std::mutex mu;
  Pipe pipe;
  Rig() {
    h.bring_up_all();
    h.p("A").lend_fd = pipe.r;
  }
  // The index of the worker's read once it was sent.
  std::size_t sent_read() {
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      {
        std::lock_guard<std::mutex> hold(mu);
        auto v = h.p("A").pending(Op::Read, 0);
        for (std::size_t k : v)
          if (h.p("A").sent[k].cmd.count == 4096) return k;
      }
      std::this_thread::yield();
    }
    FAIL("the worker's read was never sent");
    return 0;
  }
  // The worker's outcome, or a failure after 10 s (the worker is released first).
  Outcome join(std::future<Outcome>& f) {
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      {
        std::lock_guard<std::mutex> hold(mu);
        h.p("A").on_lease_read = [] {};
      }
      pipe.poke();  // its poll returns, it sees the request done
      f.wait();
      FAIL("the worker did not return while its request was done");
    }
    return f.get();
  }
};

}  // namespace

TEST_CASE("a worker that reads its own reply returns when its lease's read completed it") {
  Rig rig;
  FakePath& a = rig.h.p("A");
  a.on_lease_read = [&] {
    rig.pipe.drain();
    for (std::size_t k : a.pending(Op::Read, 0)) a.complete(k);
  };
  auto f = std::async(std::launch::async, [&] { return worker(*rig.h.engine, rig.mu); });
  rig.sent_read();
  rig.pipe.poke();  // the reply arrives
  Outcome o = rig.join(f);
  CHECK(o.lent);
  CHECK(o.err == 0);
  CHECK_FALSE(o.wake_left);  // completed on its own thread: nothing signalled
  std::lock_guard<std::mutex> hold(rig.mu);
  CHECK(a.lease_reads >= 1);
  CHECK(a.leases_ended == 1);
}

TEST_CASE("a worker polling its lease returns when another thread completed its request") {
  Rig rig;
  FakePath& a = rig.h.p("A");
  auto f = std::async(std::launch::async, [&] { return worker(*rig.h.engine, rig.mu); });
  std::size_t k = rig.sent_read();
  {
    std::lock_guard<std::mutex> hold(rig.mu);  // the loop: the reply came on its side
    a.complete(k);
  }
  Outcome o = rig.join(f);
  CHECK(o.lent);
  CHECK(o.err == 0);
  CHECK_FALSE(o.wake_left);  // the signal that woke it was consumed
  std::lock_guard<std::mutex> hold(rig.mu);
  CHECK(a.lease_reads == 0);
  CHECK(a.leases_ended == 1);
}

TEST_CASE("a stale wake-up does not end a worker's wait early") {
  Rig rig;
  FakePath& a = rig.h.p("A");
  std::promise<int> fd_of_worker;
  auto f = std::async(std::launch::async, [&] {
    fd_of_worker.set_value(thread_wake_fd());
    return worker(*rig.h.engine, rig.mu);
  });
  int wfd = fd_of_worker.get_future().get();
  REQUIRE(wfd >= 0);
  std::size_t k = rig.sent_read();
  signal_wake_fd(wfd);  // a late signal for an earlier request of that thread
  // The worker wakes, finds its request not done, and waits on.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{wfd, POLLIN, 0};
    if (poll(&p, 1, 0) == 0) break;
    std::this_thread::yield();
  }
  CHECK(f.wait_for(std::chrono::milliseconds(50)) == std::future_status::timeout);
  {
    std::lock_guard<std::mutex> hold(rig.mu);
    a.complete(k);
  }
  Outcome o = rig.join(f);
  CHECK(o.err == 0);
}

TEST_CASE("a thread's wake descriptor goes back to the pool, open, when the thread ends") {
  int first = -1, second = -1;
  std::thread([&] { first = thread_wake_fd(); }).join();
  REQUIRE(first >= 0);
  CHECK(fcntl(first, F_GETFD) != -1);  // still open: a late signal never hits a reused number
  std::thread([&] {
    second = thread_wake_fd();
    CHECK(current_wake_fd() == second);
  }).join();
  CHECK(second == first);
  std::thread([&] { CHECK(current_wake_fd() == -1); }).join();  // none until asked for
}
