// The hand-off of a request between a worker thread and the loop thread, and request type names.
#include "server/request.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

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
  done.store(1, std::memory_order_release);
  syscall(SYS_futex, &done, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

}  // namespace mp
