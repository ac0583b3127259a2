// What both path kinds (NbdPath, IscsiPath) build on: the set of a path's
// connections, and a large command sent in parts whose results join.
//
// Threading: holding the loop lock (server/loop_lock.h), like the paths themselves.
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "server/path.h"

namespace mp {

// A path's connections: the current one, which new commands go to, and the
// retired ones, kept open only while commands are still in flight on them.
// A connection is shared-owned: the set holds one reference, and the
// connection's own callbacks hold another while they run, so it can leave the
// set from inside one of its member functions.
template <typename Conn>
class ConnSet {
 public:
  Conn* current() const { return cur_.get(); }
  bool is_current(const Conn& c) const { return cur_.get() == &c; }
  bool is_current(const std::shared_ptr<Conn>& c) const { return cur_ == c; }
  // Makes `c` the current connection. The previous one must have been retired.
  void start(std::shared_ptr<Conn> c) { cur_ = std::move(c); }
  // The current connection becomes a retired one; returned (nullptr if none).
  std::shared_ptr<Conn> retire() {
    if (!cur_) return nullptr;
    auto c = std::move(cur_);
    retired_.push_back(c);
    return c;
  }
  // A retired connection closed and leaves the set. The caller's own
  // reference keeps it alive until the caller returns.
  void remove(const Conn& c) {
    for (auto it = retired_.begin(); it != retired_.end(); ++it)
      if (it->get() == &c) {
        auto keep = std::move(*it);  // destroyed after erase, by the caller's reference
        retired_.erase(it);
        return;
      }
  }
  unsigned retired_count() const { return static_cast<unsigned>(retired_.size()); }
  // Every connection, retired ones first, taken out of the set (the path is
  // going away).
  std::vector<std::shared_ptr<Conn>> take_all() {
    auto all = std::move(retired_);
    retired_.clear();
    if (cur_) all.push_back(std::move(cur_));
    return all;
  }

 private:
  std::shared_ptr<Conn> cur_;
  std::vector<std::shared_ptr<Conn>> retired_;
};

// The parts of a command a path split into several: the worst result wins
// (TransportDead over RemoteError over Ok), reported once, by the last part.
struct SplitJoin {
  CommandSink* sink;
  unsigned remaining;
  PathResult result = PathResult::Ok;
  int err = 0;

  // Adds one part's result. When it was the last part, returns the sink, with
  // the joined result in r and e, and frees this; otherwise nullptr.
  CommandSink* add(PathResult& r, int& e) {
    if (static_cast<int>(r) > static_cast<int>(result)) result = r, err = e;
    if (--remaining) return nullptr;
    r = result, e = err;
    CommandSink* s = sink;
    delete this;
    return s;
  }
};

// Sends a command as `n` parts: send_part(i, sink, join, &err) sends part i,
// which reports to `sink` (the command's own when n is 1) or to `join`, and
// returns false (with an errno in err, or 0) when the part could not be sent.
// Returns false when the first part could not be sent: nothing was, and the
// command's sink never hears of it. When a later part cannot be sent, the
// parts on the wire still end the command, as TransportDead.
template <typename SendPart>
bool send_in_parts(std::uint32_t n, CommandSink* sink, SendPart send_part) {
  SplitJoin* join = n > 1 ? new SplitJoin{sink, n} : nullptr;
  for (std::uint32_t i = 0; i < n; i++) {
    int err = 0;
    if (send_part(i, join ? nullptr : sink, join, &err)) continue;
    if (i == 0) {
      delete join;
      return false;
    }
    join->result = PathResult::TransportDead;
    join->err = err ? err : ENOTCONN;
    join->remaining -= n - i;
    break;
  }
  return true;
}

}  // namespace mp
