// Latency outliers: the engine's side of outlier.h. Feeds it replies, applies
// its decisions through the transition table (Active <-> Marginal), probes
// marginal and unmeasured paths, and keeps the last usable path of a group.
//
// Runs on the loop thread, from the outlier timer (every probe-interval), from
// attempt completion (samples) and from transition (a group losing a path).
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

std::vector<OutlierDetector::Member> Engine::outlier_members(std::size_t group) {
  std::vector<OutlierDetector::Member> v;
  for (auto& s : slots_)
    if (s->group == group && !s->removing &&
        (s->state == PathState::Active || s->state == PathState::Marginal))
      v.push_back({s->id, s->state == PathState::Active, s->state == PathState::Marginal});
  return v;
}

void Engine::arm_outlier() {
  timers_.cancel(outlier_timer_);
  if (stopping_) return;
  outlier_timer_ = timers_.arm(rt_.now() + cfg_.outlier.probe_interval, [this] {
    outlier_timer_ = {};
    outlier_tick();
  });
}

void Engine::readmit(PathSlot& s, const std::string& reason, bool by_operator) {
  outlier_.readmitted(s.id, rt_.now(), by_operator);
  transition(s, PathState::Active, reason);
}

// Every probe-interval: apply the detector's decisions, then probe the
// marginal paths and the active ones too little used to be judged.
void Engine::outlier_tick() {
  Entry entry(*this);
  const Clock::time_point now = rt_.now();
  for (std::size_t g = 0; g < groups_.size(); g++) {
    if (!cfg_.outlier.enabled) {  // turned off by a reload: nobody stays marginal
      for (auto& s : slots_)
        if (s->group == g && s->state == PathState::Marginal)
          readmit(*s, "re-admitted: outlier detection is off", false);
      continue;
    }
    for (const auto& d : outlier_.evaluate(now, outlier_members(g))) {
      PathSlot& s = *slots_[d.id];
      if (d.verdict == OutlierDetector::Verdict::MakeMarginal) {
        outlier_.made_marginal(s.id, now);
        transition(s, PathState::Marginal, d.reason);
      } else {
        readmit(s, "re-admitted: " + d.reason, false);
      }
    }
    keep_one_active(g);
    const auto members = outlier_members(g);
    for (auto& s : slots_) {
      if (s->group != g || s->probing || s->removing) continue;
      if (s->state == PathState::Marginal ||
          (s->state == PathState::Active && outlier_.wants_probe(s->id, now, members)))
        probe(*s, outlier_.probe_bytes(s->id, now, members));  // sized like the peers' requests
    }
  }
  arm_outlier();
}

// A group whose last active path went away re-admits a marginal one at once:
// slow beats none (and beats failing over to a lower-priority group).
void Engine::keep_one_active(std::size_t group) {
  PathSlot* candidate = nullptr;
  for (auto& s : slots_) {
    if (s->group != group || s->removing) continue;
    if (s->state == PathState::Active) return;
    if (s->state == PathState::Marginal && !candidate) candidate = s.get();
  }
  if (candidate) readmit(*candidate, "re-admitted: the last usable path of its group", false);
}

}  // namespace mp
