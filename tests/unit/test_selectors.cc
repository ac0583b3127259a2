// Unit tests for the path selectors: shared bookkeeping, each policy's choices, seeded simulations.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "server/selector.h"

namespace mp {
namespace {

using config::SelectorKind;

constexpr Clock::time_point kT{};  // no real time: end_io ignores it
constexpr SelectorKind kAllKinds[] = {SelectorKind::RoundRobin, SelectorKind::QueueLength,
                                      SelectorKind::ServiceTime, SelectorKind::Latency};

const char* kind_name(SelectorKind k) {
  return config::to_string(k);
}

SelectorPathParams params(unsigned weight = 1, unsigned cap = 64, double throughput = 1.0) {
  SelectorPathParams p;
  p.weight = weight;
  p.max_inflight = cap;
  p.throughput = throughput;
  return p;
}

// select_path n times without start_io; returns how often each id was chosen.
std::map<PathId, int> tally(Selector& s, int n, std::uint64_t bytes = 4096) {
  std::map<PathId, int> out;
  for (int i = 0; i < n; ++i) {
    auto id = s.select_path(bytes);
    REQUIRE(id.has_value());
    ++out[*id];
  }
  return out;
}

// select_path + start_io + end_io n times (each request done before the next).
std::map<PathId, int> tally_io(Selector& s, int n, std::uint64_t bytes = 4096) {
  std::map<PathId, int> out;
  for (int i = 0; i < n; ++i) {
    auto id = s.select_path(bytes);
    REQUIRE(id.has_value());
    s.start_io(*id, bytes);
    s.end_io(*id, bytes, kT);
    ++out[*id];
  }
  return out;
}

// Fills every path up to its cap; returns requests started per id.
std::map<PathId, int> fill(Selector& s, std::uint64_t bytes = 4096) {
  std::map<PathId, int> out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto id = s.select_path(bytes);
    if (!id) return out;
    s.start_io(*id, bytes);
    ++out[*id];
  }
  FAIL("select_path never returned nullopt");
  return out;
}

// ---------------------------------------------------------------------------
// Rules every policy shares.

TEST_CASE("selectors: empty selector has nothing to offer") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    REQUIRE(s);
    CHECK_FALSE(s->has_usable_path());
    CHECK_FALSE(s->can_take(1));
    CHECK_FALSE(s->select_path(4096).has_value());
  }
}

TEST_CASE("selectors: busy cap skips full paths, nullopt when all full, end_io frees") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->add_path(1, params(1, 2));
    s->add_path(2, params(1, 1));
    s->add_path(3, params(1, 3));
    auto started = fill(*s);
    CHECK(started[1] == 2);
    CHECK(started[2] == 1);
    CHECK(started[3] == 3);
    CHECK_FALSE(s->select_path(4096).has_value());
    CHECK(s->has_usable_path());  // busy is not unusable
    CHECK_FALSE(s->can_take(1));
    CHECK_FALSE(s->can_take(2));
    CHECK_FALSE(s->can_take(3));

    s->end_io(2, 4096, kT);
    CHECK(s->can_take(2));
    CHECK_FALSE(s->can_take(1));
    CHECK(s->select_path(4096) == PathId{2});
    CHECK(s->select_path(4096) == PathId{2});  // select alone does not count
    s->start_io(2, 4096);
    CHECK_FALSE(s->select_path(4096).has_value());

    s->end_io(3, 4096, kT);
    s->end_io(1, 4096, kT);
    auto again = fill(*s);
    CHECK(again[1] == 1);
    CHECK(again[3] == 1);
    CHECK(again.count(2) == 0);
  }
}

