// Unit tests for FdReserve::after_accept (server/fd_limits.h): the one
// decision the control and metrics listeners share after an accept. The
// exhaustion path itself runs in test_control.cc and test_metrics.cc, with
// the descriptor table really full.
#include <doctest/doctest.h>

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <string>
#include <vector>

#include "server/fd_limits.h"

using namespace std::chrono_literals;
using asio::local::stream_protocol;

TEST_CASE("after an accept: serve, retry or stop, and other errors logged once per stretch") {
  asio::io_context io;
  stream_protocol::acceptor acceptor(io);
  stream_protocol::socket sock(io);
  std::vector<std::string> lines;
  mp::FdReserve reserve([&](bool error, const std::string& l) {
    lines.push_back((error ? "error: " : "note: ") + l);
  });
  reserve.hold("test socket /x.sock");
  std::chrono::milliseconds delay{-1};
  using After = mp::FdReserve::After;

  CHECK(reserve.after_accept(acceptor, sock, asio::error::operation_aborted, &delay) ==
        After::Closed);
  CHECK(reserve.after_accept(acceptor, sock, asio::error::connection_aborted, &delay) ==
        After::Retry);
  CHECK(delay == 0ms);
  CHECK(lines.empty());

  const std::error_code nobufs = asio::error::no_buffer_space;
  CHECK(reserve.after_accept(acceptor, sock, nobufs, &delay) == After::Retry);
  CHECK(delay == 100ms);
  CHECK(reserve.after_accept(acceptor, sock, nobufs, &delay) == After::Retry);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] ==
        "error: test socket /x.sock: accept failed: No buffer space available (retrying)");

  CHECK(reserve.after_accept(acceptor, sock, std::error_code(), &delay) == After::Serve);
  CHECK(reserve.after_accept(acceptor, sock, nobufs, &delay) == After::Retry);
  CHECK(lines.size() == 2);  // a new stretch, a new line
  reserve.release();
}
