// Tracks abandoned write attempts until they can no longer land, and keeps the
// newest acknowledged data of their ranges meanwhile ("shadows").
//
// The danger (see README, "Write ordering across paths"): a write W1 sent on a
// hung path A times out, is retried and acknowledged via B, the client then
// writes W2 to the same blocks via B, and A's server wakes up and applies W1
// over W2. Closing A's connection does not stop that. W1 can no longer land
// only once A's late reply to it arrives, or A's connection dies from the
// server's side.
//
// Until then:
//  - the shadow of W1's range holds the newest acknowledged data for it:
//    W1's own data at first, patched by every later acknowledged write;
//  - reads of that range get the shadow's bytes laid over what the path read;
//  - once no unresolved abandoned write overlaps a shadow, the engine writes
//    the shadow back through a healthy path ("re-apply") and drops it, unless
//    a newer write changed it meanwhile, in which case it is written again.
//
// Memory for shadows is bounded by max_bytes. An abandoned write that does not
// fit gets no shadow; newer writes to its range from other requests are then
// held (must_hold) until it resolves or their deadline passes (EIO). That
// stalls, never corrupts.
//
// Single-threaded: used by the engine, holding the loop lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "server/runtime.h"
#include "server/selector.h"

namespace mp {

class StaleWriteTracker {
 public:
  struct Counters {
    std::uint64_t abandoned = 0;          // abandoned write attempts recorded
    std::uint64_t resolved_late = 0;      // the late reply arrived
    std::uint64_t resolved_by_death = 0;  // the connection died under it
    std::uint64_t reapplied = 0;          // shadow ranges written back
    std::uint64_t unshadowed = 0;         // abandoned writes over the memory bound
  };
  struct Reapply {
    std::uint64_t offset = 0;
    std::vector<std::byte> data;
    std::uint64_t gen = 0;  // the shadow's generation this copy was taken at
  };

  explicit StaleWriteTracker(std::uint64_t max_bytes) : max_bytes_(max_bytes) {}

  // Records an abandoned write attempt of request `tag` on `path`. `data` is
  // what it writes (nullptr: zeros, for zero and trim). Returns its id.
  std::uint64_t add(PathId path, std::uint64_t tag, std::uint64_t offset, std::uint32_t len,
                    const std::byte* data, Clock::time_point now);
  // The abandoned attempt can no longer land: its reply came (late = true) or
  // its connection died (late = false).
  void resolve(std::uint64_t id, bool late);

  // A write was acknowledged to the client: shadows take its bytes.
  // `data` nullptr means zeros.
  void on_acked_write(std::uint64_t offset, std::uint32_t len, const std::byte* data);
  // Lays shadow bytes over a read's result.
  void overlay(std::uint64_t offset, std::uint32_t len, std::byte* buf) const;
  // True when a write of request `tag` to this range must wait: an unresolved
  // abandoned write of another request, without a shadow, overlaps it.
  bool must_hold(std::uint64_t offset, std::uint32_t len, std::uint64_t tag) const;
  // True while an abandoned write sent on `path` is unresolved.
  bool pending_on(PathId path) const;
  // The oldest unresolved abandoned write's start time, if any.
  bool oldest(Clock::time_point* since) const;

  // Shadows that no unresolved write overlaps and that have no write-back in
  // flight. The caller writes each back and reports with reapplied(), once
  // nothing that could have read or written the range in the meantime is
  // still in flight (the engine's epoch barrier).
  std::vector<Reapply> take_ready();
  void reapplied(const Reapply& job, bool ok);

  bool idle() const { return shadows_.empty() && writes_.empty(); }
  void set_max_bytes(std::uint64_t max_bytes) { max_bytes_ = max_bytes; }
  void reset_counters() { counters_ = {}; }
  std::size_t pending() const { return writes_.size(); }
  std::uint64_t shadow_bytes() const { return shadow_bytes_; }
  const Counters& counters() const { return counters_; }

 private:
  struct Write {
    std::uint64_t id;
    PathId path;
    std::uint64_t tag;
    std::uint64_t offset;
    std::uint32_t len;
    Clock::time_point since;
    bool shadowed;
  };
  struct Shadow {
    std::vector<std::byte> data;  // data.size() is the length; never empty
    std::uint64_t gen = 0;        // bumped on every change
    // A write-back is in flight. At most one at a time: two could land in
    // the wrong order and leave the older copy.
    bool writing_back = false;
  };
  std::map<std::uint64_t, Shadow>::iterator containing(std::uint64_t offset);
  bool overlaps_unresolved(std::uint64_t offset, std::uint64_t end) const;

  std::uint64_t max_bytes_;
  std::uint64_t shadow_bytes_ = 0;
  std::uint64_t next_id_ = 1;
  std::uint64_t next_gen_ = 1;
  std::vector<Write> writes_;                // unresolved only; few (bounded by in-flight writes)
  std::map<std::uint64_t, Shadow> shadows_;  // by offset; never overlapping
  Counters counters_;
};

}  // namespace mp