TEST_CASE("selectors: fail_path excludes a path, reinstate_path brings it back") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->add_path(1, params());
    s->add_path(2, params());
    s->add_path(3, params());
    s->fail_path(2);
    CHECK_FALSE(s->can_take(2));
    CHECK(s->can_take(1));
    CHECK(s->has_usable_path());
    auto t = tally_io(*s, 300);
    CHECK(t.count(2) == 0);
    CHECK(t[1] + t[3] == 300);
    CHECK(t[1] > 0);
    CHECK(t[3] > 0);

    s->fail_path(1);
    s->fail_path(3);
    CHECK_FALSE(s->has_usable_path());
    CHECK_FALSE(s->select_path(4096).has_value());

    s->reinstate_path(2);
    CHECK(s->has_usable_path());
    CHECK(s->can_take(2));
    CHECK(s->select_path(4096) == PathId{2});

    s->reinstate_path(1);
    s->reinstate_path(3);
    auto all = tally_io(*s, 300);
    if (k == SelectorKind::Latency) {
      // Equal, idle paths tie and the tie is broken at random.
      for (PathId id : {1u, 2u, 3u}) CHECK(std::abs(all[id] - 100) <= 20);
    } else {
      CHECK(all[1] == 100);
      CHECK(all[2] == 100);
      CHECK(all[3] == 100);
    }
  }
}

TEST_CASE("selectors: a failed path keeps its in-flight count") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->add_path(1, params(1, 2));
    s->start_io(1, 100);
    s->start_io(1, 100);
    s->fail_path(1);
    s->reinstate_path(1);
    CHECK_FALSE(s->can_take(1));  // still two in flight
    CHECK_FALSE(s->select_path(100).has_value());
    s->end_io(1, 100, kT);
    CHECK(s->can_take(1));

    // Requests the engine sends on a failed path are counted too.
    s->add_path(2, params(1, 1));
    s->fail_path(2);
    s->start_io(2, 100);
    s->reinstate_path(2);
    CHECK_FALSE(s->can_take(2));
    s->end_io(2, 100, kT);
    CHECK(s->can_take(2));
  }
}

TEST_CASE("selectors: remove_path") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->add_path(1, params());
    s->add_path(2, params());
    s->add_path(3, params());
    s->start_io(2, 4096);
    s->remove_path(2);
    s->remove_path(99);  // unknown: ignored
    CHECK_FALSE(s->can_take(2));
    auto t = tally_io(*s, 100);
    CHECK(t.count(2) == 0);
    CHECK(t[1] == 50);
    CHECK(t[3] == 50);
    s->end_io(2, 4096, kT);  // completion of a removed path's request: ignored

    s->remove_path(1);
    CHECK(tally_io(*s, 10)[3] == 10);
    s->remove_path(3);
    CHECK_FALSE(s->has_usable_path());
    CHECK_FALSE(s->select_path(4096).has_value());

    // A removed id can come back, idle.
    s->add_path(2, params(1, 1));
    CHECK(s->can_take(2));
    CHECK(s->select_path(4096) == PathId{2});
  }
}

TEST_CASE("selectors: unknown ids and unmatched end_io are harmless, counts never go negative") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->fail_path(7);
    s->reinstate_path(7);
    s->start_io(7, 4096);
    s->end_io(7, 4096, kT);
    s->remove_path(7);
    CHECK_FALSE(s->can_take(7));
    CHECK_FALSE(s->has_usable_path());

    s->add_path(1, params(1, 1));
    s->start_io(1, 4096);
    s->fail_path(1);
    s->end_io(1, 4096, kT);  // the failed path's request completes: counted
    s->end_io(1, 4096, kT);  // unmatched: must not go below zero
    s->end_io(1, 1 << 20, kT);
    s->reinstate_path(1);
    CHECK(s->can_take(1));
    // Exactly one start now reaches the cap of 1: the count was 0, not -1/-2
    // (which would leave room) and not wrapped (which would already be full).
    s->start_io(1, 4096);
    CHECK_FALSE(s->can_take(1));
    CHECK_FALSE(s->select_path(4096).has_value());
    s->end_io(1, 4096, kT);
    CHECK(s->select_path(4096) == PathId{1});
  }
}

