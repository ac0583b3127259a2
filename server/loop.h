// The event loop: one Asio io_context on one thread that drives every path
// handle, plus the Runtime the engine sees (steady clock, random source, one
// timer for the engine's timer queue, and a log sink). Its handlers run
// holding the loop lock (server/loop_lock.h), as does whoever else calls
// into the engine.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "server/loop_lock.h"
#include "server/runtime.h"

namespace mp {

class EventLoop final : public Runtime {
 public:
  using Logger = std::function<void(LogLevel, const std::string&)>;
  explicit EventLoop(Logger logger);
  ~EventLoop() override;  // stops and joins

  asio::io_context& io() { return io_; }
  // The loop lock (loop_lock.h): held by every function posted here and by
  // the wake-up call; an nbdkit worker may take it to call the engine itself.
  std::mutex& mutex() { return mu_; }
  // Called on the loop thread when the engine's wake-up time has come.
  void on_wake(std::function<void()> fn) { on_wake_ = std::move(fn); }
  void start();  // spawns the loop thread
  void stop();   // lets the loop finish and joins it; from any other thread

  // Runs fn on the loop thread, holding the loop lock.
  template <class F>
  void post(F&& fn) {
    asio::post(io_, locked(mu_, std::decay_t<F>(std::forward<F>(fn))));
  }
  // Runs fn on the loop thread, holding the loop lock, and waits for it;
  // from any other thread, never holding the lock.
  void run_sync(const std::function<void()>& fn);

  // Runtime (holding the loop lock: the loop thread, or a worker that took it)
  Clock::time_point now() const override { return Clock::now(); }
  std::uint64_t random() override { return rng_(); }
  // The latest wish wins. On the loop thread an earlier pending wake-up is
  // cancelled; elsewhere (a worker submitting) it is left to expire as a
  // no-op, since cancelling a wait from another thread wakes the loop.
  void wake_at(Clock::time_point when) override;
  void log(LogLevel level, const std::string& line) override { logger_(level, line); }

 private:
  asio::io_context io_{1};  // concurrency hint 1: one thread runs it (locking stays on)
  std::mutex& mu_ = loop_mutex(io_);
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  struct Wake {
    explicit Wake(asio::io_context& io) : timer(io) {}
    asio::steady_timer timer;
    bool pending = false;  // a wait is out on it
    unsigned armed = 0;    // the wish of that wait
  };
  static constexpr std::size_t kMaxWakes = 4;
  std::vector<std::unique_ptr<Wake>> wakes_;  // grows to a few at most
  unsigned wake_gen_ = 0;                     // the latest wish; older ones fire as no-ops
  std::function<void()> on_wake_;
  Logger logger_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::thread thread_;
};

}  // namespace mp
