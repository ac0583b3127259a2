// IscsiPath: drives libiscsi contexts from the Asio event loop.
//
// libiscsi calls task callbacks from inside iscsi_service() (and from
// iscsi_scsi_cancel_task, the resets and iscsi_destroy_context). Callbacks
// only record results and set flags; after the library call returns,
// after_io() acts on them: it reports to sinks (which may submit or
// disconnect at once), sends the next setup command and escalates aborts.
// A callback never calls back into libiscsi beyond queueing a command: a LUN
// RESET cancels every task, and cancelling the one whose answer libiscsi is
// processing frees it under the library's feet (libiscsi 1.19: a double free
// in its PDU processing, then a NULL read). Everything runs on the loop
// thread.
//
// Tasks are ours: libiscsi never frees one, and calls back for a cancelled
// task with no task pointer, so a command remembers its own.
//
// Auto-reconnect is off: a dead context is dead, and the engine reconnects
// the path with its own back-off, through connect().
#include "server/iscsi_path.h"

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>

#include "server/fd_watch.h"

namespace mp {

namespace {

constexpr const char* kInitiator = "iqn.2026-11.org.nbd-multipath:initiator";
constexpr unsigned kMaxReissues = 5;  // UNIT ATTENTION / BUSY / TASK SET FULL, per command

// What a finished SCSI task means for its command.
enum class Verdict { Ok, Reissue, Transport, Remote };

// errno for a CHECK CONDITION, as NBD can carry it.
int sense_errno(const scsi_sense& s) {
  switch (s.key) {
    case SCSI_SENSE_ILLEGAL_REQUEST:
      return EINVAL;  // out of range, unsupported opcode or field
    case SCSI_SENSE_DATA_PROTECTION:
      return s.ascq == 0x2707 ? ENOSPC : EPERM;  // 27/07: space allocation failed
    default:
      return EIO;  // not ready, medium, hardware, aborted command, miscompare
  }
}

std::string sense_text(const scsi_sense& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s, %s (%02x/%02x)", scsi_sense_key_str(s.key),
                scsi_sense_ascq_str(s.ascq), (s.ascq >> 8) & 0xff, s.ascq & 0xff);
  return buf;
}

Verdict classify(int status, scsi_task* task, int* err, std::string* why) {
  *err = 0;
  switch (status) {
    case SCSI_STATUS_GOOD:
      return Verdict::Ok;
    case SCSI_STATUS_CHECK_CONDITION:
      if (task && task->sense.key == SCSI_SENSE_UNIT_ATTENTION) {
        *why = "unit attention: " + sense_text(task->sense);
        return Verdict::Reissue;
      }
      *err = task ? sense_errno(task->sense) : EIO;
      *why = task ? sense_text(task->sense) : "check condition";
      return Verdict::Remote;
    case SCSI_STATUS_BUSY:
    case SCSI_STATUS_TASK_SET_FULL:
      *why = status == SCSI_STATUS_BUSY ? "busy" : "task set full";
      return Verdict::Reissue;
    case SCSI_STATUS_CANCELLED:
    case SCSI_STATUS_ERROR:
    case SCSI_STATUS_TIMEOUT:
      *err = ENOTCONN;
      *why = "connection lost";
      return Verdict::Transport;
    default:  // reservation conflict, task aborted, ACA active, ...
      *err = EIO;
      *why = "SCSI status " + std::to_string(status);
      return Verdict::Remote;
  }
}

// The LU's identifier from the Device Identification page: the best
// LU-associated designator (NAA, then EUI-64, then SCSI name, then T10
// vendor ID), as text such as "naa.6000000000000000..." or "t10.IET 0001".
std::string lu_identity(scsi_inquiry_device_identification* inq) {
  int best_rank = 0;
  std::string best;
  for (auto* d = inq ? inq->designators : nullptr; d; d = d->next) {
    if (d->association != SCSI_ASSOCIATION_LOGICAL_UNIT || d->designator_length <= 0) continue;
    int rank = 0;
    const char* prefix = "";
    switch (d->designator_type) {
      case SCSI_DESIGNATOR_TYPE_NAA:
        rank = 4, prefix = "naa.";
        break;
      case SCSI_DESIGNATOR_TYPE_EUI_64:
        rank = 3, prefix = "eui.";
        break;
      case SCSI_DESIGNATOR_TYPE_SCSI_NAME_STRING:
        rank = 2, prefix = "";
        break;
      case SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID:
        rank = 1, prefix = "t10.";
        break;
      default:
        continue;
    }
    if (rank <= best_rank) continue;
    std::string text = prefix;
    auto* p = reinterpret_cast<const unsigned char*>(d->designator);
    if (d->code_set == SCSI_CODESET_BINARY) {
      char hex[3];
      for (int i = 0; i < d->designator_length; i++) {
        std::snprintf(hex, sizeof hex, "%02x", p[i]);
        text += hex;
      }
    } else {
      std::string s(d->designator, static_cast<std::size_t>(d->designator_length));
      while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
      text += s;
    }
    best_rank = rank;
    best = std::move(text);
  }
  return best;
}

// What to check when a login is refused, from libiscsi's message.
std::string login_hint(const std::string& error) {
  if (error.find("Authentication failure") != std::string::npos)
    return ": check the CHAP user and secret (USER%PASSWORD in the URI, or chap: in the YAML)";
  if (error.find("Authorization failure") != std::string::npos)
    return ": the target does not let this initiator in (check its ACL)";
  if (error.find("Target not found") != std::string::npos ||
      error.find("Target removed") != std::string::npos)
    return ": check the target name (IQN) in the URI";
  return "";
}

// Deterministic per path name, so that a path's reconnects reinstate its own
// session and two paths to one target never take each other's.
std::uint32_t isid_qualifier(const std::string& name) {
  return static_cast<std::uint32_t>(std::hash<std::string>{}(name)) & 0xffffff;
}

}  // namespace