TEST_CASE("selectors: add_path on a present id updates its parameters, keeps its counts") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    auto s = make_selector(k);
    s->add_path(1, params(1, 1));
    s->start_io(1, 4096);
    s->fail_path(1);
    CHECK_FALSE(s->can_take(1));
    s->add_path(1, params(1, 2));
    CHECK(s->can_take(1));  // usable again, one in flight, cap now 2
    s->start_io(1, 4096);
    CHECK_FALSE(s->can_take(1));
  }
}

TEST_CASE("selectors: make_selector maps each kind") {
  // Weights 3:1 and one busy path tell the policies apart.
  auto rr = make_selector(SelectorKind::RoundRobin);
  auto ql = make_selector(SelectorKind::QueueLength);
  auto st = make_selector(SelectorKind::ServiceTime);
  for (Selector* s : {rr.get(), ql.get(), st.get()}) {
    s->add_path(1, params(3, 64, 1.0));
    s->add_path(2, params(1, 64, 4.0));
  }
  CHECK(tally(*rr, 4)[1] == 3);  // weights
  CHECK(ql->select_path(1) == PathId{1});
  CHECK(ql->select_path(1) == PathId{2});  // idle tie rotates
  CHECK(tally(*st, 4)[2] == 4);            // higher throughput, idle
}

// ---------------------------------------------------------------------------
// Round-robin.

TEST_CASE("round-robin: exact weighted distribution") {
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(10, params(1));
  s->add_path(20, params(2));
  s->add_path(30, params(3));
  // N * sum(weights) picks: exactly N * weight each, whatever N.
  for (int n : {1, 7, 50}) {
    CAPTURE(n);
    auto t = tally(*s, 6 * n);
    CHECK(t[10] == n);
    CHECK(t[20] == 2 * n);
    CHECK(t[30] == 3 * n);
  }
  // start_io/end_io do not change the order while no cap is reached.
  auto t = tally_io(*s, 600);
  CHECK(t[10] == 100);
  CHECK(t[20] == 200);
  CHECK(t[30] == 300);
}

TEST_CASE("round-robin: smooth interleaving") {
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(1, params(5));
  s->add_path(2, params(1));
  s->add_path(3, params(1));
  const std::vector<PathId> want = {1, 1, 2, 1, 3, 1, 1};
  for (int round = 0; round < 3; ++round) {
    for (PathId w : want) CHECK(s->select_path(0) == w);
  }
}

TEST_CASE("round-robin: failed path gets nothing, exact shares resume after reinstate") {
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(1, params(1));
  s->add_path(2, params(2));
  s->add_path(3, params(3));
  s->fail_path(2);
  auto t = tally(*s, 40);
  CHECK(t.count(2) == 0);
  CHECK(t[1] == 10);
  CHECK(t[3] == 30);
  s->reinstate_path(2);
  auto u = tally(*s, 60);
  CHECK(u[1] == 10);
  CHECK(u[2] == 20);
  CHECK(u[3] == 30);
}

TEST_CASE("round-robin: membership changes mid-period restart the shares exactly") {
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(1, params(1));
  s->add_path(2, params(2));
  s->add_path(3, params(3));
  tally(*s, 4);  // stop in the middle of a period: credits are uneven
  s->fail_path(3);
  auto t = tally(*s, 30);  // 10 periods of weights 1:2
  CHECK(t.count(3) == 0);
  CHECK(t[1] == 10);
  CHECK(t[2] == 20);
  tally(*s, 1);
  s->reinstate_path(3);
  auto u = tally(*s, 60);
  CHECK(u[1] == 10);
  CHECK(u[2] == 20);
  CHECK(u[3] == 30);
  tally(*s, 5);
  s->add_path(4, params(4));
  auto v = tally(*s, 100);
  CHECK(v[1] == 10);
  CHECK(v[2] == 20);
  CHECK(v[3] == 30);
  CHECK(v[4] == 40);
  tally(*s, 3);
  s->remove_path(2);
  auto w = tally(*s, 80);
  CHECK(w[1] == 10);
  CHECK(w[3] == 30);
  CHECK(w[4] == 40);
}

