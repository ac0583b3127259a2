// An iSCSI connection: its event loop, commands and their verdicts, aborts and LUN RESET
// escalation, login and setup steps, and close (see iscsi_conn.h for the callback rules).
#include "server/iscsi_conn.h"

#include <poll.h>

#include <algorithm>
#include <asio/post.hpp>
#include <cerrno>

#include "server/loop_lock.h"

namespace mp {

namespace {

constexpr unsigned kMaxReissues = 5;  // UNIT ATTENTION / BUSY / TASK SET FULL, per command

}  // namespace

void IscsiPath::Conn::note_error(const std::string& what) {
  if (error.empty()) {
    const char* e = ctx ? iscsi_get_error(ctx) : nullptr;
    error = what + (e && *e ? std::string(": ") + e : std::string());
  }
}

void IscsiPath::Conn::arm() {
  if (!ctx || closing || close_posted || phase == Phase::Dead) return;
  if (!watch.follow(iscsi_get_fd(ctx))) return;
  int ev = iscsi_which_events(ctx);
  auto self = shared_from_this();
  // Write waits are rare once send_queued() writes each command at once.
  if (!(ev & POLLOUT)) watch.drop_write_interest();
  if (ev & POLLIN)
    watch.wait(FdWatch::Read, [self](bool ok) {
      if (ok) self->service(POLLIN);
    });
  if (ev & POLLOUT)
    watch.wait(FdWatch::Write, [self](bool ok) {
      if (ok) self->service(POLLOUT);
    });
}

void IscsiPath::Conn::service(int revents) {
  if (!ctx || closing || phase == Phase::Dead) return;
  if (iscsi_service(ctx, revents) < 0) died("connection lost");
  after_io();
}

// libiscsi queues a command's PDUs and writes them when serviced for
// POLLOUT. Left to the loop, that is a wake-up per command (the write wait
// fires at once); done here, by whoever issued the command (the loop, or a
// worker holding the loop lock), it is not. What the call settles is
// reported from the loop, never inside the caller's submit.
void IscsiPath::Conn::send_queued() {
  if (!ctx || closing || phase != Phase::Ready || !(iscsi_which_events(ctx) & POLLOUT)) return;
  if (iscsi_service(ctx, POLLOUT) < 0) died("connection lost");
  if (!done.empty() || report) post_locked(io(), [self = shared_from_this()] { self->after_io(); });
}

// The context failed. ABORT TASKs in flight will not be answered. Its
// commands are settled when the context is destroyed (close_now, posted
// from after_io), which is when libiscsi lets go of their tasks.
void IscsiPath::Conn::died(const std::string& what) {
  if (phase == Phase::Dead) return;
  note_error(what);
  Phase was = phase;
  phase = Phase::Dead;
  escalate.cancel();
  // Reported by after_io(), outside any libiscsi call.
  if (was == Phase::Login || was == Phase::Setup)
    report = error.rfind("connect", 0) == 0 ? error : "connect failed: " + error;
  else if (!retired)
    report = error;
}

// Done with c on this connection: it goes to its sink with this result.
void IscsiPath::Conn::settle(Cmd* c, PathResult r, int err) {
  inflight.erase(c->id);
  c->result = r;
  c->err = err;
  done.push_back(c);
}

// A command whose connection is gone without an answer, and whose task
// libiscsi has let go of: a write waits in the path's limbo for a LUN
// RESET, anything else is reported dead.
void IscsiPath::Conn::settle_lost(Cmd* c) {
  if (c->writes() && owner) {
    inflight.erase(c->id);
    c->conn = nullptr;
    owner->limbo_.push_back(c);
    return;
  }
  settle(c, PathResult::TransportDead, ENOTCONN);
}

void IscsiPath::Conn::after_io() {
  auto self = shared_from_this();
  if (escalate_due && !closing) {
    escalate_due = false;
    escalate_now();
  }
  if (setup_due && phase == Phase::Setup && !closing) {
    setup_due = false;
    setup_next();
  }
  report_done();
  if (!owner) return;
  if (ready_report) {
    ready_report = false;
    owner->conn_ready(*this);
  }
  if (report) {
    std::string why = std::move(*report);
    report.reset();
    owner->conn_dead(*this, why);
  }
  if (!owner) return;
  if (!reissue.empty() && phase == Phase::Ready) {
    auto again = std::move(reissue);
    reissue.clear();
    for (Cmd* c : again) {
      if (!inflight.count(c->id)) continue;
      if (!issue(c))  // it has no task: nothing of it is on the target
        settle(c, PathResult::TransportDead, ENOTCONN);
    }
    report_done();
  }
  maybe_close();
  arm();
}

void IscsiPath::Conn::on_task(iscsi_context*, int status, void* command_data, void* pd) {
  auto* c = static_cast<Cmd*>(pd);
  auto* task = static_cast<scsi_task*>(command_data);
  Conn* conn = c->conn;
  int err = 0;
  std::string why;
  Verdict v = classify(status, task, &err, &why);
  if (c->task && !c->keep_task) scsi_free_scsi_task(c->task);
  c->task = nullptr;
  if (c->orphan) {  // reported already; only libiscsi still held it
    std::erase(conn->orphans, c);
    delete c;
    return;
  }
  conn->landed(c, v, err);
}

void IscsiPath::Conn::landed(Cmd* c, Verdict v, int err) {
  if (!inflight.count(c->id)) return;
  if (closing) {  // the context is being destroyed
    if (owner) settle_lost(c);
    return;
  }
  if (c->aborting) {
    // A status that beat the abort: the write ran (or failed) on the
    // target, which resolves it. A cancellation waits for the TMF answer.
    if (v == Verdict::Transport) return;
    if (v == Verdict::Ok)
      settle(c, PathResult::Ok, 0);
    else
      settle(c, PathResult::RemoteError, err ? err : EIO);
    return;
  }
  switch (v) {
    case Verdict::Ok:
      if ((c->flags & kProbe) && !c->tur_done) {
        c->tur_done = true;
        reissue.push_back(c);
        return;
      }
      settle(c, PathResult::Ok, 0);
      return;
    case Verdict::Reissue:
      if (++c->reissues <= kMaxReissues && !retired) {
        reissue.push_back(c);
        return;
      }
      err = EIO;
      [[fallthrough]];
    case Verdict::Remote:
      settle(c, PathResult::RemoteError, err);
      return;
    case Verdict::Transport:
      settle_lost(c);
      return;
  }
}

bool IscsiPath::Conn::issue(Cmd* c) {
  const std::uint32_t bs = setup.caps.min_block;
  const int lun = owner->lun_;
  const std::uint32_t bytes = c->blocks * bs;
  int fua = (c->flags & kFua) ? 1 : 0;
  scsi_task* t = nullptr;
  switch (c->op) {
    case Op::Read:
      if ((c->flags & kProbe) && !c->tur_done) {  // TEST UNIT READY, then the read
        t = iscsi_testunitready_task(ctx, lun, on_task, c);
        break;
      }
      c->iov = {c->data, bytes};
      t = iscsi_read16_iov_task(ctx, lun, c->lba, bytes, static_cast<int>(bs), 0, 0, 0, 0, 0,
                                on_task, c, &c->iov, 1);
      break;
    case Op::Write:
      c->iov = {c->data, bytes};
      t = iscsi_write16_iov_task(ctx, lun, c->lba, nullptr, bytes, static_cast<int>(bs), 0, 0, fua,
                                 0, 0, on_task, c, &c->iov, 1);
      break;
    case Op::Flush:
      t = iscsi_synchronizecache16_task(ctx, lun, 0, 0, 0, 0, on_task, c);
      break;
    case Op::Trim:
      c->unmap = {c->lba, c->blocks};
      t = iscsi_unmap_task(ctx, lun, 0, 0, &c->unmap, 1, on_task, c);
      break;
    case Op::Zero:
      t = iscsi_writesame16_task(ctx, lun, c->lba, setup.zero_block.data(),
                                 static_cast<std::uint32_t>(setup.zero_block.size()), c->blocks, 0,
                                 (c->flags & kMayTrim) && setup.caps.can_trim ? 1 : 0, 0, 0,
                                 on_task, c);
      break;
    case Op::Cache:
      return false;  // not advertised
  }
  if (!t) return false;
  c->task = t;
  return true;
}

// The engine gave up on this connection: cancel reads and flushes, abort
// writes on the target.
void IscsiPath::Conn::retire() {
  retired = true;
  reissue.clear();  // those stay in `inflight`, handled below
  std::vector<Cmd*> all;
  for (auto& [id, c] : inflight) all.push_back(c);
  unsigned aborts = 0;
  for (Cmd* c : all) {
    if (!inflight.count(c->id)) continue;
    if (!c->task) {  // waiting to be reissued: nothing of it is on the target
      settle(c, PathResult::TransportDead, ECANCELED);
      continue;
    }
    if (c->writes() && phase == Phase::Ready) {
      auto& tmf = tmfs.emplace_back(std::make_unique<Tmf>(Tmf{this, c->id}));
      c->aborting = true;
      // libiscsi 1.19 leaves the task queued: its status, or the
      // context's destruction, still calls back. A library that cancels
      // it locally would call back here, before it reads the task.
      c->keep_task = true;
      scsi_task* t = c->task;
      int rc = iscsi_task_mgmt_abort_task_async(ctx, t, on_tmf, tmf.get());
      c->keep_task = false;
      if (!c->task) scsi_free_scsi_task(t);
      if (rc == 0) {
        aborts++;
        continue;
      }
      c->aborting = false;
    }
    // Cancelled locally: landed() settles it (a write waits for a LUN
    // RESET). If libiscsi does not find the task, the context's
    // destruction settles it.
    if (c->task && ctx) iscsi_scsi_cancel_task(ctx, c->task);
  }
  if (aborts) arm_escalation(1);
}

void IscsiPath::Conn::arm_escalation(int stage) {
  escalation = stage;
  escalate.expires_after(owner->abort_timeout_);
  std::weak_ptr<Conn> weak = shared_from_this();
  escalate.async_wait(locked(loop_mutex(io()), [weak](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->closing) return;
    self->escalate_now();
    self->after_io();
  }));
}

