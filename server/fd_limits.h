// File descriptors: the open-file limit raised at start-up, and reserved
// descriptors that keep a listener (control, metrics) answering when the
// process has none left.
//
// When the process is out of descriptors (EMFILE, or ENFILE for the whole
// system), accept() fails before it even looks for a connection, and leaves
// any connection queued: an event loop that retried at once would spin. So a
// listener holds kReserved descriptors (on /dev/null) and, while exhausted,
// looks for a waiting client every kBackOff:
//
//   accept fails, EMFILE ──► log once ──► no client waiting: look again later
//                                          └─ a client waits: close one reserve
//                                             descriptor, accept at once (again
//                                             with the next one if another
//                                             thread was first; then retry for
//                                             up to kSpin), retake the rest
//   a connection closes, reserve short ──► its socket is shut down (the client
//                                          sees EOF) and kept as a reserve
//                                          descriptor: never free, so nobody
//                                          else takes it in between
//
// What it cannot do: a descriptor freed for an accept can be taken by another
// thread first. nbdkit's own accept loop does so while NBD clients queue: it
// retries accept at once on EMFILE (1.32 and later), logging each failure,
// and keeps what it gets when an NBD client completes its handshake on it.
//
// Threading: an FdReserve belongs to one listener and runs on its thread (the
// event loop). raise_fd_limit runs once, before any thread starts.
#pragma once

#include <array>
#include <asio/error.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <system_error>
#include <utility>

namespace mp {

// Raises the soft RLIMIT_NOFILE to the hard limit (nbdkit opens a socket and
// a pipe per NBD client: a soft limit of 1024 is reached by ~300 clients).
// Reports what it did, or why it could not, through `debug` (printf-style, as
// nbdkit_debug). Never throws and allocates nothing: callable from a C ABI.
void raise_fd_limit(void (*debug)(const char* fmt, ...)) noexcept;

class FdReserve {
 public:
  // error: true for the one exhaustion line, false for the recovery note.
  using Log = std::function<void(bool error, const std::string&)>;

  explicit FdReserve(Log log);
  ~FdReserve();  // release()
  FdReserve(const FdReserve&) = delete;
  FdReserve& operator=(const FdReserve&) = delete;

  // Is `ec` the process or the system being out of file descriptors?
  static bool exhausted(const std::error_code& ec);

  // What the listener does next, after an accept that failed for want of
  // descriptors.
  enum class Step {
    Accepted,  // `sock` is the client's connection: serve it
    // Accept again after kBackOff. Not on the listener's readiness: Asio's
    // edge-triggered epoll reported a client already waiting before the
    // wait began, and would not again.
    BackOff,
  };

  // After async_accept failed with `ec` (exhausted(ec)): logs the exhaustion
  // (once until recovered) and, when a client is waiting, frees the reserve
  // and accepts it on `acceptor` (blocking the loop for at most kSpin).
  template <class Acceptor, class Socket>
  Step accept(Acceptor& acceptor, Socket& sock, const std::error_code& ec);

  // An accept succeeded without the reserve: descriptors are available, so
  // an exhaustion episode ends (noted once), and a missing reserve is retaken.
  void accepted();

  // What a listener does after any accept completed, the one decision the
  // control and metrics servers share.
  enum class After {
    Serve,   // `sock` holds a client's connection
    Retry,   // accept again after *delay (a waiting client stays queued)
    Closed,  // the listener was closed: accept no more
  };
  // Out of descriptors: accept() above. A client that gave up while queued:
  // accept again at once. Any other error: logged once per stretch (it ends
  // at the next success), retried after 100 ms rather than spun on.
  template <class Acceptor, class Socket>
  After after_accept(Acceptor& acceptor, Socket& sock, const std::error_code& ec,
                     std::chrono::milliseconds* delay);

  // Closes a connection's socket. If the reserve is missing, the socket is
  // shut down (the peer sees EOF) and its descriptor kept as the reserve
  // instead: it is never free, so nobody else can take it in between.
  template <class Socket>
  void close(Socket& sock);