TEST_CASE("round-robin: a path at its cap is skipped and not counted in the pick") {
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(1, params(3, 1));
  s->add_path(2, params(1, 64));
  REQUIRE(s->select_path(0) == PathId{1});
  s->start_io(1, 0);
  // Path 1 is full: everything goes to 2, however much credit 1 would earn.
  CHECK(tally(*s, 20)[2] == 20);
  s->end_io(1, 0, kT);
  // Path 1 earned nothing while full, so it does not get a burst now: the
  // next 8 picks are the ordinary 3:1 share.
  auto t = tally(*s, 8);
  CHECK(t[1] == 6);
  CHECK(t[2] == 2);
}

// ---------------------------------------------------------------------------
// Queue-length.

TEST_CASE("queue-length: prefers the path with fewer requests in flight") {
  auto s = make_selector(SelectorKind::QueueLength);
  s->add_path(1, params(1, 64));
  s->add_path(2, params(1, 64));
  s->add_path(3, params(1, 64));
  for (int i = 0; i < 3; ++i) s->start_io(1, 4096);
  s->start_io(2, 4096);
  CHECK(s->select_path(4096) == PathId{3});
  s->start_io(3, 4096);
  s->start_io(3, 4096);
  CHECK(s->select_path(4096) == PathId{2});  // 3, 1, 2 in flight
  s->start_io(2, 4096);
  s->start_io(2, 4096);
  CHECK(s->select_path(4096) == PathId{3});  // 3, 3, 2
  // Bytes do not matter to queue-length: one huge request counts as one.
  auto b = make_selector(SelectorKind::QueueLength);
  b->add_path(1, params());
  b->add_path(2, params());
  b->start_io(1, 1ull << 30);
  b->start_io(2, 4096);
  b->start_io(2, 4096);
  CHECK(b->select_path(4096) == PathId{1});
}

TEST_CASE("queue-length: equal paths take turns, weights and throughput ignored") {
  auto s = make_selector(SelectorKind::QueueLength);
  s->add_path(1, params(5, 64, 1.0));
  s->add_path(2, params(1, 64, 9.0));
  s->add_path(3, params(1, 64, 1.0));
  for (int round = 0; round < 4; ++round) {
    CHECK(s->select_path(4096) == PathId{1});
    CHECK(s->select_path(4096) == PathId{2});
    CHECK(s->select_path(4096) == PathId{3});
  }
  auto t = tally_io(*s, 300);
  CHECK(t[1] == 100);
  CHECK(t[2] == 100);
  CHECK(t[3] == 100);
}

TEST_CASE("queue-length: rotation survives remove_path") {
  auto s = make_selector(SelectorKind::QueueLength);
  for (PathId id = 1; id <= 4; ++id) s->add_path(id, params());
  CHECK(s->select_path(0) == PathId{1});
  CHECK(s->select_path(0) == PathId{2});
  s->remove_path(1);  // before the rotation point: 3 is still next
  CHECK(s->select_path(0) == PathId{3});
  s->remove_path(4);  // the next one: wraps to the start
  CHECK(s->select_path(0) == PathId{2});
  CHECK(s->select_path(0) == PathId{3});
}

// ---------------------------------------------------------------------------
// Service-time.

TEST_CASE("service-time: idle paths, the faster one wins; equal ones take turns") {
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params(1, 64, 1.0));
  s->add_path(2, params(1, 64, 2.0));
  CHECK(tally(*s, 10)[2] == 10);

  auto e = make_selector(SelectorKind::ServiceTime);
  e->add_path(1, params(1, 64, 3.0));
  e->add_path(2, params(1, 64, 3.0));
  for (int i = 0; i < 4; ++i) {
    CHECK(e->select_path(4096) == PathId{1});
    CHECK(e->select_path(4096) == PathId{2});
  }
}

