// The disk's identity and capability rules: which upstreams may serve this
// disk, and what the disk advertises. The same rules decide at start-up (the
// plugin probes every path before nbdkit forks) and at every reconnect (the
// engine refuses a path that now reaches something else).
#pragma once

#include <functional>
#include <string>

#include "config/config.h"
#include "server/path.h"

namespace mp {

// Builds the disk from the paths that answered at start-up: the first names
// it (size, export name, description, LU identity, unless the config pins
// the identity or the description), the others must agree, and the
// capabilities are what every path can do.
class DiskBuilder {
 public:
  explicit DiskBuilder(const config::Config& cfg);

  // Adds one reachable path. Returns "" or one sentence saying why this path
  // cannot serve the same disk as the others and what to check.
  std::string add(const std::string& path_name, const PathCaps& caps);

  bool empty() const { return first_.empty(); }  // no path added yet
  const PathCaps& disk() const { return disk_; }

 private:
  PathCaps disk_;
  std::string first_;             // the first path added (it set the size)
  std::string identity_from_;     // who named the LU: "path p1" or the config
  std::string export_from_;       // the first NBD path
  std::string description_from_;  // who named the description, as a phrase
};

// Probes every configured path once (before the fork, synchronously) and
// builds the disk from those that answer. Each unreachable path is reported
// through `unreachable` (one sentence) and skipped. Returns "" with *disk
// set, or one sentence: the paths disagree, or none answered.
std::string probe_disk(const config::Config& cfg,
                       const std::function<void(const std::string&)>& unreachable, PathCaps* disk);

// Why a path that connected with `caps` cannot serve `disk`, as one phrase
// (for "path p refused: ..."); "" when it can.
std::string refusal(const PathCaps& disk, const PathCaps& caps);

// After a path was accepted: what it is the first of its kind to tell (an LU
// identity, the NBD export name and description) names the disk from now on.
void adopt_identity(PathCaps& disk, const PathCaps& caps);

}  // namespace mp
