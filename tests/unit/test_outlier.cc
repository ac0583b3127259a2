// Unit tests for the latency outlier detector alone: window, minimum samples, ratios, the share
// cap, the last active path, ejection times that grow, re-admission. Time comes in as arguments.
#include <doctest/doctest.h>

#include <chrono>
#include <vector>

#include "server/outlier.h"

namespace mp {
namespace {

using namespace std::chrono_literals;
using M = OutlierDetector::Member;
using V = OutlierDetector::Verdict;

const Clock::time_point t0 = Clock::time_point{} + 1h;

config::Outlier cfg() {
  config::Outlier c;  // the documented defaults: window 10s, 20 samples, ratio 5, 1ms, ...
  return c;
}

// n replies of `lat` to requests of `bytes` on path id, spread over `span` ending at `end`.
void feed(OutlierDetector& d, PathId id, int n, std::chrono::nanoseconds lat, Clock::time_point end,
          Clock::duration span = 1s, std::uint32_t bytes = 4096) {
  for (int i = 0; i < n; i++) d.record(id, end - span + span * i / n, lat, bytes);
}
constexpr std::uint32_t kMiB = 1u << 20;

TEST_CASE("outlier: a path 10 ms slower than its peer is made marginal, with the numbers") {
  OutlierDetector d(cfg());
  feed(d, 1, 30, 200us, t0);
  feed(d, 2, 30, 10ms, t0);
  auto out = d.evaluate(t0, {M{1, true, false}, M{2, true, false}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].id == 2);
  CHECK(out[0].verdict == V::MakeMarginal);
  CHECK(out[0].reason.find("median 10.0 ms over 30 replies of up to 4 KiB") != std::string::npos);
  CHECK(out[0].reason.find("peers' 0.20 ms") != std::string::npos);
  CHECK(out[0].reason.find("50.0x, more than 5x") != std::string::npos);
}

TEST_CASE("outlier: no verdict below min-samples, on either side") {
  OutlierDetector d(cfg());
  feed(d, 1, 30, 200us, t0);
  feed(d, 2, 19, 10ms, t0);
  CHECK(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
  OutlierDetector e(cfg());
  feed(e, 1, 19, 200us, t0);
  feed(e, 2, 30, 10ms, t0);
  CHECK(e.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
  feed(e, 1, 1, 200us, t0);  // the 20th
  CHECK(e.evaluate(t0, {M{1, true, false}, M{2, true, false}}).size() == 1);
}

TEST_CASE("outlier: replies older than the window are forgotten") {
  OutlierDetector d(cfg());
  feed(d, 1, 30, 200us, t0);
  feed(d, 2, 30, 10ms, t0);
  const auto later = t0 + 11s;  // all of them older than 10 s
  feed(d, 1, 30, 200us, later);
  CHECK(d.evaluate(later, {M{1, true, false}, M{2, true, false}}).empty());
  CHECK(d.stats(2, later).samples == 0);
}

TEST_CASE("outlier: thresholds are relative, with a floor") {
  SUBCASE("4x slower is not an outlier at ratio 5") {
    OutlierDetector d(cfg());
    feed(d, 1, 30, 2ms, t0);
    feed(d, 2, 30, 8ms, t0);
    CHECK(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
  }
  SUBCASE("the same 6x is an outlier at 6 ms against 1 ms, not at 60 us against 10 us") {
    OutlierDetector d(cfg());
    feed(d, 1, 30, 1ms, t0);
    feed(d, 2, 30, 6ms, t0);
    CHECK(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).size() == 1);
    OutlierDetector e(cfg());
    feed(e, 1, 30, 10us, t0);
    feed(e, 2, 30, 60us, t0);
    CHECK(e.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
  }
  SUBCASE("a few slow replies do not move the median") {
    OutlierDetector d(cfg());
    feed(d, 1, 100, 200us, t0);
    feed(d, 2, 90, 200us, t0);
    feed(d, 2, 10, 50ms, t0);  // 10% spikes: the hedge's job, not an outlier
    CHECK(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
  }
}

TEST_CASE("outlier: never the last active path, never more than max-share") {
  SUBCASE("both slow against nobody: no peers, no verdict") {
    OutlierDetector d(cfg());
    feed(d, 1, 30, 10ms, t0);
    CHECK(d.evaluate(t0, {M{1, true, false}}).empty());
  }
  SUBCASE("the only active path left is kept, however slow") {
    OutlierDetector d(cfg());
    feed(d, 1, 30, 200us, t0);
    feed(d, 2, 30, 10ms, t0);
    // Path 1 is marginal already: 2 is the last active path.
    for (const auto& dec : d.evaluate(t0, {M{1, false, true}, M{2, true, false}}))
      CHECK(dec.verdict != V::MakeMarginal);
  }
  SUBCASE("five paths, two slow: max-share 50 lets both go, 20 one, 0 none") {
    const std::vector<M> five = {M{1, true, false}, M{2, true, false}, M{3, true, false},
                                 M{4, true, false}, M{5, true, false}};
    auto run = [&](unsigned share) {
      auto c = cfg();
      c.max_share = share;
      OutlierDetector d(c);
      feed(d, 1, 30, 200us, t0);
      feed(d, 2, 30, 200us, t0);
      feed(d, 3, 30, 200us, t0);
      feed(d, 4, 30, 10ms, t0);
      feed(d, 5, 30, 20ms, t0);
      return d.evaluate(t0, five).size();
    };
    CHECK(run(50) == 2);
    CHECK(run(20) == 1);
    CHECK(run(0) == 0);
  }
}

TEST_CASE(
    "outlier: re-admitted after its ejection time once its probes are fast; longer each time") {
  OutlierDetector d(cfg());
  const std::vector<M> marginal2 = {M{1, true, false}, M{2, false, true}};
  Clock::time_point t = t0;
  for (unsigned round = 1; round <= 3; round++) {
    CAPTURE(round);
    feed(d, 1, 30, 200us, t);
    feed(d, 2, 30, 10ms, t);
    auto out = d.evaluate(t, {M{1, true, false}, M{2, true, false}});
    REQUIRE(out.size() == 1);
    // "out for at least 10 s", then 20 s, then 30 s.
    CHECK(out[0].reason.find("out for at least " + std::to_string(10 * round) + " s") !=
          std::string::npos);
    d.made_marginal(2, t);
    CHECK(d.stats(2, t).ejections == round);
    // Probes as fast as the peer, but the ejection time has not passed.
    const auto due = t + 10s * round;
    feed(d, 1, 30, 200us, due - 1ms);
    feed(d, 2, 30, 200us, due - 1ms, 900ms);
    CHECK(d.evaluate(due - 1ms, marginal2).empty());
    // Passed, probes fast: back.
    feed(d, 1, 30, 200us, due);
    auto back = d.evaluate(due, marginal2);
    REQUIRE(back.size() == 1);
    CHECK(back[0].verdict == V::Readmit);
    d.readmitted(2, due, false);
    t = due + 1s;
  }
  // Slow probes keep it out after its time.
  feed(d, 1, 30, 200us, t);
  feed(d, 2, 30, 10ms, t);
  REQUIRE(d.evaluate(t, {M{1, true, false}, M{2, true, false}}).size() == 1);
  d.made_marginal(2, t);
  feed(d, 1, 30, 200us, t + 1h);
  feed(d, 2, 30, 10ms, t + 1h);
  CHECK(d.evaluate(t + 1h, marginal2).empty());
  // The operator's reinstate restarts the count.
  d.readmitted(2, t + 1h, true);
  CHECK(d.stats(2, t + 1h).count == 0);
}

TEST_CASE("outlier: a path active for max-ejection-time starts its count again") {
  OutlierDetector d(cfg());
  feed(d, 1, 30, 200us, t0);
  feed(d, 2, 30, 10ms, t0);
  REQUIRE(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).size() == 1);
  d.made_marginal(2, t0);
  d.readmitted(2, t0 + 10s, false);
  const auto t = t0 + 10s + 5min;
  feed(d, 1, 30, 200us, t);
  feed(d, 2, 30, 10ms, t);
  auto out = d.evaluate(t, {M{1, true, false}, M{2, true, false}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].reason.find("out for at least 10 s") != std::string::npos);
}

TEST_CASE("outlier: size classes") {
  CHECK(OutlierDetector::size_class(512) == 0);
  CHECK(OutlierDetector::size_class(4096) == 0);
  CHECK(OutlierDetector::size_class(4097) == 1);
  CHECK(OutlierDetector::size_class(64 << 10) == 2);
  CHECK(OutlierDetector::size_class(kMiB) == 4);
  CHECK(OutlierDetector::size_class(4 * kMiB) == 5);
  CHECK(OutlierDetector::size_class(32 * kMiB) == 6);
}

// Uneven bandwidth under the latency selector: the fast path carries 1 MiB
// reads with a queue behind them, the slower one is measured with small
// probes. Comparing the two medians across sizes made the FAST path marginal
// (bench/slow-paths.sh's bandwidth case fell to the slow path alone).
TEST_CASE("outlier: like is compared with like; a large read is not slower than a small probe") {
  OutlierDetector d(cfg());
  const std::vector<M> both = {M{1, true, false}, M{2, true, false}};
  feed(d, 1, 60, 130ms, t0, 1s, kMiB);  // fast path: 1 MiB reads, queued
  feed(d, 2, 30, 300us, t0, 1s, 512);   // slow path: probes
  CHECK(d.evaluate(t0, both).empty());
  // The slow path has too few 1 MiB replies to be judged: it wants probes,
  // sized like its peer's requests, so that it can be.
  CHECK(d.wants_probe(2, t0, both));
  CHECK(d.probe_bytes(2, t0, both) == kMiB);
  // And the fast path is measured in its peer's class, with small probes.
  CHECK(d.wants_probe(1, t0, both));
  CHECK(d.probe_bytes(1, t0, both) == 4096);
  // Measured in the same class, 4x slower (200 against 800 Mbit/s) is not an
  // outlier at ratio 5; 10x is, and the reason names the class.
  feed(d, 2, 30, 520ms, t0, 1s, kMiB);
  CHECK(d.evaluate(t0, both).empty());
  OutlierDetector e(cfg());
  feed(e, 1, 60, 130ms, t0, 1s, kMiB);
  feed(e, 2, 30, 300us, t0, 1s, 512);
  feed(e, 2, 25, 1300ms, t0, 1s, kMiB);
  auto out = e.evaluate(t0, both);
  REQUIRE(out.size() == 1);
  CHECK(out[0].id == 2);
  CHECK(out[0].reason.find("over 25 replies of up to 1 MiB") != std::string::npos);
}

TEST_CASE("outlier: a marginal path is re-admitted on probes of its peers' size") {
  OutlierDetector d(cfg());
  feed(d, 1, 30, 20ms, t0, 1s, kMiB);
  feed(d, 2, 30, 200ms, t0, 1s, kMiB);
  REQUIRE(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).size() == 1);
  d.made_marginal(2, t0);
  const std::vector<M> marginal2 = {M{1, true, false}, M{2, false, true}};
  const auto due = t0 + 10s;
  feed(d, 1, 30, 20ms, due, 1s, kMiB);
  CHECK(d.probe_bytes(2, due, marginal2) == kMiB);
  // Small probes answer fast, but the peer has no small replies to compare
  // them with: the 1 MiB probes decide, and they are still 10x slower.
  feed(d, 2, 30, 200ms, due, 1s, kMiB);
  feed(d, 2, 40, 300us, due, 1s, 512);
  CHECK(d.evaluate(due, marginal2).empty());
  // 1 MiB probes back near the peer's (the slow ones out of the window): re-admitted.
  const auto later = due + 11s;
  feed(d, 1, 30, 20ms, later, 1s, kMiB);
  feed(d, 2, 30, 25ms, later, 1s, kMiB);
  auto back = d.evaluate(later, marginal2);
  REQUIRE(back.size() == 1);
  CHECK(back[0].verdict == V::Readmit);
}

TEST_CASE("outlier: disabled, nothing is decided") {
  auto c = cfg();
  c.enabled = false;
  OutlierDetector d(c);
  feed(d, 1, 30, 200us, t0);
  feed(d, 2, 30, 10ms, t0);
  CHECK(d.evaluate(t0, {M{1, true, false}, M{2, true, false}}).empty());
}

}  // namespace
}  // namespace mp
