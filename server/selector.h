// Path selectors: which usable path of a group carries the next request.
//
// The verbs follow Linux dm-path-selector.h. A selector only sees small path
// ids and the numbers below; it never touches a connection. All calls happen
// holding the loop lock (or on a unit test's thread), so there is no locking here.
//
// Busy backpressure: every path has a cap on requests in flight. select_path
// never returns a path at its cap; when every usable path is at its cap it
// returns nullopt and the engine keeps the request waiting.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "config/config.h"

namespace mp {

using PathId = std::uint32_t;
using Clock = std::chrono::steady_clock;

struct SelectorPathParams {
  unsigned weight = 1;         // round-robin share
  unsigned max_inflight = 64;  // busy cap
  double throughput = 1.0;     // relative throughput (service-time)
};

class Selector {
 public:
  virtual ~Selector() = default;

  // A new path joins, usable (not failed) and idle.
  virtual void add_path(PathId id, const SelectorPathParams& params) = 0;
  virtual void remove_path(PathId id) = 0;
  // A failed path is never selected until reinstated. Its in-flight counts are
  // kept: end_io still arrives for requests that were on it.
  virtual void fail_path(PathId id) = 0;
  virtual void reinstate_path(PathId id) = 0;

  // Picks a usable path below its cap for a request of nr_bytes.
  virtual std::optional<PathId> select_path(std::uint64_t nr_bytes) = 0;
  // Bracket every request sent on a path (after select_path chose it, or when
  // the engine sends on a path itself, e.g. a flush to each dirty path).
  virtual void start_io(PathId id, std::uint64_t nr_bytes) = 0;
  virtual void end_io(PathId id, std::uint64_t nr_bytes, Clock::time_point start) = 0;

  // True if the path is usable (not failed), busy or not.
  virtual bool usable(PathId id) const = 0;
  // True if some path is usable (busy or not).
  virtual bool has_usable_path() const = 0;
  // True if the path is usable and below its cap.
  virtual bool can_take(PathId id) const = 0;
};

using SelectorPtr = std::unique_ptr<Selector>;

// Time and randomness for the selectors that need them (latency). Both
// empty: the steady clock and a fixed-seed generator. Tests inject their own.
struct SelectorEnv {
  std::function<Clock::time_point()> now;
  std::function<std::uint64_t()> random;
};

// Factory for the selector named in the configuration.
SelectorPtr make_selector(config::SelectorKind kind, const SelectorEnv& env = {});

}  // namespace mp
