// The Prometheus text endpoint: GET /metrics over a Unix socket or a loopback TCP address.
// What it serves comes from render_metrics (metrics.h).
//
// Minimal HTTP: one request per connection. The server reads the request head
// (at most kMaxHead bytes, within the request timeout), answers, and closes.
// Everything runs asynchronously on the event loop's io_context, the thread
// that also carries all disk I/O, so nothing here blocks. See METRICS.md for
// the metric names.
#pragma once

#include <asio/basic_socket_acceptor.hpp>
#include <asio/generic/stream_protocol.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "config/config.h"
#include "server/control_api.h"

namespace mp {

class MetricsServer {
 public:
  // error: true for failures an operator should see; false for information.
  using Log = std::function<void(bool error, const std::string&)>;

  static constexpr std::size_t kMaxHead = 8192;    // bytes of request line plus headers
  static constexpr unsigned kMaxConnections = 16;  // further clients wait in the backlog
  static constexpr std::chrono::milliseconds kDefaultTimeout{5000};  // per connection
  static constexpr unsigned kSocketMode = 0600;  // permission bits of the Unix socket

  // `api` must outlive the server, or stop() must be called before it goes.
  MetricsServer(asio::io_context& io, ControlApi& api, const config::Metrics& cfg, Log log);
  ~MetricsServer();  // stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds and starts accepting. Returns "" when listening, else one sentence.
  // Logs the address once. A stale Unix socket file (nobody listening) is
  // replaced; a live one, or a file that is not a socket, is an error.
  // Runs on the loop thread, or before the loop runs.
  std::string start();

  // Closes the listener and every connection, and removes the Unix socket
  // file if it is still ours. Idempotent. Runs on the loop thread, or after
  // the loop has stopped.
  void stop();

  // The Unix socket path, or the TCP address with the actual port
  // ("127.0.0.1:43127") once started.
  const std::string& where() const;

  // How long one connection may take from accept to the end of the answer;
  // a client that stays silent is disconnected after this. Before start().
  void set_timeout(std::chrono::milliseconds t);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared with pending handlers, which may outlive *this
};

}  // namespace mp
