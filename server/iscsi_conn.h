// One libiscsi connection of an IscsiPath, driven from the Asio event loop, and the commands
// sent on it. Internal to the iSCSI path (iscsi_path.cc, iscsi_conn.cc).
//
// libiscsi calls task callbacks from inside iscsi_service() (and from
// iscsi_scsi_cancel_task, the resets and iscsi_destroy_context). Callbacks
// only record results and set flags; after the library call returns,
// after_io() acts on them: it reports to sinks (which may submit or
// disconnect at once), sends the next setup command and escalates aborts.
// A callback never calls back into libiscsi beyond queueing a command: a LUN
// RESET cancels every task, and cancelling the one whose answer libiscsi is
// processing frees it under the library's feet (libiscsi 1.19: a double free
// in its PDU processing, then a NULL read). Everything runs holding the
// loop lock (server/loop_lock.h): libiscsi contexts are not thread-safe,
// and the lock serialises every call on them.
//
// Tasks are ours: libiscsi never frees one, and calls back for a cancelled
// task with no task pointer, so a command remembers its own.
#pragma once

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/fd_watch.h"
#include "server/iscsi_path.h"
#include "server/iscsi_scsi.h"
#include "server/path.h"

namespace mp {

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
  LuSetup setup;  // what the setup steps read

  explicit Conn(IscsiPath* o) : owner(o), watch(o->io_), escalate(o->io_) {}
  ~Conn() { close_now(); }

  asio::io_context& io() { return owner->io_; }

  void note_error(const std::string& what);

  // ---- event loop -------------------------------------------------------

  void arm();                          // watches the socket in the directions libiscsi asks
  void service(int revents);           // the socket is ready: iscsi_service, then after_io
  void send_queued();                  // writes the PDUs libiscsi queued, on the caller's thread
  void died(const std::string& what);  // the context failed (reported by after_io)

  std::optional<std::string> report;  // a death to tell the owner about
  bool ready_report = false;          // setup finished: tell the owner

  void settle(Cmd* c, PathResult r, int err);  // c ends on this connection with this result
  void settle_lost(Cmd* c);                    // c's connection is gone: limbo, or dead
  void after_io();  // after every libiscsi call: acts on what its callbacks recorded

  // ---- commands ---------------------------------------------------------

  static void on_task(iscsi_context*, int status, void* command_data, void* pd);
  void landed(Cmd* c, Verdict v, int err);  // a task's verdict: settle, reissue or wait
  bool issue(Cmd* c);                       // queues c's SCSI task; false: not sent

  // ---- aborts -----------------------------------------------------------

  void retire();  // the engine gave up on it: cancel reads and flushes, abort writes
  void arm_escalation(int stage);
  void escalate_now();  // an abort went unanswered or was refused: LUN RESET, then give up
  static void on_tmf(iscsi_context*, int status, void* command_data, void* pd);
  void tmf_answered(std::uint64_t cmd_id, bool good, std::uint32_t response);

  // ---- connect and setup ------------------------------------------------

  static void on_connect(iscsi_context*, int status, void*, void* pd);

  // Setup steps: READ CAPACITY(16), Block Limits, Logical Block
  // Provisioning, Device Identification, then LUN RESET if writes wait in
  // limbo. Each answer lands in on_setup, which sets setup_due; after_io
  // sends the next one.
  bool setup_due = false;
  bool escalate_due = false;  // an ABORT TASK was refused: LUN RESET now
  void setup_next();
  static void on_setup(iscsi_context*, int status, void*, void* pd);
  scsi_task* setup_task = nullptr;

  void setup_done(int status, scsi_task* task);

  // ---- close ------------------------------------------------------------

  void report_done();  // reports settled commands to their sinks, outside libiscsi
  void maybe_close();  // posts close_now once dead, or retired and idle
  void close_now();    // destroys the context; settles or frees what is left
};

}  // namespace mp
