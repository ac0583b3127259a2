// Latency outlier detection: which paths of a group are much slower than
// their peers (marginal), and when they are not any more.
//
// A gray failure: a path that answers, only slowly (a marginal link, an
// overloaded server, a disk retrying behind one server). It never fails, so
// failover never moves I/O off it, and each request it carries sits in the
// disk's tail latency. The detector compares each path's median latency over
// a window with its peers' and says which path to make marginal and which to
// re-admit. It only advises: the engine owns the state (Active <-> Marginal
// in path_state.cc), the probes of marginal paths and the rule that the last
// active path of a group is never made marginal.
//
// Rules, with the configuration's names (config::Outlier):
// * a verdict needs evidence: the path and each peer it is compared with
//   have at least min-samples replies in the last `window`;
// * made marginal: an active path whose median is above `ratio` x its peers'
//   (the median of the other active paths' medians) and at least
//   `min-difference` above it; only while that leaves at least one active path
//   in the group and at most `max-share` percent of its paths marginal;
// * re-admitted: after base-ejection-time x (times made marginal), capped at
//   max-ejection-time, once its probes' median (min-samples of them, taken
//   since it was made marginal) is at most `readmit-ratio` x its peers' (or
//   less than min-difference above them), or when no peer has enough samples
//   to compare with;
// * a path that stays active for max-ejection-time has its count restart.
//
// Memory: at most kMaxSamples samples per path. Runs holding the loop lock (or
// on a test's thread); time comes in as arguments, so tests need no clock.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/selector.h"

namespace mp {

class OutlierDetector {
 public:
  static constexpr std::size_t kMaxSamples = 4096;

  // One path of a group as the engine sees it now.
  struct Member {
    PathId id = 0;
    bool active = false;    // serving I/O
    bool marginal = false;  // made marginal by this detector
  };
  enum class Verdict : std::uint8_t { MakeMarginal, Readmit };
  struct Decision {
    PathId id = 0;
    Verdict verdict = Verdict::MakeMarginal;
    std::string reason;  // with the numbers, for show paths, events and logs
  };
  // What show paths and the metrics report about a path.
  struct Stats {
    unsigned ejections = 0;   // times made marginal, in all
    unsigned count = 0;       // the current multiplier of base-ejection-time
    double median_us = 0;     // over the window (0: no samples)
    std::size_t samples = 0;  // in the window
  };

  OutlierDetector() = default;
  explicit OutlierDetector(const config::Outlier& cfg) : cfg_(cfg) {}
  void configure(const config::Outlier& cfg) { cfg_ = cfg; }

  // A successful reply of `latency` on path id, at `now`.
  void record(PathId id, Clock::time_point now, std::chrono::nanoseconds latency);
  // The decisions for one group, in order. Made-marginal decisions respect
  // the share cap and leave at least one active path, counting the ones
  // already decided in this call.
  std::vector<Decision> evaluate(Clock::time_point now, const std::vector<Member>& group);
  // The engine applied a decision (or the operator cleared a marginal path:
  // readmitted with operator = true, which also restarts its count).
  void made_marginal(PathId id, Clock::time_point now);
  void readmitted(PathId id, Clock::time_point now, bool by_operator);
  void forget(PathId id) {
    if (id < paths_.size()) paths_[id] = PathData{};
  }

  // True when an active path has too few samples in the window to be judged
  // while a peer has enough: the engine measures it with probe reads.
  bool wants_probe(PathId id, Clock::time_point now, const std::vector<Member>& group);
  Stats stats(PathId id, Clock::time_point now);

 private:
  struct Sample {
    Clock::time_point at;
    double us;
  };
  struct PathData {
    std::deque<Sample> samples;  // oldest first, within the window (pruned lazily)
    unsigned ejections = 0;
    unsigned count = 0;  // multiplier of base-ejection-time
    Clock::time_point marginal_since{}, active_since{};
  };

  void prune(PathData& d, Clock::time_point now) const;
  // Median of the samples in the window at or after `since`; 0 when fewer than min_samples.
  double median(PathData& d, Clock::time_point now, Clock::time_point since = {});
  // Median of the other active members' medians; 0 when none has enough samples.
  double peers(PathId self, Clock::time_point now, const std::vector<Member>& group);
  Clock::duration ejection_time(const PathData& d) const;

  config::Outlier cfg_;
  std::vector<PathData> paths_;  // by PathId (dense: the engine's slot index)
  PathData& data(PathId id) {
    if (id >= paths_.size()) paths_.resize(id + 1);
    return paths_[id];
  }
  std::vector<double> scratch_;
};

}  // namespace mp
