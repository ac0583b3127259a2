// The event loop thread (see loop.h).
#include "server/loop.h"

#include <future>

namespace mp {

EventLoop::EventLoop(Logger logger)
    : work_(asio::make_work_guard(io_)), timer_(io_), logger_(std::move(logger)) {}

EventLoop::~EventLoop() {
  stop();
}

void EventLoop::start() {
  thread_ = std::thread([this] { io_.run(); });
}

void EventLoop::stop() {
  if (!thread_.joinable()) return;
  post([this] { timer_.cancel(); });
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
  timer_.expires_at(when);  // cancels the previous wait
  timer_.async_wait([this](std::error_code ec) {
    if (!ec && on_wake_) on_wake_();
  });
}

}  // namespace mp