TEST_CASE("service-time: in-flight bytes relative to throughput decide") {
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params(1, 64, 1.0));
  s->add_path(2, params(1, 64, 2.0));
  s->start_io(1, 1000);
  s->start_io(2, 3000);
  // (1000 + 1000) / 1 == (3000 + 1000) / 2: a tie goes to the higher
  // throughput, although path 1 comes first in the rotation, every time.
  CHECK(s->select_path(1000) == PathId{2});
  CHECK(s->select_path(1000) == PathId{2});
  s->start_io(2, 1);
  // 4001 / 2 > 2000: path 1.
  CHECK(s->select_path(1000) == PathId{1});
  // A bigger request shifts the balance to the faster path:
  // (3001 + 5000) / 2 = 4000.5 < (1000 + 5000) / 1.
  CHECK(s->select_path(5000) == PathId{2});
  s->start_io(1, 1000);
  // 4001 / 2 < 3000 / 1: path 2 again once path 1 holds more.
  CHECK(s->select_path(1000) == PathId{2});
  s->end_io(1, 1000, kT);
  s->end_io(1, 1000, kT);
  // Path 1 is idle: 1000 / 1 < 4001 / 2.
  CHECK(s->select_path(1000) == PathId{1});
}

TEST_CASE("service-time: end_io releases the finished request's bytes") {
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params());
  s->add_path(2, params());
  s->start_io(1, 1 << 20);
  s->start_io(1, 4096);
  s->start_io(2, 8192);
  CHECK(s->select_path(4096) == PathId{2});
  s->end_io(1, 1 << 20, kT);  // the big one finishes; 4096 bytes remain on 1
  CHECK(s->select_path(4096) == PathId{1});
  CHECK(s->select_path(4096) == PathId{1});
}

TEST_CASE("service-time: counts bytes, not requests (unlike queue-length)") {
  auto st = make_selector(SelectorKind::ServiceTime);
  auto ql = make_selector(SelectorKind::QueueLength);
  for (Selector* s : {st.get(), ql.get()}) {
    s->add_path(1, params());
    s->add_path(2, params());
    s->start_io(1, 1 << 20);                           // one big request
    for (int i = 0; i < 3; ++i) s->start_io(2, 4096);  // three small ones
  }
  CHECK(st->select_path(4096) == PathId{2});
  CHECK(ql->select_path(4096) == PathId{1});
}

TEST_CASE("service-time: huge byte counts do not wrap") {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params(1, 64, 1.0));
  s->add_path(2, params(1, 64, 1e-3));
  s->start_io(1, kMax - 10);
  // Path 1: about 2^64 + nr; path 2: 1000 * nr. With uint64 sums, path 1's
  // cost would wrap to a small number and win.
  CHECK(s->select_path(1ull << 50) == PathId{2});  // 2^60 < 2^64
  CHECK(s->select_path(1ull << 62) == PathId{1});  // 2^72 > 1.25 * 2^64
  // Saturating in-flight bytes: more starts do not wrap to a small count.
  s->start_io(1, kMax);
  CHECK(s->select_path(1ull << 50) == PathId{2});
}

TEST_CASE("service-time: throughput 2:1 gets about 2/3 of the bytes when fed steadily") {
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params(1, 64, 2.0));
  s->add_path(2, params(1, 64, 1.0));
  // Closed loop: 30 requests in flight; the oldest completes, a new one is
  // sent. Completion order does not depend on the path, so the split is the
  // selector's own doing (queue-length would split 1:1 here).
  constexpr std::uint64_t kSize = 4096;
  constexpr std::size_t kDepth = 30;
  std::vector<PathId> fifo;  // oldest first
  std::map<PathId, std::uint64_t> bytes;
  for (int i = 0; i < 30000; ++i) {
    if (fifo.size() == kDepth) {
      s->end_io(fifo.front(), kSize, kT);
      fifo.erase(fifo.begin());
    }
    auto id = s->select_path(kSize);
    REQUIRE(id.has_value());
    s->start_io(*id, kSize);
    fifo.push_back(*id);
    if (i >= 1000) bytes[*id] += kSize;  // skip the warm-up
  }
  const double share = double(bytes[1]) / double(bytes[1] + bytes[2]);
  CHECK(std::abs(share - 2.0 / 3.0) < 0.01);
}

