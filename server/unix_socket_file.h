// The life of a listening Unix socket file, shared by the control and the
// metrics servers: refuse a path that is not a socket or that a live server
// answers on, remove a stale one left by a server that died, bind with the
// mode and group set before listen(), and at stop remove the file only if it
// is still the one this server made.
#pragma once

#include <sys/types.h>

#include <ctime>
#include <string>

namespace mp {

class UnixSocketFile {
 public:
  struct Spec {
    std::string what;  // "control socket": starts every message, with the path
    std::string path;  // absolute path of the socket file
    unsigned mode = 0600;
    std::string group;      // group owning the file; empty keeps the server's group
    std::string group_key;  // the setting naming the group, for messages ("control.group")
  };

  UnixSocketFile() = default;
  UnixSocketFile(const UnixSocketFile&) = delete;
  UnixSocketFile& operator=(const UnixSocketFile&) = delete;
  ~UnixSocketFile();  // closes a descriptor not taken; leaves the file (see remove)

  // Creates the listening socket. Returns "" or one sentence starting with
  // "<what> <path>: ". On failure nothing is left behind.
  std::string open(const Spec& spec);
  // The listening descriptor, for an Asio acceptor to adopt; -1 after the
  // first call.
  int take_fd();
  // Unlinks the file if it is still the one open() made (another server may
  // have taken the path over since).
  void remove();

 private:
  std::string path_;
  int fd_ = -1;
  bool own_file_ = false;
  // The file's identity. A file system may give a new file the inode number
  // of one just removed, so the change time is compared too.
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  timespec ctime_{};
};

}  // namespace mp
