// The data path: submit, dispatch, send an attempt, its completion or timeout, retry, finish.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "server/engine.h"
#include "server/engine_internal.h"
#include "server/errno_text.h"

namespace mp {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

void Engine::submit(Request& r) {
  Entry entry(*this);
  admit(r);
  dispatch(r);
}

void Engine::admit(Request& r) {
  r.tag = next_tag_++;
  r.started = rt_.now();
  r.deadline = r.started + cfg_.timeouts.request;
  stats_.requests++;
  if (r.op == Op::Read && !r.internal) hedge_.read_seen();
  r.epoch = epoch_;
  if (inflight_by_epoch_.empty() || inflight_by_epoch_.back().first != epoch_)
    inflight_by_epoch_.emplace_back(epoch_, 0);
  inflight_by_epoch_.back().second++;
}

void Engine::dispatch(Request& r) {
  if (stopping_) return finish(r, EIO);
  if (r.op == Op::Flush) return dispatch_flush(r);
  if (is_write(r.op) && opts_.track_stale_writes && tracker_.must_hold(r.offset, r.count, r.tag)) {
    log(LogLevel::Debug, std::string(to_string(r.op)) + " at " + std::to_string(r.offset) +
                             " held: an abandoned write over its range has no shadow "
                             "(stale-writes max-bytes reached)");
    return park(r, Request::Park::Hold, r.deadline);
  }
  Group* g = serving_group();
  if (!g) return no_path(r);
  if (route_by_affinity(r, *g)) return;  // a range dirty on one path: sent there, or waits
  auto id = g->selector->select_path(r.count);
  if (!id) return park(r, Request::Park::Busy, r.deadline);
  Command cmd{r.op, r.offset, r.count, r.flags, nullptr};
  PathSlot& s = *slots_[*id];
  if (!send(&r, s, cmd,
            r.op == Op::Read ? std::make_shared_for_overwrite<std::byte[]>(r.count) : r.data))
    return retry(r);  // the path is failed now: another one is picked
  arm_hedge(r, s);    // reads only; never one routed by affinity (above)
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
      return park(r, Request::Park::Flush, r.deadline);
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

// Sends one attempt and returns it. Null when the path refused it: the path
// is failed then, and the caller decides what happens to the request.
Attempt* Engine::send(Request* r, PathSlot& s, const Command& c, std::shared_ptr<std::byte[]> buf) {
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
    take_down(s, "submit failed: no connection");
    return nullptr;
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
  return a;
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
  if (a.ended == AttemptEnd::InFlight) a.ended = AttemptEnd::Cancelled;
  link(abandoned_, &a);
  if (a.probe) {
    s.probing = false;
    return;
  }
  if (a.lost) return;  // lost a hedge race: its request completed already
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
  a.ended = AttemptEnd::Timeout;
  if (a.req && rt_.now() >= a.req->deadline && rt_.now() - a.start < cfg_.timeouts.attempt) {
    // The request's deadline, not the attempt's timer: give up on the request
    // but keep the path.
    abandon(a);  // retry() sees the deadline and fails the request
    return;
  }
  take_down(s, std::string(a.probe ? "probe" : to_string(a.cmd.op)) + " timed out after " +
                   std::to_string(duration_cast<milliseconds>(rt_.now() - a.start).count()) +
                   " ms");
}

void Engine::attempt_done(Attempt& a, PathResult result, int err) {
  Entry entry(*this);
  if (a.abandoned) {
    // A late completion: the attempt was given up on already.
    unlink(abandoned_, &a);
    if (a.stale_id) {
      bool late = result != PathResult::TransportDead;
      tracker_.resolve(a.stale_id, late);
      log(LogLevel::Debug, "path " + a.slot->cfg.name + ": abandoned (" + to_string(a.ended) +
                               ") " + to_string(a.cmd.op) + " at " + std::to_string(a.cmd.offset) +
                               " resolved " +
                               (late ? "late (its reply came)" : "by the connection's death"));
      for (auto& s : slots_)
        if (s->state == PathState::Held) try_reinstate(*s);
      start_reapplies();
    }
    delete &a;
    return;
  }
  if (a.lost) return lost_reply(a, result);

  AttemptEnd ended = result == PathResult::Ok ? AttemptEnd::Ok : AttemptEnd::Error;
  a.ended = ended;
  PathSlot& s = *a.slot;
  unlink(s.inflight, &a);
  s.inflight_count--;
  s.last_io = rt_.now();
  s.latency.add(s.last_io - a.start);
  if (result == PathResult::Ok && a.cmd.op != Op::Flush)
    outlier_.record(s.id, s.last_io, s.last_io - a.start, a.cmd.count);
  if (result == PathResult::Ok && a.cmd.op == Op::Read && a.req && !a.req->internal)
    hedge_.record(s.last_io - a.start);
  group_of(s).selector->end_io(s.id, a.cmd.count, a.start);
  timers_.cancel(a.timer);

  // Which failures count against the path (transport-level ones, and EIO by
  // default: an upstream whose backend fails is a failed path).
  std::string path_error;
  if (result == PathResult::TransportDead)
    path_error = std::string("connection lost: ") + errno_text(err ? err : ENOTCONN);
  else if (result == PathResult::RemoteError && err == EIO &&
           cfg_.failover.eio == config::EioPolicy::Failover)
    path_error = "server returned EIO";
  if (!path_error.empty()) {
    s.stats.errors++;
    (result == PathResult::TransportDead ? s.stats.transport_errors : s.stats.eio_errors)++;
  }

  if (a.probe) {
    delete &a;
    probe_done(s, ended == AttemptEnd::Ok,
               ended == AttemptEnd::Ok ? ""
               : path_error.empty()    ? errno_text(err)
                                       : path_error);
    return;
  }

  Request& r = *a.req;
  r.pending--;
  if (ended == AttemptEnd::Ok) {
    if (is_write(a.cmd.op)) {
      s.write_gen++;
      note_acked_write(s, a.cmd);
    }
    if (a.cmd.op == Op::Flush) {
      s.flushed_gen = std::max(s.flushed_gen, a.flush_gen);
      note_flushed(s, a.flush_gen);
    }
    if (a.cmd.op == Op::Read) {
      r.data = std::move(a.buf);  // the winner's buffer, and only it, becomes the result
      if (r.hedged) {             // the first good reply of two copies
        if (a.hedge) hedge_.won();
        r.err = 0;
        r.retry_needed = false;
        end_race(r);  // the other copy, if still out, loses
      }
    }
  } else if (path_error.empty()) {
    if (!r.err) r.err = err;  // the server's answer on a healthy connection
  } else {
    r.retry_needed = true;
  }
  delete &a;

  if (!path_error.empty()) take_down(s, path_error);  // first, so the retry picks another path
  if (r.pending == 0) {
    if (r.retry_needed)
      retry(r);
    else
      finish(r, r.err);
  }
  if (s.removing) finish_removal(s);
  if (s.ranges.over_limit()) clean_path(s, "dirty-range bound reached");
}

void Engine::retry(Request& r) {
  timers_.cancel(r.hedge_timer);
  r.retry_needed = false;
  r.err = 0;
  if (r.cleaning) return finish(r, EIO);  // its one path failed: nothing left to clean there
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
  unpark(r);
  timers_.cancel(r.hedge_timer);
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
    r.wake();
}

}  // namespace mp