struct IscsiPath::Cmd {
  Conn* conn;  // the connection it was sent on; nullptr in limbo
  CommandSink* sink;
  SplitJoin* split;
  std::uint64_t id;
  Op op;
  std::uint64_t lba;
  std::uint32_t blocks;
  std::uint32_t flags;
  std::byte* data;
  scsi_iovec iov{};
  unmap_list unmap{};
  scsi_task* task = nullptr;  // while libiscsi holds it
  unsigned reissues = 0;
  bool aborting = false;   // ABORT TASK sent: resolved only by the target's answer
  bool keep_task = false;  // in retire()'s abort call: on_task must not free the task
  bool tur_done = false;   // a probe's TEST UNIT READY passed: now its read
  bool orphan = false;     // reported and waiting only for libiscsi to let go
  PathResult result = PathResult::Ok;
  int err = 0;

  bool writes() const { return is_write(op); }
};

struct IscsiPath::Conn : std::enable_shared_from_this<Conn> {
  enum class Phase { Login, Setup, Ready, Dead };
  // A task-management call in flight. Owned by the connection and freed only
  // after its context is destroyed, after which libiscsi never calls back.
  struct Tmf {
    Conn* conn;
    std::uint64_t cmd_id;  // 0: LUN RESET
  };

  IscsiPath* owner;  // nullptr once the path is gone
  iscsi_context* ctx = nullptr;
  FdWatch watch;
  Phase phase = Phase::Login;
  bool retired = false;
  bool close_posted = false;
  bool closing = false;    // in close_now: callbacks only let go of their tasks
  bool reporting = false;  // in report_done(): a nested call leaves the queue to the outer loop
  bool logged_in = false;  // TCP connected, login sent
  unsigned setup_step = 0;
  unsigned setup_retries = 0;
  bool reset_sent = false;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, Cmd*> inflight;
  std::vector<Cmd*> done;
  std::vector<Cmd*> reissue;  // also in `inflight`
  std::vector<Cmd*> orphans;  // reported, but libiscsi still holds their task
  std::vector<std::unique_ptr<Tmf>> tmfs;
  asio::steady_timer escalate;
  int escalation = 0;  // 0 none, 1 ABORT TASKs sent, 2 LUN RESET sent
  std::string error;
  PathCaps caps;
  std::vector<unsigned char> zero_block;

