// Hedged reads: the adaptive threshold and the budget (see hedge.h).
#include "server/hedge.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mp {

void HedgePolicy::configure(const config::Hedge& cfg) {
  const bool percentile_changed = cfg.percentile != cfg_.percentile;
  cfg_ = cfg;
  if (percentile_changed) since_refresh_ = kRefresh;  // recompute at the next delay()
}

void HedgePolicy::read_seen() {
  budget_ = std::min<std::uint64_t>(kBurst * 100, budget_ + cfg_.max_share);
}

void HedgePolicy::record(std::chrono::nanoseconds d) {
  ns_[next_] = std::max<std::int64_t>(d.count(), 0);
  next_ = (next_ + 1) % kWindow;
  count_ = std::min(count_ + 1, kWindow);
  since_refresh_++;
}

std::optional<std::chrono::nanoseconds> HedgePolicy::delay() {
  if (!cfg_.enabled || count_ < kMinSamples) return std::nullopt;
  // A sort of a copy every kRefresh replies: a few microseconds, amortized.
  if (!threshold_ || since_refresh_ >= kRefresh) {
    std::vector<std::int64_t> v(ns_.begin(), ns_.begin() + static_cast<std::ptrdiff_t>(count_));
    auto rank = static_cast<std::size_t>(std::ceil(cfg_.percentile / 100.0 * count_));
    rank = std::clamp<std::size_t>(rank, 1, count_) - 1;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
    threshold_ = v[rank];
    since_refresh_ = 0;
  }
  return std::max<std::chrono::nanoseconds>(std::chrono::nanoseconds(*threshold_), cfg_.min_delay);
}

bool HedgePolicy::try_take() {
  if (budget_ < 100) {
    counters_.refused++;
    return false;
  }
  budget_ -= 100;
  counters_.sent++;
  return true;
}

}  // namespace mp
