// The latency selector: learns each path's speed from its replies and sends
// each request where it is expected to complete first.
//
// Per path it keeps `cost`, a peak-sensitive exponentially weighted estimate
// of the time one request in flight adds (a reply's latency divided by the
// requests in flight on the path when it came, this one included):
//
//   sample > cost:  cost = sample                      (peak: believe bad news at once)
//   otherwise:      cost = cost * w + sample * (1 - w)  with w = exp(-dt / decay)
//
// where dt is the time since the path's previous update. So a slow reply
// raises the estimate at once and good replies bring it down over about one
// `decay` (100 ms). A request of a path with `n` in flight is expected to take
//
//   expected = cost * (n + 1)
//
// (it waits behind n others), and select_path draws two eligible paths at
// random and takes the one with the lower expected time ("power of two
// choices": with more than two paths a stale estimate cannot herd every
// request onto one path). With two paths both are compared.
//
// Why divide by the requests in flight. Latency measured under load includes
// the queueing that load causes: a fast path at QD32 answers in 0.5 ms, a
// path 10 ms slower with one request in 10 ms. Multiplying raw latency by
// (n + 1) would rate the fast path (0.5 ms x 33) worse than the idle slow one
// (10 ms x 1) and send it requests; per request in flight the fast path costs
// 16 µs and the slow one 10 ms, and it is left alone. Between equal paths the
// expected times balance when their requests in flight do.
//
// Two corrections keep the estimate honest:
// * stall: a path with requests in flight that has answered nothing for
//   longer than its estimate says is judged by that silence
//   (expected >= time since its last reply or since it became busy), so a
//   hung path stops getting requests within about one healthy latency;
// * idle decay: a path that gets no replies has its estimate shrink by
//   exp(-idle / idle_decay) (1 s), so it is picked again after a while, and that request
//   measures it (the trickle that notices a recovered path). A path with no
//   estimate yet counts as the best measured path of the group.
//
// Weights and throughputs of the configuration are not used: the selector
// measures. All calls on the event-loop thread; no allocation after add_path.
#include "server/selector_latency.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <vector>

namespace mp {
namespace {

using Ns = std::chrono::nanoseconds;

struct LSlot {
  PathId id = 0;
  bool usable = true;
  unsigned max_inflight = 1;    // >= 1
  unsigned inflight = 0;        // saturating, never below zero
  double cost_ns = 0;           // per request in flight; 0: never measured
  Clock::time_point updated{};  // last end_io (or when it went busy from idle)

  bool eligible() const { return usable && inflight < max_inflight; }
};

class LatencySelector final : public Selector {
 public:
  LatencySelector(const SelectorEnv& env, const LatencySelectorParams& p)
      : now_(env.now),
        random_(env.random),
        decay_ns_(std::max<double>(1.0, static_cast<double>(p.decay.count()))),
        idle_decay_ns_(std::max<double>(1.0, static_cast<double>(p.idle_decay.count()))) {
    if (!now_) now_ = [] { return Clock::now(); };
    if (!random_) random_ = [rng = std::mt19937_64{0x5eed}]() mutable { return rng(); };
  }

  void add_path(PathId id, const SelectorPathParams& params) override {
    LSlot* s = find(id);
    if (s == nullptr) {
      slots_.push_back(LSlot{});
      s = &slots_.back();
      s->id = id;
      s->updated = now_();
      eligible_.reserve(slots_.size());
    }
    s->max_inflight = std::max(params.max_inflight, 1u);
    s->usable = true;
  }

  void remove_path(PathId id) override {
    std::erase_if(slots_, [id](const LSlot& s) { return s.id == id; });
  }
  void fail_path(PathId id) override {
    if (LSlot* s = find(id)) s->usable = false;
  }
  // A reinstated path starts unmeasured: what it was before it failed says
  // little about the new connection.
  void reinstate_path(PathId id) override {
    if (LSlot* s = find(id)) {
      s->usable = true;
      s->cost_ns = 0;
    }
  }

