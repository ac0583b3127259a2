// The event loop: one Asio io_context on one thread that owns every path
// handle, plus the Runtime the engine sees (steady clock, random source, one
// timer for the engine's timer queue, and a log sink).
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "server/runtime.h"

namespace mp {

class EventLoop final : public Runtime {
 public:
  using Logger = std::function<void(LogLevel, const std::string&)>;
  explicit EventLoop(Logger logger);
  ~EventLoop() override;  // stops and joins

  asio::io_context& io() { return io_; }
  // Called on the loop thread when the engine's wake-up time has come.
  void on_wake(std::function<void()> fn) { on_wake_ = std::move(fn); }
  void start();  // spawns the loop thread
  void stop();   // lets the loop finish and joins it; from any other thread

  // Runs fn on the loop thread.
  template <class F>
  void post(F&& fn) {
    asio::post(io_, std::forward<F>(fn));
  }
  // Runs fn on the loop thread and waits for it; from any other thread.
  void run_sync(const std::function<void()>& fn);

  // Runtime (loop thread)
  Clock::time_point now() const override { return Clock::now(); }
  std::uint64_t random() override { return rng_(); }
  void wake_at(Clock::time_point when) override;
  void log(LogLevel level, const std::string& line) override { logger_(level, line); }

 private:
  asio::io_context io_{1};  // concurrency hint 1: one thread runs it
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::steady_timer timer_;
  std::function<void()> on_wake_;
  Logger logger_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;
};

}  // namespace mp
