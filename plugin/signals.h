// SIGHUP reloads the configuration instead of stopping the disk, and
// nbdkit's own stop signals also end queued requests at once.
#pragma once

#include <functional>
#include <string>
#include <thread>

namespace mp::plugin {

class SignalWatch {
 public:
  // Installs the handlers (after nbdkit installed its own: from .after_fork)
  // and starts the thread that runs `reload` on SIGHUP and `quit` once on
  // SIGINT, SIGQUIT or SIGTERM (nbdkit's handler still runs first: it stops
  // accepting clients). Returns "" or why it could not.
  std::string start(std::function<void()> reload, std::function<void()> quit);
  // Puts nbdkit's handlers back and joins the thread. Idempotent.
  void stop();
  ~SignalWatch() { stop(); }

 private:
  std::thread thread_;
  int read_fd_ = -1;
};

}  // namespace mp::plugin
