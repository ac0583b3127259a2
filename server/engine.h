// The multipath engine: path groups and states, request dispatch, per-attempt
// timers, failover, no-path queueing, flush fan-out and stale-write safety.
//
// Threading: everything here runs holding the loop lock (server/loop_lock.h):
// on the event-loop thread, and submit() also on an nbdkit worker that took
// the lock while the loop was idle (Service::io). Request::wait() is the
// worker's, without the lock. The engine never blocks.
//
// Life of a client request:
//
//   worker thread              loop thread
//   -------------              -----------------------------------------------
//   copy write data
//   post(submit) ───────────►  dispatch ──► select path ──► send attempt (timer)
//   Request::wait (futex)          │              │ none usable: park (no-path)
//                                  │              │ all at cap:  park (busy)
//                                  ▼
//                               attempt done: OK ─────────────► finish ────┐
//                               timeout / transport error / EIO:           │
//                                 take the path down, abandon its          │
//                                 attempts, retry each elsewhere           │
//                                 (deadline, limit)                        │
//   wake; copy read data  ◄────────────────────────────────────────────────┘
//
// An abandoned attempt stays in flight on the path's retired connection. Its
// buffer belongs to the attempt, never to nbdkit, so a late reply lands in
// memory nobody else uses; an abandoned write is tracked until it can no
// longer land (StaleWriteTracker).
//
// Path states and every allowed change between them: path_state.h.
//
// Engine is one class over several files, one job each:
//   engine.cc          construction, slot lookup, the exit of entry points, introspection
//   engine_io.cc       submit, dispatch, send, attempt completion and timeout, retry, finish
//   engine_park.cc     parked requests (no path, busy, hold, flush) and the pump
//   engine_paths.cc    path lifecycle: transition, connect, probe, take down, back-off, checker
//   engine_groups.cc   groups and their selectors, the serving group, failback
//   engine_shadows.cc  stale-write shadows: re-applies and the epoch barrier
//   engine_control.cc  operator actions and show commands (ControlApi)
//   engine_reload.cc   reload and apply, a removed path's departure
//   engine_affinity.cc dirty-range affinity over independent upstream caches
//   engine_outlier.cc  latency outliers: marginal paths, their probes, re-admission
//   engine_hedge.cc    hedged reads: a slow read's second copy on another path
//   engine_internal.h  the private structs: Attempt, PathSlot, OpStats
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "server/control_api.h"
#include "server/hedge.h"
#include "server/outlier.h"
#include "server/path.h"
#include "server/path_state.h"
#include "server/request.h"
#include "server/runtime.h"
#include "server/selector.h"
#include "server/stale_writes.h"
#include "server/timer_queue.h"

namespace mp {

class Engine;
struct Attempt;
struct PathSlot;

struct OpStats;  // per request type, in engine_internal.h

struct EngineStats {
  std::uint64_t requests = 0, retries = 0, failed_requests = 0, group_switches = 0;
  std::uint64_t queued_no_path = 0, queued_no_path_ms = 0;
};

struct PathStats {
  std::uint64_t requests = 0, bytes = 0, errors = 0, timeouts = 0, failovers = 0;
  std::uint64_t transport_errors = 0, eio_errors = 0;          // errors, by kind
  std::uint64_t failures = 0, reinstatements = 0, probes = 0;  // failures: outages
  // Dirty-range affinity (engine_affinity.cc): requests sent here because they
  // overlapped a range dirty on this path, and flushes the engine sent here to
  // clean its ranges (another path needed one, or the bound was reached).
  std::uint64_t affinity_requests = 0, cleaning_flushes = 0;
  std::uint64_t reconnects = 0;  // reconnect attempts (back-off elapsed or operator reinstate)
};

class Engine final : public ControlApi, private PathListener {
 public:
  using PathFactory = std::function<PathPtr(const config::Path&, PathListener&)>;
  struct Options {
    bool track_stale_writes = true;    // false only to show the unsafe variant in a test
    bool dirty_range_affinity = true;  // likewise: false turns dirty-range affinity off
    // Loads a configuration file for reload and calls back on the loop
    // thread (Service: ConfigReader, off the loop). Empty: load it inline.
    std::function<void(const std::string& file, std::function<void(config::LoadResult)> done)>
        read_config;
  };

