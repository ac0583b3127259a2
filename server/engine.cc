// The multipath engine (see engine.h for the request flow).
#include "server/engine.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstring>
#include <sstream>

#include "server/latency.h"

namespace mp {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

const char* to_string(Op op) {
  switch (op) {
    case Op::Read:
      return "read";
    case Op::Write:
      return "write";
    case Op::Flush:
      return "flush";
    case Op::Trim:
      return "trim";
    case Op::Zero:
      return "zero";
    case Op::Cache:
      return "cache";
  }
  return "?";
}

// ---- TimerQueue ----

TimerQueue::Key TimerQueue::arm(Clock::time_point when, std::function<void()> fn) {
  Key k{when, seq_++};
  q_.emplace(k, std::move(fn));
  return k;
}

void TimerQueue::cancel(Key& key) {
  if (key.seq) q_.erase(key);
  key = Key{};
}

void TimerQueue::run_due(Clock::time_point now) {
  while (!q_.empty() && q_.begin()->first.when <= now) {
    auto fn = std::move(q_.begin()->second);
    q_.erase(q_.begin());
    fn();
  }
}

// ---- Request hand-off ----
//
// The loop stores `done` and wakes the futex; the worker may already have
// seen `done`, returned and reused the memory, which makes the wake-up a
// harmless spurious one for whoever waits there now (FACTS.md).

void Request::wait() {
  while (done.load(std::memory_order_acquire) == 0)
    syscall(SYS_futex, &done, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
}

static void wake(Request& r) {
  r.done.store(1, std::memory_order_release);
  syscall(SYS_futex, &r.done, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

// ---- Attempts and path slots ----

// Attempt outcomes, per the design card: OK / TIMEOUT / CANCELLED / ERROR.
// How an attempt ended, per the design card: OK, TIMEOUT (its timer fired),
// CANCELLED (abandoned because its path failed, or at shutdown), ERROR.
// In flight until set; an abandoned attempt keeps its outcome while its late
// completion is awaited.
enum class Outcome : std::uint8_t { InFlight, Ok, Timeout, Cancelled, Error };

static const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::InFlight:
      return "in flight";
    case Outcome::Ok:
      return "ok";
    case Outcome::Timeout:
      return "timed out";
    case Outcome::Cancelled:
      return "cancelled";
    case Outcome::Error:
      return "error";
  }
  return "?";
}

// One command sent on one path for one request (or a probe: req == nullptr
// and probe == true). Owned by the engine; freed when the path reports it
// done, which for an abandoned attempt may be long after its request ended.
struct Attempt final : CommandSink {
  Engine* engine = nullptr;
  PathSlot* slot = nullptr;
  Request* req = nullptr;  // nullptr once abandoned, or for a probe
  bool probe = false;
  bool abandoned = false;
  Outcome outcome = Outcome::InFlight;
  Command cmd;
  std::shared_ptr<std::byte[]> buf;  // cmd.data points into it
  Clock::time_point start{};
  TimerQueue::Key timer;
  std::uint64_t flush_gen = 0;  // flush: the path's write_gen when sent
  std::uint64_t stale_id = 0;   // abandoned write: its tracker id
  Attempt* prev = nullptr;      // in the slot's in-flight list, or the engine's abandoned list
  Attempt* next = nullptr;

  void command_done(PathResult result, int err) override {
    engine->attempt_done(*this, result, err);
  }
};

// Intrusive doubly-linked list helpers.
static void link(Attempt*& head, Attempt* a) {
  a->prev = nullptr;
  a->next = head;
  if (head) head->prev = a;
  head = a;
}
static void unlink(Attempt*& head, Attempt* a) {
  if (a->prev)
    a->prev->next = a->next;
  else
    head = a->next;
  if (a->next) a->next->prev = a->prev;
  a->prev = a->next = nullptr;
}

struct PathSlot {
  PathId id = 0;
  config::Path cfg;
  PathPtr path;
  std::size_t group = 0;
  PathState state = PathState::Connecting;
  std::string reason;
  Clock::time_point since{};  // of the current state
  unsigned backoff_step = 0;
  TimerQueue::Key timer;        // connect timeout, or reconnect back-off
  Attempt* inflight = nullptr;  // live attempts on the current connection
  unsigned inflight_count = 0;
  bool probing = false;  // a probe attempt is in flight
  Clock::time_point last_io{};
  // Flush bookkeeping: write_gen counts acknowledged writes; flushed_gen is the
  // write_gen covered by the last successful flush. Dirty while they differ.
  std::uint64_t write_gen = 0;
  std::uint64_t flushed_gen = 0;
  std::string refusal;      // why its last connection was refused, logged once
  bool admin_down = false;  // failed by the operator: no reconnect until reinstated
  bool removing = false;    // removed by a reload: draining, then Removed
  PathStats stats;
  Latency latency;  // per attempt
  bool dirty() const { return write_gen != flushed_gen; }
};

// Client requests of one type.
struct OpStats {
  std::uint64_t requests = 0, bytes = 0, errors = 0;
  std::uint64_t errors_eio = 0, errors_nospc = 0, errors_perm = 0, errors_other = 0;
  Latency latency;
};

// Connected and able to take commands the engine sends itself (flushes).
static bool connected(const PathSlot& s) {
  return s.state == PathState::Active || s.state == PathState::Draining;
}

// ---- Construction ----

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
  for (std::size_t i = 0; i < groups_.size(); i++)
    if (groups_[i].name == pc.group) s->group = i;
  s->path = factory_(pc, *this);
  // Registered in its state's usability (a new slot is Connecting: not usable).
  groups_[s->group].selector->add_path(s->id, {pc.weight, pc.max_inflight, pc.throughput});
  if (!serves_io(s->state)) groups_[s->group].selector->fail_path(s->id);
  slots_.push_back(std::move(s));
  return *slots_.back();
}

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
    groups_.push_back(Group{g.name, g.priority, make_selector(cfg_.selector.kind)});
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

Engine::Group& Engine::group_of(const PathSlot& s) {
  return groups_[s.group];
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

// ---- Timers ----

void Engine::run_timers() {
  wake_armed_ = false;
  timers_.run_due(rt_.now());
  update_wake();
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

// ---- Path lifecycle ----

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
  if (row->counter == PathCounter::Failures) s.stats.failures++;
  if (row->counter == PathCounter::Reinstatements) s.stats.reinstatements++;
  log(row->loud ? LogLevel::Error : LogLevel::Debug,
      "path " + s.cfg.name + ": " + to_string(from) + " -> " + to_string(to) + ": " + reason);
  event("path " + s.cfg.name, std::string(to_string(from)) + " -> " + to_string(to), reason);
  return true;
}

void Engine::event(const std::string& subject, const std::string& what, const std::string& reason) {
  auto ms =
      std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  events_.push_back(Event{ms, subject, what, reason});
  while (events_.size() > std::max(1u, cfg_.control.events)) events_.pop_front();
}

void Engine::start() {
  for (auto& s : slots_) connect_path(*s);
  arm_checker();
  update_wake();
}

void Engine::arm_checker() {
  timers_.cancel(checker_timer_);
  checker_timer_ = timers_.arm(rt_.now() + cfg_.checker.interval, [this] {
    checker_timer_ = {};
    checker_tick();
  });
}

void Engine::connect_path(PathSlot& s) {
  timers_.cancel(s.timer);
  transition(s, PathState::Connecting, s.backoff_step ? "reconnecting" : "connecting");
  s.timer = timers_.arm(rt_.now() + cfg_.timeouts.connect, [this, &s] {
    s.timer = {};
    fail_path(s,
              "connect timed out after " + std::to_string(cfg_.timeouts.connect.count()) + " ms");
  });
  s.path->connect();
}

void Engine::path_connected(Path& path, const PathCaps& caps) {
  PathSlot* s = slot_of(path);
  if (!s || s->state != PathState::Connecting) return;
  timers_.cancel(s->timer);
  std::string refused;
  if (caps.size != disk_.size)
    refused = "size " + std::to_string(caps.size) + " differs from the disk's size " +
              std::to_string(disk_.size);
  else if (caps.read_only && !disk_.read_only)
    refused = "it is read-only but the disk is writable";
  else if ((disk_.can_flush && !caps.can_flush) || (disk_.can_fua && !caps.can_fua) ||
           (disk_.can_trim && !caps.can_trim) || (disk_.can_zero && !caps.can_zero) ||
           (disk_.can_fast_zero && !caps.can_fast_zero) || (disk_.can_cache && !caps.can_cache))
    refused =
        "it lacks a capability (flush, FUA, trim, zero, fast-zero or cache) the disk advertises";
  else if (caps.min_block > disk_.min_block)
    refused = "its block size " + std::to_string(caps.min_block) +
              " is larger than the disk's block size " + std::to_string(disk_.min_block);
  else if (!caps.identity.empty() && !disk_.identity.empty() && caps.identity != disk_.identity)
    refused = "its LU identifier " + caps.identity + " differs from the disk's " + disk_.identity +
              ": it reaches another LU";
  else if (caps.has_export_name && disk_.has_export_name && caps.export_name != disk_.export_name)
    refused = "its export name '" + caps.export_name + "' differs from the disk's '" +
              disk_.export_name + "'";
  if (!refused.empty()) {
    if (refused != s->refusal) log(LogLevel::Error, "path " + s->cfg.name + " refused: " + refused);
    s->refusal = refused;
    fail_path(*s, "refused: " + refused);
    update_wake();
    return;
  }
  s->refusal.clear();
  // The first path of its kind to answer names the disk for later ones.
  if (disk_.identity.empty()) disk_.identity = caps.identity;
  if (caps.has_export_name && !disk_.has_export_name) {
    disk_.has_export_name = true;
    disk_.export_name = caps.export_name;
  }
  transition(*s, PathState::Probing, "connected");
  probe(*s);
  update_wake();
}

void Engine::path_down(Path& path, const std::string& reason) {
  PathSlot* s = slot_of(path);
  if (!s || s->state == PathState::Failed) return;
  fail_path(*s, reason);
  update_wake();
}

// Takes a path out of service: retires its connection, abandons what was in
// flight on it (each request is retried elsewhere), and schedules a reconnect.
void Engine::fail_path(PathSlot& s, const std::string& reason) {
  bool was_active = s.state == PathState::Active;
  timers_.cancel(s.timer);
  transition(s, PathState::Failed, reason);
  s.path->disconnect();
  while (s.inflight) abandon(*s.inflight);
  schedule_reconnect(s);
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

void Engine::probe(PathSlot& s) {
  std::uint32_t len = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(std::max<std::uint32_t>(disk_.min_block, 512), disk_.size));
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
    fail_path(
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
  regroup(false);
  pump();
}

// Picks the group that serves I/O: the highest-priority group with a usable
// path, subject to the failback policy when the serving group still works.
void Engine::regroup(bool failback_due) {
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
            pump();
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
  event("engine",
        "group " + std::string(cur >= 0 ? groups_[cur].name : "(none)") + " -> " +
            (next >= 0 ? groups_[next].name : "(none)"),
        next < 0     ? "no usable path"
        : cur < 0    ? "a path is usable"
        : cur_usable ? "failback"
                     : "failover");
  log(LogLevel::Error, "group: " + std::string(cur >= 0 ? groups_[cur].name : "(none)") + " -> " +
                           (next >= 0 ? groups_[next].name : "(none)") +
                           (next < 0     ? ": no usable path"
                            : cur < 0    ? ": a path is usable"
                            : cur_usable ? ": failback"
                                         : ": failover"));
}

Engine::Group* Engine::serving_group() {
  return serving_ >= 0 && groups_[serving_].selector->has_usable_path() ? &groups_[serving_]
                                                                        : nullptr;
}

// Every checker interval: probe idle active paths, so a dead idle path is
// found before a request needs it, and retry re-applies that failed.
void Engine::checker_tick() {
  Clock::time_point now = rt_.now();
  for (auto& s : slots_)
    if (s->state == PathState::Active && !s->probing && !s->inflight &&
        now - s->last_io >= cfg_.checker.interval)
      probe(*s);
  start_reapplies();
  for (auto& s : slots_)
    if (s->removing && s->state != PathState::Removed) finish_removal(*s);
  arm_checker();
}

// ---- Requests ----

void Engine::submit(Request& r) {
  r.tag = next_tag_++;
  r.started = rt_.now();
  r.deadline = r.started + cfg_.timeouts.request;
  stats_.requests++;
  r.epoch = epoch_;
  if (inflight_by_epoch_.empty() || inflight_by_epoch_.back().first != epoch_)
    inflight_by_epoch_.emplace_back(epoch_, 0);
  inflight_by_epoch_.back().second++;
  dispatch(r);
  update_wake();
}

void Engine::dispatch(Request& r) {
  if (stopping_) return finish(r, EIO);
  if (r.op == Op::Flush) return dispatch_flush(r);
  if (is_write(r.op) && opts_.track_stale_writes && tracker_.must_hold(r.offset, r.count, r.tag)) {
    log(LogLevel::Debug, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " held: an abandoned write over its range has no shadow "
                             "(stale-writes max-bytes reached)");
    return wait(r, Request::Wait::Hold, r.deadline);
  }
  Group* g = serving_group();
  if (!g) return no_path(r);
  auto id = g->selector->select_path(r.count);
  if (!id) return wait(r, Request::Wait::Busy, r.deadline);
  Command cmd{r.op, r.offset, r.count, r.flags, nullptr};
  if (!send(&r, *slots_[*id], cmd,
            r.op == Op::Read ? std::make_shared_for_overwrite<std::byte[]>(r.count) : r.data))
    retry(r);  // the path is failed now: another one is picked
}

// A flush goes to every path that acknowledged writes since its last flush.
// A dirty path that is down: with a coherent upstream (shared cache, or
// multi-conn) a flush on any live path covers it; otherwise the flush waits
// for the path to come back, until its deadline.
void Engine::dispatch_flush(Request& r) {
  if (!unflushed_lost_.empty()) {
    log(LogLevel::Error, "flush failed with EIO: path " + unflushed_lost_ +
                             " was removed while down with unflushed writes");
    unflushed_lost_.clear();
    return finish(r, EIO);
  }
  std::vector<PathSlot*> targets;
  for (auto& s : slots_) {
    if (!s->dirty()) continue;
    if (connected(*s))
      targets.push_back(s.get());
    else if (!coherent_flush_ && s->state != PathState::Removed)
      return wait(r, Request::Wait::Flush, r.deadline);
  }
  if (targets.empty()) {
    Group* g = serving_group();
    if (!g) return no_path(r);
    for (auto& s : slots_)
      if (s->state == PathState::Active && &group_of(*s) == g) {
        targets.push_back(s.get());
        break;
      }
  }
  for (PathSlot* s : targets) {
    Command cmd{Op::Flush, 0, 0, 0, nullptr};
    if (!send(&r, *s, cmd, nullptr)) r.retry_needed = true;
  }
  // A target that refused is failed now; once the others are done, the flush
  // starts over with the targets as they are then.
  if (r.pending == 0 && r.retry_needed) retry(r);
}

void Engine::no_path(Request& r) {
  if (!queueing_) {
    log(LogLevel::Debug,
        std::string(to_string(r.op)) + " failed: no usable path (no-path policy: fail)");
    return finish(r, EIO);
  }
  if (no_path_count_ >= cfg_.no_path.max_requests) {
    log(LogLevel::Error, "no usable path and " + std::to_string(no_path_count_) +
                             " requests already queued (no-path max-requests): failing with EIO");
    return finish(r, EIO);
  }
  stats_.queued_no_path++;
  log(LogLevel::Debug, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                           " queued: no usable path (" + std::to_string(no_path_count_ + 1) +
                           " queued)");
  wait(r, Request::Wait::NoPath, rt_.now() + cfg_.no_path.max_time);
}

void Engine::wait(Request& r, Request::Wait kind, Clock::time_point until) {
  r.wait_kind = kind;
  r.wait_until = until;
  r.wait_prev = wait_tail_;
  r.wait_next = nullptr;
  (wait_tail_ ? wait_tail_->wait_next : wait_head_) = &r;
  wait_tail_ = &r;
  waiting_count_++;
  if (kind == Request::Wait::NoPath) no_path_count_++;
  r.wait_timer = timers_.arm(until, [this, &r] {
    r.wait_timer = {};
    const char* what = r.wait_kind == Request::Wait::NoPath ? "no usable path"
                       : r.wait_kind == Request::Wait::Busy ? "every path busy"
                       : r.wait_kind == Request::Wait::Hold ? "an abandoned write over its range"
                                                            : "a dirty path to flush";
    log(LogLevel::Error, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " failed with EIO: timed out waiting for " + what);
    unwait(r);
    finish(r, EIO);
  });
}

void Engine::unwait(Request& r) {
  if (r.wait_kind == Request::Wait::None) return;
  (r.wait_prev ? r.wait_prev->wait_next : wait_head_) = r.wait_next;
  (r.wait_next ? r.wait_next->wait_prev : wait_tail_) = r.wait_prev;
  r.wait_prev = r.wait_next = nullptr;
  waiting_count_--;
  if (r.wait_kind == Request::Wait::NoPath) {
    no_path_count_--;
    stats_.queued_no_path_ms += duration_cast<milliseconds>(rt_.now() - r.started).count();
  }
  r.wait_kind = Request::Wait::None;
  timers_.cancel(r.wait_timer);
}

bool Engine::can_go(const Request& r) {
  if (stopping_) return true;
  switch (r.wait_kind) {
    case Request::Wait::NoPath:
      return serving_group() != nullptr;
    case Request::Wait::Busy: {
      Group* g = serving_group();
      if (!g) return true;  // dispatch moves it to the no-path queue
      for (auto& s : slots_)
        if (&group_of(*s) == g && g->selector->can_take(s->id)) return true;
      return false;
    }
    case Request::Wait::Hold:
      return !tracker_.must_hold(r.offset, r.count, r.tag);
    case Request::Wait::Flush:
      for (auto& s : slots_)
        if (s->dirty() && !connected(*s) && s->state != PathState::Removed) return false;
      return true;
    case Request::Wait::None:
      return true;
  }
  return true;
}

// Re-dispatches waiting requests that can go now, in arrival order. Not
// re-entrant: a dispatch that changes path states asks for another pass.
void Engine::pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    pump_once();
  } while (pump_again_);
  pumping_ = false;
}

void Engine::pump_once() {
  Request* last = wait_tail_;  // requests re-queued behind it wait for the next pass
  for (Request* r = wait_head_; r;) {
    Request* next = r == last ? nullptr : r->wait_next;
    if (can_go(*r)) {
      bool from_no_path = r->wait_kind == Request::Wait::NoPath;
      unwait(*r);
      // Time spent with no path at all does not count against the deadline.
      if (from_no_path) {
        r->deadline = rt_.now() + cfg_.timeouts.request;
        r->retries = 0;
      }
      dispatch(*r);
    }
    r = next;
  }
}

// Sends one attempt. False when the path refused it: the path is failed then,
// and the caller decides what happens to the request.
bool Engine::send(Request* r, PathSlot& s, const Command& c, std::shared_ptr<std::byte[]> buf) {
  auto* a = new Attempt;
  a->engine = this;
  a->slot = &s;
  a->req = r;
  a->probe = r == nullptr;
  a->cmd = c;
  a->buf = std::move(buf);
  a->cmd.data = a->buf.get();
  a->start = rt_.now();
  if (c.op == Op::Flush) a->flush_gen = s.write_gen;
  if (!s.path->submit(a->cmd, a)) {
    delete a;
    if (!r) s.probing = false;
    fail_path(s, "submit failed: no connection");
    return false;
  }
  link(s.inflight, a);
  s.inflight_count++;
  s.stats.requests++;
  s.stats.bytes += c.count;
  group_of(s).selector->start_io(s.id, c.count);
  Clock::time_point until = a->start + cfg_.timeouts.attempt;
  if (r) {
    r->pending++;
    until = std::min(until, r->deadline);
  }
  a->timer = timers_.arm(until, [this, a] {
    a->timer = {};
    attempt_timeout(*a);
  });
  return true;
}

// An attempt leaves its path's in-flight list; its request is retried
// elsewhere. A write stays tracked until it can no longer land.
void Engine::abandon(Attempt& a) {
  PathSlot& s = *a.slot;
  unlink(s.inflight, &a);
  s.inflight_count--;
  group_of(s).selector->end_io(s.id, a.cmd.count, a.start);
  timers_.cancel(a.timer);
  a.abandoned = true;
  if (a.outcome == Outcome::InFlight) a.outcome = Outcome::Cancelled;
  link(abandoned_, &a);
  if (a.probe) {
    s.probing = false;
    return;
  }
  Request& r = *a.req;
  a.req = nullptr;
  if (is_write(a.cmd.op) && opts_.track_stale_writes) {
    a.stale_id = tracker_.add(s.id, r.tag, a.cmd.offset, a.cmd.count,
                              a.cmd.op == Op::Write ? a.cmd.data : nullptr, rt_.now());
    log(LogLevel::Debug, "path " + s.cfg.name + ": abandoned " + to_string(a.cmd.op) + " at " +
                             std::to_string(a.cmd.offset) + "+" + std::to_string(a.cmd.count) +
                             " tracked until it resolves (" + std::to_string(tracker_.pending()) +
                             " pending)");
  }
  s.stats.failovers++;
  r.pending--;
  r.retry_needed = true;
  if (r.pending == 0) retry(r);
}

void Engine::attempt_timeout(Attempt& a) {
  PathSlot& s = *a.slot;
  s.stats.timeouts++;
  a.outcome = Outcome::Timeout;
  if (a.req && rt_.now() >= a.req->deadline && rt_.now() - a.start < cfg_.timeouts.attempt) {
    // The request's deadline, not the attempt's timer: give up on the request
    // but keep the path.
    abandon(a);  // retry() sees the deadline and fails the request
    return;
  }
  fail_path(s, std::string(a.probe ? "probe" : to_string(a.cmd.op)) + " timed out after " +
                   std::to_string(duration_cast<milliseconds>(rt_.now() - a.start).count()) +
                   " ms");
}

void Engine::attempt_done(Attempt& a, PathResult result, int err) {
  if (a.abandoned) {
    // A late completion: the attempt was given up on already.
    unlink(abandoned_, &a);
    if (a.stale_id) {
      bool late = result != PathResult::TransportDead;
      tracker_.resolve(a.stale_id, late);
      log(LogLevel::Debug, "path " + a.slot->cfg.name + ": abandoned (" + to_string(a.outcome) +
                               ") " + to_string(a.cmd.op) + " at " + std::to_string(a.cmd.offset) +
                               " resolved " +
                               (late ? "late (its reply came)" : "by the connection's death"));
      for (auto& s : slots_)
        if (s->state == PathState::Held) try_reinstate(*s);
      start_reapplies();
      pump();
    }
    delete &a;
    update_wake();
    return;
  }

  Outcome outcome = result == PathResult::Ok ? Outcome::Ok : Outcome::Error;
  a.outcome = outcome;
  PathSlot& s = *a.slot;
  unlink(s.inflight, &a);
  s.inflight_count--;
  s.last_io = rt_.now();
  s.latency.add(s.last_io - a.start);
  group_of(s).selector->end_io(s.id, a.cmd.count, a.start);
  timers_.cancel(a.timer);

  // Which failures count against the path (transport-level ones, and EIO by
  // default: an upstream whose backend fails is a failed path).
  std::string path_error;
  if (result == PathResult::TransportDead)
    path_error = std::string("connection lost: ") + config::errno_text(err ? err : ENOTCONN);
  else if (result == PathResult::RemoteError && err == EIO &&
           cfg_.failover.eio == config::EioPolicy::Failover)
    path_error = "server returned EIO";
  if (!path_error.empty()) {
    s.stats.errors++;
    (result == PathResult::TransportDead ? s.stats.transport_errors : s.stats.eio_errors)++;
  }

  if (a.probe) {
    delete &a;
    probe_done(s, outcome == Outcome::Ok,
               outcome == Outcome::Ok ? ""
               : path_error.empty()   ? config::errno_text(err)
                                      : path_error);
    update_wake();
    return;
  }

  Request& r = *a.req;
  r.pending--;
  if (outcome == Outcome::Ok) {
    if (is_write(a.cmd.op)) s.write_gen++;
    if (a.cmd.op == Op::Flush) s.flushed_gen = std::max(s.flushed_gen, a.flush_gen);
    if (a.cmd.op == Op::Read) r.data = std::move(a.buf);
  } else if (path_error.empty()) {
    if (!r.err) r.err = err;  // the server's answer on a healthy connection
  } else {
    r.retry_needed = true;
  }
  delete &a;

  if (!path_error.empty()) fail_path(s, path_error);  // first, so the retry picks another path
  if (r.pending == 0) {
    if (r.retry_needed)
      retry(r);
    else
      finish(r, r.err);
  }
  if (s.removing) finish_removal(s);
  pump();
  update_wake();
}

void Engine::retry(Request& r) {
  r.retry_needed = false;
  r.err = 0;
  stats_.retries++;
  if (stopping_) return finish(r, EIO);
  if (rt_.now() >= r.deadline) {
    log(LogLevel::Error, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " failed with EIO: deadline of " +
                             std::to_string(cfg_.timeouts.request.count()) + " ms passed");
    return finish(r, EIO);
  }
  if (++r.retries > cfg_.failover.max_retries) {
    log(LogLevel::Error, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " failed with EIO: " + std::to_string(r.retries) +
                             " attempts failed (failover retries limit)");
    return finish(r, EIO);
  }
  dispatch(r);
}

// The only way out for a request. `err` becomes an errno NBD carries.
void Engine::finish(Request& r, int err) {
  unwait(r);
  switch (err) {
    case 0:
    case EIO:
    case ENOSPC:
    case EPERM:
    case ENOMEM:
    case EINVAL:
    case EOVERFLOW:
    case ENOTSUP:
    case ESHUTDOWN:
      break;
    case EROFS:
      err = EPERM;
      break;
    default:
      err = EIO;
      break;
  }
  r.err = err;
  if (err) stats_.failed_requests++;
  if (!r.internal) {
    OpStats& o = ops_[static_cast<std::size_t>(r.op)];
    o.requests++;
    o.bytes += r.count;
    if (err) o.errors++;
    if (err == EIO)
      o.errors_eio++;
    else if (err == ENOSPC)
      o.errors_nospc++;
    else if (err == EPERM)
      o.errors_perm++;
    else if (err)
      o.errors_other++;
    o.latency.add(rt_.now() - r.started);
  }
  if (!err && opts_.track_stale_writes && !r.internal && !tracker_.idle()) {
    if (r.op == Op::Read && r.data)
      tracker_.overlay(r.offset, r.count, r.data.get());
    else if (is_write(r.op))
      tracker_.on_acked_write(r.offset, r.count, r.op == Op::Write ? r.data.get() : nullptr);
  }
  request_finished(r);
  if (r.on_done)
    r.on_done(r);
  else
    wake(r);
}

void Engine::request_finished(const Request& r) {
  for (auto& [epoch, n] : inflight_by_epoch_)
    if (epoch == r.epoch) {
      n--;
      break;
    }
  bool popped = false;
  while (!inflight_by_epoch_.empty() && inflight_by_epoch_.front().second == 0) {
    inflight_by_epoch_.pop_front();
    popped = true;
  }
  if (popped && !drops_.empty()) drop_shadows();
}

// Reports the write-backs completed before every request still in flight was
// submitted; the tracker drops their shadows unless a write changed them,
// and those are written back again.
void Engine::drop_shadows() {
  std::uint64_t oldest = inflight_by_epoch_.empty() ? epoch_ : inflight_by_epoch_.front().first;
  bool any = false;
  std::erase_if(drops_, [&](auto& d) {
    if (d.second >= oldest) return false;
    tracker_.reapplied(d.first, true);
    any = true;
    return true;
  });
  if (any) start_reapplies();
}

// ---- Re-applying shadows ----

namespace {
struct ReapplyRequest : Request {
  Engine* engine = nullptr;
  StaleWriteTracker::Reapply job;
};
}  // namespace

void Engine::start_reapplies() {
  if (stopping_ || !opts_.track_stale_writes) return;
  for (auto& job : tracker_.take_ready()) {
    auto* rr = new ReapplyRequest;
    rr->op = Op::Write;
    rr->offset = job.offset;
    rr->count = static_cast<std::uint32_t>(job.data.size());
    rr->data = std::make_shared_for_overwrite<std::byte[]>(job.data.size());
    std::memcpy(rr->data.get(), job.data.data(), job.data.size());
    rr->internal = true;
    rr->engine = this;
    rr->job = std::move(job);
    rr->on_done = [](Request& r) { static_cast<ReapplyRequest&>(r).engine->reapply_done(r); };
    log(LogLevel::Debug, "re-applying newest data at " + std::to_string(rr->offset) + "+" +
                             std::to_string(rr->count));
    submit(*rr);
  }
}

void Engine::reapply_done(Request& r) {
  auto* rr = static_cast<ReapplyRequest*>(&r);
  if (r.err == 0) {
    drops_.emplace_back(std::move(rr->job), epoch_++);
    drop_shadows();
  } else {
    tracker_.reapplied(rr->job, false);
  }
  if (r.err)
    log(LogLevel::Error, "re-applying newest data at " + std::to_string(r.offset) +
                             " failed; will retry at the next checker interval");
  delete rr;
}

// ---- Operator actions (ControlApi) ----

// A path removed by a reload leaves once nothing is in flight on it and its
// writes are flushed (a flush reaches draining paths too).
void Engine::finish_removal(PathSlot& s) {
  // Unflushed writes keep it until a flush reaches it, unless any live path's
  // flush covers them (shared cache or multi-conn).
  if (s.state == PathState::Removed || s.inflight || (s.dirty() && !coherent_flush_)) return;
  timers_.cancel(s.timer);
  s.path->disconnect();
  transition(s, PathState::Removed, "removed by reload");
}

// The sentence for an operator action on a name with no live path.
std::string Engine::no_such_path(const std::string& name) {
  for (auto& s : slots_)
    if (s->cfg.name == name && s->removing && s->state != PathState::Removed)
      return "path " + name + " is being removed by a reload";
  return "no path named '" + name + "': see show paths";
}

std::string Engine::fail_path(const std::string& name) {
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  s->admin_down = true;
  if (s->state != PathState::Failed)
    fail_path(*s, "operator: fail");
  else
    timers_.cancel(s->timer);  // no reconnect until reinstated
  update_wake();
  return "";
}

std::string Engine::reinstate_path(const std::string& name) {
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  s->admin_down = false;
  switch (s->state) {
    case PathState::Active:
      return "path " + name + " is already active";
    case PathState::Draining:
      transition(*s, PathState::Active, "operator: reinstate");
      regroup(false);
      pump();
      break;
    case PathState::Failed:  // reconnect now; reinstated when its probe succeeds
      s->backoff_step = 0;
      connect_path(*s);
      break;
    default:
      return "path " + name + " is " + to_string(s->state) +
             ": it is reinstated when its probe read succeeds";
  }
  update_wake();
  return "";
}

std::string Engine::drain_path(const std::string& name) {
  PathSlot* s = slot_named(name);
  if (!s) return no_such_path(name);
  if (s->state != PathState::Active)
    return "path " + name + " is " + to_string(s->state) + ": only an active path can drain";
  transition(*s, PathState::Draining, "operator: drain");
  regroup(false);
  pump();
  update_wake();
  return "";
}

std::string Engine::switch_group(const std::string& name) {
  for (std::size_t i = 0; i < groups_.size(); i++) {
    if (groups_[i].name != name) continue;
    if (!groups_[i].selector->has_usable_path())
      return "group " + name + " has no usable path: see show topology";
    if (serving_ != static_cast<int>(i)) {
      log(LogLevel::Error,
          "group: " + std::string(serving_ >= 0 ? groups_[serving_].name : "(none)") + " -> " +
              name + ": operator: switch-group");
      event(
          "engine",
          "group " + std::string(serving_ >= 0 ? groups_[serving_].name : "(none)") + " -> " + name,
          "operator: switch-group");
      serving_ = static_cast<int>(i);
      failed_over_ = true;  // manual failback keeps the operator's choice
      stats_.group_switches++;
      timers_.cancel(failback_timer_);
      pump();
      update_wake();
    }
    return "";
  }
  return "no group named '" + name + "': see show groups";
}

std::string Engine::set_queueing(bool on) {
  queueing_ = on;
  event("engine", on ? "queueing on" : "queueing off", "operator");
  if (!on) {  // as multipathd's disablequeueing: what is queued fails now
    std::uint64_t n = 0;
    fail_queued(&n);
  }
  update_wake();
  return "";
}

std::string Engine::fail_queued(std::uint64_t* failed) {
  std::uint64_t n = 0;
  for (Request* r = wait_head_; r;) {
    Request* next = r->wait_next;
    if (r->wait_kind == Request::Wait::NoPath) {
      unwait(*r);
      finish(*r, EIO);
      n++;
    }
    r = next;
  }
  if (n)
    log(LogLevel::Error, "operator: failed " + std::to_string(n) + " queued requests with EIO");
  *failed = n;
  update_wake();
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
    p.latency_p50_us = sl->latency.quantile(0.5);
    p.latency_p99_us = sl->latency.quantile(0.99);
    for (Attempt* a = abandoned_; a; a = a->next)
      if (a->slot == sl.get() && a->stale_id) p.abandoned_pending++;
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
  for (std::size_t i = 0; i < ops_.size(); i++) {
    const OpStats& o = ops_[i];
    e.ops.push_back(OpCounters{to_string(static_cast<Op>(i)), o.requests, o.bytes, o.errors,
                               o.errors_eio, o.errors_nospc, o.errors_perm, o.errors_other,
                               o.latency.quantile(0.5), o.latency.quantile(0.99)});
  }
  return e;
}

std::vector<Event> Engine::show_events() {
  return {events_.begin(), events_.end()};
}

// ---- Live reconfiguration ----

std::string Engine::reload(bool dry_run, std::string* summary) {
  if (cfg_.source.empty() || cfg_.source == "command line")
    return "the disk was started without config=FILE: there is no file to reload";
  config::LoadResult r = config::load_file(cfg_.source);
  if (!r) return "reload refused, the running configuration stays: " + r.error;
  return apply(std::move(*r.config), dry_run, summary);
}

// Applies the difference to a new configuration, as a whole or not at all.
// Paths are matched by name: a path with the same name and URI keeps its
// connection (its group, weight, cap and throughput may change); a new name,
// or a new URI for a name, connects a new path; a name that is gone drains
// and leaves. Groups, selector, timeouts and policies change at once.
std::string Engine::apply(config::Config next, bool dry_run, std::string* summary) {
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
  if (summary) *summary = what;
  if (usable_kept == 0)
    return "reload refused, the running configuration stays: no path that serves I/O now would "
           "remain (new paths must connect first): keep at least one active path";
  if (next.control.socket != cfg_.control.socket || next.metrics.socket != cfg_.metrics.socket ||
      next.metrics.listen != cfg_.metrics.listen)
    what += "; control and metrics endpoints change only at restart";
  if (summary) *summary = what;
  if (dry_run) return "";

  next.control = cfg_.control;
  next.metrics = cfg_.metrics;
  next.source = cfg_.source;
  for (PathSlot* sl : leaving) {
    sl->removing = true;
    if (sl->state == PathState::Active) {
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
      transition(*sl, PathState::Draining, "removed by reload");
    }
  }
  cfg_ = std::move(next);
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
  tracker_.set_max_bytes(std::min<std::uint64_t>(cfg_.stale_writes.max_bytes, 1ull << 30));
  queueing_ = cfg_.no_path.policy == config::NoPathPolicy::Queue;
  arm_checker();
  log(LogLevel::Error, "reload: " + what);
  event("engine", "reload", what);
  regroup(false);
  for (auto& sl : slots_)
    if (sl->removing) finish_removal(*sl);
  pump();
  update_wake();
  return "";
}

// ---- Shutdown and introspection ----

void Engine::shutdown() {
  stopping_ = true;
  while (wait_head_) {
    Request& r = *wait_head_;
    unwait(r);
    finish(r, EIO);
  }
  for (auto& s : slots_) {
    timers_.cancel(s->timer);
    while (s->inflight) abandon(*s->inflight);  // retry() fails each with EIO
  }
  timers_.cancel(checker_timer_);
  timers_.cancel(failback_timer_);
}

bool Engine::usable(const std::string& path) const {
  for (auto& s : slots_)
    if (s->cfg.name == path) return groups_[s->group].selector->usable(s->id);
  return false;
}

PathState Engine::state(const std::string& path) const {
  for (auto& s : slots_)
    if (s->cfg.name == path) return s->state;
  return PathState::Failed;
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
    << " unshadowed=" << c.unshadowed;
  return o.str();
}

}  // namespace mp
