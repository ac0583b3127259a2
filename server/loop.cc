// The event loop thread (see loop.h).
#include "server/loop.h"

#include <future>

namespace mp {

EventLoop::EventLoop(Logger logger)
    : work_(asio::make_work_guard(io_)), logger_(std::move(logger)) {}

EventLoop::~EventLoop() {
  stop();
}

void EventLoop::start() {
  thread_ = std::thread([this] { io_.run(); });
}

void EventLoop::stop() {
  if (!thread_.joinable()) return;
  post([this] {
    for (auto& w : wakes_) w->timer.cancel();
  });
  work_.reset();
  io_.stop();
  thread_.join();
}

void EventLoop::run_sync(const std::function<void()>& fn) {
  std::promise<void> done;
  post([&] {
    fn();
    done.set_value();
  });
  done.get_future().wait();
}

void EventLoop::wake_at(Clock::time_point when) {
  const bool on_loop = io_.get_executor().running_in_this_thread();
  Wake* use = nullptr;
  for (auto& w : wakes_) {
    if (!w->pending) {
      if (!use) use = w.get();
    } else if (on_loop) {
      w->timer.cancel();  // completes as a no-op, without a system call
    }
  }
  if (!use && wakes_.size() >= kMaxWakes) use = wakes_.front().get();  // re-armed: woken now
  if (!use) use = wakes_.emplace_back(std::make_unique<Wake>(io_)).get();
  const unsigned gen = ++wake_gen_;
  use->pending = true;
  use->armed = gen;
  use->timer.expires_at(when);  // cancels a wait still out on it
  use->timer.async_wait(locked(mu_, [this, use, gen](std::error_code ec) {
    if (use->armed == gen) use->pending = false;
    if (!ec && gen == wake_gen_ && on_wake_) on_wake_();
  }));
}

}  // namespace mp
