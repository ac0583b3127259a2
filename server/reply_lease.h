// ReplyLease: an nbdkit worker that sent its own request reads the reply
// itself, so that the reply does not wake the loop thread to wake the worker.
//
// A worker that took the loop lock offers to read (ReplyLease::Offer, around
// Engine::submit). A path that sends the command on a connection with
// nothing else in flight may then lend that connection's reads to it
// (ReplyLease::lend). While lent, the loop does not read the connection; the
// worker polls its socket (fd()) together with its wake descriptor, and calls
// read() holding the loop lock when the socket is readable, until its request
// completed (possibly through another path, or by a timeout the loop saw);
// then end(), holding the lock, gives the reads back to the loop. README.md,
// "Threads and the loop lock".
#pragma once

#include <memory>

namespace mp {

class ReplyLease {
 public:
  virtual ~ReplyLease() = default;
  // The socket to poll for reading; -1 once there is nothing more to read
  // there (the connection died or was closed). Holding the loop lock.
  virtual int fd() const = 0;
  // Reads what arrived and reports what completed. Holding the loop lock.
  virtual void read() = 0;
  // Gives the connection's reads back to the loop. Holding the loop lock;
  // the lease is dropped under it too.
  virtual void end() = 0;

  // Offers the calling thread as the reader of a command sent while it
  // exists (one command: the first path to lend takes the offer).
  class Offer {
   public:
    Offer();
    ~Offer();
    Offer(const Offer&) = delete;
    Offer& operator=(const Offer&) = delete;
    std::shared_ptr<ReplyLease> take() { return std::move(lease_); }

   private:
    friend class ReplyLease;
    std::shared_ptr<ReplyLease> lease_;
  };

  // A path: true when the calling thread offered to read and no command took
  // the offer yet.
  static bool offered();
  // A path: gives the offer its lease (offered() must be true).
  static void lend(std::shared_ptr<ReplyLease> lease);
};

}  // namespace mp
