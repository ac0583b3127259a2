// Path lifecycle: the state transition, connect, accept or refuse, probe, fail, back-off, checker.
#include <algorithm>
#include <cassert>
#include <chrono>
#include <string>

#include "server/disk.h"
#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// The one place a path's state changes. The change must be a row of the
// table (path_state.cc); the row decides the log level and the counter. The
// selector's usable set follows the state (serves_io), so a usable-set change
// happens here and nowhere else.
bool Engine::transition(PathSlot& s, PathState to, const std::string& reason) {
  PathState from = s.state;
  if (from == to) {  // not a change: a new reason for the same state
    s.reason = reason;
    return true;
  }
  const PathTransition* row = find_transition(from, to);
  if (!row) {
    log(LogLevel::Error, "path " + s.cfg.name + ": refused state change " + to_string(from) +
                             " -> " + to_string(to) +
                             " (not in the transition table, a bug): " + reason);
    assert(!"path state change not in the transition table");
    return false;
  }
  s.state = to;
  s.reason = reason;
  s.since = rt_.now();
  Selector& sel = *group_of(s).selector;
  if (to == PathState::Removed)
    sel.remove_path(s.id);
  else if (serves_io(from) && !serves_io(to))
    sel.fail_path(s.id);
  else if (!serves_io(from) && serves_io(to))
    sel.reinstate_path(s.id);
  if (serves_io(from) != serves_io(to)) regroup_due_ = true;
  // An outage is logged at error level and counted once, when it starts; the
  // reconnect attempts within it are debug lines, one folded event and the
  // reconnects counter. An operator's fail is routine (a notice).
  const bool operator_action = reason.starts_with("operator");
  const bool new_outage = to == PathState::Failed && !s.in_outage;
  const std::string line = to_string(from) + std::string(" -> ") + to_string(to);
  LogLevel level = LogLevel::Debug;
  if (new_outage)
    level = operator_action ? LogLevel::Notice : LogLevel::Error;
  else if (to == PathState::Marginal)
    level = LogLevel::Warning;  // degraded: it still answers, too slowly
  else if (row->loud && to != PathState::Failed)
    level = LogLevel::Notice;  // entering service
  if (row->counter == PathCounter::Failures && new_outage) s.stats.failures++;
  if (row->counter == PathCounter::Reinstatements) s.stats.reinstatements++;
  if (from == PathState::Failed && to == PathState::Connecting) s.stats.reconnects++;
  log(level, "path " + s.cfg.name + ": " + line + ": " + reason);
  if (s.in_outage && !operator_action && !serves_io(to) && to != PathState::Draining &&
      to != PathState::Removed)
    fold_reconnect_event(s, line + ": " + reason);
  else
    event("path " + s.cfg.name, line, reason);
  if (new_outage) s.in_outage = true;
  if (serves_io(to)) s.in_outage = false;
  // A marginal path stands in when its group loses its last active one.
  if (from == PathState::Active && to != PathState::Marginal) keep_one_active(s.group);
  return true;
}

// One event entry per outage for the reconnect attempts, updated in place
// and moved to the end, so a long outage cannot push its start (the failure)
// out of the ring.
void Engine::fold_reconnect_event(PathSlot& s, const std::string& last) {
  const std::string subject = "path " + s.cfg.name;
  for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
    if (it->subject != subject) continue;
    if (it->what.starts_with("reconnecting")) events_.erase(std::next(it).base());
    break;
  }
  event(subject, "reconnecting (" + std::to_string(s.stats.reconnects) + " attempts so far)", last);
}

void Engine::event(const std::string& subject, const std::string& what, const std::string& reason) {
  auto ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  events_.push_back(Event{ms, subject, what, reason});
  while (events_.size() > std::max(1u, cfg_.control.events)) events_.pop_front();
}

void Engine::start() {
  Entry entry(*this);
  election_until_ = rt_.now() + cfg_.timeouts.connect;
  for (auto& s : slots_) connect_path(*s);
  arm_checker();
  outlier_.configure(cfg_.outlier);
  hedge_.configure(cfg_.hedge);
  arm_outlier();
}

void Engine::arm_checker() {
  timers_.cancel(checker_timer_);
  checker_timer_ = timers_.arm(rt_.now() + cfg_.checker.interval, [this] {
    checker_timer_ = {};
    checker_tick();
  });
}

void Engine::connect_path(PathSlot& s, const std::string& why) {
  timers_.cancel(s.timer);
  transition(s, PathState::Connecting,
             !why.empty()     ? why
             : s.backoff_step ? "reconnecting"
                              : "connecting");
  s.timer = timers_.arm(rt_.now() + cfg_.timeouts.connect, [this, &s] {
    s.timer = {};
    take_down(s,
              "connect timed out after " + std::to_string(cfg_.timeouts.connect.count()) + " ms");
  });
  s.path->connect();
}

