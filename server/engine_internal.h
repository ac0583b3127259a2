// The engine's private structs: attempts, per-path slots, per-op counters. Only server/engine*.cc
// include this; engine.h shows what the plugin, the control server and tests use.
//
// Threading: all of it is touched only holding the loop lock (server/loop_lock.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "server/dirty_ranges.h"
#include "server/engine.h"
#include "server/latency.h"
#include "server/path.h"
#include "server/path_state.h"
#include "server/timer_queue.h"

namespace mp {

// How an attempt ended, as the engine saw it: Ok, Timeout (its timer fired),
// Cancelled (abandoned because its path failed, or at shutdown), Error (the
// path reported an error). InFlight until then; an abandoned attempt keeps
// how it ended while its late completion is awaited. (A path's own view of a
// command's end is PathResult.)
enum class AttemptEnd : std::uint8_t { InFlight, Ok, Timeout, Cancelled, Error };

inline const char* to_string(AttemptEnd o) {
  switch (o) {
    case AttemptEnd::InFlight:
      return "in flight";
    case AttemptEnd::Ok:
      return "ok";
    case AttemptEnd::Timeout:
      return "timed out";
    case AttemptEnd::Cancelled:
      return "cancelled";
    case AttemptEnd::Error:
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
  bool hedge = false;  // the second copy of a hedged read
  // Lost a hedge race: its request completed from the other copy. It stays in
  // its path's in-flight list (the path is still busy with it) with no timer;
  // its reply is discarded. req == nullptr.
  bool lost = false;
  AttemptEnd ended = AttemptEnd::InFlight;
  Command cmd;
  std::shared_ptr<std::byte[]> buf;  // cmd.data points into it
  Clock::time_point start{};
  TimerQueue::Key timer;
  std::uint64_t flush_gen = 0;  // flush: the path's write_gen when sent
  std::uint64_t stale_id = 0;   // abandoned write: its tracker id
  Attempt* prev = nullptr;      // in the slot's in-flight list, or the engine's abandoned list
  Attempt* next = nullptr;

  // Runs holding the loop lock (Path's rule), exactly once.
  void command_done(PathResult result, int err) override {
    engine->attempt_done(*this, result, err);
  }
};

// Intrusive doubly-linked list helpers.
inline void link(Attempt*& head, Attempt* a) {
  a->prev = nullptr;
  a->next = head;
  if (head) head->prev = a;
  head = a;
}
inline void unlink(Attempt*& head, Attempt* a) {
  if (a->prev)
    a->prev->next = a->next;
  else
    head = a->next;
  if (a->next) a->next->prev = a->prev;
  a->prev = a->next = nullptr;
}

// Everything the engine keeps about one path. Owned by Engine::slots_, never
// freed before the engine (ids are never reused), so timers and attempts may
// point at it.
struct PathSlot {
  PathId id = 0;
  config::Path cfg;
  PathPtr path;
  std::size_t group = 0;
  PathState state = PathState::Connecting;  // changed only by Engine::transition
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
  bool in_outage = false;   // failed since it last served: the outage is already logged and counted
  PathStats stats;
  Latency latency;  // per attempt
  // Without a shared cache: what this path acknowledged that no completed
  // flush on it covers yet, by write_gen (engine_affinity.cc).
  DirtyRanges ranges;
  bool dirty() const { return write_gen != flushed_gen; }
};

// Client requests of one type.
struct OpStats {
  std::uint64_t requests = 0, bytes = 0, errors = 0;
  std::uint64_t errors_eio = 0, errors_nospc = 0, errors_perm = 0, errors_other = 0;
  Latency latency;
};

// An attempt other than a hedge race's loser is in flight on the path. A
// path holding only losers (engine_hedge.cc) counts as idle for the checker's
// probe (which finds a hung server they would hide) and for a removal.
inline bool busy(const PathSlot& s) {
  for (const Attempt* a = s.inflight; a; a = a->next)
    if (!a->lost) return true;
  return false;
}

// Connected and able to take commands the engine sends itself (flushes).
inline bool connected(const PathSlot& s) {
  return s.state == PathState::Active || s.state == PathState::Marginal ||
         s.state == PathState::Draining;
}

}  // namespace mp
