// The latency selector: power of two choices over a peak-sensitive, decaying
// estimate of each path's time per request (see selector_latency.cc).
#pragma once

#include <chrono>

#include "server/selector.h"

namespace mp {

// Tunables of the latency selector. The defaults are what the engine uses.
struct LatencySelectorParams {
  // Time constant of the estimate's average: after a peak, good replies
  // bring it down by e every `decay`.
  std::chrono::nanoseconds decay = std::chrono::milliseconds(100);
  // An idle path's estimate shrinks by e every `idle_decay`, so a path nobody
  // picks is tried again (and measured) after a few of them.
  std::chrono::nanoseconds idle_decay = std::chrono::milliseconds(1000);
};

SelectorPtr make_latency_selector(const SelectorEnv& env, const LatencySelectorParams& p = {});

}  // namespace mp
