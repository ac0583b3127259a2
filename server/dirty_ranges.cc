// Per-path dirty ranges: coalesced intervals with the generation of their newest write.
#include "server/dirty_ranges.h"

#include <algorithm>
#include <iterator>
#include <limits>

namespace mp {

void DirtyRanges::add(std::uint64_t offset, std::uint64_t count, std::uint64_t gen) {
  if (count == 0) return;
  std::uint64_t start = offset;
  std::uint64_t end = count > std::numeric_limits<std::uint64_t>::max() - offset
                          ? std::numeric_limits<std::uint64_t>::max()
                          : offset + count;
  // The first range that could overlap or touch: the one starting at or
  // before `start`, if it reaches it.
  auto it = ranges_.upper_bound(start);
  if (it != ranges_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end >= start) it = prev;
  }
  while (it != ranges_.end() && it->first <= end) {
    start = std::min(start, it->first);
    end = std::max(end, it->second.end);
    gen = std::max(gen, it->second.gen);
    bytes_ -= it->second.end - it->first;
    it = ranges_.erase(it);
  }
  ranges_.emplace_hint(it, start, Range{end, gen});
  bytes_ += end - start;
}

void DirtyRanges::flushed(std::uint64_t gen) {
  for (auto it = ranges_.begin(); it != ranges_.end();) {
    if (it->second.gen <= gen) {
      bytes_ -= it->second.end - it->first;
      it = ranges_.erase(it);
    } else {
      ++it;
    }
  }
}

void DirtyRanges::clear() {
  ranges_.clear();
  bytes_ = 0;
}

bool DirtyRanges::overlaps(std::uint64_t offset, std::uint64_t count) const {
  if (count == 0 || ranges_.empty()) return false;
  std::uint64_t end = count > std::numeric_limits<std::uint64_t>::max() - offset
                          ? std::numeric_limits<std::uint64_t>::max()
                          : offset + count;
  auto it = ranges_.lower_bound(end);  // first range starting at or after the end
  if (it == ranges_.begin()) return false;
  --it;  // the last range starting before the end
  return it->second.end > offset;
}

}  // namespace mp