  // Takes the reserve (a descriptor on /dev/null): when the listener starts.
  // `what` names the listener in log lines ("control socket /run/x.sock").
  void hold(std::string what);
  // Closes the reserve until the next hold() (the listener stops). Idempotent.
  void release();

  bool held() const { return held_ > 0; }

  // Descriptors held in reserve. Two, because freeing one for an accept
  // races with every other thread that accepts or opens: nbdkit's own accept
  // loop spins on EMFILE and takes any descriptor that comes free (it then
  // fails to make its per-connection pipe and frees it again, but not within
  // microseconds). If it is first, the second is freed for a second try.
  static constexpr int kReserved = 2;

  // Longest an accept retries when other threads took the freed descriptors
  // first: the event loop stalls at most this long per kBackOff, and only
  // while descriptors are exhausted and a client is waiting.
  static constexpr std::chrono::milliseconds kSpin{5};
  // Between tries while descriptors are exhausted: a control client waits at
  // most about this long to be accepted.
  static constexpr std::chrono::milliseconds kBackOff{10};

 private:
  void note_exhausted(const std::error_code& ec);
  void note_accept_error(const std::error_code& ec);  // once per stretch
  void take();         // fills the missing reserve descriptors with /dev/null
  void close_all();    // closes the reserve descriptors
  bool free_one();     // closes one reserve descriptor: true if one was held
  void adopt(int fd);  // shuts `fd` (a released socket) down and keeps it, or closes it
  static bool pending(int listener);  // a client waits in the listener's backlog
  static void yield();                // lets other threads run
  std::string what_;
  Log log_;
  // The reserve: each /dev/null or a shut-down socket adopted at close, or
  // -1 while lent out (to an accepted connection) or after release().
  std::array<int, kReserved> fds_{-1, -1};
  int held_ = 0;                      // entries of fds_ that are >= 0
  bool exhausted_ = false;            // logged, and not yet recovered
  bool accept_error_logged_ = false;  // another accept error, since the last success
  bool stopped_ = true;               // not between hold() and release(): never take one
};

template <class Acceptor, class Socket>
FdReserve::Step FdReserve::accept(Acceptor& acceptor, Socket& sock, const std::error_code& ec) {
  note_exhausted(ec);
  // With no descriptor free, accept fails with EMFILE before it looks for a
  // connection: free the reserve only for a client that is there.
  if (!pending(acceptor.native_handle())) {
    take();
    return Step::BackOff;
  }
  // One reserve descriptor at a time: if another thread takes the first
  // (between our close and our accept), the next one is freed.
  const auto until = std::chrono::steady_clock::now() + kSpin;
  std::error_code e;
  acceptor.non_blocking(true, e);  // a client that went away: would_block, not a hang
  while (!e) {
    bool freed = free_one();
    acceptor.accept(sock, e);
    if (!e || !exhausted(e)) break;
    if (!freed && std::chrono::steady_clock::now() >= until) break;
    e.clear();
    if (!freed) yield();  // none left: let other threads give one back, for kSpin
  }
  take();
  return e ? Step::BackOff : Step::Accepted;
}

template <class Acceptor, class Socket>
FdReserve::After FdReserve::after_accept(Acceptor& acceptor, Socket& sock,
                                         const std::error_code& ec,
                                         std::chrono::milliseconds* delay) {
  *delay = std::chrono::milliseconds(0);
  if (ec == asio::error::operation_aborted) return After::Closed;
  if (ec == asio::error::connection_aborted) return After::Retry;
  if (ec && exhausted(ec)) {
    if (accept(acceptor, sock, ec) == Step::BackOff) {
      *delay = kBackOff;
      return After::Retry;
    }
  } else if (ec) {
    note_accept_error(ec);
    *delay = std::chrono::milliseconds(100);
    return After::Retry;
  } else {
    accepted();
  }
  accept_error_logged_ = false;
  return After::Serve;
}

template <class Socket>
void FdReserve::close(Socket& sock) {
  std::error_code ignored;
  if (held_ == kReserved || stopped_ || !sock.is_open()) {
    sock.close(ignored);
    return;
  }
  int fd = sock.release(ignored);
  if (ignored || fd < 0) {
    sock.close(ignored);
    return;
  }
  adopt(fd);
}

}  // namespace mp
