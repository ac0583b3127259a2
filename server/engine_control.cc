// Operator actions and show commands: the engine as the control server's ControlApi.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

// The sentence for an operator action on a name with no live path.
std::string Engine::no_such_path(const std::string& name) {
  for (auto& s : slots_)
    if (s->cfg.name == name && s->removing && s->state != PathState::Removed)
      return "path " + name + " is being removed by a reload";
  return "no path named '" + name + "': see show paths";
}

std::string Engine::fail_path(const std::string& name) {
  Entry entry(*this);
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  s->admin_down = true;
  if (s->state != PathState::Failed)
    take_down(*s, "operator: fail");
  else
    timers_.cancel(s->timer);  // no reconnect until reinstated
  return "";
}

std::string Engine::reinstate_path(const std::string& name) {
  Entry entry(*this);
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  s->admin_down = false;
  switch (s->state) {
    case PathState::Active:
      return "path " + name + " is already active";
    case PathState::Draining:
      transition(*s, PathState::Active, "operator: reinstate");  // regroups at the exit
      break;
    case PathState::Marginal:  // cleared: serves at once, its ejection count restarts
      readmit(*s, "operator: reinstate (marginal cleared)", true);
      break;
    case PathState::Failed:  // reconnect now; reinstated when its probe succeeds
      s->backoff_step = 0;
      connect_path(*s, "operator: reinstate");
      break;
    default:
      return "path " + name + " is " + to_string(s->state) +
             ": it is reinstated when its probe read succeeds";
  }
  return "";
}

std::string Engine::drain_path(const std::string& name) {
  Entry entry(*this);
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  if (s->state != PathState::Active)
    return "path " + name + " is " + to_string(s->state) + ": only an active path can drain";
  transition(*s, PathState::Draining, "operator: drain");  // regroups at the exit
  return "";
}

std::string Engine::switch_group(const std::string& name) {
  Entry entry(*this);
  for (std::size_t i = 0; i < groups_.size(); i++) {
    if (groups_[i].name != name) continue;
    if (!groups_[i].selector->has_usable_path())
      return "group " + name + " has no usable path: see show topology";
    if (serving_ != static_cast<int>(i)) {
      announce_group_change(serving_, static_cast<int>(i), "operator: switch-group");
      serving_ = static_cast<int>(i);
      failed_over_ = true;  // manual failback keeps the operator's choice
      stats_.group_switches++;
      timers_.cancel(failback_timer_);
    }
    return "";
  }
  return "no group named '" + name + "': see show groups";
}

std::string Engine::set_queueing(bool on) {
  Entry entry(*this);
  queueing_ = on;
  event("engine", on ? "queueing on" : "queueing off", "operator");
  if (!on) {  // as multipathd's disablequeueing: what is queued fails now
    std::uint64_t n = 0;
    fail_queued(&n);
  }
  return "";
}

std::string Engine::fail_queued(std::uint64_t* failed) {
  Entry entry(*this);
  std::uint64_t n = 0;
  for (Request* r = parked_head_; r;) {
    Request* next = r->park_next;
    if (r->parked_for == Request::Park::NoPath) {
      unpark(*r);
      finish(*r, EIO);
      n++;
    }
    r = next;
  }
  if (n)
    log(LogLevel::Warning, "operator: failed " + std::to_string(n) + " queued requests with EIO");
  *failed = n;
  return "";
}

std::string Engine::reset_stats() {
  stats_ = {};
  for (auto& o : ops_) o = OpStats{};
  for (auto& sl : slots_) {
    sl->stats = {};
    sl->latency.reset();
  }
  tracker_.reset_counters();
  hedge_.reset_counters();
  event("engine", "reset-stats", "operator");
  return "";
}

