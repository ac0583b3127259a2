// Runs an Asio io_context on the test thread: until a condition holds (with a deadline), or for a
// while, so that what must not happen has its chance to. No sleeps.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <functional>

namespace mp::test {

// Runs handlers until `done` holds, for at most `limit`. Returns done().
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < end) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(50));
  }
  return done();
}

// Runs handlers for `d`.
inline void run_for(asio::io_context& io, std::chrono::milliseconds d) {
  io.restart();
  io.run_for(d);
}

}  // namespace mp::test