  explicit Conn(IscsiPath* o) : owner(o), watch(o->io_), escalate(o->io_) {}
  ~Conn() { close_now(); }

  asio::io_context& io() { return owner->io_; }

  void note_error(const std::string& what) {
    if (error.empty()) {
      const char* e = ctx ? iscsi_get_error(ctx) : nullptr;
      error = what + (e && *e ? std::string(": ") + e : std::string());
    }
  }

  // ---- event loop -------------------------------------------------------

  void arm() {
    if (!ctx || closing || close_posted || phase == Phase::Dead) return;
    if (!watch.follow(iscsi_get_fd(ctx))) return;
    int ev = iscsi_which_events(ctx);
    auto self = shared_from_this();
    if (ev & POLLIN)
      watch.wait(FdWatch::Read, [self](bool ok) {
        if (ok) self->service(POLLIN);
      });
    if (ev & POLLOUT)
      watch.wait(FdWatch::Write, [self](bool ok) {
        if (ok) self->service(POLLOUT);
      });
  }

  void service(int revents) {
    if (!ctx || closing || phase == Phase::Dead) return;
    if (iscsi_service(ctx, revents) < 0) died("connection lost");
    after_io();
  }

  // The context failed. ABORT TASKs in flight will not be answered. Its
  // commands are settled when the context is destroyed (close_now, posted
  // from after_io), which is when libiscsi lets go of their tasks.
  void died(const std::string& what) {
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

  std::optional<std::string> report;  // a death to tell the owner about
  bool ready_report = false;          // setup finished: tell the owner

  // Done with c on this connection: it goes to its sink with this result.
  void settle(Cmd* c, PathResult r, int err) {
    inflight.erase(c->id);
    c->result = r;
    c->err = err;
    done.push_back(c);
  }

  // A command whose connection is gone without an answer, and whose task
  // libiscsi has let go of: a write waits in the path's limbo for a LUN
  // RESET, anything else is reported dead.
  void settle_lost(Cmd* c) {
    if (c->writes() && owner) {
      inflight.erase(c->id);
      c->conn = nullptr;
      owner->limbo_.push_back(c);
      return;
    }
    settle(c, PathResult::TransportDead, ENOTCONN);
  }

  void after_io() {
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

  // ---- commands ---------------------------------------------------------

  static void on_task(iscsi_context*, int status, void* command_data, void* pd) {
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

  void landed(Cmd* c, Verdict v, int err) {
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

  bool issue(Cmd* c) {
    const std::uint32_t bs = caps.min_block;
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
        t = iscsi_write16_iov_task(ctx, lun, c->lba, nullptr, bytes, static_cast<int>(bs), 0, 0,
                                   fua, 0, 0, on_task, c, &c->iov, 1);
        break;
      case Op::Flush:
        t = iscsi_synchronizecache16_task(ctx, lun, 0, 0, 0, 0, on_task, c);
        break;
      case Op::Trim:
        c->unmap = {c->lba, c->blocks};
        t = iscsi_unmap_task(ctx, lun, 0, 0, &c->unmap, 1, on_task, c);
        break;
      case Op::Zero:
        t = iscsi_writesame16_task(
            ctx, lun, c->lba, zero_block.data(), static_cast<std::uint32_t>(zero_block.size()),
            c->blocks, 0, (c->flags & kMayTrim) && caps.can_trim ? 1 : 0, 0, 0, on_task, c);
        break;
      case Op::Cache:
        return false;  // not advertised
    }
    if (!t) return false;
    c->task = t;
    return true;
  }

  // ---- aborts -----------------------------------------------------------

  // The engine gave up on this connection: cancel reads and flushes, abort
  // writes on the target.
  void retire() {
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

  void arm_escalation(int stage) {
    escalation = stage;
    escalate.expires_after(owner->abort_timeout_);
    std::weak_ptr<Conn> weak = shared_from_this();
    escalate.async_wait([weak](std::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->closing) return;
      self->escalate_now();
      self->after_io();
    });
  }

  // An abort went unanswered or was refused: LUN RESET, and after that,
  // give up on the connection (its writes wait for the next login's reset).
  void escalate_now() {
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

  static void on_tmf(iscsi_context*, int status, void* command_data, void* pd) {
    auto* tmf = static_cast<Tmf*>(pd);
    Conn* c = tmf->conn;
    if (c->closing) return;
    std::uint32_t response = 0xff;
    if (status == SCSI_STATUS_GOOD && command_data)
      response = *static_cast<std::uint32_t*>(command_data);
    c->tmf_answered(tmf->cmd_id, status == SCSI_STATUS_GOOD, response);
  }

  void tmf_answered(std::uint64_t cmd_id, bool good, std::uint32_t response) {
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

  // ---- connect and setup ------------------------------------------------

  static void on_connect(iscsi_context*, int status, void*, void* pd) {
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

  // Setup steps: READ CAPACITY(16), Block Limits, Logical Block
  // Provisioning, Device Identification, then LUN RESET if writes wait in
  // limbo. Each answer lands in on_setup, which sets setup_due; after_io
  // sends the next one.
  bool setup_due = false;
  bool escalate_due = false;  // an ABORT TASK was refused: LUN RESET now
  void setup_next() {
    scsi_task* t = nullptr;
    const int lun = owner ? owner->lun_ : 0;
    switch (setup_step) {
      case 0:
        t = iscsi_readcapacity16_task(ctx, lun, on_setup, this);
        break;
      case 1:
        t = iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255, on_setup,
                               this);
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

  static void on_setup(iscsi_context*, int status, void*, void* pd) {
    auto* c = static_cast<Conn*>(pd);
    scsi_task* task = c->setup_task;  // a cancelled one comes back without it
    c->setup_task = nullptr;
    if (!task) return;
    if (!c->closing) c->setup_done(status, task);
    scsi_free_scsi_task(task);
  }
  scsi_task* setup_task = nullptr;

  void setup_done(int status, scsi_task* task) {
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
      const char* what[] = {"READ CAPACITY(16)", "Block Limits VPD",
                            "Logical Block Provisioning VPD", "Device Identification VPD"};
      died(std::string("connect failed: ") + what[std::min(setup_step, 3u)] + " failed: " + why);
      return;
    }
    void* parsed = v == Verdict::Ok ? scsi_datain_unmarshall(task) : nullptr;
    switch (setup_step) {
      case 0: {
        auto* rc = static_cast<scsi_readcapacity16*>(parsed);
        if (!rc || rc->block_length == 0) {
          died("connect failed: READ CAPACITY(16) returned no capacity");
          return;
        }
        caps.min_block = rc->block_length;
        caps.pref_block = std::max<std::uint32_t>(rc->block_length, 4096);
        caps.size = (rc->returned_lba + 1) * rc->block_length;
        caps.can_trim = rc->lbpme != 0;
        zero_block.assign(rc->block_length, 0);
        break;
      }
      case 1:
        if (auto* bl = static_cast<scsi_inquiry_block_limits*>(parsed)) {
          std::uint64_t max = bl->max_xfer_len ? std::uint64_t{bl->max_xfer_len} * caps.min_block
                                               : std::uint64_t{32} << 20;
          max = std::min<std::uint64_t>(max, 32u << 20);
          caps.max_request = static_cast<std::uint32_t>(max / caps.min_block * caps.min_block);
          max_ws = bl->max_ws_len ? bl->max_ws_len : 0;
          max_unmap = bl->max_unmap;
        }
        break;
      case 2: {
        auto* lbp = static_cast<scsi_inquiry_logical_block_provisioning*>(parsed);
        caps.can_trim = caps.can_trim && lbp && lbp->lbpu;
        break;
      }
      case 3:
        caps.identity = lu_identity(static_cast<scsi_inquiry_device_identification*>(parsed));
        break;
    }
    setup_step++;
    setup_due = true;
  }

  std::uint64_t max_ws = 0;     // WRITE SAME limit in blocks; 0: none given
  std::uint32_t max_unmap = 0;  // UNMAP limit in blocks; 0: none given

  // ---- close ------------------------------------------------------------

  void report_done() {
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
  void maybe_close() {
    if (close_posted) return;
    if (phase != Phase::Dead && !(retired && inflight.empty() && done.empty())) return;
    close_posted = true;
    watch.cancel();
    asio::post(io(), [self = shared_from_this()] {
      self->close_now();
      self->report_done();
    });
  }

  // Destroys the context. With an owner, its commands are settled (writes to
  // limbo, the rest reported dead); without one (the path is gone), freed.
  void close_now() {
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
    if (owner) {
      auto& r = owner->retired_;
      for (auto it = r.begin(); it != r.end(); ++it)
        if (it->get() == this) {
          auto keep = std::move(*it);  // dies after erase, with the caller's reference
          r.erase(it);
          break;
        }
    }
  }
};

// ---------------------------------------------------------------------------

IscsiPath::IscsiPath(asio::io_context& io, config::Path cfg, PathListener& listener,
                     std::chrono::milliseconds abort_timeout)
    : io_(io), cfg_(std::move(cfg)), listener_(listener), abort_timeout_(abort_timeout) {}

IscsiPath::~IscsiPath() {
  auto all = std::move(retired_);
  if (cur_) all.push_back(std::move(cur_));
  for (auto& c : all) {
    c->owner = nullptr;
    c->close_now();
  }
  for (Cmd* c : limbo_) delete c;
}

unsigned IscsiPath::retired_connections() const {
  return static_cast<unsigned>(retired_.size());
}

void IscsiPath::connect() {
  if (cur_) disconnect();
  auto c = std::make_shared<Conn>(this);
  cur_ = c;
  std::string err;
  c->ctx = iscsi_create_context(kInitiator);
  iscsi_url* url = nullptr;
  if (!c->ctx) {
    err = "cannot create a libiscsi context";
  } else if (!(url = iscsi_parse_full_url(c->ctx, cfg_.uri.c_str()))) {
    err = std::string("bad iSCSI URI: ") + iscsi_get_error(c->ctx);
  } else {
    lun_ = url->lun;
    iscsi_set_noautoreconnect(c->ctx, 1);
    iscsi_set_isid_random(c->ctx, isid_qualifier(cfg_.name), 0);
    iscsi_set_session_type(c->ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(c->ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
    iscsi_set_targetname(c->ctx, url->target);
    const std::string user = cfg_.chap_user.empty() ? url->user : cfg_.chap_user;
    const std::string secret = cfg_.chap_user.empty() ? url->passwd : cfg_.chap_secret;
    if (!user.empty()) iscsi_set_initiator_username_pwd(c->ctx, user.c_str(), secret.c_str());
    if (iscsi_connect_async(c->ctx, url->portal, Conn::on_connect, c.get()) != 0)
      err = std::string("connect failed: ") + iscsi_get_error(c->ctx);
  }
  if (url) iscsi_destroy_url(url);
  if (!err.empty()) {
    c->phase = Conn::Phase::Dead;
    asio::post(io_, [c, err] {
      if (c->owner && c->owner->cur_ == c) c->owner->listener_.path_down(*c->owner, err);
    });
    return;
  }
  c->after_io();
}

void IscsiPath::conn_ready(Conn& c) {
  if (cur_.get() != &c) return;
  caps_ = c.caps;
  caps_.can_flush = caps_.can_fua = caps_.can_zero = true;
  listener_.path_connected(*this, caps_);
}

void IscsiPath::conn_dead(Conn& c, const std::string& reason) {
  if (cur_.get() == &c) listener_.path_down(*this, reason);
}

void IscsiPath::resolve_limbo() {
  auto all = std::move(limbo_);
  limbo_.clear();
  for (Cmd* c : all) {
    c->result = PathResult::RemoteError;
    c->err = ECANCELED;
    finish(c);
  }
}

void IscsiPath::finish(Cmd* c) {
  CommandSink* sink = c->sink;
  c->sink = nullptr;
  PathResult r = c->result;
  int err = c->err;
  if (SplitJoin* s = c->split) sink = s->add(r, err);
  c->split = nullptr;
  if (c->task && c->conn) {
    c->orphan = true;  // freed when libiscsi calls back, or with the context
    c->conn->orphans.push_back(c);
  } else {
    delete c;
  }
  if (sink) sink->command_done(r, err);
}

void IscsiPath::disconnect() {
  if (!cur_) return;
  auto c = std::move(cur_);
  retired_.push_back(c);
  c->retire();
  // Sinks hear of cancelled commands from the loop, not from inside the
  // caller's disconnect().
  asio::post(io_, [c] { c->after_io(); });
}

bool IscsiPath::submit(const Command& cmd, CommandSink* sink) {
  Conn* c = cur_.get();
  if (!c || c->phase != Conn::Phase::Ready || !c->ctx || cmd.op == Op::Cache) return false;
  const std::uint32_t bs = caps_.min_block;
  if (cmd.offset % bs || cmd.count % bs) return false;  // the plugin refuses these first
  // The largest chunk per command, in blocks.
  std::uint64_t max_blocks = caps_.max_request / bs;
  if (cmd.op == Op::Zero) max_blocks = c->max_ws ? c->max_ws : 0xffff;
  if (cmd.op == Op::Trim) max_blocks = c->max_unmap ? c->max_unmap : 0xffff;
  std::uint64_t blocks = cmd.count / bs;
  std::uint64_t lba = cmd.offset / bs;
  if (blocks == 0 && cmd.op != Op::Flush) {
    // Nothing to do, and WRITE SAME or UNMAP of 0 blocks would mean "to the end".
    auto* x = new Cmd{c, sink, nullptr, c->next_id++, cmd.op, lba, 0, cmd.flags, nullptr};
    c->done.push_back(x);
    asio::post(io_, [self = c->shared_from_this()] { self->after_io(); });
    return true;
  }
  std::uint32_t n =
      cmd.op == Op::Flush ? 1 : static_cast<std::uint32_t>((blocks + max_blocks - 1) / max_blocks);
  if (n == 0) n = 1;
  SplitJoin* s = n > 1 ? new SplitJoin{sink, n} : nullptr;
  for (std::uint32_t i = 0; i < n; i++) {
    std::uint64_t first = i * max_blocks;
    auto len = static_cast<std::uint32_t>(std::min<std::uint64_t>(max_blocks, blocks - first));
    auto* x = new Cmd{c,
                      s ? nullptr : sink,
                      s,
                      c->next_id++,
                      cmd.op,
                      lba + first,
                      len,
                      cmd.flags,
                      cmd.data ? cmd.data + first * bs : nullptr};
    if (!c->issue(x)) {
      delete x;
      if (i == 0) {
        delete s;
        return false;
      }
      // Some chunks are on the wire: the split ends when they do, as failed.
      s->result = PathResult::TransportDead;
      s->err = ENOTCONN;
      s->remaining -= n - i;
      break;
    }
    c->inflight.emplace(x->id, x);
  }
  c->arm();
  return true;
}

// ---------------------------------------------------------------------------

namespace {

struct ProbeListener : PathListener {
  bool finished = false;
  bool ok = false;
  PathCaps caps;
  std::string error;
  void path_connected(Path&, const PathCaps& k) override {
    finished = ok = true;
    caps = k;
  }
  void path_down(Path&, const std::string& reason) override {
    finished = true;
    error = reason;
  }
};

}  // namespace

bool iscsi_probe_caps(const config::Path& path, std::chrono::milliseconds timeout, PathCaps* caps,
                      std::string* error) {
  asio::io_context io;
  ProbeListener l;
  {
    IscsiPath p(io, path, l, timeout);
    p.connect();
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!l.finished && std::chrono::steady_clock::now() < deadline) {
      io.run_one_until(deadline);
    }
  }
  if (!l.finished) {
    *error = "connect timed out after " + std::to_string(timeout.count()) + " ms";
    return false;
  }
  if (!l.ok) {
    *error = l.error;
    return false;
  }
  *caps = l.caps;
  return true;
}

}  // namespace mp
