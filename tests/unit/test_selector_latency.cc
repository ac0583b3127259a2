// Unit tests for the latency selector: discrete-event simulations with an injected clock and
// random source (no real time), and its corner cases.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <queue>
#include <random>
#include <vector>

#include "server/selector.h"
#include "server/selector_latency.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using config::SelectorKind;

struct Env {
  Clock::time_point t = Clock::time_point{} + 1h;
  std::mt19937_64 rng{77};
  SelectorEnv env() {
    return {[this] { return t; }, [this] { return rng(); }};
  }
};

SelectorPathParams cap(unsigned n) {
  SelectorPathParams p;
  p.max_inflight = n;
  return p;
}

// A closed-loop client keeping `depth` requests in flight for `duration` of
// simulated time. latency(id, inflight_on_path, now) gives each request's
// service time when it is sent. Returns requests sent per path.
struct Sim {
  using LatencyFn = std::function<std::chrono::nanoseconds(PathId, unsigned, Clock::time_point)>;
  struct Done {
    Clock::time_point at;
    PathId id;
    Clock::time_point start;
    bool operator>(const Done& o) const { return at > o.at; }
  };
  Sim(Env& e, Selector& s) : env(e), sel(s) {}
  Env& env;
  Selector& sel;
  std::map<PathId, unsigned> inflight;
  std::map<PathId, std::uint64_t> sent;
  std::priority_queue<Done, std::vector<Done>, std::greater<Done>> q;

  void send(const LatencyFn& lat) {
    auto id = sel.select_path(4096);
    REQUIRE(id.has_value());
    sel.start_io(*id, 4096);
    const unsigned n = ++inflight[*id];
    ++sent[*id];
    q.push({env.t + lat(*id, n, env.t), *id, env.t});
  }
  void run(unsigned depth, std::chrono::nanoseconds duration, const LatencyFn& lat) {
    const Clock::time_point end = env.t + duration;
    while (q.size() < depth) send(lat);
    while (!q.empty() && q.top().at <= end) {
      Done d = q.top();
      q.pop();
      env.t = d.at;
      --inflight[d.id];
      sel.end_io(d.id, 4096, d.start);
      send(lat);
    }
    env.t = end;
  }
  void reset_counts() { sent.clear(); }
};

// Path 1: 100 µs plus 10 µs per request in flight on it (a server whose
// latency grows with its load); path 2: the same, 10 ms slower.
std::chrono::nanoseconds fast_and_slow(PathId id, unsigned n, Clock::time_point) {
  auto base = 100us + n * 10us;
  return id == 2 ? base + 10ms : base;
}

TEST_CASE("latency selector: a path 10 ms slower gets almost nothing at QD32") {
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  s->add_path(1, cap(64));
  s->add_path(2, cap(64));
  Sim sim{e, *s};
  sim.run(32, 1s, fast_and_slow);  // warm-up: both measured
  sim.reset_counts();
  sim.run(32, 10s, fast_and_slow);
  const double slow_share = double(sim.sent[2]) / double(sim.sent[1] + sim.sent[2]);
  CAPTURE(sim.sent[1]);
  CAPTURE(sim.sent[2]);
  // Below 0.1%: the slow path stays out of the p99.9. What it still gets is
  // the trickle of its idle decay (about one request a second).
  CHECK(slow_share < 0.001);
  CHECK(sim.sent[2] >= 3);  // but it is still measured now and then
  CHECK(sim.sent[2] <= 40);

  // Switched off: service-time, with the same paths, sends the slow path a
  // share that puts it in the p99.
  Env e2;
  auto st = make_selector(SelectorKind::ServiceTime, e2.env());
  st->add_path(1, cap(64));
  st->add_path(2, cap(64));
  Sim sim2{e2, *st};
  sim2.run(32, 1s, fast_and_slow);
  const double st_share = double(sim2.sent[2]) / double(sim2.sent[1] + sim2.sent[2]);
  CHECK(st_share > 0.01);
}

TEST_CASE("latency selector: equal paths share the load evenly") {
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  s->add_path(1, cap(64));
  s->add_path(2, cap(64));
  Sim sim{e, *s};
  auto same = [](PathId, unsigned n, Clock::time_point) { return 200us + n * 20us; };
  sim.run(32, 2s, same);
  const double share = double(sim.sent[1]) / double(sim.sent[1] + sim.sent[2]);
  CHECK(share > 0.45);
  CHECK(share < 0.55);
}

