// Unit tests for server/latency.h: the quantiles and the Prometheus buckets of one recording.
#include <doctest/doctest.h>

#include <chrono>

#include "server/latency.h"

using namespace std::chrono_literals;

TEST_CASE("Latency: Prometheus buckets are cumulative, bounds inclusive, +Inf is the count") {
  mp::Latency l;
  const mp::LatencyHistogram empty = l.histogram();
  REQUIRE(empty.upper_bounds.size() == mp::kLatencyBucketsNs.size());
  CHECK(empty.upper_bounds.front() == doctest::Approx(50e-6));
  CHECK(empty.upper_bounds.back() == doctest::Approx(10.0));
  CHECK(empty.count == 0);
  CHECK(empty.sum_seconds == 0);

  l.add(0ns);
  l.add(50us);       // on the first bound
  l.add(50001ns);    // just above it
  l.add(10s);        // on the last bound
  l.add(10s + 1ns);  // +Inf only
  l.add(-5ns);       // a backwards clock: counts as 0
  const mp::LatencyHistogram h = l.histogram();
  CHECK(h.count == 6);
  CHECK(h.cumulative[0] == 3);  // 0, 50 µs, -5 ns
  CHECK(h.cumulative[1] == 4);  // + 50.001 µs
  CHECK(h.cumulative[h.cumulative.size() - 2] == 4);
  CHECK(h.cumulative.back() == 5);  // + 10 s
  for (std::size_t i = 1; i < h.cumulative.size(); ++i)
    CHECK(h.cumulative[i - 1] <= h.cumulative[i]);
  CHECK(h.sum_seconds == doctest::Approx(20.000100001));
}

TEST_CASE("Latency: the quantiles and the buckets see the same samples; reset clears both") {
  mp::Latency l;
  for (int i = 0; i < 99; ++i) l.add(1ms);
  l.add(4ms);
  CHECK(l.quantile(0.5) == doctest::Approx(1000).epsilon(0.13));
  CHECK(l.histogram().cumulative[4] == 99);  // le 1 ms
  CHECK(l.histogram().count == 100);
  l.reset();
  CHECK(l.quantile(0.5) == 0);
  CHECK(l.histogram().count == 0);
  CHECK(l.histogram().sum_seconds == 0);
  CHECK(l.histogram().cumulative.back() == 0);
}
