// Per-path dirty ranges: what a path acknowledged that no completed flush on that path covers yet.
//
// Why: upstreams that do not share a cache (two gateways over one LUN, each
// with its own page cache or librbd cache; qemu-nbd or nbdkit's cache filter
// in write-back mode) each hold their own newer copy of what they
// acknowledged, until a flush on that upstream writes it back. A read sent to
// another path reads the storage underneath, which does not hold it yet; a
// rewrite through another path leaves two dirty copies whose write-backs can
// land in either order. The engine keeps reads and writes of a dirty range on
// the path that holds it, and flushes that path before the range may go
// anywhere else (engine_affinity.cc).
//
// Invariant: every byte a write acknowledged on the path with generation g
// covered lies in a range whose generation is >= g, until a flush sent when
// the path's generation was >= g completes (flushed(g)). Ranges are disjoint
// and never touch: a write that overlaps or touches ranges merges with them,
// and the merged range takes the newest generation. That is conservative: a
// flush clears only ranges all of whose writes it covers, so merging can keep
// a range dirty longer, never shorter.
//
// Memory bound: one map node per range. When ranges() exceeds the bound the
// engine flushes the path (over_limit()); tracking is never dropped. Writes
// acknowledged while that flush is in flight still add ranges, so the bound is
// exceeded by at most what one flush's round trip lets through.
//
// Threading: none; the engine uses it holding the loop lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

namespace mp {

class DirtyRanges {
 public:
  explicit DirtyRanges(std::size_t max_ranges = 16384) : max_ranges_(max_ranges) {}

  // A write of [offset, offset+count) was acknowledged; `gen` is the path's
  // write generation counting it (it never decreases between calls).
  void add(std::uint64_t offset, std::uint64_t count, std::uint64_t gen);
  // A flush sent when the path's write generation was `gen` completed: every
  // range whose newest write has a generation <= gen is clean.
  void flushed(std::uint64_t gen);
  // Forgets everything (the path's writes were declared lost).
  void clear();

  bool overlaps(std::uint64_t offset, std::uint64_t count) const;
  bool empty() const { return ranges_.empty(); }
  std::size_t ranges() const { return ranges_.size(); }
  std::uint64_t bytes() const { return bytes_; }
  std::size_t max_ranges() const { return max_ranges_; }
  void set_max_ranges(std::size_t n) { max_ranges_ = n; }
  // More ranges than the bound: the path must be flushed.
  bool over_limit() const { return ranges_.size() > max_ranges_; }

 private:
  struct Range {
    std::uint64_t end = 0;  // exclusive
    std::uint64_t gen = 0;  // newest write in it
  };
  std::map<std::uint64_t, Range> ranges_;  // by start; disjoint, not touching
  std::uint64_t bytes_ = 0;                // sum of the ranges' lengths
  std::size_t max_ranges_;
};

}  // namespace mp