// An abort went unanswered or was refused: LUN RESET, and after that,
// give up on the connection (its writes wait for the next login's reset).
void IscsiPath::Conn::escalate_now() {
  if (phase != Phase::Ready || escalation >= 2) {
    died(escalation >= 2 ? "LUN RESET not answered" : "connection lost");
    return;
  }
  auto& tmf = tmfs.emplace_back(std::make_unique<Tmf>(Tmf{this, 0}));
  if (iscsi_task_mgmt_lun_reset_async(ctx, owner->lun_, on_tmf, tmf.get()) != 0) {
    died("cannot send LUN RESET");
    return;
  }
  arm_escalation(2);
}

void IscsiPath::Conn::on_tmf(iscsi_context*, int status, void* command_data, void* pd) {
  auto* tmf = static_cast<Tmf*>(pd);
  Conn* c = tmf->conn;
  if (c->closing) return;
  std::uint32_t response = 0xff;
  if (status == SCSI_STATUS_GOOD && command_data)
    response = *static_cast<std::uint32_t*>(command_data);
  c->tmf_answered(tmf->cmd_id, status == SCSI_STATUS_GOOD, response);
}

void IscsiPath::Conn::tmf_answered(std::uint64_t cmd_id, bool good, std::uint32_t response) {
  bool done_ok = good && (response == ISCSI_TMR_FUNC_COMPLETE ||
                          (cmd_id != 0 && response == ISCSI_TMR_TASK_DOES_NOT_EXIST));
  if (cmd_id == 0) {  // LUN RESET
    if (!done_ok) {
      if (phase == Phase::Setup) {
        note_error("LUN RESET to clear abandoned writes failed (response " +
                   std::to_string(response) + ")");
        died(error);
      } else {
        died("LUN RESET refused (response " + std::to_string(response) + ")");
      }
      return;
    }
    // Every task on the LU, from every session, has ended.
    std::vector<Cmd*> aborted;
    for (auto& [id, c] : inflight)
      if (c->aborting) aborted.push_back(c);
    for (Cmd* c : aborted) settle(c, PathResult::RemoteError, ECANCELED);
    if (owner) owner->resolve_limbo();
    escalate.cancel();
    if (phase == Phase::Setup) setup_due = true;
    return;
  }
  auto it = inflight.find(cmd_id);
  if (it == inflight.end()) return;  // its status came first
  if (!done_ok) {
    escalate_due = true;  // after_io sends the LUN RESET
    return;
  }
  settle(it->second, PathResult::RemoteError, ECANCELED);
  bool left = false;
  for (auto& [id, x] : inflight) left |= x->aborting;
  if (!left) escalate.cancel();
}

