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
// * like is compared with like: replies are kept by request size class
//   (up to 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, 4 MiB, larger), and a path
//   is judged in the class where it has the most replies among those its
//   peers have enough replies in too (a 1 MiB read is not slower than a
//   512-byte probe because its path is slow);
// * a verdict needs evidence: the path and each peer it is compared with
//   have at least min-samples replies of that class in the last `window`;
// * made marginal: an active path whose median is above `ratio` x its peers'
//   (the median of the other active paths' medians, in the same class) and at least
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

#include <array>
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
  static constexpr unsigned kClasses = 7;  // request size classes, see size_class()

  // 0: up to 4 KiB, 1: up to 16 KiB, ... 5: up to 4 MiB, 6: larger.
  static unsigned size_class(std::uint32_t bytes);
  // The largest request of class c (for the last class: 16 MiB).
  static std::uint32_t class_bytes(unsigned c) { return 4096u << (2 * c); }

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

  // A successful reply of `latency` to a request of `bytes` on path id, at `now`.
  void record(PathId id, Clock::time_point now, std::chrono::nanoseconds latency,
              std::uint32_t bytes);
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
  // The size of a probe read that measures path id against its peers: the
  // largest request of the class the other active paths carry most of now
  // (0: no peer has replies in the window; probe with the smallest read).
  std::uint32_t probe_bytes(PathId id, Clock::time_point now, const std::vector<Member>& group);
  Stats stats(PathId id, Clock::time_point now);

 private:
  struct Sample {
    Clock::time_point at;
    double us;
    std::uint8_t cls;  // size_class() of the request
  };
  // Per-class reply counts in the window at or after `since`.
  using Counts = std::array<std::size_t, kClasses>;
  struct PathData {
    std::deque<Sample> samples;  // oldest first, within the window (pruned lazily)
    unsigned ejections = 0;
    unsigned count = 0;  // multiplier of base-ejection-time
    Clock::time_point marginal_since{}, active_since{};
  };

  void prune(PathData& d, Clock::time_point now) const;
  Counts counts(PathData& d, Clock::time_point now, Clock::time_point since = {});
  // Median of class `cls`'s samples in the window at or after `since`; 0
  // when fewer than min_samples.
  double median(PathData& d, Clock::time_point now, unsigned cls, Clock::time_point since = {});
  // Median of the other active members' medians in class `cls`; 0 when none
  // has enough samples.
  double peers(PathId self, Clock::time_point now, const std::vector<Member>& group, unsigned cls);
  // The class to judge path self in, from its counts: the one with the most
  // samples (at least min_samples) that has a peer reference; the path's
  // median and the reference come back too. False when there is none.
  struct Comparison {
    unsigned cls = 0;
    double mine = 0, ref = 0;
    std::size_t samples = 0;
  };
  unsigned peer_class(PathId self, Clock::time_point now, const std::vector<Member>& group);
  bool compare(PathId self, Clock::time_point now, const std::vector<Member>& group,
               Clock::time_point since, bool need_ref, Comparison* out);
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
