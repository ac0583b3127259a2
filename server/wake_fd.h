// A thread's wake descriptor: an eventfd a worker polls while it reads its
// own reply (server/reply_lease.h), written when another thread completes
// its request.
//
// The descriptors are never closed: a thread that ends returns its one to a
// pool, and the next thread takes it from there. A late write from the loop
// (it completed a request whose worker had already seen it done) therefore
// never reaches a descriptor number that was reused for something else; it
// only makes one later poll return early, which the poller checks for.
#pragma once

namespace mp {

// The calling thread's descriptor, taken from the pool or created on first
// use; -1 when none can be had (64 exist, or eventfd failed): the caller
// then waits on its futex instead, and this thread never asks again.
int thread_wake_fd();
// The calling thread's descriptor if it has one, else -1. Never creates one.
int current_wake_fd();
// Makes `fd` readable.
void signal_wake_fd(int fd);
// Makes `fd` unreadable again (reads what was signalled).
void drain_wake_fd(int fd);

}  // namespace mp
