// Unit tests for server/unix_socket_file.h: the listening socket file's mode,
// stale and live predecessors, refusals that leave nothing behind, and a
// removal that never takes another server's file.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/unix_socket_file.h"

namespace {

using mp::UnixSocketFile;

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/mpsock.XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// Connects to `path`; 0 on success, else errno.
int try_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strcpy(sa.sun_path, path.c_str());
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("a listening socket with the asked mode, removed at the end") {
  TempDir dir;
  const std::string path = dir.path + "/s.sock";
  UnixSocketFile f;
  REQUIRE(f.open({"test socket", path, 0660, "", ""}) == "");
  CHECK(mode_of(path) == 0660);
  CHECK(try_connect(path) == 0);
  int fd = f.take_fd();
  CHECK(fd >= 0);
  CHECK(f.take_fd() == -1);
  ::close(fd);
  f.remove();
  CHECK(!std::filesystem::exists(path));
}

TEST_CASE("a stale socket is replaced, a live one and a plain file are refused") {
  TempDir dir;
  const std::string path = dir.path + "/s.sock";
  SUBCASE("stale") {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    ::close(fd);
    CHECK(try_connect(path) == ECONNREFUSED);
    UnixSocketFile f;
    CHECK(f.open({"test socket", path, 0600, "", ""}) == "");
    CHECK(try_connect(path) == 0);
  }
  SUBCASE("live") {
    UnixSocketFile first, second;
    REQUIRE(first.open({"test socket", path, 0600, "", ""}) == "");
    CHECK(second.open({"test socket", path, 0600, "", ""}) ==
          "test socket " + path +
              ": another server is listening on it: stop that server, or choose another path");
    second.remove();  // not its file: nothing happens
    CHECK(try_connect(path) == 0);
  }
  SUBCASE("a plain file") {
    std::ofstream(path) << "data";
    UnixSocketFile f;
    CHECK(has(f.open({"test socket", path, 0600, "", ""}), "exists and is not a socket"));
    f.remove();
    CHECK(std::filesystem::is_regular_file(path));
  }
}

TEST_CASE("refusals leave nothing behind and say what to change") {
  TempDir dir;
  UnixSocketFile f;
  CHECK(f.open({"test socket", "rel.sock", 0600, "", ""}) ==
        "test socket rel.sock: the path must be absolute");
  CHECK(has(f.open({"test socket", "/" + std::string(200, 'x'), 0600, "", ""}),
            "bytes long, but a Unix socket path must be shorter than 108 bytes"));
  CHECK(has(f.open({"test socket", dir.path + "/s.sock", 010000, "", ""}),
            "is not a permission mode"));
  CHECK(f.open({"test socket", dir.path + "/s.sock", 0600, "no-such-group-mp", "x.group"}) ==
        "test socket " + dir.path +
            "/s.sock: group 'no-such-group-mp' does not exist: set x.group to an existing group, "
            "or leave it out to keep the server's group");
  CHECK(f.open({"test socket", dir.path + "/no/s.sock", 0600, "", ""}) ==
        "test socket " + dir.path + "/no/s.sock: cannot bind: the directory " + dir.path +
            "/no does not exist: create it");
  CHECK(f.take_fd() == -1);
  CHECK(std::filesystem::is_empty(dir.path));
}

TEST_CASE("a file another server took over is not removed") {
  TempDir dir;
  const std::string path = dir.path + "/s.sock";
  UnixSocketFile first;
  REQUIRE(first.open({"test socket", path, 0600, "", ""}) == "");
  ::close(first.take_fd());  // the first server stopped listening but has not removed yet
  UnixSocketFile second;
  REQUIRE(second.open({"test socket", path, 0600, "", ""}) == "");  // stale: replaced
  first.remove();
  CHECK(try_connect(path) == 0);  // the second server's file is still there
  second.remove();
  CHECK(!std::filesystem::exists(path));
}
