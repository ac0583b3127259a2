// Dirty-range affinity: reads and writes of a range dirty on one path go to that path, and it is
// flushed before the range goes anywhere else. Only without a shared cache
// (durability.shared-cache).
//
// Why (issue 14): upstreams over one storage that do not share a cache (two
// gateways over a LUN, each with its own page cache; nbdkit's cache filter or
// qemu-nbd in write-back mode) each hold what they acknowledged until a flush
// on them writes it back. A read through another path would read the storage
// underneath, without that write; a rewrite through another path would leave
// two dirty copies, whose write-backs land in either order at the next flush,
// so the older one can win.
//
//   request R over [off, off+len)
//     │
//     ├─ no path holds a dirty range R overlaps ─────────► the selector picks
//     ├─ one connected path A holds them, A may serve ──► sent to A (affinity_requests)
//     └─ a path holds them that may not serve (draining, removed by a reload,
//        outside the serving group), or a second path holds some:
//          clean_path: a flush to that path alone (cleaning_flushes);
//          R waits (Park::Clean) until no such range is left, then dispatches again
//
// A path that is down (failed, connecting, probing, held) is not waited for:
// its acknowledged writes may be lost, the next flush says so (the flush rule
// in dispatch_flush), and reads of its ranges go to another path and may
// return the data from before those writes (README: guarantees).
//
// Runs on the loop thread, inside entry points.
#include <cerrno>
#include <string>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

bool Engine::affinity_on() const {
  return opts_.dirty_range_affinity && !cfg_.durability.shared_cache;
}

// A path a dirty range may stay on: active in the serving group, so the
// selector could choose it too. A path the selector should avoid for any
// other reason belongs here as well.
bool Engine::affinity_target(const PathSlot& s) {
  return s.state == PathState::Active && &group_of(s) == serving_group() &&
         group_of(s).selector->usable(s.id);
}

// True when the request was sent or parked here; false: the selector decides.
bool Engine::route_by_affinity(Request& r, Group& g) {
  if (!affinity_on() || r.count == 0) return false;
  PathSlot* target = nullptr;
  bool wait = false;
  for (auto& sp : slots_) {
    PathSlot& s = *sp;
    if (s.ranges.empty() || !connected(s) || !s.ranges.overlaps(r.offset, r.count)) continue;
    if (!target && affinity_target(s)) {
      target = &s;
      continue;
    }
    clean_path(s, s.state == PathState::Draining ? "its dirty range is needed while it drains"
                                                 : "its dirty range is needed on another path");
    wait = true;
  }
  if (wait) {
    park(r, Request::Park::Clean, r.deadline);
    return true;
  }
  if (!target) return false;
  if (!g.selector->can_take(target->id)) {
    park(r, Request::Park::Busy, r.deadline);
    return true;
  }
  target->stats.affinity_requests++;
  Command cmd{r.op, r.offset, r.count, r.flags, nullptr};
  if (!send(&r, *target, cmd,
            r.op == Op::Read ? std::make_shared_for_overwrite<std::byte[]>(r.count) : r.data))
    retry(r);  // the path is failed now: its ranges no longer hold the request
  return true;
}

// Park::Clean: may the request go now? Not while a connected path that may
// not serve it still holds a dirty range it overlaps, or two paths do; such a
// path is flushed again (writes it acknowledged since may have dirtied it anew).
bool Engine::affinity_clear(const Request& r) {
  if (!affinity_on()) return true;
  bool target = false, clear = true;
  for (auto& sp : slots_) {
    PathSlot& s = *sp;
    if (s.ranges.empty() || !connected(s) || !s.ranges.overlaps(r.offset, r.count)) continue;
    if (!target && affinity_target(s)) {
      target = true;
      continue;
    }
    clean_path(s, "its dirty range is still needed elsewhere");
    clear = false;
  }
  return clear;
}

// A FUA write is in the storage once acknowledged: nothing of it stays dirty
// in the path's cache (what an earlier write left dirty around it stays).
void Engine::note_acked_write(PathSlot& s, const Command& c) {
  if (affinity_on() && !(c.flags & kFua)) s.ranges.add(c.offset, c.count, s.write_gen);
}

void Engine::note_flushed(PathSlot& s, std::uint64_t gen) {
  s.ranges.flushed(gen);
}

// A connected path goes down holding dirty ranges: its writes there may be
// lost (the next flush fails or waits, see dispatch_flush). Its ranges stay
// until a flush on a new connection covers them, but no request waits for it.
void Engine::note_path_down(PathSlot& s) {
  if (!affinity_on() || !connected(s) || s.ranges.empty()) return;
  std::string what = std::to_string(s.ranges.bytes()) + " bytes in " +
                     std::to_string(s.ranges.ranges()) +
                     " dirty ranges not yet flushed on it; reads of them go to other paths";
  log(LogLevel::Debug, "path " + s.cfg.name + ": down with " + what);
  event("path " + s.cfg.name, "down with dirty ranges", what);
}

namespace {
struct CleaningFlush : Request {
  Engine* engine = nullptr;
  std::string path;
};
}  // namespace

// A flush to this path alone, unless a flush is in flight on it already
// (requests waiting for it ask again when that one is done: affinity_clear).
// Its success clears the ranges it covers (note_flushed); its failure takes
// the path down, and requests waiting for it go on.
void Engine::clean_path(PathSlot& s, const char* why) {
  if (!connected(s) || s.ranges.empty() || stopping_) return;
  for (Attempt* a = s.inflight; a; a = a->next)
    if (a->cmd.op == Op::Flush) return;
  auto* f = new CleaningFlush;
  f->op = Op::Flush;
  f->internal = true;
  f->cleaning = true;
  f->engine = this;
  f->path = s.cfg.name;
  f->on_done = [](Request& r) {
    auto* cf = static_cast<CleaningFlush*>(&r);
    if (r.err) cf->engine->log(LogLevel::Debug, "cleaning flush of path " + cf->path + " failed");
    delete cf;
  };
  s.stats.cleaning_flushes++;
  log(LogLevel::Debug, "path " + s.cfg.name + ": flushing " + std::to_string(s.ranges.bytes()) +
                           " dirty bytes in " + std::to_string(s.ranges.ranges()) +
                           " ranges: " + why);
  if (s.ranges.over_limit())
    event("path " + s.cfg.name, "flush at the dirty-range bound",
          std::to_string(s.ranges.ranges()) + " ranges (durability.max-dirty-ranges " +
              std::to_string(s.ranges.max_ranges()) + ")");
  admit(*f);
  if (!send(f, s, Command{Op::Flush, 0, 0, 0, nullptr}, nullptr)) finish(*f, EIO);
}

// After a reload: the bound may have changed; with a shared cache now,
// nothing is tracked any more. Turned on, it tracks writes acknowledged from
// now on (README: flush before turning shared-cache off).
void Engine::apply_affinity_config(bool was_on) {
  for (auto& s : slots_) {
    s->ranges.set_max_ranges(cfg_.durability.max_dirty_ranges);
    if (was_on && !affinity_on()) s->ranges.clear();
  }
}

}  // namespace mp
