// The three path selectors (round-robin, queue-length, service-time) and make_selector.
//
// How they compare:
//
// * round-robin: smooth weighted round-robin over the eligible paths. It
//   ignores load entirely: each path gets its configured share of requests,
//   interleaved as evenly as the weights allow (weights 5,1,1 give
//   a a b a c a a). Deterministic and cheap; right when the paths are alike or
//   their relative speeds are known and stable. A slow path only loses its
//   share when it reaches its busy cap.
// * queue-length: the eligible path with the fewest requests in flight. It
//   adapts to paths that complete faster (they drain, so they get more), but
//   counts a 4 KiB read the same as a 32 MiB write.
// * service-time: the eligible path whose in-flight bytes plus this request,
//   divided by its relative throughput, is smallest, i.e. the estimated time
//   until this request would be done. Adapts to both request size and path
//   speed.
// * latency (selector_latency.cc): learns each path's speed from its replies
//   (a decaying, peak-sensitive estimate of time per request in flight) and
//   picks the lower expected completion time of two paths drawn at random.
//   Adapts to paths that get slow without failing; the default.
//
// Common rules, kept by SlotSelector: a path is eligible when it is usable (not
// failed) and below its busy cap; select_path never returns anything else and
// returns nullopt when nothing is eligible. select_path does not count the
// request: the engine calls start_io after choosing. start_io/end_io keep
// counts for every path (failed ones too, since their requests still finish);
// counts never go below zero. Unknown ids are ignored by every verb. Paths are
// few, so every lookup is a linear scan; select_path, start_io and end_io never
// allocate.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "server/selector.h"
#include "server/selector_latency.h"

namespace mp {
namespace {

struct Slot {
  PathId id = 0;
  bool usable = true;
  unsigned weight = 1;        // >= 1
  unsigned max_inflight = 1;  // >= 1
  double throughput = 1.0;    // finite and > 0
  // Requests and bytes between start_io and end_io. Saturating: an end_io
  // without a matching start_io leaves them at zero rather than wrapping.
  unsigned inflight = 0;
  std::uint64_t inflight_bytes = 0;
  // Round-robin credit; only RoundRobinSelector uses it.
  std::int64_t current = 0;

  bool below_cap() const { return inflight < max_inflight; }
  bool eligible() const { return usable && below_cap(); }
};

// Bookkeeping shared by all policies; subclasses only implement select_path.
class SlotSelector : public Selector {
 public:
  // Adding an id that is already present updates its parameters and makes it
  // usable again; its in-flight counts are kept (end_io still arrives for them).
  void add_path(PathId id, const SelectorPathParams& params) override {
    Slot* s = find(id);
    if (s == nullptr) {
      slots_.push_back(Slot{});
      s = &slots_.back();
      s->id = id;
    }
    // Defensive clamps; config validation already guarantees these ranges.
    s->weight = std::max(params.weight, 1u);
    s->max_inflight = std::max(params.max_inflight, 1u);
    s->throughput =
        (std::isfinite(params.throughput) && params.throughput > 0) ? params.throughput : 1.0;
    s->usable = true;
    reset_credits();
  }

  // Forgets the path and its counts; a later end_io for it is ignored.
  void remove_path(PathId id) override {
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].id != id) continue;
      slots_.erase(slots_.begin() + static_cast<std::ptrdiff_t>(i));
      // Keep the rotation pointing at the same next path.
      if (i < next_) --next_;
      if (next_ >= slots_.size()) next_ = 0;
      reset_credits();
      return;
    }
  }

  void fail_path(PathId id) override {
    if (Slot* s = find(id)) {
      s->usable = false;
      reset_credits();
    }
  }

  void reinstate_path(PathId id) override {
    if (Slot* s = find(id)) {
      s->usable = true;
      reset_credits();
    }
  }

  // Counts the request even on a failed path or one at its cap: the engine may
  // send on a path itself (e.g. a flush to each dirty path).
  void start_io(PathId id, std::uint64_t nr_bytes) override {
    Slot* s = find(id);
    if (s == nullptr) return;
    if (s->inflight < std::numeric_limits<unsigned>::max()) ++s->inflight;
    const std::uint64_t room = std::numeric_limits<std::uint64_t>::max() - s->inflight_bytes;
    s->inflight_bytes += std::min(nr_bytes, room);
  }

  void end_io(PathId id, std::uint64_t nr_bytes, Clock::time_point /*start*/) override {
    Slot* s = find(id);
    if (s == nullptr) return;
    if (s->inflight > 0) --s->inflight;
    s->inflight_bytes -= std::min(nr_bytes, s->inflight_bytes);
    // With nothing in flight any leftover bytes are bookkeeping drift
    // (mismatched sizes); drop them so they cannot bias service-time forever.
    if (s->inflight == 0) s->inflight_bytes = 0;
  }

  bool usable(PathId id) const override {
    const Slot* s = find(id);
    return s != nullptr && s->usable;
  }

  bool has_usable_path() const override {
    return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.usable; });
  }

  bool can_take(PathId id) const override {
    const Slot* s = find(id);
    return s != nullptr && s->eligible();
  }

 protected:
  Slot* find(PathId id) {
    for (Slot& s : slots_)
      if (s.id == id) return &s;
    return nullptr;
  }
  const Slot* find(PathId id) const { return const_cast<SlotSelector*>(this)->find(id); }

  // Round-robin credits restart whenever the set of paths or their usability
  // changes (add, remove, fail, reinstate; not when a cap is reached). Credit
  // earned under the old set would otherwise linger: a returning path could
  // get a burst or a drought, and the others' credits would no longer sum to
  // zero, losing the exact per-period shares. Harmless for the other policies.
  void reset_credits() {
    for (Slot& s : slots_) s.current = 0;
  }

  // Scans eligible slots starting at the rotation index and returns the first
  // one no other eligible slot is strictly better than (better(a, b): a beats
  // b). The rotation index then moves just past the chosen slot, so paths
  // that tie take turns.
  template <typename Better>
  std::optional<PathId> pick_rotating(Better better) {
    const std::size_t n = slots_.size();
    std::size_t best = n;  // n = none yet
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (next_ + k) % n;
      if (!slots_[i].eligible()) continue;
      if (best == n || better(slots_[i], slots_[best])) best = i;
    }
    if (best == n) return std::nullopt;
    next_ = (best + 1) % n;
    return slots_[best].id;
  }

  std::vector<Slot> slots_;  // in add order; ids unique
  std::size_t next_ = 0;     // rotation start for tie breaks; < slots_.size() or 0
};

