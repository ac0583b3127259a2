// FdWatch: readiness waits on a socket that a C library (libnbd, libiscsi)
// owns. The library opens, replaces and closes the descriptor; the watch
// follows it and never closes it, only deregisters it from the reactor.
//
// Deregistering a number that was closed and already reused would remove
// the new owner's registration, so follow() and stop() must run before any
// new socket can be created after the library closed the old one: the paths
// call follow() at the end of every library call, in the same handler.
//
// Threading: every call holds the loop lock (server/loop_lock.h); the
// completions run on the loop thread and take it themselves. A wait may be
// started from an nbdkit worker that holds the lock: Asio's reactor is
// thread-safe, the stream_descriptor object is not.
#pragma once

#include <poll.h>
#include <sys/stat.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <optional>
#include <system_error>
#include <utility>

#include "server/loop_lock.h"

namespace mp {

class FdWatch {
 public:
  enum Dir { Read = 0, Write = 1 };

  explicit FdWatch(asio::io_context& io) : io_(io), mu_(loop_mutex(io)) {}
  ~FdWatch() { stop(); }
  FdWatch(const FdWatch&) = delete;
  FdWatch& operator=(const FdWatch&) = delete;

  // Follows the library to its current descriptor (-1: none). Pending waits
  // on a replaced one complete with ok == false. True when there is one
  // (registered with the reactor, or unwatched: see unwatch()).
  //
  // `may_reopen`: the library may have closed the descriptor and opened
  // another socket that got the same number (libnbd trying a host's next
  // address). The kernel dropped the old registration with the old socket,
  // so the new one must be registered afresh: the socket's identity is
  // compared, which costs an fstat.
  bool follow(int fd, bool may_reopen = false) {
    if (fd != fd_ || (may_reopen && fd >= 0 && identity(fd) != id_)) {
      stop();
      fd_ = fd;
      if (fd_ >= 0) {
        id_ = identity(fd_);
        sd_.emplace(io_, fd_);
      }
    }
    return fd_ >= 0;
  }

  // Waits for `dir` unless a wait for it is pending; then fn(ok) runs once
  // on the loop, holding the loop lock (ok == false: cancelled). fn must
  // keep this watch's owner alive, since the completion touches the watch
  // first.
  template <class Fn>
  void wait(Dir dir, Fn fn) {
    if (fd_ < 0 || waiting_[dir]) return;
    if (!sd_) sd_.emplace(io_, fd_);  // unwatched: registered again
    if (dir == Write) write_registered_ = true;
    waiting_[dir] = true;
    sd_->async_wait(
        dir == Read ? asio::posix::stream_descriptor::wait_read
                    : asio::posix::stream_descriptor::wait_write,
        locked(mu_, [this, dir, gen = gen_, fn = std::move(fn)](std::error_code ec) mutable {
          if (gen == gen_) waiting_[dir] = false;  // else: a wait on a former fd
          fn(!ec);
        }));
  }

  // Asio leaves EPOLLOUT in its edge-triggered registration once a write
  // wait started, so from then on every change in send space wakes the loop,
  // wait or no wait: for NBD twice per request at queue depth 1, from the
  // connect's one write wait. An owner that seldom waits to write calls this
  // when it no longer wants to; with no wait pending, the descriptor is
  // registered afresh, without EPOLLOUT (two epoll_ctl calls).
  void drop_write_interest() {
    if (sd_ && write_registered_ && unwatch()) sd_.emplace(io_, fd_);
  }

  // Takes the descriptor out of the reactor, so that its readiness wakes
  // nobody: an nbdkit worker polls it itself (server/reply_lease.h). One
  // epoll_ctl, and no wake-up of the loop, since no wait is pending; with a
  // wait pending nothing changes and the result is false. The next wait()
  // registers it again.
  bool unwatch() {
    if (waiting_[Read] || waiting_[Write]) return false;
    if (sd_) {
      sd_->release();
      sd_.reset();
      write_registered_ = false;
    }
    return true;
  }

  // Pending waits complete with ok == false.
  void cancel() {
    if (sd_) sd_->cancel();
  }

  // Cancels and forgets the descriptor (deregistered, not closed).
  void stop() {
    if (sd_) {
      sd_->cancel();
      sd_->release();
      sd_.reset();
    }
    fd_ = -1;
    waiting_[Read] = waiting_[Write] = false;
    write_registered_ = false;
    gen_++;
  }

  // True when a read would not block now (data, EOF or an error is there).
  // The reactor's readiness may be stale by the time a handler runs.
  bool readable() const {
    pollfd p{fd_, POLLIN, 0};
    return fd_ >= 0 && poll(&p, 1, 0) > 0 && p.revents != 0;
  }

 private:
  using Id = std::pair<dev_t, ino_t>;
  static Id identity(int fd) {
    struct stat st {};
    return fstat(fd, &st) == 0 ? Id{st.st_dev, st.st_ino} : Id{};
  }

  asio::io_context& io_;
  std::mutex& mu_;  // the loop lock
  std::optional<asio::posix::stream_descriptor> sd_;
  int fd_ = -1;
  Id id_{};
  bool waiting_[2] = {false, false};
  bool write_registered_ = false;  // the reactor may report EPOLLOUT
  unsigned gen_ = 0;               // descriptors followed so far
};

}  // namespace mp
