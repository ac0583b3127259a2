// The plugin's signal handlers, chained in front of nbdkit's.
//
// nbdkit (1.32 to 1.42) maps SIGHUP, like SIGINT, SIGQUIT and SIGTERM, to
// "quit" (server/signals.c), and installs those handlers before it calls
// .after_fork. So in .after_fork the plugin replaces them:
//
//   SIGHUP               -> 'h' into a self-pipe; nbdkit never sees it
//   SIGINT/QUIT/TERM     -> 'q' into the self-pipe, then nbdkit's handler
//
// A thread reads the pipe and calls back outside signal context. This also
// tells the plugin that nbdkit is stopping without nbdkit_nanosleep, which
// logs "aborting sleep because of server shut down" as an error on every
// clean stop. (nbdkit_shutdown() called by another module is not seen here;
// then requests still queued end at their deadline.)
#include "plugin/signals.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>

namespace mp::plugin {
namespace {

constexpr std::array kSignals{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
struct sigaction previous[kSignals.size()];
volatile sig_atomic_t write_fd = -1;  // the self-pipe, -1 when not watching

void handler(int sig, siginfo_t* info, void* ctx) {
  int saved = errno;
  char c = sig == SIGHUP ? 'h' : 'q';
  if (int fd = write_fd; fd >= 0) {
    [[maybe_unused]] ssize_t n = ::write(fd, &c, 1);
  }
  if (sig != SIGHUP) {
    for (std::size_t i = 0; i < kSignals.size(); i++) {
      if (kSignals[i] != sig) continue;
      const struct sigaction& p = previous[i];
      if (p.sa_flags & SA_SIGINFO)
        p.sa_sigaction(sig, info, ctx);
      else if (p.sa_handler != SIG_IGN && p.sa_handler != SIG_DFL)
        p.sa_handler(sig);
      else if (p.sa_handler == SIG_DFL) {
        ::signal(sig, SIG_DFL);  // no handler of nbdkit's: the default action
        ::raise(sig);
      }
    }
  }
  errno = saved;
}

}  // namespace

std::string SignalWatch::start(std::function<void()> reload, std::function<void()> quit) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
    return std::string("cannot create the signal pipe: ") + strerrordesc_np(errno);
  // The reading end blocks; the writing end must not (a handler never waits).
  ::fcntl(fds[0], F_SETFL, 0);
  read_fd_ = fds[0];
  write_fd = fds[1];
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_RESTART | SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  for (std::size_t i = 0; i < kSignals.size(); i++) ::sigaction(kSignals[i], &sa, &previous[i]);
  thread_ = std::thread([fd = read_fd_, reload = std::move(reload), quit = std::move(quit)] {
    bool quitted = false;
    for (;;) {
      char c;
      ssize_t n = ::read(fd, &c, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || c == 'x') return;
      if (c == 'h')
        reload();
      else if (!quitted) {
        quitted = true;
        quit();
      }
    }
  });
  return "";
}

void SignalWatch::stop() {
  if (read_fd_ < 0) return;
  for (std::size_t i = 0; i < kSignals.size(); i++) ::sigaction(kSignals[i], &previous[i], nullptr);
  int fd = write_fd;
  char c = 'x';
  [[maybe_unused]] auto n = ::write(fd, &c, 1);
  if (thread_.joinable()) thread_.join();
  write_fd = -1;
  ::close(fd);
  ::close(read_fd_);
  read_fd_ = -1;
}

}  // namespace mp::plugin
