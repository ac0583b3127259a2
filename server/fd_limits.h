// File descriptors: the open-file limit raised at start-up, and a reserved
// descriptor that keeps a listener (control, metrics) answering when the
// process has none left.
//
// When the process is out of descriptors (EMFILE, or ENFILE for the whole
// system), accept() fails and leaves the connection queued: the listener stays
// readable and an event loop would retry at once, forever. nbdkit itself does
// exactly that for NBD clients (1.32: it loops on accept, logging each
// failure), and takes any descriptor that becomes free within microseconds.
// So a listener holds one descriptor in reserve:
//
//   accept fails, EMFILE ──► log once ──► close the reserve, accept again at once
//                                          ├─ got it: serve the connection
//                                          └─ did not: retake the reserve, back off
//   a connection closes, reserve missing ──► its socket is shut down (the
//                                            client sees EOF) and kept as the
//                                            reserve: the descriptor is never
//                                            free, so nobody takes it in between
//
// Threading: an FdReserve belongs to one listener and runs on its thread (the
// event loop). raise_fd_limit runs once, before any thread starts.
#pragma once

#include <asio/error.hpp>
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

  // After async_accept failed with `ec` (exhausted(ec)): logs the exhaustion
  // (once until recovered), frees the reserve and accepts one connection on
  // `acceptor` without blocking. True and `sock` open when a connection was
  // accepted; false when the caller should back off and retry (no reserve
  // was held, or the connection went away: the reserve is then retaken).
  template <class Acceptor, class Socket>
  bool accept(Acceptor& acceptor, Socket& sock, const std::error_code& ec);

  // An accept succeeded without the reserve: descriptors are available, so
  // an exhaustion episode ends (noted once), and a missing reserve is retaken.
  void accepted();

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

  bool held() const { return fd_ >= 0; }

 private:
  void note_exhausted(const std::error_code& ec);
  void take();             // opens /dev/null when no reserve is held
  bool free_for_accept();  // closes the reserve: true if one was held
  void adopt(int fd);      // shuts `fd` (a released socket) down and keeps it
  std::string what_;
  Log log_;
  // The reserve: /dev/null, or a shut-down socket adopted at close; -1 while
  // it is lent out (to an accepted connection) or after release().
  int fd_ = -1;
  bool exhausted_ = false;  // logged, and not yet recovered
  bool stopped_ = true;     // not between hold() and release(): never take one
};

template <class Acceptor, class Socket>
bool FdReserve::accept(Acceptor& acceptor, Socket& sock, const std::error_code& ec) {
  note_exhausted(ec);
  if (!free_for_accept()) return false;
  std::error_code e;
  acceptor.non_blocking(true, e);  // a connection that went away: would_block, not a hang
  if (!e) acceptor.accept(sock, e);
  if (!e) return true;
  take();
  return false;
}

template <class Socket>
void FdReserve::close(Socket& sock) {
  std::error_code ignored;
  if (fd_ >= 0 || stopped_ || !sock.is_open()) {
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
