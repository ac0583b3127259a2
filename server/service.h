// One running disk, after nbdkit forked: the event-loop thread, the engine
// on it, and the control and metrics endpoints the config asks for. The
// plugin starts one in .after_fork, hands it every request, and stops it in
// .cleanup; nothing here knows nbdkit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "server/config_reader.h"
#include "server/control.h"
#include "server/engine.h"
#include "server/loop.h"
#include "server/metrics_server.h"
#include "server/path.h"

namespace mp {

class Service {
 public:
  // Starts the loop thread, the engine (which connects every path) and the
  // endpoints. Returns nullptr and one sentence in *err when an endpoint
  // cannot be created. `log` is called on the loop thread
  // and on nbdkit workers (it must be thread-safe).
  static std::unique_ptr<Service> start(const config::Config& cfg, const PathCaps& disk,
                                        Engine::Options opts, EventLoop::Logger log,
                                        std::string* err);
  ~Service();  // stop()
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Runs one client request: checks it against the disk (block alignment,
  // fast zero), submits it to the engine (itself when the loop lock is free,
  // else through the loop thread) and blocks the calling (nbdkit worker)
  // thread until it completed. buf is the client's: written data is
  // copied before the request leaves this thread (an abandoned attempt may
  // send from its copy later), read data is copied into it on success only.
  // `flags` are kFua, kMayTrim, kFastZero. Returns 0 or an errno NBD carries.
  int io(Op op, std::byte* buf, std::uint32_t count, std::uint64_t offset, std::uint32_t flags);
  // Fails queued and in-flight requests at once, so that blocked worker
  // threads let go (nbdkit is shutting down). From any thread but the loop's.
  void shutdown();
  // Reloads the configuration file, as the control socket's `reload` does
  // (SIGHUP): the engine logs what changed; a refusal is logged as an error.
  // From any thread but the loop's.
  void reload();
  // Closes the endpoints, fails what is left, closes every path on the loop
  // thread and joins it. Returns the engine's per-path summary. Idempotent
  // (later calls return ""). From any thread but the loop's.
  std::string stop();

 private:
  Service(const config::Config& cfg, const PathCaps& disk, EventLoop::Logger log);

  const config::Config& cfg_;  // the plugin's, outlives this
  const PathCaps disk_;        // what the disk advertises
  EventLoop::Logger log_;      // thread-safe: also called on worker threads
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<ConfigReader> reader_;  // reload's file, off the loop
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ControlServer> control_;  // when control.socket is set
  std::unique_ptr<MetricsServer> metrics_;  // when metrics.socket or .listen is set
  bool started_ = false;                    // the loop thread runs
};

}  // namespace mp
