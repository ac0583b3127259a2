// Live reconfiguration: reload and apply a new configuration, and a removed path's departure.
#include <algorithm>
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

// A path removed by a reload leaves once nothing is in flight on it and its
// writes are flushed (a flush reaches draining paths too).
void Engine::finish_removal(PathSlot& s) {
  // Unflushed writes keep it until a flush reaches it, unless any live path's
  // flush covers them (shared cache or multi-conn).
  if (s.state == PathState::Removed || busy(s) || (s.dirty() && !coherent_flush_)) return;
  timers_.cancel(s.timer);
  s.path->disconnect();
  while (s.inflight) abandon(*s.inflight);  // hedge races' losers: their replies are not awaited
  transition(s, PathState::Removed, "removed by reload");
}

// Reading and validating the file happens off the loop (Options::read_config);
// only the finished Config comes back here to be applied.
void Engine::reload(bool dry_run, ReloadDone done) {
  if (cfg_.source.empty() || cfg_.source == "command line")
    return done("the disk was started without config=FILE: there is no file to reload", "");
  auto loaded = [this, dry_run, done = std::move(done)](config::LoadResult r) {
    if (!r) return done("reload refused, the running configuration stays: " + r.error, "");
    std::string summary;
    std::string err = apply(std::move(*r.config), dry_run, &summary);
    done(err, summary);
  };
  if (opts_.read_config)
    opts_.read_config(cfg_.source, std::move(loaded));
  else
    loaded(config::load_file(cfg_.source));
}

// Applies the difference to a new configuration, as a whole or not at all.
// Paths are matched by name: a path with the same name and URI keeps its
// connection (its group, weight, cap and throughput may change); a new name,
// or a new URI for a name, connects a new path; a name that is gone drains
// and leaves. Groups, selector, timeouts and policies change at once.
std::string Engine::apply(config::Config next, bool dry_run, std::string* summary) {
  Entry entry(*this);
  std::vector<std::string> added, removed, changed;
  std::vector<PathSlot*> leaving;
  std::size_t usable_kept = 0;
  for (auto& sl : slots_) {
    if (sl->state == PathState::Removed || sl->removing) continue;
    auto it = std::find_if(next.paths.begin(), next.paths.end(),
                           [&](const config::Path& p) { return p.name == sl->cfg.name; });
    if (it == next.paths.end() || it->uri != sl->cfg.uri) {
      removed.push_back(sl->cfg.name);
      leaving.push_back(sl.get());
      continue;
    }
    if (sl->state == PathState::Active) usable_kept++;
    if (it->group != sl->cfg.group || it->weight != sl->cfg.weight ||
        it->max_inflight != sl->cfg.max_inflight || it->throughput != sl->cfg.throughput)
      changed.push_back(sl->cfg.name);
  }
  for (const auto& p : next.paths) {
    PathSlot* sl = slot_named(p.name);
    if (!sl || sl->removing || sl->cfg.uri != p.uri) added.push_back(p.name);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& n : v) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? std::string("none") : out;
  };
  std::string what =
      "add " + list(added) + "; remove " + list(removed) + "; change " + list(changed);
  // Every other setting that differs (a path's own settings included; an
  // added or removed path is already listed above).
  std::vector<std::string> settings;
  auto listed = [&](const std::string& c) {
    for (const auto* v : {&added, &removed})
      for (const auto& n : *v)
        if (c.starts_with("paths." + n + ".")) return true;
    return false;
  };
  for (auto& c : config::changed_settings(cfg_, next))
    if (!listed(c)) settings.push_back(std::move(c));
  if (!settings.empty()) what += "; set " + list(settings);
  if (summary) *summary = what;
  if (usable_kept == 0)
    return "reload refused, the running configuration stays: no path that serves I/O now would "
           "remain (new paths must connect first): keep at least one active path";
  if (next.control.socket != cfg_.control.socket || next.metrics.socket != cfg_.metrics.socket ||
      next.metrics.listen != cfg_.metrics.listen)
    what += "; control and metrics endpoints change only at restart";
  if (summary) *summary = what;
  if (dry_run) return "";

  bool affinity_was_on = affinity_on();
  next.control = cfg_.control;
  next.metrics = cfg_.metrics;
  next.source = cfg_.source;
  for (PathSlot* sl : leaving) {
    sl->removing = true;
    if (sl->state == PathState::Active || sl->state == PathState::Marginal) {
      transition(*sl, PathState::Draining, "removed by reload");
    } else if (sl->state != PathState::Draining) {
      // Not serving: no in-flight I/O to wait for.
      timers_.cancel(sl->timer);
      sl->path->disconnect();
      while (sl->inflight) abandon(*sl->inflight);
      // Its unflushed writes can no longer be flushed. Without a shared
      // cache they may be lost: the next flush says so with EIO, once.
      if (sl->dirty() && !coherent_flush_) unflushed_lost_ = sl->cfg.name;
      sl->write_gen = sl->flushed_gen;
      sl->ranges.clear();
      transition(*sl, PathState::Draining, "removed by reload");
    }
  }
  cfg_ = std::move(next);
  outlier_.configure(cfg_.outlier);
  hedge_.configure(cfg_.hedge);
  for (auto& sl : slots_) {
    if (sl->state == PathState::Removed || sl->removing) continue;
    auto it = std::find_if(cfg_.paths.begin(), cfg_.paths.end(),
                           [&](const config::Path& p) { return p.name == sl->cfg.name; });
    sl->cfg = *it;
  }
  rebuild_groups();
  for (const auto& name : added) {
    auto it = std::find_if(cfg_.paths.begin(), cfg_.paths.end(),
                           [&](const config::Path& p) { return p.name == name; });
    connect_path(add_slot(*it));
  }
  coherent_flush_ = cfg_.durability.shared_cache || disk_.can_multi_conn;
  apply_affinity_config(affinity_was_on);
  tracker_.set_max_bytes(std::min<std::uint64_t>(cfg_.stale_writes.max_bytes, 1ull << 30));
  queueing_ = cfg_.no_path.policy == config::NoPathPolicy::Queue;
  arm_checker();
  log(LogLevel::Notice, "reload: " + what);
  event("engine", "reload", what);
  regroup(false);  // now: the group change comes before the removals it allows
  for (auto& sl : slots_)
    if (sl->removing) finish_removal(*sl);
  return "";
}

}  // namespace mp
