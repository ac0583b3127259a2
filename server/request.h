// A request as a worker thread hands it to the engine, and the worker's wait for it.
//
// Threading: the submitter fills the public fields and calls Engine::submit
// holding the loop lock (itself, or through the loop thread: Service::io);
// from then on the request belongs to whoever holds the lock until it
// completes. A client request's worker blocks in wait(); the engine wakes it
// (wake()) as the last thing it does with the request.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "server/path.h"
#include "server/reply_lease.h"
#include "server/timer_queue.h"

namespace mp {

class Engine;
struct Request;

// The engine's bookkeeping inside every request. Only the engine reads or
// writes it (Request inherits it privately).
struct RequestState {
  // Why a request is parked instead of in flight (Engine::park).
  enum class Park : std::uint8_t {
    None,    // not parked
    NoPath,  // no usable path (no-path policy: queue)
    Busy,    // every usable path is at its cap
    Hold,    // an abandoned write without a shadow overlaps this write
    Flush,   // a flush waits for a dirty path that is down
    Clean    // waits for a path holding a dirty range it overlaps to be flushed
  };
  std::uint64_t tag = 0;
  Clock::time_point started{}, deadline{}, park_until{};
  unsigned retries = 0;
  std::uint64_t epoch = 0;      // Engine::epoch_ at submission
  unsigned pending = 0;         // attempts in flight for this request
  bool retry_needed = false;    // an attempt failed on a path: try again
  bool internal = false;        // a re-apply or a cleaning flush, not a client request
  bool cleaning = false;        // a flush of one path (Engine::clean_path): never retried elsewhere
  bool hedged = false;          // a read sent a second time (engine_hedge.cc): at most once
  TimerQueue::Key hedge_timer;  // armed while a read's one attempt may still be hedged
  Park parked_for = Park::None;
  TimerQueue::Key park_timer;    // armed while parked: its deadline
  Request* park_prev = nullptr;  // in the engine's FIFO of parked requests
  Request* park_next = nullptr;
};

// One client (or internal) request. The submitter sets the public fields;
// `data` and `err` are the results once it completed.
struct Request : private RequestState {
  Op op = Op::Read;
  std::uint64_t offset = 0;
  std::uint32_t count = 0;
  std::uint32_t flags = 0;
  // Write: the data, a copy owned by the request (attempts share it).
  // Read: after success, the buffer of the attempt that succeeded.
  std::shared_ptr<std::byte[]> data;
  // Internal requests (re-apply) complete by this call, under the loop lock;
  // client requests wake the waiting worker thread.
  void (*on_done)(Request&) = nullptr;

  int err = 0;  // result: 0 or an errno NBD carries

  // Worker thread: blocks until the engine completed the request.
  void wait();
  // Worker thread that submitted the request holding the loop `lock` and was
  // lent its reply's connection: reads the reply itself until the request
  // completed (server/reply_lease.h). Returns with the lock released.
  void wait_reading(std::shared_ptr<ReplyLease> lease, std::unique_lock<std::mutex>& lock);

 private:
  friend class Engine;
  // Under the loop lock: marks the request done and wakes its worker.
  void wake();
  std::atomic<std::uint32_t> done{0};  // 1 once completed; the futex word
  int wake_fd_ = -1;                   // set: the worker polls this instead of the futex
};

}  // namespace mp
