// Unit tests for server/loop_lock.h: one lock per io_context, found from the
// io_context alone; wrapped handlers run holding it and are destroyed before
// it is released; post_locked runs on the io_context holding it.
#include <doctest/doctest.h>

#include <asio/io_context.hpp>
#include <memory>
#include <mutex>

#include "server/loop_lock.h"
#include "tests/unit/lock_probe.h"

using mp::test::held;

TEST_CASE("each io_context has one loop lock, found from the io_context alone") {
  asio::io_context a, b;
  std::mutex& first = mp::loop_mutex(a);
  CHECK(&first == &mp::loop_mutex(a));
  CHECK(&first != &mp::loop_mutex(b));
}

TEST_CASE("a locked handler runs holding the lock, and what it captured dies before the unlock") {
  std::mutex mu;
  struct Probe {
    std::mutex* mu;
    bool* held_at_death;
    ~Probe() {
      if (mu) *held_at_death = held(*mu);
    }
  };
  bool held_inside = false, held_at_death = false;
  auto probe = std::make_shared<Probe>(Probe{&mu, &held_at_death});
  auto fn =
      mp::locked(mu, [&, probe = std::move(probe)](int x) { held_inside = x == 7 && held(mu); });
  CHECK_FALSE(held(mu));
  fn(7);
  CHECK(held_inside);
  CHECK(held_at_death);  // the last reference went inside the lock
  CHECK_FALSE(held(mu));
}

TEST_CASE("post_locked runs the function on the io_context, holding its loop lock") {
  asio::io_context io;
  bool ran = false, was_held = false;
  mp::post_locked(io, [&] {
    ran = true;
    was_held = held(mp::loop_mutex(io));
  });
  CHECK_FALSE(ran);  // posted, not run inline
  io.run();
  CHECK(ran);
  CHECK(was_held);
  CHECK_FALSE(held(mp::loop_mutex(io)));
}
