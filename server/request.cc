// The hand-off of a request between a worker thread and the loop thread, and request type names.
#include "server/request.h"

#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "server/wake_fd.h"

namespace mp {

const char* to_string(Op op) {
  switch (op) {
    case Op::Read:
      return "read";
    case Op::Write:
      return "write";
    case Op::Flush:
      return "flush";
    case Op::Trim:
      return "trim";
    case Op::Zero:
      return "zero";
    case Op::Cache:
      return "cache";
  }
  return "?";
}

// The hand-off is a futex on `done`. The loop stores `done` and wakes the
// futex; the worker may already have seen `done`, returned and reused the
// memory, which makes the wake-up a harmless spurious one for whoever waits
// there now (a futex wake on a freed address is harmless; a std::atomic
// notify on it would not be).

void Request::wait() {
  while (done.load(std::memory_order_acquire) == 0)
    syscall(SYS_futex, &done, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
}

void Request::wake() {
  const int fd = wake_fd_;  // the request may be gone once `done` is stored
  done.store(1, std::memory_order_release);
  if (fd < 0)
    syscall(SYS_futex, &done, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
  else if (fd != current_wake_fd())  // not the reading worker itself
    signal_wake_fd(fd);
}

// The worker polls the lent socket and its wake descriptor. Whatever wakes
// it, `done` decides; a stale signal (a request of this thread's that
// completed after it had seen it done) costs one more turn.
void Request::wait_reading(std::shared_ptr<ReplyLease> lease, std::unique_lock<std::mutex>& lock) {
  const int wake = thread_wake_fd();  // the Offer was made with it: it exists
  wake_fd_ = wake;
  while (done.load(std::memory_order_acquire) == 0) {
    pollfd p[2] = {{lease->fd(), POLLIN, 0}, {wake, POLLIN, 0}};
    lock.unlock();
    poll(p, 2, -1);
    if (p[1].revents) drain_wake_fd(wake);
    lock.lock();
    if (p[0].revents && done.load(std::memory_order_acquire) == 0) lease->read();
  }
  lease->end();
  lease.reset();
  lock.unlock();
}

}  // namespace mp
