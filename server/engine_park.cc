// Parked requests (no path, all busy, held, flush waiting) and the pump that re-dispatches them.
#include <cerrno>
#include <chrono>
#include <string>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

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
  park(r, Request::Park::NoPath, rt_.now() + cfg_.no_path.max_time);
}

void Engine::park(Request& r, Request::Park kind, Clock::time_point until) {
  r.parked_for = kind;
  r.park_until = until;
  r.park_prev = parked_tail_;
  r.park_next = nullptr;
  (parked_tail_ ? parked_tail_->park_next : parked_head_) = &r;
  parked_tail_ = &r;
  waiting_count_++;
  if (kind == Request::Park::NoPath) no_path_count_++;
  r.park_timer = timers_.arm(until, [this, &r] {
    r.park_timer = {};
    const char* what = r.parked_for == Request::Park::NoPath ? "no usable path"
                       : r.parked_for == Request::Park::Busy ? "every path busy"
                       : r.parked_for == Request::Park::Hold ? "an abandoned write over its range"
                       : r.parked_for == Request::Park::Clean
                           ? "a path holding a dirty range of it to be flushed"
                           : "a dirty path to flush";
    log(LogLevel::Error, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " failed with EIO: timed out waiting for " + what);
    unpark(r);
    finish(r, EIO);
  });
}

void Engine::unpark(Request& r) {
  if (r.parked_for == Request::Park::None) return;
  (r.park_prev ? r.park_prev->park_next : parked_head_) = r.park_next;
  (r.park_next ? r.park_next->park_prev : parked_tail_) = r.park_prev;
  r.park_prev = r.park_next = nullptr;
  waiting_count_--;
  if (r.parked_for == Request::Park::NoPath) {
    no_path_count_--;
    stats_.queued_no_path_ms += duration_cast<milliseconds>(rt_.now() - r.started).count();
  }
  r.parked_for = Request::Park::None;
  timers_.cancel(r.park_timer);
}

bool Engine::can_go(const Request& r) {
  if (stopping_) return true;
  switch (r.parked_for) {
    case Request::Park::NoPath:
      return serving_group() != nullptr;
    case Request::Park::Busy: {
      Group* g = serving_group();
      if (!g) return true;  // dispatch moves it to the no-path queue
      for (auto& s : slots_)
        if (&group_of(*s) == g && g->selector->can_take(s->id)) return true;
      return false;
    }
    case Request::Park::Hold:
      return !tracker_.must_hold(r.offset, r.count, r.tag);
    case Request::Park::Flush:
      for (auto& s : slots_)
        if (s->dirty() && !connected(*s) && s->state != PathState::Removed) return false;
      return true;
    case Request::Park::Clean:
      return affinity_clear(r);
    case Request::Park::None:
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
  Request* last = parked_tail_;  // requests re-queued behind it wait for the next pass
  for (Request* r = parked_head_; r;) {
    Request* next = r == last ? nullptr : r->park_next;
    if (can_go(*r)) {
      bool from_no_path = r->parked_for == Request::Park::NoPath;
      unpark(*r);
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

}  // namespace mp
