// See unix_socket_file.h.
#include "server/unix_socket_file.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "server/errno_text.h"

namespace mp {

namespace {

std::string errno_string(int err) {
  return errno_text(err);
}

// Is a server listening on the socket file at `path`? Answers false for a
// stale socket (connection refused). Never blocks (non-blocking connect).
bool socket_in_use(const std::string& path, int* err) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), addr.sun_path);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  *err = rc == 0 ? 0 : errno;
  ::close(fd);
  return rc == 0 || *err == EAGAIN || *err == EINPROGRESS;  // EAGAIN: backlog full, but alive
}

// Looks a group up by name (or number). Returns "" and sets *gid, or a sentence.
std::string find_group(const std::string& name, const std::string& key, gid_t* gid) {
  std::vector<char> buf(1024);
  for (;;) {
    group gr{}, *res = nullptr;
    int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (rc == 0 && res) {
      *gid = res->gr_gid;
      return "";
    }
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos &&
        name.size() < 10) {
      *gid = static_cast<gid_t>(std::stoul(name));
      return "";
    }
    if (rc != 0 && rc != ENOENT && rc != ESRCH)
      return "cannot look up group '" + name + "': " + errno_string(rc);
    return "group '" + name + "' does not exist: set " + key +
           " to an existing group, or leave it out to keep the server's group";
  }
}

}  // namespace

UnixSocketFile::~UnixSocketFile() {
  if (fd_ >= 0) ::close(fd_);
}

int UnixSocketFile::take_fd() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UnixSocketFile::remove() {
  if (!own_file_) return;
  own_file_ = false;
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_ &&
      st.st_ctim.tv_sec == ctime_.tv_sec && st.st_ctim.tv_nsec == ctime_.tv_nsec)
    ::unlink(path_.c_str());
}

std::string UnixSocketFile::open(const Spec& spec) {
  const std::string& path = spec.path;
  const std::string what = spec.what + " " + path + ": ";
  if (path.size() >= sizeof(sockaddr_un::sun_path))
    return what + "the path is " + std::to_string(path.size()) +
           " bytes long, but a Unix socket path must be shorter than " +
           std::to_string(sizeof(sockaddr_un::sun_path)) + " bytes: choose a shorter path";
  if (path.empty() || path.front() != '/') return what + "the path must be absolute";
  if (spec.mode > 07777)
    return what + "mode " + std::to_string(spec.mode) + " is not a permission mode (0000..07777)";
  gid_t gid = 0;
  if (!spec.group.empty()) {
    if (std::string err = find_group(spec.group, spec.group_key, &gid); !err.empty())
      return what + err;
  }

  // A leftover socket from a server that exited is removed; a live one is not.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return what + "the path exists and is not a socket: remove it, or choose another path";
    int err = 0;
    if (socket_in_use(path, &err))
      return what + "another server is listening on it: stop that server, or choose another path";
    if (err != ECONNREFUSED)
      return what + "cannot tell whether the existing socket is in use (" + errno_string(err) +
             "): remove it if no server uses it";
    if (::unlink(path.c_str()) != 0 && errno != ENOENT)
      return what + "cannot remove the stale socket: " + errno_string(errno);
  } else if (errno != ENOENT) {
    return what + "cannot examine the path: " + errno_string(errno);
  }

  path_ = path;
  auto fail = [&](const std::string& sentence) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    // Still inside open(): the file at the path is the one just bound, though
    // a failed chmod or chown may have changed its change time.
    struct stat now;
    if (own_file_ && ::lstat(path.c_str(), &now) == 0) ctime_ = now.st_ctim;
    remove();
    return what + sentence;
  };
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return fail("cannot create a socket: " + errno_string(errno));
  // bind() gives the file the socket's mode minus the umask: setting it first
  // leaves no moment in which the file is wider open than asked. Until
  // listen(), every connect is refused anyway.
  if (::fchmod(fd_, spec.mode) != 0) return fail("cannot set its mode: " + errno_string(errno));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::copy(path.begin(), path.end(), addr.sun_path);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    std::string dir = path.substr(0, std::max<std::size_t>(path.rfind('/'), 1));
    if (err == ENOENT)
      return fail("cannot bind: the directory " + dir + " does not exist: create it");
    if (err == EACCES)
      return fail("cannot bind: permission denied in " + dir +
                  ": run the server as a user who may write there, or choose another directory");
    return fail("cannot bind: " + errno_string(err));
  }
  if (::lstat(path.c_str(), &st) == 0) {
    own_file_ = true;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  if (::chmod(path.c_str(), spec.mode) != 0)
    return fail("cannot set its mode: " + errno_string(errno));
  if (!spec.group.empty() && ::chown(path.c_str(), static_cast<uid_t>(-1), gid) != 0) {
    int err = errno;
    return fail("cannot give it to group " + spec.group + ": " + errno_string(err) +
                (err == EPERM ? ": run the server as root or as a member of that group" : ""));
  }
  // chmod and chown change the change time: read the identity after them.
  if (::lstat(path.c_str(), &st) == 0) ctime_ = st.st_ctim;
  if (::listen(fd_, SOMAXCONN) != 0) return fail("cannot listen: " + errno_string(errno));
  return "";
}

}  // namespace mp
