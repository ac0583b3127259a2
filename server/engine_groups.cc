// Path groups: built from the config with their selectors, the serving group chosen, failback.
#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

// (Re)builds the groups and their selectors from cfg_, keeping each path's
// usability and its requests in flight, and the serving group by name.
void Engine::rebuild_groups() {
  std::string serving = serving_ >= 0 ? groups_[serving_].name : "";
  std::vector<config::Group> gs = cfg_.groups;
  // A group gone from the configuration stays, last and never serving, while
  // paths a reload removed from it still drain.
  for (auto& s : slots_)
    if (s->state != PathState::Removed &&
        std::none_of(gs.begin(), gs.end(), [&](auto& g) { return g.name == s->cfg.group; }))
      gs.push_back(config::Group{s->cfg.group, INT_MIN});
  std::stable_sort(gs.begin(), gs.end(),
                   [](const auto& a, const auto& b) { return a.priority > b.priority; });
  groups_.clear();
  serving_ = -1;
  for (const auto& g : gs) {
    if (g.name == serving) serving_ = static_cast<int>(groups_.size());
    groups_.push_back(Group{g.name, g.priority,
                            make_selector(cfg_.selector.kind, {[this] { return rt_.now(); },
                                                               [this] { return rt_.random(); }})});
  }
  for (auto& s : slots_) {
    if (s->state == PathState::Removed) continue;
    for (std::size_t i = 0; i < groups_.size(); i++)
      if (groups_[i].name == s->cfg.group) s->group = i;
    Selector& sel = *groups_[s->group].selector;
    sel.add_path(s->id, {s->cfg.weight, s->cfg.max_inflight, s->cfg.throughput});
    if (!serves_io(s->state)) sel.fail_path(s->id);  // registered in its state's usability
    for (Attempt* a = s->inflight; a; a = a->next) sel.start_io(s->id, a->cmd.count);
  }
  timers_.cancel(failback_timer_);
}

Engine::Group& Engine::group_of(const PathSlot& s) {
  return groups_[s.group];
}

// Picks the group that serves I/O: the highest-priority group with a usable
// path, subject to the failback policy when the serving group still works.
void Engine::regroup(bool failback_due) {
  regroup_due_ = false;
  bool election = false;
  int best = -1;
  for (std::size_t i = 0; i < groups_.size(); i++)
    if (groups_[i].selector->has_usable_path()) {
      best = static_cast<int>(i);
      break;
    }
  int cur = serving_;
  bool cur_usable = cur >= 0 && groups_[cur].selector->has_usable_path();
  int next = cur;
  if (!cur_usable) {
    next = best;
    if (cur >= 0) failed_over_ = true;
  } else if (best >= 0 && best < cur && !failed_over_ && rt_.now() < election_until_) {
    // Start-up election: a better group's path came up within the first
    // connect window, after a lower group's answered first. Not a failback:
    // the highest-priority group that comes up in that window serves, now.
    next = best;
    election = true;
  } else if (best >= 0 && best < cur) {  // a better group is usable again
    switch (cfg_.failover.failback) {
      case config::Failback::Immediate:
        next = best;
        break;
      case config::Failback::Manual:
        // Until the first failover, the best group serves (start-up election).
        if (!failed_over_) next = best;
        break;
      case config::Failback::Delayed:
        if (failback_due) {
          next = best;
        } else if (!failback_timer_.seq) {
          failback_timer_ = timers_.arm(rt_.now() + cfg_.failover.failback_delay, [this] {
            failback_timer_ = {};
            regroup(true);
            pump();  // now: before another timer due at the same time
          });
        }
        break;
    }
  }
  if (next == cur) {
    // No better group usable: a pending delayed failback starts over later.
    if (!(best >= 0 && best < cur)) timers_.cancel(failback_timer_);
    return;
  }
  timers_.cancel(failback_timer_);
  serving_ = next;
  if (cur >= 0 || next >= 0) stats_.group_switches++;
  announce_group_change(cur, next,
                        next < 0     ? "no usable path"
                        : cur < 0    ? "a path is usable"
                        : election   ? "start-up election: a higher-priority group came up within "
                                       "the first connect window"
                        : cur_usable ? "failback"
                                     : "failover");
}

// The log line and the event of a change of the serving group (indexes into
// groups_, -1: none).
void Engine::announce_group_change(int from, int to, const std::string& why) {
  std::string change = std::string(from >= 0 ? groups_[from].name : "(none)") + " -> " +
                       (to >= 0 ? groups_[to].name : "(none)");
  // Losing the last usable path is a failure; any other change is routine.
  log(to < 0 ? LogLevel::Error : LogLevel::Notice, "group: " + change + ": " + why);
  event("engine", "group " + change, why);
}

Engine::Group* Engine::serving_group() {
  return serving_ >= 0 && groups_[serving_].selector->has_usable_path() ? &groups_[serving_]
                                                                        : nullptr;
}

}  // namespace mp
