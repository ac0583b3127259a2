// The control socket: a multipathd-style Unix socket server speaking
// newline-delimited JSON (server/control_protocol.h), through which
// nbd-multipath-ctl shows state and runs operator actions on the ControlApi.
//
// Threading: everything runs on the event-loop thread (the thread running the
// io_context), as ControlApi requires. Construct, start() and stop() there, or
// while the io_context is not running. Nothing blocks: sessions use async
// reads and writes only, and one session cannot stall the loop or the others.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "config/config.h"
#include "server/control_api.h"

namespace mp {

// Bounds on what clients can make the server hold. The defaults suit
// production; tests shrink them.
struct ControlLimits {
  std::size_t max_sessions = 64;  // beyond this, a new connection is told so and closed
  // A session stops handling requests while this much of its output is
  // unsent, so a client that sends requests but never reads costs at most
  // this plus one response.
  std::size_t max_output = 1 << 20;
  // A session stops reading while this much of its input is unhandled (the
  // output is backed up): a client may pipeline this much (about 40,000
  // short requests) before it reads, and costs at most this plus one read.
  std::size_t max_input = 1 << 20;
  // A session whose unsent output makes no progress for this long is dropped
  // (the client stopped reading).
  std::chrono::milliseconds write_stall{10000};
  // A session with no traffic either way for this long is closed, so
  // abandoned connections do not pile up.
  std::chrono::milliseconds idle{300000};
};

class ControlServer {
 public:
  // error: true for problems an operator should see (accept failures),
  // false for per-session notes (a client dropped for misbehaving).
  using Log = std::function<void(bool error, const std::string&)>;

  ControlServer(asio::io_context& io, ControlApi& api, const config::Control& cfg, Log log,
                ControlLimits limits = {});
  ~ControlServer();  // stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket at cfg.socket: removes a stale socket left by an
  // earlier run (but not one a live server listens on), binds, applies
  // cfg.mode and cfg.group before the socket appears under its name, listens.
  // Returns "" or one sentence naming the socket and saying what to fix.
  // An empty cfg.socket means no control socket: returns "" and does nothing.
  std::string start();
  // Closes the listener and every session, and removes the socket file (if
  // it is still ours). Idempotent.
  void stop();

  std::size_t sessions() const;  // open client connections
  const std::string& socket_path() const;

  // Answers one request line (without its newline) with one response line
  // (without newline). What each session does per line; exposed for tests,
  // whose ControlApi answers a reload at once.
  static std::string handle_line(ControlApi& api, std::string_view line);

 private:
  struct Impl;
  struct Session;
  std::shared_ptr<Impl> impl_;  // shared with pending handlers
};

}  // namespace mp
