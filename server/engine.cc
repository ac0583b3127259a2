// The engine's construction and teardown, slot lookup, the wake-up timer and introspection.
#include "server/engine.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "server/engine_internal.h"

namespace mp {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

Engine::Engine(config::Config cfg, Runtime& rt, const PathFactory& factory, PathCaps disk,
               Options opts)
    : cfg_(std::move(cfg)),
      rt_(rt),
      disk_(disk),
      opts_(opts),
      coherent_flush_(cfg_.durability.shared_cache || disk.can_multi_conn),
      tracker_(std::min<std::uint64_t>(cfg_.stale_writes.max_bytes, 1ull << 30)),
      queueing_(cfg_.no_path.policy == config::NoPathPolicy::Queue),
      ops_(6) {
  factory_ = factory;
  rebuild_groups();
  for (const auto& pc : cfg_.paths) add_slot(pc);
}

// A new path: its own slot (ids are never reused), failed in its selector
// until its probe read succeeds.
PathSlot& Engine::add_slot(const config::Path& pc) {
  auto s = std::make_unique<PathSlot>();
  s->id = static_cast<PathId>(slots_.size());
  s->cfg = pc;
  s->ranges.set_max_ranges(cfg_.durability.max_dirty_ranges);
  for (std::size_t i = 0; i < groups_.size(); i++)
    if (groups_[i].name == pc.group) s->group = i;
  s->path = factory_(pc, *this);
  // Registered in its state's usability (a new slot is Connecting: not usable).
  groups_[s->group].selector->add_path(s->id, {pc.weight, pc.max_inflight, pc.throughput});
  if (!serves_io(s->state)) groups_[s->group].selector->fail_path(s->id);
  slots_.push_back(std::move(s));
  return *slots_.back();
}

Engine::~Engine() {
  // Paths go first: destroying a path never calls its sinks, so afterwards
  // no attempt can be reached from outside and all can be freed.
  std::vector<Attempt*> all;
  for (auto& s : slots_) {
    s->path.reset();
    for (Attempt* a = s->inflight; a; a = a->next) all.push_back(a);
  }
  for (Attempt* a = abandoned_; a; a = a->next) all.push_back(a);
  for (Attempt* a : all) delete a;
}

// The live path with this name; a path a reload is removing has handed its
// name on, to its replacement if there is one.
PathSlot* Engine::slot_named(const std::string& name) {
  for (auto& s : slots_)
    if (s->cfg.name == name && s->state != PathState::Removed && !s->removing) return s.get();
  return nullptr;
}

PathSlot* Engine::slot_of(const Path& path) {
  for (auto& s : slots_)
    if (s->path.get() == &path) return s.get();
  return nullptr;
}

void Engine::run_timers() {
  Entry entry(*this);
  wake_armed_ = false;
  timers_.run_due(rt_.now());
}

// The one exit of every entry point (see Entry). Runs as an entry itself, so
// a request it completes that submits another (a re-apply) does not nest a
// second exit.
void Engine::leave() {
  depth_++;
  if (regroup_due_) regroup(false);
  pump();
  update_wake();
  depth_--;
}

// Asks the runtime for a wake-up only when the earliest deadline moved
// earlier; a wake-up that comes too early finds nothing due and re-arms.
// This keeps the per-request cost at zero system calls.
void Engine::update_wake() {
  if (timers_.empty()) return;
  Clock::time_point next = timers_.next();
  if (!wake_armed_ || next < wake_at_) {
    wake_armed_ = true;
    wake_at_ = next;
    rt_.wake_at(next);
  }
}

void Engine::shutdown() {
  Entry entry(*this);
  stopping_ = true;
  while (parked_head_) {
    Request& r = *parked_head_;
    unpark(r);
    finish(r, EIO);
  }
  for (auto& s : slots_) {
    timers_.cancel(s->timer);
    while (s->inflight) abandon(*s->inflight);  // retry() fails each with EIO
  }
  timers_.cancel(checker_timer_);
  timers_.cancel(failback_timer_);
  timers_.cancel(outlier_timer_);
}

bool Engine::usable(const std::string& path) const {
  for (auto& s : slots_)
    if (s->cfg.name == path)  // a removed path's group may be gone
      return s->state != PathState::Removed && groups_[s->group].selector->usable(s->id);
  return false;
}

std::optional<PathState> Engine::state(const std::string& path) const {
  for (auto& s : slots_)
    if (s->cfg.name == path) return s->state;
  return std::nullopt;
}

const PathStats* Engine::path_stats(const std::string& path) const {
  for (auto& s : slots_)
    if (s->cfg.name == path) return &s->stats;
  return nullptr;
}

std::string Engine::active_group() const {
  return serving_ >= 0 ? groups_[serving_].name : "";
}

std::string Engine::summary() const {
  std::ostringstream o;
  for (auto& s : slots_)
    o << "path " << s->cfg.name << ": state=" << to_string(s->state)
      << " requests=" << s->stats.requests << " bytes=" << s->stats.bytes
      << " errors=" << s->stats.errors << " timeouts=" << s->stats.timeouts
      << " failovers=" << s->stats.failovers << " failures=" << s->stats.failures
      << " reinstatements=" << s->stats.reinstatements << "\n";
  const auto& c = tracker_.counters();
  o << "requests=" << stats_.requests << " failed=" << stats_.failed_requests
    << " retries=" << stats_.retries << " group_switches=" << stats_.group_switches
    << " queued_no_path=" << stats_.queued_no_path << " abandoned_writes=" << c.abandoned
    << " pending=" << tracker_.pending() << " resolved_late=" << c.resolved_late
    << " resolved_by_death=" << c.resolved_by_death << " reapplied=" << c.reapplied
    << " unshadowed=" << c.unshadowed << " hedges_sent=" << hedge_.counters().sent
    << " hedges_won=" << hedge_.counters().won << " hedges_refused=" << hedge_.counters().refused;
  return o.str();
}

}  // namespace mp