  // `disk` is what the disk advertises (the intersection of the paths' caps);
  // a path that cannot serve it is refused when it connects.
  Engine(config::Config cfg, Runtime& rt, const PathFactory& factory, PathCaps disk, Options opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // All holding the loop lock:
  void start();             // connects every path, starts the checker
  void submit(Request& r);  // the request completes later, once
  void run_timers();        // Runtime::wake_at's call-back
  void shutdown();          // fails all queued and in-flight requests with EIO

  // Introspection (holding the loop lock, or a test's thread).
  std::optional<PathState> state(const std::string& path) const;  // nullopt: no such path
  bool usable(const std::string& path) const;                     // in its selector's usable set
  const PathStats* path_stats(const std::string& path) const;
  const EngineStats& stats() const { return stats_; }
  const StaleWriteTracker& stale_writes() const { return tracker_; }
  const HedgePolicy& hedging() const { return hedge_; }
  std::string active_group() const;
  std::size_t waiting() const { return waiting_count_; }
  std::string summary() const;  // one line per path, for logs and the demo

  // ControlApi (loop thread, holding the loop lock).
  std::vector<PathInfo> show_paths() override;
  std::vector<GroupInfo> show_groups() override;
  EngineInfo show_stats() override;
  std::vector<Event> show_events() override;
  DiskInfo show_disk() override;
  std::vector<std::pair<std::string, std::string>> show_config() override;
  std::string fail_path(const std::string& path) override;
  std::string reinstate_path(const std::string& path) override;
  std::string drain_path(const std::string& path) override;
  std::string switch_group(const std::string& group) override;
  std::string set_queueing(bool on) override;
  std::string fail_queued(std::uint64_t* failed) override;
  std::string reset_stats() override;
  void reload(bool dry_run, ReloadDone done) override;
  // Applies a new configuration (what reload does after reading the file).
  std::string apply(config::Config next, bool dry_run, std::string* summary);

 private:
  friend struct Attempt;
  struct Group {
    std::string name;
    int priority = 0;
    SelectorPtr selector;
  };

  // Every entry point (a public call that changes state, a path's callback,
  // an attempt's completion, a timer run) opens one Entry first. When the
  // outermost one closes, leave() runs, once: the regroup a usable-set
  // change asked for, then the pump, then the wake-up update. Code in the
  // middle of an entry point regroups or pumps itself only where the order
  // matters (take_down, try_reinstate, the failback timer, apply), never
  // just to tidy up at the end.
  class Entry {
   public:
    explicit Entry(Engine& e) : e_(e) { e_.depth_++; }
    ~Entry() {
      if (--e_.depth_ == 0) e_.leave();
    }
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

   private:
    Engine& e_;
  };
  void leave();

  // engine.cc: slots, the exit, the wake-up.
  PathSlot* slot_of(const Path& path);
  PathSlot* slot_named(const std::string& name);
  PathSlot& add_slot(const config::Path& pc);
  void update_wake();

  // engine_paths.cc: path lifecycle. PathListener calls are entry points.
  void path_connected(Path& path, const PathCaps& caps) override;
  void path_down(Path& path, const std::string& reason) override;
  bool transition(PathSlot& s, PathState to, const std::string& reason);
  void event(const std::string& subject, const std::string& what, const std::string& reason);
  void fold_reconnect_event(PathSlot& s, const std::string& last);
  void connect_path(PathSlot& s, const std::string& why = "");
  void take_down(PathSlot& s, const std::string& reason);
  void schedule_reconnect(PathSlot& s);
  void probe(PathSlot& s, std::uint32_t want = 0);  // a read of `want` bytes, or the smallest
  void probe_done(PathSlot& s, bool ok, const std::string& why);
  void try_reinstate(PathSlot& s);
  void arm_checker();
  void checker_tick();

  // engine_groups.cc: groups and the serving group.
  void rebuild_groups();
  Group& group_of(const PathSlot& s);
  void regroup(bool failback_due);
  void announce_group_change(int from, int to, const std::string& why);
  Group* serving_group();

  // engine_io.cc: the data path. attempt_done (an Attempt's command_done) is an entry point.
  void admit(Request& r);  // a new request's bookkeeping (tag, deadline, epoch)
  void dispatch(Request& r);
  void dispatch_flush(Request& r);
  Attempt* send(Request* r, PathSlot& s, const Command& cmd, std::shared_ptr<std::byte[]> buf);
  void attempt_done(Attempt& a, PathResult result, int err);
  void attempt_timeout(Attempt& a);
  void abandon(Attempt& a);
  void retry(Request& r);
  void finish(Request& r, int err);

  // engine_park.cc: parked requests and the pump.
  void no_path(Request& r);
  void park(Request& r, Request::Park kind, Clock::time_point until);
  void unpark(Request& r);
  bool can_go(const Request& r);
  void pump();
  void pump_once();

  // engine_shadows.cc: re-applies and the epoch barrier.
  void request_finished(const Request& r);
  void drop_shadows();
  void start_reapplies();
  void reapply_done(Request& r);

  // engine_outlier.cc: latency outliers (marginal paths).
  std::vector<OutlierDetector::Member> outlier_members(std::size_t group);
  void arm_outlier();
  void outlier_tick();
  void readmit(PathSlot& s, const std::string& reason, bool by_operator);
  void keep_one_active(std::size_t group);

  // engine_hedge.cc: hedged reads.
  void arm_hedge(Request& r, const PathSlot& first);
  void hedge_due(Request& r);
  PathSlot* hedge_target(const Request& r, const PathSlot& first, Clock::duration wait);
  bool hedge_peer(const PathSlot& s, const PathSlot& first,
                  const Group* g);  // another active path of g
  void end_race(Request& r);
  void lost_reply(Attempt& a, PathResult result);

  // engine_affinity.cc: dirty-range affinity when the paths' caches are not shared.
  bool affinity_on() const;
  bool affinity_target(const PathSlot& s);
  bool route_by_affinity(Request& r, Group& g);
  bool affinity_clear(const Request& r);
  void note_acked_write(PathSlot& s, const Command& c);
  void note_flushed(PathSlot& s, std::uint64_t gen);
  void note_path_down(PathSlot& s);
  void clean_path(PathSlot& s, const char* why);
  void apply_affinity_config(bool was_on);

  // engine_control.cc and engine_reload.cc.
  std::string no_such_path(const std::string& name);
  void finish_removal(PathSlot& s);

  void log(LogLevel level, const std::string& line) { rt_.log(level, line); }

  config::Config cfg_;
  Runtime& rt_;
  PathFactory factory_;
  PathCaps disk_;
  Options opts_;
  bool coherent_flush_;         // shared cache, or every path advertises multi-conn
  std::string unflushed_lost_;  // a path removed while down and dirty: the next flush fails

  std::vector<std::unique_ptr<PathSlot>> slots_;  // index == PathId
  std::vector<Group> groups_;                     // by priority, highest first
  int serving_ = -1;                              // index into groups_, -1: none
  bool failed_over_ = false;  // the serving group has lost its last path once (manual failback)
  // Until then (the first connect window), a higher-priority group that comes
  // up takes over at once whatever the failback policy (start-up election).
  Clock::time_point election_until_{};
  TimerQueue::Key failback_timer_;

  TimerQueue timers_;
  unsigned depth_ = 0;        // open Entry guards
  bool regroup_due_ = false;  // the usable set changed since the last regroup
  bool wake_armed_ = false;
  Clock::time_point wake_at_{};
  TimerQueue::Key checker_timer_;
  OutlierDetector outlier_;  // advises on marginal paths; configured from cfg_.outlier
  TimerQueue::Key outlier_timer_;
  HedgePolicy hedge_;  // when a read is hedged, and the budget; configured from cfg_.hedge

  Request* parked_head_ = nullptr;  // FIFO of parked requests
  Request* parked_tail_ = nullptr;
  std::size_t waiting_count_ = 0;
  std::size_t no_path_count_ = 0;
  bool pumping_ = false;
  bool pump_again_ = false;

  Attempt* abandoned_ = nullptr;  // attempts still in flight on retired connections
  StaleWriteTracker tracker_;
  // Barrier for dropping shadows. A read sent before a shadow's write-back
  // completed may have read older data from storage (it gets the shadow laid
  // over at completion); a write sent before it may land under the
  // write-back and be acknowledged after (it patches the shadow, whose
  // changed generation then forbids the drop). So a shadow is dropped only
  // once every request submitted before its write-back completed has
  // finished. Requests carry the epoch current at submission; each completed
  // write-back closes an epoch.
  std::uint64_t epoch_ = 0;
  std::deque<std::pair<std::uint64_t, std::uint64_t>>
      inflight_by_epoch_;  // (epoch, requests), ascending
  std::vector<std::pair<StaleWriteTracker::Reapply, std::uint64_t>>
      drops_;  // write-backs done, by epoch
  std::uint64_t next_tag_ = 1;
  bool stopping_ = false;
  bool queueing_;  // no-path policy in force: cfg, or the operator's `queueing on|off`
  EngineStats stats_;
  std::vector<OpStats> ops_;  // by Op
  std::deque<Event> events_;  // the last cfg_.control.events state changes
};

}  // namespace mp
