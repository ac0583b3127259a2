// Unit tests for server/loop.h: work posted to the loop runs on its thread in order, run_sync
// waits for it, the wake-up timer keeps only the latest wish, stop joins the thread, and
// posted work and the wake-up run holding the loop lock.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/loop.h"
#include "tests/unit/lock_probe.h"

using namespace std::chrono_literals;

namespace {

// Something the loop thread signals and the test thread waits for, with a
// deadline instead of a sleep.
class Signal {
 public:
  void set() {
    std::lock_guard<std::mutex> lock(mu_);
    n_++;
    cv_.notify_all();
  }
  // True once set() was called `n` times, false after five seconds.
  bool wait(int n = 1) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 5s, [&] { return n_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_ = 0;
};

mp::EventLoop::Logger no_log() {
  return [](mp::LogLevel, const std::string&) {};
}

}  // namespace

TEST_CASE("post runs each function on the loop thread, in the order posted") {
  mp::EventLoop loop(no_log());
  loop.start();
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 100; i++)
    loop.post([&, i] {
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
    });
  Signal done;
  loop.post([&] { done.set(); });
  REQUIRE(done.wait());
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; i++) CHECK(order[i] == i);
  for (auto id : threads) {
    CHECK(id != std::this_thread::get_id());
    CHECK(id == threads.front());
  }
  loop.stop();
}

TEST_CASE("run_sync returns after the function ran on the loop thread") {
  mp::EventLoop loop(no_log());
  loop.start();
  std::thread::id posted_on, synced_on;
  loop.post([&] { posted_on = std::this_thread::get_id(); });
  int value = 0;
  loop.run_sync([&] {
    for (int i = 0; i < 1000; i++) std::this_thread::yield();  // the caller must not go on early
    value = 42;
    synced_on = std::this_thread::get_id();
  });
  CHECK(value == 42);
  CHECK(synced_on == posted_on);  // one loop thread
  CHECK(synced_on != std::this_thread::get_id());
  loop.stop();
}

TEST_CASE("on_wake fires once, at the latest wake_at, on the loop thread") {
  mp::EventLoop loop(no_log());
  std::vector<mp::Clock::time_point> fired;
  std::thread::id loop_thread, wake_thread;
  Signal woke;
  loop.on_wake([&] {
    fired.push_back(mp::Clock::now());
    wake_thread = std::this_thread::get_id();
    woke.set();
  });
  loop.start();
  mp::Clock::time_point latest;
  loop.run_sync([&] {
    loop_thread = std::this_thread::get_id();
    auto t = loop.now();
    loop.wake_at(t + 30ms);
    latest = t + 60ms;
    loop.wake_at(latest);  // replaces the earlier wish
  });
  REQUIRE(woke.wait());
  loop.run_sync([] {});  // a stray earlier wake-up would have run before the later one
  REQUIRE(fired.size() == 1);
  CHECK(fired[0] >= latest);
  CHECK(wake_thread == loop_thread);
  loop.stop();
}

TEST_CASE("wake-ups set one after another fire in order; one in the past fires at once") {
  mp::EventLoop loop(no_log());
  std::vector<int> order;
  Signal woke;
  loop.on_wake([&] {
    order.push_back(static_cast<int>(order.size()));
    if (order.size() < 3) loop.wake_at(loop.now() + 5ms);  // the next wish, from the callback
    woke.set();
  });
  loop.start();
  loop.run_sync([&] { loop.wake_at(loop.now() - 1s); });
  REQUIRE(woke.wait(3));
  loop.run_sync([] {});
  CHECK(order == std::vector<int>{0, 1, 2});
  loop.stop();
}

TEST_CASE("stop waits for the running function and joins; a pending wake-up never fires") {
  std::atomic<bool> started{false}, go{false}, finished{false};
  int wakes = 0;
  {
    mp::EventLoop loop(no_log());
    loop.on_wake([&] { wakes++; });
    loop.start();
    loop.run_sync([&] { loop.wake_at(loop.now() + 1h); });
    loop.post([&] {
      started = true;
      auto deadline = mp::Clock::now() + 5s;
      while (!go && mp::Clock::now() < deadline) std::this_thread::yield();
      for (int i = 0; i < 1000; i++) std::this_thread::yield();  // stop must wait for this
      finished = true;
    });
    auto deadline = mp::Clock::now() + 5s;
    while (!started && mp::Clock::now() < deadline) std::this_thread::yield();
    REQUIRE(started);
    go = true;
    loop.stop();
    CHECK(finished);
    loop.stop();  // a second stop is harmless
  }               // and so is the destructor after it
  CHECK(wakes == 0);
  mp::EventLoop never_started(no_log());
  never_started.stop();  // nothing to join
}

TEST_CASE("log goes to the logger; now is the steady clock; random varies") {
  std::vector<std::pair<mp::LogLevel, std::string>> lines;
  mp::EventLoop loop([&](mp::LogLevel l, const std::string& s) { lines.emplace_back(l, s); });
  loop.log(mp::LogLevel::Error, "e");
  loop.log(mp::LogLevel::Debug, "d");
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == std::pair<mp::LogLevel, std::string>{mp::LogLevel::Error, "e"});
  CHECK(lines[1] == std::pair<mp::LogLevel, std::string>{mp::LogLevel::Debug, "d"});
  auto before = mp::Clock::now();
  auto t = loop.now();
  CHECK(t >= before);
  CHECK(t <= mp::Clock::now());
  std::uint64_t a = loop.random(), b = loop.random(), c = loop.random();
  CHECK_FALSE((a == b && b == c));
}

TEST_CASE("posted functions and the wake-up call run holding the loop lock") {
  mp::EventLoop loop(no_log());
  CHECK(&loop.mutex() == &mp::loop_mutex(loop.io()));  // the one the paths find
  bool posted_held = false, wake_held = false;
  Signal woke;
  loop.on_wake([&] {
    wake_held = mp::test::held(loop.mutex());
    woke.set();
  });
  loop.start();
  loop.run_sync([&] {
    posted_held = mp::test::held(loop.mutex());
    loop.wake_at(loop.now());
  });
  CHECK(posted_held);
  REQUIRE(woke.wait());
  CHECK(wake_held);
  loop.stop();
}

TEST_CASE("a thread holding the loop lock may set the wake-up; only the latest wish fires") {
  mp::EventLoop loop(no_log());
  std::thread::id loop_thread, wake_thread;
  int wakes = 0;
  Signal woke;
  loop.on_wake([&] {
    wakes++;
    wake_thread = std::this_thread::get_id();
    woke.set();
  });
  loop.start();
  loop.run_sync([&] {
    loop_thread = std::this_thread::get_id();
    loop.wake_at(loop.now() + 1h);  // pending on the loop's side
  });
  {
    std::lock_guard<std::mutex> hold(loop.mutex());  // as an nbdkit worker does (Service::io)
    // Earlier and earlier wishes from this thread, more than the loop keeps
    // timers for: the pending ones are left to expire as no-ops, or re-armed.
    for (int i = 6; i >= 1; i--) loop.wake_at(loop.now() + i * 1h);
    loop.wake_at(loop.now() + 2ms);
  }
  REQUIRE(woke.wait());
  loop.run_sync([] {});
  CHECK(wakes == 1);
  CHECK(wake_thread == loop_thread);
  loop.stop();
  CHECK(wakes == 1);
}
