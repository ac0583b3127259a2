// Whether some thread holds a mutex, asked from a thread of its own (a
// std::mutex must not be try-locked by the thread that may hold it).
#pragma once

#include <mutex>
#include <thread>

namespace mp::test {

inline bool held(std::mutex& m) {
  bool got = false;
  std::thread([&] {
    if (m.try_lock()) {
      got = true;
      m.unlock();
    }
  }).join();
  return !got;
}

}  // namespace mp::test