// ---------------------------------------------------------------------------
// Seeded simulations: random request sizes and completion order, no clock.

struct Request {
  PathId path;
  std::uint64_t bytes;
};

// Removes and returns a uniformly random element.
Request take_random(std::vector<Request>& v, std::mt19937& rng) {
  std::uniform_int_distribution<std::size_t> pick(0, v.size() - 1);
  const std::size_t i = pick(rng);
  Request r = v[i];
  v[i] = v.back();
  v.pop_back();
  return r;
}

TEST_CASE("round-robin simulation: request shares follow the weights") {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<std::uint64_t> size(512, 1 << 20);
  std::bernoulli_distribution submit(0.5);
  auto s = make_selector(SelectorKind::RoundRobin);
  s->add_path(1, params(3, 64));
  s->add_path(2, params(1, 64));
  std::vector<Request> inflight;
  std::map<PathId, std::uint64_t> reqs, bytes;
  int sent = 0;
  while (sent < 40000) {
    // Up to 16 in flight: caps (64) never bind, so shares are the weights.
    if (inflight.size() < 16 && (inflight.empty() || submit(rng))) {
      const std::uint64_t n = size(rng);
      auto id = s->select_path(n);
      REQUIRE(id.has_value());
      s->start_io(*id, n);
      inflight.push_back({*id, n});
      ++reqs[*id];
      bytes[*id] += n;
      ++sent;
    } else {
      Request r = take_random(inflight, rng);
      s->end_io(r.path, r.bytes, kT);
    }
  }
  const double req_share = double(reqs[1]) / sent;
  const double byte_share = double(bytes[1]) / double(bytes[1] + bytes[2]);
  CHECK(std::abs(req_share - 0.75) < 0.001);  // exact up to one period
  CHECK(std::abs(byte_share - 0.75) < 0.01);  // random sizes
}

TEST_CASE("queue-length simulation: a path that completes faster gets more requests") {
  std::mt19937 rng(777);
  std::uniform_int_distribution<std::uint64_t> size(512, 1 << 20);
  std::bernoulli_distribution path1_completes(2.0 / 3.0);
  auto s = make_selector(SelectorKind::QueueLength);
  s->add_path(1, params());
  s->add_path(2, params());
  std::vector<Request> on[3];  // per path, index 1 and 2
  std::map<PathId, std::uint64_t> reqs;
  constexpr std::size_t kDepth = 8;
  int sent = 0;
  for (int step = 0; step < 30000; ++step) {
    // Path 1 completes twice as often as path 2 (when both have work), in a
    // random order within the path.
    if (on[1].size() + on[2].size() == kDepth) {
      PathId p = path1_completes(rng) ? 1 : 2;
      if (on[p].empty()) p = 3 - p;
      Request r = take_random(on[p], rng);
      s->end_io(r.path, r.bytes, kT);
    }
    while (on[1].size() + on[2].size() < kDepth) {
      const std::uint64_t n = size(rng);
      auto id = s->select_path(n);
      REQUIRE(id.has_value());
      // Never the longer queue.
      const std::size_t other = on[3 - *id].size();
      CHECK(on[*id].size() <= other);
      s->start_io(*id, n);
      on[*id].push_back({*id, n});
      if (step >= 1000) ++reqs[*id];
      ++sent;
    }
  }
  const double share = double(reqs[1]) / double(reqs[1] + reqs[2]);
  // Round-robin with equal weights would give 1/2 here.
  CHECK(std::abs(share - 2.0 / 3.0) < 0.02);
}