  std::optional<PathId> select_path(std::uint64_t /*nr_bytes*/) override {
    eligible_.clear();
    for (std::size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].eligible()) eligible_.push_back(i);
    if (eligible_.empty()) return std::nullopt;
    if (eligible_.size() == 1) return slots_[eligible_[0]].id;
    const Clock::time_point now = now_();
    const double fallback = best_cost(now);
    std::size_t a = 0, b = 1;
    if (eligible_.size() > 2) {
      const std::size_t n = eligible_.size();
      a = random_() % n;
      b = random_() % (n - 1);
      if (b >= a) ++b;
    }
    const LSlot& sa = slots_[eligible_[a]];
    const LSlot& sb = slots_[eligible_[b]];
    const double ea = expected(sa, now, fallback), eb = expected(sb, now, fallback);
    if (ea != eb) return ea < eb ? sa.id : sb.id;
    return (random_() & 1) ? sa.id : sb.id;  // a tie: either, at random
  }

  void start_io(PathId id, std::uint64_t /*nr_bytes*/) override {
    LSlot* s = find(id);
    if (s == nullptr) return;
    // Going busy from idle: the stall clock starts now, not at the last reply.
    if (s->inflight == 0) {
      const Clock::time_point now = now_();
      s->cost_ns = decayed(*s, now);
      s->updated = now;
    }
    if (s->inflight < std::numeric_limits<unsigned>::max()) ++s->inflight;
  }

  void end_io(PathId id, std::uint64_t /*nr_bytes*/, Clock::time_point start) override {
    LSlot* s = find(id);
    if (s == nullptr) return;
    const Clock::time_point now = now_();
    const double rtt = std::max<double>(0.0, static_cast<double>(Ns(now - start).count()));
    const double sample = rtt / std::max(1u, s->inflight);
    if (s->cost_ns == 0 || sample > s->cost_ns) {
      s->cost_ns = std::max(sample, 1.0);
    } else {
      const double dt = static_cast<double>(Ns(now - s->updated).count());
      const double w = std::exp(-std::max(0.0, dt) / decay_ns_);
      s->cost_ns = std::max(1.0, s->cost_ns * w + sample * (1 - w));
    }
    s->updated = now;
    if (s->inflight > 0) --s->inflight;
  }

  bool usable(PathId id) const override {
    const LSlot* s = find(id);
    return s != nullptr && s->usable;
  }
  bool has_usable_path() const override {
    return std::any_of(slots_.begin(), slots_.end(), [](const LSlot& s) { return s.usable; });
  }
  bool can_take(PathId id) const override {
    const LSlot* s = find(id);
    return s != nullptr && s->eligible();
  }

 private:
  LSlot* find(PathId id) {
    for (LSlot& s : slots_)
      if (s.id == id) return &s;
    return nullptr;
  }
  const LSlot* find(PathId id) const { return const_cast<LatencySelector*>(this)->find(id); }

  // The estimate now: an idle path's shrinks with the time since it was
  // last measured; a busy path's is what its last reply left.
  double decayed(const LSlot& s, Clock::time_point now) const {
    if (s.cost_ns == 0 || s.inflight > 0) return s.cost_ns;
    const double idle = static_cast<double>(Ns(now - s.updated).count());
    return s.cost_ns * std::exp(-std::max(0.0, idle) / idle_decay_ns_);
  }

  // The lowest estimate among measured eligible paths (0 when none is).
  double best_cost(Clock::time_point now) const {
    double best = 0;
    for (std::size_t i : eligible_) {
      const double c = decayed(slots_[i], now);
      if (c > 0 && (best == 0 || c < best)) best = c;
    }
    return best;
  }

  // Expected time of one more request on s: its estimate times the requests
  // it would then carry, and at least how long it has been silent while busy.
  double expected(const LSlot& s, Clock::time_point now, double fallback) const {
    double c = s.cost_ns > 0 ? decayed(s, now) : fallback;
    double e = c * (static_cast<double>(s.inflight) + 1.0);
    if (s.inflight > 0) e = std::max(e, static_cast<double>(Ns(now - s.updated).count()));
    return e;
  }

  std::function<Clock::time_point()> now_;
  std::function<std::uint64_t()> random_;
  double decay_ns_;                    // > 0
  double idle_decay_ns_;               // > 0
  std::vector<LSlot> slots_;           // in add order; ids unique
  std::vector<std::size_t> eligible_;  // select_path's scratch, capacity kept
};

}  // namespace

SelectorPtr make_latency_selector(const SelectorEnv& env, const LatencySelectorParams& p) {
  return std::make_unique<LatencySelector>(env, p);
}

}  // namespace mp