std::vector<PathInfo> Engine::show_paths() {
  std::vector<PathInfo> v;
  for (auto& sl : slots_) {
    if (sl->state == PathState::Removed) continue;
    PathInfo p;
    p.name = sl->cfg.name;
    p.uri = config::redacted_uri(sl->cfg.uri);
    p.group = sl->cfg.group;
    p.state = to_string(sl->state);
    p.reason = sl->reason;
    p.inflight = sl->inflight_count;
    const PathStats& st = sl->stats;
    p.requests = st.requests;
    p.bytes = st.bytes;
    p.errors = st.errors;
    p.transport_errors = st.transport_errors;
    p.eio_errors = st.eio_errors;
    p.timeouts = st.timeouts;
    p.failovers = st.failovers;
    p.failures = st.failures;
    p.reinstatements = st.reinstatements;
    p.marginal = outlier_.stats(sl->id, rt_.now()).ejections;
    p.reconnects = st.reconnects;
    p.latency_p50_us = sl->latency.quantile(0.5);
    p.latency_p99_us = sl->latency.quantile(0.99);
    p.latency = sl->latency.histogram();
    for (Attempt* a = abandoned_; a; a = a->next)
      if (a->slot == sl.get() && a->stale_id) p.abandoned_pending++;
    p.dirty_ranges = sl->ranges.ranges();
    p.dirty_bytes = sl->ranges.bytes();
    p.affinity_requests = st.affinity_requests;
    p.cleaning_flushes = st.cleaning_flushes;
    v.push_back(std::move(p));
  }
  return v;
}

std::vector<GroupInfo> Engine::show_groups() {
  std::vector<GroupInfo> v;
  for (std::size_t i = 0; i < groups_.size(); i++) {
    GroupInfo g{groups_[i].name, groups_[i].priority, static_cast<int>(i) == serving_, {}};
    for (auto& sl : slots_)
      if (sl->group == i && sl->state != PathState::Removed) g.paths.push_back(sl->cfg.name);
    // A group kept only for paths a reload removed goes once they have left.
    bool configured = std::any_of(cfg_.groups.begin(), cfg_.groups.end(),
                                  [&](auto& c) { return c.name == g.name; });
    if (!configured && g.paths.empty()) continue;
    v.push_back(std::move(g));
  }
  return v;
}

EngineInfo Engine::show_stats() {
  EngineInfo e;
  e.requests = stats_.requests;
  e.failed_requests = stats_.failed_requests;
  e.retries = stats_.retries;
  e.group_switches = stats_.group_switches;
  e.queued_no_path = stats_.queued_no_path;
  e.queued_no_path_ms = stats_.queued_no_path_ms;
  e.waiting = waiting_count_;
  e.queueing = queueing_;
  const auto& c = tracker_.counters();
  e.abandoned_writes = c.abandoned;
  e.abandoned_pending = tracker_.pending();
  e.resolved_late = c.resolved_late;
  e.resolved_by_death = c.resolved_by_death;
  e.reapplied = c.reapplied;
  e.unshadowed = c.unshadowed;
  e.shadow_bytes = tracker_.shadow_bytes();
  e.hedges_sent = hedge_.counters().sent;
  e.hedges_won = hedge_.counters().won;
  e.hedges_refused = hedge_.counters().refused;
  for (std::size_t i = 0; i < ops_.size(); i++) {
    const OpStats& o = ops_[i];
    e.ops.push_back(OpCounters{to_string(static_cast<Op>(i)), o.requests, o.bytes, o.errors,
                               o.errors_eio, o.errors_nospc, o.errors_perm, o.errors_other,
                               o.latency.quantile(0.5), o.latency.quantile(0.99),
                               o.latency.histogram()});
  }
  return e;
}

std::vector<Event> Engine::show_events() {
  return {events_.begin(), events_.end()};
}

DiskInfo Engine::show_disk() {
  DiskInfo d;
  d.size = disk_.size;
  d.block_size = disk_.min_block;
  d.read_only = disk_.read_only;
  d.identity = !disk_.identity.empty()      ? disk_.identity
               : disk_.has_description      ? disk_.description
               : !disk_.export_name.empty() ? "export " + disk_.export_name
                                            : "";
  for (const auto& [k, v] : config::settings(cfg_)) {
    if (k == "selector") d.selector = v;
    if (k == "no-path.policy") d.no_path = v;
    if (k == "failover.failback") d.failback = v;
  }
  d.queueing = queueing_;
  d.waiting = waiting_count_;
  return d;
}

std::vector<std::pair<std::string, std::string>> Engine::show_config() {
  auto s = config::settings(cfg_);
  s.insert(s.begin(), {"source", cfg_.source});
  return s;
}

}  // namespace mp