void IscsiPath::Conn::on_connect(iscsi_context*, int status, void*, void* pd) {
  auto* c = static_cast<Conn*>(pd);
  if (c->closing) return;
  if (status != SCSI_STATUS_GOOD) {
    c->died(c->phase == Phase::Login ? "login failed" : "connection lost");
    if (c->report && c->phase == Phase::Dead) *c->report += login_hint(*c->report);
    return;
  }
  if (c->phase != Phase::Login) return;
  if (!c->logged_in) {
    // TCP is up: log in. (Our own steps, not iscsi_full_connect_async:
    // setup then reads what it needs, under our timers and messages.)
    c->logged_in = true;
    if (iscsi_login_async(c->ctx, on_connect, c) != 0) c->died("login failed");
    return;
  }
  c->phase = Phase::Setup;
  c->setup_step = 0;
  c->setup_due = true;
}

void IscsiPath::Conn::setup_next() {
  scsi_task* t = nullptr;
  const int lun = owner ? owner->lun_ : 0;
  switch (setup_step) {
    case 0:
      t = iscsi_readcapacity16_task(ctx, lun, on_setup, this);
      break;
    case 1:
      t = iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255, on_setup, this);
      break;
    case 2:
      t = iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, 255,
                             on_setup, this);
      break;
    case 3:
      t = iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_DEVICE_IDENTIFICATION, 255,
                             on_setup, this);
      break;
    case 4:
      if (owner && !owner->limbo_.empty()) {
        setup_step++;
        auto& tmf = tmfs.emplace_back(std::make_unique<Tmf>(Tmf{this, 0}));
        if (iscsi_task_mgmt_lun_reset_async(ctx, lun, on_tmf, tmf.get()) != 0)
          died("cannot send LUN RESET");
        return;
      }
      setup_step++;
      [[fallthrough]];
    default:
      phase = Phase::Ready;
      ready_report = true;
      return;
  }
  setup_task = t;
  if (!t) died("cannot send a setup command");
}

