// Builds the Path for a configured path (NBD or iSCSI by its URI), and
// probes one before the engine runs: the one place that tells the kinds
// apart.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <string>

#include "config/config.h"
#include "server/path.h"

namespace mp {

// A path of the right kind for cfg.uri. Runs on the event-loop thread.
// attempt_timeout bounds an iSCSI path's own task management.
PathPtr make_path(asio::io_context& io, const config::Path& cfg, PathListener& listener,
                  std::chrono::milliseconds attempt_timeout);

// Connects once, synchronously (before the fork, no loop yet), and reads
// what the upstream says about the export. Returns false with one phrase in
// *err when the path cannot be reached within timeout.
bool probe_path(const config::Path& cfg, std::chrono::milliseconds timeout, PathCaps* caps,
                std::string* err);

}  // namespace mp