void Engine::path_connected(Path& path, const PathCaps& caps) {
  Entry entry(*this);
  PathSlot* s = slot_of(path);
  if (!s || s->state != PathState::Connecting) return;
  timers_.cancel(s->timer);
  std::string refused = refusal(disk_, caps);
  if (!refused.empty()) {
    // A new outage logs the refusal with its state change; within an outage
    // only a different refusal is news.
    if (refused != s->refusal && s->in_outage)
      log(LogLevel::Error, "path " + s->cfg.name + " refused: " + refused);
    s->refusal = refused;
    take_down(*s, "refused: " + refused);
    return;
  }
  s->refusal.clear();
  // The first path of its kind to answer names the disk for later ones.
  adopt_identity(disk_, caps);
  transition(*s, PathState::Probing, "connected");
  probe(*s);
}

void Engine::path_down(Path& path, const std::string& reason) {
  Entry entry(*this);
  PathSlot* s = slot_of(path);
  if (!s || s->state == PathState::Failed) return;
  take_down(*s, reason);
}

// Takes a path out of service: retires its connection, abandons what was in
// flight on it (each request is retried elsewhere), and schedules a reconnect.
void Engine::take_down(PathSlot& s, const std::string& reason) {
  bool was_active = s.state == PathState::Active;
  timers_.cancel(s.timer);
  note_path_down(s);  // before the change: it reports dirty ranges a connected path leaves
  transition(s, PathState::Failed, reason);
  s.path->disconnect();
  while (s.inflight) abandon(*s.inflight);
  schedule_reconnect(s);
  // Now, not at the exit: the caller may retry a request next, which must
  // see the new serving group, behind the parked requests.
  if (was_active) regroup(false);
  pump();
}

void Engine::schedule_reconnect(PathSlot& s) {
  if (stopping_ || s.admin_down || s.removing) return;
  auto base = cfg_.failover.reconnect_min.count();
  auto cap = cfg_.failover.reconnect_max.count();
  long long delay = base;
  for (unsigned i = 0; i < s.backoff_step && delay < cap; i++) delay *= 2;
  delay = std::min<long long>(delay, cap);
  // +-25% jitter, so paths that failed together do not reconnect in lockstep.
  if (delay >= 4) delay += static_cast<long long>(rt_.random() % (delay / 2 + 1)) - delay / 4;
  delay = std::min<long long>(delay, cap);
  s.backoff_step++;
  timers_.cancel(s.timer);  // one pending reconnect at most
  s.timer = timers_.arm(rt_.now() + milliseconds(delay), [this, &s] {
    s.timer = {};
    connect_path(s);
  });
}

void Engine::probe(PathSlot& s, std::uint32_t want) {
  // The smallest read the disk takes, or `want` rounded down to whole blocks
  // within the disk and its largest request.
  const std::uint32_t block = std::max<std::uint32_t>(disk_.min_block, 512);
  want = std::min(want, disk_.max_request) / block * block;
  std::uint32_t len =
      static_cast<std::uint32_t>(std::min<std::uint64_t>(std::max(block, want), disk_.size));
  if (len == 0) {  // an empty disk has nothing to read: the handshake is the probe
    probe_done(s, true, "");
    return;
  }
  Command cmd{Op::Read, 0, len, kProbe, nullptr};
  s.probing = true;
  s.stats.probes++;
  send(nullptr, s, cmd, std::make_shared_for_overwrite<std::byte[]>(len));
}

void Engine::probe_done(PathSlot& s, bool ok, const std::string& why) {
  s.probing = false;
  if (!ok) {
    take_down(
        s, (s.state == PathState::Active ? "checker probe failed: " : "probe read failed: ") + why);
    return;
  }
  if (s.state == PathState::Probing) try_reinstate(s);
}

// A connected, probed path serves again unless an abandoned write sent on an
// older connection of it could still land (see stale_writes.h).
void Engine::try_reinstate(PathSlot& s) {
  if (opts_.track_stale_writes && tracker_.pending_on(s.id)) {
    transition(s, PathState::Held,
               "probe read succeeded; abandoned writes from its old connection still unresolved");
    return;
  }
  bool first = s.stats.reinstatements == 0 && s.stats.failures == 0;
  s.backoff_step = 0;
  transition(s, PathState::Active,
             first ? "probe read succeeded" : "reinstated: probe read succeeded");
  // Now, not at the exit: after a resolved write, the next held path and the
  // re-applies come behind the requests this path lets go.
  regroup(false);
  pump();
}

// Every checker interval: probe idle active paths, so a dead idle path is
// found before a request needs it, and retry re-applies that failed.
void Engine::checker_tick() {
  Clock::time_point now = rt_.now();
  for (auto& s : slots_)
    if (s->state == PathState::Active && !s->probing && !busy(*s) &&
        now - s->last_io >= cfg_.checker.interval)
      probe(*s);
  start_reapplies();
  for (auto& s : slots_)
    if (s->removing && s->state != PathState::Removed) finish_removal(*s);
  arm_checker();
}

}  // namespace mp
