// A path to an NBD server: libnbd's asynchronous API driven by the Asio loop.
#pragma once

#include <asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/path.h"
#include "server/path_kit.h"

namespace mp {

class NbdPath final : public Path {
 public:
  NbdPath(asio::io_context& io, config::Path cfg, PathListener& listener);
  ~NbdPath() override;  // closes every connection; never calls a sink

  const std::string& name() const override { return cfg_.name; }
  const std::string& uri() const override { return cfg_.uri; }
  void connect() override;
  bool submit(const Command& cmd, CommandSink* sink) override;
  void disconnect() override;
  unsigned retired_connections() const override;

  struct Conn;  // one libnbd handle; see nbd_path.cc
  class Lease;  // a worker reading a connection's replies

 private:
  friend struct Conn;
  void conn_ready(Conn& c);
  void conn_dead(Conn& c, const std::string& reason);

  asio::io_context& io_;
  config::Path cfg_;
  PathListener& listener_;
  PathCaps caps_;
  ConnSet<Conn> conns_;
};

// Connects synchronously (bounded by `timeout`), reads the export's
// capabilities and disconnects. For start-up checks, before the loop runs.
bool nbd_probe_caps(const std::string& uri, std::chrono::milliseconds timeout, PathCaps* caps,
                    std::string* error);

}  // namespace mp
