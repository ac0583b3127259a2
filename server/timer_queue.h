// One-shot timers keyed by deadline: the engine's own, so tests can drive time.
//
// Single-threaded: the engine's, holding the loop lock (or a test's thread). Nothing here reads a
// clock; the owner says what `now` is and asks its Runtime for a wake-up at
// next().
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>

#include "server/selector.h"  // Clock

namespace mp {

class TimerQueue {
 public:
  struct Key {
    Clock::time_point when{};
    std::uint64_t seq = 0;  // 0: not armed
    auto operator<=>(const Key&) const = default;
  };
  Key arm(Clock::time_point when, std::function<void()> fn);
  // Disarms the timer if it is armed, and clears the key.
  void cancel(Key& key);
  bool empty() const { return q_.empty(); }
  Clock::time_point next() const { return q_.begin()->first.when; }
  // Runs every timer due at `now`; a timer armed meanwhile for <= now runs too.
  void run_due(Clock::time_point now);

 private:
  std::map<Key, std::function<void()>> q_;
  std::uint64_t seq_ = 1;  // the next key's seq; never 0
};

}  // namespace mp
