// See config_reader.h.
#include "server/config_reader.h"

#include <utility>

#include "server/loop.h"

namespace mp {

ConfigReader::ConfigReader(EventLoop& loop) : loop_(loop), live_(std::make_shared<bool>(true)) {}

ConfigReader::~ConfigReader() {
  stop();
}

void ConfigReader::read(std::string file, Done done) {
  std::lock_guard lock(mu_);
  if (stopping_) return;
  jobs_.push_back(Job{std::move(file), std::move(done)});
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  cv_.notify_one();
}

void ConfigReader::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    auto result = std::make_shared<config::LoadResult>(config::load_file(job.file));
    // `live_` is read and cleared on the loop thread only: stop() clears it
    // there, so an answer queued before stop() finds it false.
    loop_.post([live = live_, done = std::move(job.done), result]() mutable {
      if (*live) done(std::move(*result));
    });
    lock.lock();
  }
}

void ConfigReader::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    jobs_.clear();
  }
  cv_.notify_one();
  if (!thread_.joinable()) return;  // never read: nothing was posted
  thread_.join();
  loop_.run_sync([live = live_] { *live = false; });
}

}  // namespace mp
