// The open-file limit raised at start-up, and the reserved descriptor that
// keeps a listener answering when the process has none left.
#include "server/fd_limits.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "server/errno_text.h"

namespace mp {

namespace {

// The kernel's ceiling for RLIMIT_NOFILE when the hard limit is "unlimited".
rlim_t nr_open() noexcept {
  rlim_t n = 1 << 20;  // the kernel's default
  if (std::FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
    unsigned long long v = 0;
    if (std::fscanf(f, "%llu", &v) == 1 && v > 0) n = static_cast<rlim_t>(v);
    std::fclose(f);
  }
  return n;
}

unsigned long long soft_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  return rl.rlim_cur;
}

}  // namespace

void raise_fd_limit(void (*debug)(const char* fmt, ...)) noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    debug("cannot read the open-file limit: %s", errno_text(errno));
    return;
  }
  rlim_t want = rl.rlim_max == RLIM_INFINITY ? nr_open() : rl.rlim_max;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want) {
    debug("open-file limit: %llu, already the hard limit",
          static_cast<unsigned long long>(rl.rlim_cur));
    return;
  }
  rlim_t from = rl.rlim_cur;
  rl.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    debug("cannot raise the open-file limit from %llu to %llu: %s",
          static_cast<unsigned long long>(from), static_cast<unsigned long long>(want),
          errno_text(errno));
    return;
  }
  debug("raised the open-file limit (RLIMIT_NOFILE) from %llu to the hard limit %llu",
        static_cast<unsigned long long>(from), static_cast<unsigned long long>(want));
}

FdReserve::FdReserve(Log log) : log_(std::move(log)) {}

FdReserve::~FdReserve() {
  release();
}

// Is ec the errno `value`, from the system or from Asio's system category?
// Compared as error codes (category identity and value), never through
// std::errc: comparing with an error_condition is a virtual call, and UBSan's
// vptr check, which probes memory through a pipe, cannot verify it once the
// descriptor table is full (it then reports an invalid vptr and aborts the
// asan+ubsan build).
static bool is_errno(const std::error_code& ec, int value) {
  return ec == std::error_code(value, std::system_category()) ||
         ec == std::error_code(value, asio::error::get_system_category());
}

bool FdReserve::exhausted(const std::error_code& ec) {
  return is_errno(ec, EMFILE) || is_errno(ec, ENFILE);
}

void FdReserve::note_exhausted(const std::error_code& ec) {
  if (exhausted_) return;
  exhausted_ = true;
  bool system = is_errno(ec, ENFILE);
  log_(true, what_ + ": out of file descriptors (" +
                 (system ? std::string("the system's file table is full")
                         : "limit " + std::to_string(soft_limit())) +
                 "): new connections are accepted on reserved descriptors only; raise the "
                 "open-file limit (ulimit -n, systemd LimitNOFILE=) or connect fewer NBD "
                 "clients");
}

void FdReserve::note_accept_error(const std::error_code& ec) {
  if (accept_error_logged_) return;
  accept_error_logged_ = true;
  log_(true, what_ + ": accept failed: " + error_text(ec) + " (retrying)");
}

void FdReserve::accepted() {
  take();
  // A spare descriptor for the connection and the full reserve: the episode
  // is over (not a descriptor that flickered free for a moment).
  if (exhausted_ && held_ == kReserved) {
    exhausted_ = false;
    log_(false, what_ + ": file descriptors are available again");
  }
}

bool FdReserve::pending(int listener) {
  pollfd p{listener, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

void FdReserve::yield() {
  ::sched_yield();
}

void FdReserve::take() {
  if (stopped_) return;
  for (int& fd : fds_) {
    if (fd >= 0) continue;
    fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;  // retried at the next chance
    held_++;
  }
}

void FdReserve::close_all() {
  for (int& fd : fds_) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  held_ = 0;
}

bool FdReserve::free_one() {
  for (int& fd : fds_) {
    if (fd < 0) continue;
    ::close(fd);
    fd = -1;
    held_--;
    return true;
  }
  return false;
}

void FdReserve::adopt(int fd) {
  ::shutdown(fd, SHUT_RDWR);  // the client sees EOF now, as if it were closed
  for (int& r : fds_) {
    if (r >= 0) continue;
    r = fd;
    held_++;
    return;
  }
  ::close(fd);
}

void FdReserve::hold(std::string what) {
  what_ = std::move(what);
  stopped_ = false;
  exhausted_ = false;
  take();
}

void FdReserve::release() {
  stopped_ = true;
  close_all();
}

}  // namespace mp
