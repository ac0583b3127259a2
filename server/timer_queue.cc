// One-shot timers keyed by deadline (see timer_queue.h).
#include "server/timer_queue.h"

#include <utility>

namespace mp {

TimerQueue::Key TimerQueue::arm(Clock::time_point when, std::function<void()> fn) {
  Key k{when, seq_++};
  q_.emplace(k, std::move(fn));
  return k;
}

void TimerQueue::cancel(Key& key) {
  if (key.seq) q_.erase(key);
  key = Key{};
}

void TimerQueue::run_due(Clock::time_point now) {
  while (!q_.empty() && q_.begin()->first.when <= now) {
    auto fn = std::move(q_.begin()->second);
    q_.erase(q_.begin());
    fn();
  }
}

}  // namespace mp