void IscsiPath::Conn::on_setup(iscsi_context*, int status, void*, void* pd) {
  auto* c = static_cast<Conn*>(pd);
  scsi_task* task = c->setup_task;  // a cancelled one comes back without it
  c->setup_task = nullptr;
  if (!task) return;
  if (!c->closing) c->setup_done(status, task);
  scsi_free_scsi_task(task);
}

void IscsiPath::Conn::setup_done(int status, scsi_task* task) {
  int err = 0;
  std::string why;
  Verdict v = classify(status, task, &err, &why);
  if (v == Verdict::Reissue && ++setup_retries <= kMaxReissues) {
    setup_due = true;  // the same step again
    return;
  }
  // An optional VPD page the target lacks: keep the defaults.
  bool optional = setup_step == 1 || setup_step == 2;
  if (v != Verdict::Ok && !(optional && v == Verdict::Remote)) {
    const char* what[] = {"READ CAPACITY(16)", "Block Limits VPD", "Logical Block Provisioning VPD",
                          "Device Identification VPD"};
    died(std::string("connect failed: ") + what[std::min(setup_step, 3u)] + " failed: " + why);
    return;
  }
  void* parsed = v == Verdict::Ok ? scsi_datain_unmarshall(task) : nullptr;
  std::string bad = read_setup_page(setup_step, parsed, &setup);
  if (!bad.empty()) {
    died("connect failed: " + bad);
    return;
  }
  setup_step++;
  setup_due = true;
}

void IscsiPath::Conn::report_done() {
  if (reporting) return;
  reporting = true;
  while (!done.empty()) {
    std::vector<Cmd*> batch;
    batch.swap(done);
    for (Cmd* c : batch) owner ? owner->finish(c) : delete c;
  }
  reporting = false;
}

// A dead context closes at once (that settles its commands); a retired
// one once nothing is in flight on it.
void IscsiPath::Conn::maybe_close() {
  if (close_posted) return;
  if (phase != Phase::Dead && !(retired && inflight.empty() && done.empty())) return;
  close_posted = true;
  watch.cancel();
  post_locked(io(), [self = shared_from_this()] {
    self->close_now();
    self->report_done();
  });
}

// Destroys the context. With an owner, its commands are settled (writes to
// limbo, the rest reported dead); without one (the path is gone), freed.
void IscsiPath::Conn::close_now() {
  if (closing) return;
  closing = true;
  escalate.cancel();
  watch.stop();
  reissue.clear();  // its commands are in `inflight` too
  if (ctx) {
    iscsi_destroy_context(ctx);  // cancels what is left, through landed()
    ctx = nullptr;
  }
  tmfs.clear();
  for (Cmd* c : orphans) delete c;
  orphans.clear();
  auto left = std::move(inflight);
  inflight.clear();
  for (auto& [id, c] : left) {
    c->task = nullptr;  // libiscsi is gone
    if (owner)
      settle_lost(c);
    else
      delete c;
  }
  if (!owner) {
    for (Cmd* c : done) delete c;
    done.clear();
  }
  if (owner) owner->conns_.remove(*this);
}

}  // namespace mp
