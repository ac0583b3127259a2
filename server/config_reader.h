// Reads and validates the configuration file for a reload on a thread of its
// own, so that the event loop never waits on the file system or a group
// lookup (getgrnam_r may ask a directory service); the loop only applies a
// finished Config. Answers come back on the loop thread, in request order.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "config/config.h"

namespace mp {

class EventLoop;

class ConfigReader {
 public:
  using Done = std::function<void(config::LoadResult)>;

  explicit ConfigReader(EventLoop& loop);
  ~ConfigReader();  // stop()
  ConfigReader(const ConfigReader&) = delete;
  ConfigReader& operator=(const ConfigReader&) = delete;

  // Loads `file`; `done` runs later on the loop thread, unless stop() came
  // first. From the loop thread.
  void read(std::string file, Done done);
  // No `done` runs after this returns; a read in progress is waited for.
  // From any thread but the loop's (the reader posts to it).
  void stop();

 private:
  struct Job {
    std::string file;
    Done done;
  };
  void run();

  EventLoop& loop_;
  // Shared with answers posted to the loop: they run `done` only while live.
  std::shared_ptr<bool> live_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // started by the first read()
};

}  // namespace mp