TEST_CASE("service-time simulation: bytes split by throughput with random sizes") {
  std::mt19937 rng(4242);
  std::uniform_int_distribution<std::uint64_t> size(4096, 256 * 1024);
  auto s = make_selector(SelectorKind::ServiceTime);
  s->add_path(1, params(1, 64, 2.0));
  s->add_path(2, params(1, 64, 1.0));
  std::vector<Request> inflight;
  std::map<PathId, std::uint64_t> bytes, reqs;
  constexpr std::size_t kDepth = 64;
  for (int step = 0; step < 40000; ++step) {
    // Completion order is random and path-blind: every request in flight is
    // equally likely to finish next.
    if (inflight.size() == kDepth) {
      Request r = take_random(inflight, rng);
      s->end_io(r.path, r.bytes, kT);
    }
    while (inflight.size() < kDepth) {
      const std::uint64_t n = size(rng);
      auto id = s->select_path(n);
      REQUIRE(id.has_value());
      s->start_io(*id, n);
      inflight.push_back({*id, n});
      if (step >= 2000) {
        bytes[*id] += n;
        ++reqs[*id];
      }
    }
  }
  const double share = double(bytes[1]) / double(bytes[1] + bytes[2]);
  // Queue-length would give 1/2 here. Service-time sits slightly above 2/3:
  // it balances (b1 + n) / 2 against b2 + n, i.e. b1 = 2 * b2 + n.
  CHECK(std::abs(share - 2.0 / 3.0) < 0.02);
  // Bigger requests lean further towards the fast path, so its byte share
  // exceeds its request share.
  const double req_share = double(reqs[1]) / double(reqs[1] + reqs[2]);
  CHECK(req_share < share);
}

// Random operations on every policy, checking the shared rules against a
// model kept outside the selector.
TEST_CASE("selectors simulation: invariants under random load, failures and removal") {
  for (SelectorKind k : kAllKinds) {
    CAPTURE(kind_name(k));
    std::mt19937 rng(2024 + static_cast<unsigned>(k));
    std::uniform_int_distribution<std::uint64_t> size(512, 1 << 20);
    std::uniform_int_distribution<int> op(0, 99);
    std::uniform_int_distribution<PathId> any_path(1, 4);
    auto s = make_selector(k);
    struct Model {
      unsigned cap;
      unsigned inflight = 0;
      bool usable = true;
      bool present = true;
    };
    std::map<PathId, Model> m = {{1, {1}}, {2, {2}}, {3, {3}}, {4, {5}}};
    s->add_path(1, params(1, 1, 1.0));
    s->add_path(2, params(2, 2, 0.5));
    s->add_path(3, params(3, 3, 4.0));
    s->add_path(4, params(1, 5, 2.0));
    std::vector<Request> inflight;
    int selected = 0, refused = 0;
    for (int step = 0; step < 20000; ++step) {
      if (step == 10000) {  // path 4 leaves for good, requests still in flight
        s->remove_path(4);
        m[4].present = false;
      }
      const int o = op(rng);
      if (o < 50) {
        const std::uint64_t n = size(rng);
        auto id = s->select_path(n);
        bool any = false;
        for (auto& [pid, pm] : m) any |= pm.present && pm.usable && pm.inflight < pm.cap;
        if (!id) {
          CHECK_FALSE(any);
          ++refused;
        } else {
          ++selected;
          REQUIRE(m.count(*id) == 1);
          Model& pm = m[*id];
          CHECK(pm.present);
          CHECK(pm.usable);
          CHECK(pm.inflight < pm.cap);
          s->start_io(*id, n);
          ++pm.inflight;
          inflight.push_back({*id, n});
        }
      } else if (o < 90) {
        if (inflight.empty()) continue;
        Request r = take_random(inflight, rng);
        s->end_io(r.path, r.bytes, kT);
        if (m[r.path].present) --m[r.path].inflight;
      } else if (o < 95) {
        const PathId p = any_path(rng);
        s->fail_path(p);
        m[p].usable = false;
      } else {
        const PathId p = any_path(rng);
        s->reinstate_path(p);
        m[p].usable = true;
      }
      bool usable = false;
      for (auto& [pid, pm] : m) {
        usable |= pm.present && pm.usable;
        CHECK(s->can_take(pid) == (pm.present && pm.usable && pm.inflight < pm.cap));
      }
      CHECK(s->has_usable_path() == usable);
    }
    // Both outcomes were exercised.
    CHECK(selected > 1000);
    CHECK(refused > 100);
  }
}

}  // namespace
}  // namespace mp
