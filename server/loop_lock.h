// The loop lock: one mutex per io_context that guards the engine, the paths,
// their libnbd/libiscsi handles, their FdWatch objects and the loop's timer.
//
// The loop thread takes it around every handler of ours (locked(), and
// EventLoop::post, FdWatch and the paths use it); an nbdkit worker thread
// takes it with try_lock to submit its own request while the loop is idle
// (Service::io), which saves the loop's wake-up for the hand-off. See
// README.md, "Threads and the loop lock".
//
// Rules: only a handler's outermost frame locks (no handler is ever run
// inline from another, so it is never taken twice); nothing blocks while
// holding it; Asio objects (stream_descriptor, steady_timer) are touched
// only under it, while Asio's reactor itself is thread-safe.
#pragma once

#include <asio/execution_context.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <mutex>
#include <utility>

namespace mp {

// The mutex lives in an Asio service, so anything holding an io_context&
// finds the same one without plumbing.
class LoopLock final : public asio::execution_context::service {
 public:
  static inline asio::execution_context::id id;
  explicit LoopLock(asio::execution_context& ctx) : service(ctx) {}
  std::mutex& mutex() { return mu_; }

 private:
  void shutdown() override {}
  std::mutex mu_;
};

inline std::mutex& loop_mutex(asio::io_context& io) {
  return asio::use_service<LoopLock>(io).mutex();
}

// Wraps a handler so that it runs holding `mu`. The handler object (and what
// it captured, such as the last reference to a connection) is destroyed
// before the lock is released.
template <class Fn>
auto locked(std::mutex& mu, Fn fn) {
  return [mu = &mu, fn = std::move(fn)](auto&&... args) mutable {
    std::lock_guard<std::mutex> hold(*mu);
    Fn call = std::move(fn);
    call(std::forward<decltype(args)>(args)...);
  };
}

// asio::post of fn, run holding the loop lock of `io`.
template <class Fn>
void post_locked(asio::io_context& io, Fn fn) {
  asio::post(io, locked(loop_mutex(io), std::move(fn)));
}

}  // namespace mp
