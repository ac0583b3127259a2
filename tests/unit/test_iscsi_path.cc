// Unit tests for server/iscsi_path.h where no target is needed: no connection takes no command,
// a refused or hung-up connect reports path_down from the loop, and a bad URI is reported too.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"
#include "server/iscsi_path.h"
#include "tests/unit/io_wait.h"

using namespace std::chrono_literals;
using mp::test::run_until;

namespace {

// A TCP port on 127.0.0.1, bound for the test. Not listening: connects are
// refused. Listening: connects are accepted by the kernel, and hang_up()
// closes what it accepted.
class Port {
 public:
  explicit Port(bool listening) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    if (listening) REQUIRE(listen(fd_, 4) == 0);
  }
  ~Port() { close(fd_); }
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  // Accepts a waiting connection and closes it at once. True if there was one.
  bool hang_up() {
    int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return false;
    close(c);
    return true;
  }
  std::string uri() const {
    return "iscsi://127.0.0.1:" + std::to_string(port_) + "/iqn.2026-11.org.test:disk/0";
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

struct Listener final : mp::PathListener {
  int connected = 0;
  std::vector<std::string> downs;
  void path_connected(mp::Path&, const mp::PathCaps&) override { connected++; }
  void path_down(mp::Path&, const std::string& reason) override { downs.push_back(reason); }
};

struct Sink final : mp::CommandSink {
  int calls = 0;
  void command_done(mp::PathResult, int) override { calls++; }
};

mp::config::Path path_config(const std::string& uri) {
  mp::config::Path p;
  p.name = "i";
  p.uri = uri;
  return p;
}

mp::Command read_cmd(std::vector<std::byte>& buf) {
  mp::Command c;
  c.op = mp::Op::Read;
  c.count = static_cast<std::uint32_t>(buf.size());
  c.data = buf.data();
  return c;
}

}  // namespace

TEST_CASE("an iSCSI path without a connection takes no command") {
  asio::io_context io;
  Listener l;
  Port port(false);
  mp::IscsiPath path(io, path_config(port.uri()), l, 1s);
  CHECK(path.name() == "i");
  CHECK(path.uri() == port.uri());
  std::vector<std::byte> buf(512);
  Sink s;
  CHECK_FALSE(path.submit(read_cmd(buf), &s));
  path.disconnect();  // nothing to retire
  CHECK(path.retired_connections() == 0);
  io.run_for(20ms);
  CHECK(s.calls == 0);
  CHECK(l.downs.empty());
  CHECK(l.connected == 0);
}

TEST_CASE("a refused connect reports path_down from the loop, with the reason") {
  asio::io_context io;
  Listener l;
  Port port(false);
  mp::IscsiPath path(io, path_config(port.uri()), l, 1s);
  path.connect();
  CHECK(l.downs.empty());  // never from inside connect()
  REQUIRE(run_until(io, [&] { return !l.downs.empty(); }));
  CHECK(l.downs.size() == 1);
  INFO("reason: " << l.downs[0]);
  CHECK(l.downs[0].rfind("connect failed", 0) == 0);
  CHECK(l.connected == 0);
  std::vector<std::byte> buf(512);
  Sink s;
  CHECK_FALSE(path.submit(read_cmd(buf), &s));
  io.restart();
  io.run_for(20ms);
  CHECK(s.calls == 0);
  CHECK(l.downs.size() == 1);
}

TEST_CASE("a target that hangs up during the login reports path_down") {
  asio::io_context io;
  Listener l;
  Port port(true);
  mp::IscsiPath path(io, path_config(port.uri()), l, 1s);
  path.connect();
  bool hung_up = false;
  REQUIRE(run_until(io, [&] { return hung_up || (hung_up = port.hang_up()); }));
  REQUIRE(run_until(io, [&] { return !l.downs.empty(); }));
  CHECK(l.downs.size() == 1);
  INFO("reason: " << l.downs[0]);
  // The reason is libiscsi's ("connection lost: ..."): iscsi_conn.cc adds "connect failed: "
  // only to a reason that does not already start with "connect", and "connection lost" does.
  CHECK_FALSE(l.downs[0].empty());
  CHECK(l.connected == 0);
}

TEST_CASE("a URI libiscsi cannot read reports path_down, not a crash") {
  asio::io_context io;
  Listener l;
  mp::IscsiPath path(io, path_config("iscsi://127.0.0.1/no-lun-here"), l, 1s);
  path.connect();
  CHECK(l.downs.empty());
  REQUIRE(run_until(io, [&] { return !l.downs.empty(); }));
  INFO("reason: " << l.downs[0]);
  CHECK(l.downs[0].find("bad iSCSI URI") != std::string::npos);
}

TEST_CASE("disconnect while connecting retires the attempt quietly") {
  asio::io_context io;
  Listener l;
  Port port(true);  // accepted by the kernel, never answered: the login waits
  mp::IscsiPath path(io, path_config(port.uri()), l, 1s);
  path.connect();
  io.run_for(20ms);
  path.disconnect();
  REQUIRE(run_until(io, [&] { return path.retired_connections() == 0; }));
  io.restart();
  io.run_for(20ms);
  CHECK(l.downs.empty());  // no longer current: nobody is told
  CHECK(l.connected == 0);
}
