// What the engine needs from the world around it: time, randomness, a wake-up
// call and a log. Injected, so unit tests drive the engine with a fake clock
// and no sleeps.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mp {

using Clock = std::chrono::steady_clock;

// Debug: only with -D multipath.verbose=1. Notice: routine events an
// operator may want to see (a path entering service, a group change, a
// reload, an operator action). Warning: a routine event with client-visible
// effect. Error: a failure, logged once (plugin/log.cc says where each goes).
enum class LogLevel { Debug, Notice, Warning, Error };

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual Clock::time_point now() const = 0;
  virtual std::uint64_t random() = 0;
  // The engine wants Engine::run_timers() called at (or soon after) `when`.
  // A later call replaces the earlier wish.
  virtual void wake_at(Clock::time_point when) = 0;
  // One line for the operator (Notice, Warning, Error) or for -D multipath.verbose=1 (Debug).
  virtual void log(LogLevel level, const std::string& line) = 0;
};

}  // namespace mp