TEST_CASE("latency selector: uneven bandwidth splits by speed") {
  // Both paths serve one request at a time in turn (a link): latency is the
  // queue ahead times the per-request time, 4 ms on path 1 and 16 ms on path
  // 2 (800 and 200 Mbit/s for 1 MiB requests; 4x apart).
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  s->add_path(1, cap(64));
  s->add_path(2, cap(64));
  Sim sim{e, *s};
  auto link = [](PathId id, unsigned n, Clock::time_point) { return (id == 1 ? 4ms : 16ms) * n; };
  sim.run(16, 2s, link);
  sim.reset_counts();
  sim.run(16, 20s, link);
  const double share = double(sim.sent[1]) / double(sim.sent[1] + sim.sent[2]);
  CAPTURE(share);
  // Each path's throughput is 1/4 and 1/16 per ms: using both gives 5/16, and
  // the fast path's share of requests is 4/5 of them.
  CHECK(share > 0.72);
  CHECK(share < 0.88);
  const double rate = double(sim.sent[1] + sim.sent[2]) / 20000.0;  // per ms
  CHECK(rate > 0.9 * (1.0 / 4 + 1.0 / 16));
}

TEST_CASE("latency selector: a path that stops answering stops getting requests") {
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  s->add_path(1, cap(64));
  s->add_path(2, cap(64));
  Sim sim{e, *s};
  auto same = [](PathId, unsigned, Clock::time_point) { return 200us; };
  sim.run(8, 1s, same);
  // Path 2 hangs from now on: its replies take an hour.
  auto hang2 = [](PathId id, unsigned, Clock::time_point) { return id == 2 ? 1h : 200us; };
  sim.reset_counts();
  sim.run(8, 1s, hang2);
  CAPTURE(sim.sent[2]);
  // Within about one healthy latency of silence it is judged by the silence:
  // a handful of requests, not half of 40,000 (each one it takes holds one
  // of the 8 slots of the client for good, which is what a hedge is for).
  CHECK(sim.sent[2] <= 3);
  CHECK(sim.sent[1] >= 25000);
}

TEST_CASE("latency selector: a recovered path is measured again and takes load back") {
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  s->add_path(1, cap(64));
  s->add_path(2, cap(64));
  Sim sim{e, *s};
  bool slow = true;
  auto lat = [&](PathId id, unsigned n, Clock::time_point) {
    auto base = 100us + n * 10us;
    return id == 2 && slow ? base + 10ms : base;
  };
  sim.run(32, 2s, lat);
  slow = false;
  sim.run(32, 10s, lat);  // within a few idle decays it is tried and found fast
  sim.reset_counts();
  sim.run(32, 2s, lat);
  const double share = double(sim.sent[2]) / double(sim.sent[1] + sim.sent[2]);
  CHECK(share > 0.4);
  CHECK(share < 0.6);
}

TEST_CASE("latency selector: two random choices among many paths, never an ineligible one") {
  Env e;
  auto s = make_selector(SelectorKind::Latency, e.env());
  for (PathId id = 1; id <= 5; ++id) s->add_path(id, cap(2));
  s->fail_path(3);
  std::map<PathId, int> got;
  for (int i = 0; i < 8; ++i) {
    auto id = s->select_path(4096);
    REQUIRE(id.has_value());
    CHECK(*id != 3);
    s->start_io(*id, 4096);
    ++got[*id];
  }
  // Four usable paths with a cap of 2: exactly full now.
  for (PathId id : {1u, 2u, 4u, 5u}) CHECK(got[id] == 2);
  CHECK_FALSE(s->select_path(4096).has_value());
  s->reinstate_path(3);
  CHECK(s->select_path(4096) == PathId{3});
}

TEST_CASE("latency selector: the same random source gives the same choices") {
  auto run = [] {
    Env e;
    auto s = make_selector(SelectorKind::Latency, e.env());
    for (PathId id = 1; id <= 4; ++id) s->add_path(id, cap(64));
    std::vector<PathId> picks;
    for (int i = 0; i < 200; ++i) {
      auto id = s->select_path(4096);
      picks.push_back(*id);
      s->start_io(*id, 4096);
      e.t += 50us;
      if (i % 3 == 0) s->end_io(*id, 4096, e.t - 100us * (1 + *id));
    }
    return picks;
  };
  CHECK(run() == run());
}

}  // namespace
}  // namespace mp
