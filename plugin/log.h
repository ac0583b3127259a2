// Where the plugin's log lines go. nbdkit gives plugins only nbdkit_error and
// nbdkit_debug, so notices and warnings take their own way (log.cc).
#pragma once

#include <string>

#include "server/runtime.h"

namespace mp::plugin {

// Chooses the sink for notices and warnings once, in .after_fork (after
// nbdkit daemonized and set up its logging). Then `log_line` is thread-safe.
void init_log();
// Error: nbdkit_error (nbdkit's --log decides: stderr or syslog LOG_ERR).
// Notice, Warning: see log.cc. Debug: nbdkit_debug, only when `verbose`.
void log_line(LogLevel level, const std::string& line, bool verbose);

}  // namespace mp::plugin
