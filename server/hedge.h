// Hedged reads: when a read has waited long enough to be sent again, and whether the budget allows.
//
// The idea ("The Tail at Scale", Dean and Barroso): a read still unanswered
// after the p95 of recent read latency is probably stuck behind something
// (a stall on its path, a slow disk behind one server); a second copy sent
// to another path usually answers first. The cost is extra reads, so a
// budget bounds them to a share of the reads seen.
//
//   threshold = max(min-delay, the percentile of the last kWindow read
//               attempts' latency); none until kMinSamples replies are known
//   budget    = a token bucket: every client read adds max-share/100 of a
//               token, up to kBurst; a hedge takes one; none left: refused
//
// The engine (engine_hedge.cc) decides where a hedge may go and what happens
// to the two replies; this class holds only the numbers, so it is tested
// without an engine. No clock: "recent" means the last kWindow replies.
//
// Single-threaded: used by the engine, holding the loop lock.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "config/config.h"

namespace mp {

class HedgePolicy {
 public:
  static constexpr std::size_t kWindow = 512;     // replies the percentile is taken over
  static constexpr std::size_t kMinSamples = 20;  // replies needed before any hedge
  static constexpr std::size_t kRefresh = 32;     // new replies between recomputations
  static constexpr unsigned kBurst = 10;          // hedges the budget can save up

  struct Counters {
    std::uint64_t sent = 0;     // hedges sent
    std::uint64_t won = 0;      // requests completed by their hedge's reply
    std::uint64_t refused = 0;  // hedges due but refused by the budget
  };

  void configure(const config::Hedge& cfg);
  bool enabled() const { return cfg_.enabled; }

  // A client read arrived: the budget grows by max-share/100 of a hedge.
  void read_seen();
  // A read attempt's good reply came after `d`.
  void record(std::chrono::nanoseconds d);
  // How long a read waits before it is hedged; nullopt while hedging is off
  // or fewer than kMinSamples replies are known.
  std::optional<std::chrono::nanoseconds> delay();
  // A hedge is due: takes one from the budget (counts it sent), or counts it
  // refused and returns false.
  bool try_take();
  void won() { counters_.won++; }

  const Counters& counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }

 private:
  config::Hedge cfg_;
  std::array<std::int64_t, kWindow> ns_{};  // ring of reply latencies in ns
  std::size_t count_ = 0;                   // replies recorded, up to kWindow
  std::size_t next_ = 0;                    // where the next one goes
  std::size_t since_refresh_ = 0;           // replies since threshold_ was computed
  std::optional<std::int64_t> threshold_;   // the percentile, cached
  // The budget in hundredths of a hedge (exact: a read adds max-share of
  // them, a hedge takes 100), 0..kBurst * 100.
  std::uint64_t budget_ = 0;
  Counters counters_;
};

}  // namespace mp
