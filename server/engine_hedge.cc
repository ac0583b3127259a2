// Hedged reads: the engine's side of hedge.h. A client read whose one attempt
// has waited past the threshold is sent once more, to another path; the first
// good reply completes it and the other copy loses the race.
//
//   dispatch: the selector picks P ──► send on P, arm the hedge timer
//                                          │ (threshold: HedgePolicy::delay)
//   timer fires, the attempt on P still    ▼
//   pending: another path Q may take it? ─ no ─► nothing (no hedge)
//                     │ yes
//   budget allows? ── no ─► refused (counted); P's attempt goes on alone
//                     │ yes
//   send on Q (own buffer) ──► first good reply ─► the request completes from
//                               its buffer (finish: the stale-write overlay
//                               is laid over it as over any read); the other
//                               copy is lost: no timer, its reply discarded
//   an error from one copy while the other is out: wait for the other
//
// Never hedged: writes, flushes, trims, zeroes, cache requests, internal
// requests, and reads routed by dirty-range affinity (only that path holds
// the newest data; another would return older). A hedge goes only to an
// active path of the serving group below its cap, never to the first path.
// Losing a race is not a failure: the loser's path is not taken down, its
// attempt counts no timeout or failover, and it stays in its path's in-flight
// count (the path is busy with it) until its reply comes or its connection
// is retired.
//
// Runs on the loop thread, inside entry points (dispatch, the hedge timer,
// attempt completion).
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

// After `first` carries a read the selector chose: the hedge timer.
void Engine::arm_hedge(Request& r, const PathSlot& first) {
  timers_.cancel(r.hedge_timer);
  if (r.op != Op::Read || r.internal || r.hedged || r.count == 0) return;
  auto wait = hedge_.delay();
  if (!wait) return;
  // No other active path in its group: nothing to hedge to, and no timer to
  // wake the loop for (one path would otherwise wake it for every read).
  const Group* g = &group_of(first);
  if (std::none_of(slots_.begin(), slots_.end(),
                   [&](const auto& s) { return hedge_peer(*s, first, g); }))
    return;
  log(LogLevel::Debug,
      "read at " + std::to_string(r.offset) + " on path " + first.cfg.name +
          ": hedged if not answered in " +
          std::to_string(std::chrono::duration<double, std::milli>(*wait).count()) + " ms");
  r.hedge_timer = timers_.arm(rt_.now() + *wait, [this, &r] {
    r.hedge_timer = {};
    hedge_due(r);
  });
}

// The read's one attempt is still out after the threshold.
void Engine::hedge_due(Request& r) {
  if (stopping_ || r.hedged || r.pending != 1 || r.parked_for != Request::Park::None) return;
  PathSlot* first = nullptr;
  for (auto& s : slots_)
    for (Attempt* a = s->inflight; a && !first; a = a->next)
      if (a->req == &r) first = s.get();
  if (!first) return;
  auto wait = hedge_.delay();
  PathSlot* target = wait ? hedge_target(r, *first, *wait) : nullptr;
  if (!target) return;
  if (!hedge_.try_take()) {
    log(LogLevel::Debug, "read at " + std::to_string(r.offset) + " on path " + first->cfg.name +
                             ": hedge refused by the budget (hedge.max-share " +
                             std::to_string(cfg_.hedge.max_share) + "%)");
    return;
  }
  r.hedged = true;
  log(LogLevel::Debug, "read at " + std::to_string(r.offset) + ": hedged from path " +
                           first->cfg.name + " to path " + target->cfg.name);
  Command cmd{Op::Read, r.offset, r.count, r.flags, nullptr};
  // Refused: the target is failed now; the first attempt goes on alone.
  if (Attempt* a = send(&r, *target, cmd, std::make_shared_for_overwrite<std::byte[]>(r.count)))
    a->hedge = true;
}

// Where a hedge of `r` may go: an active path of the serving group, not
// `first`, below its cap, not stalled, the least busy such. None while a
// dirty range the read overlaps ties it to one path (even one that went down
// since: its acknowledged data may be newer than the storage's). Stalled: it
// holds a copy that lost a race and is still unanswered after the hedge wait
// (a hung or stopped server would otherwise soak up the budget).
PathSlot* Engine::hedge_target(const Request& r, const PathSlot& first, Clock::duration wait) {
  Group* g = serving_group();
  if (!g) return nullptr;
  if (affinity_on())
    for (auto& s : slots_)
      if (!s->ranges.empty() && s->ranges.overlaps(r.offset, r.count)) return nullptr;
  const Clock::time_point now = rt_.now();
  auto stalled = [&](const PathSlot& s) {
    for (Attempt* a = s.inflight; a; a = a->next)
      if (a->lost && now - a->start >= wait) return true;
    return false;
  };
  PathSlot* best = nullptr;
  for (auto& sp : slots_) {
    PathSlot& s = *sp;
    if (!hedge_peer(s, first, g) || !g->selector->can_take(s.id) || stalled(s)) continue;
    if (!best || s.inflight_count < best->inflight_count) best = &s;
  }
  return best;
}

// Whether `s` is an active path of group g, other than the read's first.
bool Engine::hedge_peer(const PathSlot& s, const PathSlot& first, const Group* g) {
  return &s != &first && s.state == PathState::Active && !s.removing && &group_of(s) == g;
}

// A good reply completed a hedged read: the other copy, if still out, loses.
void Engine::end_race(Request& r) {
  for (auto& s : slots_)
    for (Attempt* a = s->inflight; a; a = a->next) {
      if (a->req != &r) continue;
      a->req = nullptr;
      a->lost = true;
      timers_.cancel(a->timer);
      r.pending--;
    }
}

// The late reply of a race's loser: it leaves its path's in-flight count and
// is measured like any reply, but its data is dropped and an error is not held
// against the path.
void Engine::lost_reply(Attempt& a, PathResult result) {
  PathSlot& s = *a.slot;
  unlink(s.inflight, &a);
  s.inflight_count--;
  s.last_io = rt_.now();
  group_of(s).selector->end_io(s.id, a.cmd.count, a.start);
  if (result == PathResult::Ok) {
    s.latency.add(s.last_io - a.start);
    outlier_.record(s.id, s.last_io, s.last_io - a.start, a.cmd.count);
    hedge_.record(s.last_io - a.start);
  }
  delete &a;
  if (s.removing) finish_removal(s);
}

}  // namespace mp