// Smooth weighted round-robin. Each pick adds every eligible path's weight to
// its credit, takes the path with the most credit (first in add order on a
// tie) and charges it the total weight of that pick's eligible paths. With a
// fixed eligible set the credits sum to zero after each pick and repeat with
// period sum(weights), in which each path is chosen exactly weight times.
// Ineligible paths neither earn nor are charged. All credits restart at zero
// when a path is added, removed, failed or reinstated (see reset_credits).
// Overflow: a pick moves any credit by at most the total weight (at most
// 32 paths x 1000 with a validated config), so even steady drift in one
// direction would need over 10^14 picks to leave int64; from zero with a fixed
// eligible set the credits stay within one total weight of zero.
class RoundRobinSelector final : public SlotSelector {
 public:
  std::optional<PathId> select_path(std::uint64_t /*nr_bytes*/) override {
    Slot* best = nullptr;
    std::int64_t total = 0;
    for (Slot& s : slots_) {
      if (!s.eligible()) continue;
      s.current += s.weight;
      total += s.weight;
      if (best == nullptr || s.current > best->current) best = &s;
    }
    if (best == nullptr) return std::nullopt;
    best->current -= total;
    return best->id;
  }
};

// Fewest requests in flight; ties rotate.
class QueueLengthSelector final : public SlotSelector {
 public:
  std::optional<PathId> select_path(std::uint64_t /*nr_bytes*/) override {
    return pick_rotating([](const Slot& a, const Slot& b) { return a.inflight < b.inflight; });
  }
};

// Smallest (inflight_bytes + nr_bytes) / throughput; ties go to the higher
// throughput, then rotate.
class ServiceTimeSelector final : public SlotSelector {
 public:
  std::optional<PathId> select_path(std::uint64_t nr_bytes) override {
    return pick_rotating([nr_bytes](const Slot& a, const Slot& b) {
      const int c = compare_cost(a, b, nr_bytes);
      return c < 0 || (c == 0 && a.throughput > b.throughput);
    });
  }

 private:
  // Sign of (a.bytes + nr) / a.tp - (b.bytes + nr) / b.tp, without dividing.
  //
  // Equal throughput: compare the integer byte counts; adding nr to both sides
  // does not change the order, so this is exact and cannot overflow.
  // Otherwise compare (a.bytes + nr) * b.tp with (b.bytes + nr) * a.tp in long
  // double. Overflow guard: the sums are formed in long double, not uint64, so
  // they cannot wrap (each is < 2^65); times a finite double throughput the
  // product stays below 2^1089, far inside x86-64 long double's range (about
  // 2^16384). Where long double is only a double, a product can overflow only
  // for throughputs above about 2^959; both sides then become infinity and
  // compare as a tie, which is still a valid (if arbitrary) choice. On x86-64
  // the 64-bit mantissa holds any uint64 exactly, so only costs within about
  // one part in 2^63 of each other can be misordered: harmless for a heuristic.
  static int compare_cost(const Slot& a, const Slot& b, std::uint64_t nr) {
    if (a.throughput == b.throughput) {
      if (a.inflight_bytes == b.inflight_bytes) return 0;
      return a.inflight_bytes < b.inflight_bytes ? -1 : 1;
    }
    const long double lhs =
        (static_cast<long double>(a.inflight_bytes) + static_cast<long double>(nr)) *
        static_cast<long double>(b.throughput);
    const long double rhs =
        (static_cast<long double>(b.inflight_bytes) + static_cast<long double>(nr)) *
        static_cast<long double>(a.throughput);
    if (lhs == rhs) return 0;
    return lhs < rhs ? -1 : 1;
  }
};

}  // namespace

SelectorPtr make_selector(config::SelectorKind kind, const SelectorEnv& env) {
  switch (kind) {
    case config::SelectorKind::RoundRobin:
      return std::make_unique<RoundRobinSelector>();
    case config::SelectorKind::QueueLength:
      return std::make_unique<QueueLengthSelector>();
    case config::SelectorKind::ServiceTime:
      return std::make_unique<ServiceTimeSelector>();
    case config::SelectorKind::Latency:
      return make_latency_selector(env);
  }
  // Out-of-range enum value: fall back to the configured default.
  return std::make_unique<ServiceTimeSelector>();
}

}  // namespace mp
