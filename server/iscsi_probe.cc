// The start-up check of an iSCSI path: connect, read what the LU is, disconnect (iscsi_path.h).
#include <asio/io_context.hpp>
#include <chrono>
#include <string>

#include "server/iscsi_path.h"

namespace mp {

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
