// A path to an iSCSI logical unit: libiscsi's asynchronous API driven by the
// Asio loop, on the same thread as the NBD paths.
//
// Request mapping: read READ(16), write WRITE(16) (FUA bit), flush
// SYNCHRONIZE CACHE(16), trim UNMAP (only when the LU's provisioning page says
// so), zero WRITE SAME(16). Requests are split to the LU's Block Limits.
//
// Abandoned writes (see README, "Write ordering across paths"): when the
// engine retires a connection, reads and flushes on it are cancelled at once,
// but each write is aborted on the target with ABORT TASK. Its sink hears of
// it only when the target has answered the abort (the write then ran or will
// never run), or a LUN RESET answered on this or a later connection of the
// path. If ABORT TASK gets no answer within the abort timeout, LUN RESET
// follows on the same connection; if that gets none either, or the
// connection is gone, the connection is dropped and the next login of this
// path starts with a LUN RESET before the path reports itself connected.
// A closed connection alone never counts: a hung target can still run a
// write it received after the socket is gone.
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/path.h"
#include "server/path_kit.h"

namespace mp {

class IscsiPath final : public Path {
 public:
  // `abort_timeout`: how long ABORT TASK, then LUN RESET, may take before
  // escalating.
  IscsiPath(asio::io_context& io, config::Path cfg, PathListener& listener,
            std::chrono::milliseconds abort_timeout);
  ~IscsiPath() override;  // destroys every context; never calls a sink

  const std::string& name() const override { return cfg_.name; }
  const std::string& uri() const override { return cfg_.uri; }
  void connect() override;
  bool submit(const Command& cmd, CommandSink* sink) override;
  void disconnect() override;
  unsigned retired_connections() const override;

  struct Conn;  // one libiscsi context; see iscsi_path.cc
  struct Cmd;

 private:
  friend struct Conn;
  void conn_ready(Conn& c);
  void conn_dead(Conn& c, const std::string& reason);
  void resolve_limbo();
  void finish(Cmd* c);  // reports c (or its split) to the sink, and frees it

  asio::io_context& io_;
  config::Path cfg_;
  PathListener& listener_;
  std::chrono::milliseconds abort_timeout_;
  PathCaps caps_;
  int lun_ = 0;
  ConnSet<Conn> conns_;
  // Abandoned writes whose connection is gone without an answer to their
  // abort: resolved by the next LUN RESET this path gets through.
  std::vector<Cmd*> limbo_;
};

// Connects (bounded by `timeout`), reads the LU's capacity, limits and
// identity, and disconnects. For start-up checks, before the loop runs.
bool iscsi_probe_caps(const config::Path& path, std::chrono::milliseconds timeout, PathCaps* caps,
                      std::string* error);

}  // namespace mp
