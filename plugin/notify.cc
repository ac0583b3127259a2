// sd_notify(3)'s datagram to $NOTIFY_SOCKET: a Unix socket path, or one in
// the abstract namespace when it starts with '@'.
#include "plugin/notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace mp::plugin {

bool sd_notify_state(const std::string& state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (!path || !*path) return true;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::size_t len = std::strlen(path);
  if ((path[0] != '/' && path[0] != '@') || len >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  auto alen = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  bool ok = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                     reinterpret_cast<const sockaddr*>(&addr),
                     alen) == static_cast<ssize_t>(state.size());
  ::close(fd);
  return ok;
}

}  // namespace mp::plugin
