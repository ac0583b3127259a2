// Builds and probes paths of either kind (see path_factory.h).
#include "server/path_factory.h"

#include "server/iscsi_path.h"
#include "server/nbd_path.h"

namespace mp {

PathPtr make_path(asio::io_context& io, const config::Path& cfg, PathListener& listener,
                  std::chrono::milliseconds attempt_timeout) {
  if (config::is_iscsi(cfg)) return std::make_unique<IscsiPath>(io, cfg, listener, attempt_timeout);
  return std::make_unique<NbdPath>(io, cfg, listener);
}

bool probe_path(const config::Path& cfg, std::chrono::milliseconds timeout, PathCaps* caps,
                std::string* err) {
  return config::is_iscsi(cfg) ? iscsi_probe_caps(cfg, timeout, caps, err)
                               : nbd_probe_caps(cfg.uri, timeout, caps, err);
}

}  // namespace mp
