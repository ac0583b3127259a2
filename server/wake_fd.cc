// Per-thread wake descriptors from a pool that is never closed (wake_fd.h).
#include "server/wake_fd.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace mp {

namespace {

// At most this many exist: each nbdkit worker thread of each client
// connection may want one, and a thread without one waits on its futex.
constexpr unsigned kMaxWakeFds = 64;

std::mutex pool_mu;
unsigned created = 0;  // guarded by pool_mu
std::vector<int>& pool() {
  static auto* p = new std::vector<int>;  // outlives every thread's holder
  return *p;
}

struct Holder {
  int fd = -1;
  bool refused = false;  // none could be had: the thread waits on its futex for good
  ~Holder() {
    if (fd < 0) return;
    std::lock_guard<std::mutex> hold(pool_mu);
    pool().push_back(fd);
  }
};

thread_local Holder holder;

}  // namespace

int thread_wake_fd() {
  if (holder.fd >= 0 || holder.refused) return holder.fd;
  std::lock_guard<std::mutex> hold(pool_mu);
  if (!pool().empty()) {
    holder.fd = pool().back();
    pool().pop_back();
  } else if (created < kMaxWakeFds) {
    holder.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (holder.fd >= 0) created++;
  }
  holder.refused = holder.fd < 0;  // not asked again on every request
  return holder.fd;
}

int current_wake_fd() {
  return holder.fd;
}

void signal_wake_fd(int fd) {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(fd, &one, sizeof one);
}

void drain_wake_fd(int fd) {
  std::uint64_t n;
  [[maybe_unused]] ssize_t r = read(fd, &n, sizeof n);
}

}  // namespace mp
