// Latency histograms, recorded once and read two ways:
//  - fine log-spaced bins (Boost.Histogram, about 12% wide) for the p50/p99
//    quantiles that `show paths` and `show stats` print;
//  - the fixed Prometheus buckets below, with an exact sum, for the
//    nbd_multipath_*_latency_seconds histograms of the metrics endpoint.
// The fine bins' edges (powers of 10^(1/20) µs) are not round numbers, so
// they cannot double as Prometheus buckets; the fixed buckets cost a few
// integer compares per sample: about 10 ns per recorded latency on this
// machine (bench/latency_add.cc), two per client request.
#pragma once

#include <algorithm>
#include <array>
#include <boost/histogram.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "server/control_api.h"

namespace mp {

// Upper bounds ("le", inclusive) of the Prometheus latency buckets: 50 µs to
// 10 s in 1-2.5-5 steps, for block I/O from a local NVMe to a path that is
// about to time out. A sample above the last one goes to the +Inf bucket.
inline constexpr std::array<std::int64_t, 17> kLatencyBucketsNs = {
    50'000,        100'000,       250'000,       500'000,                    // µs
    1'000'000,     2'500'000,     5'000'000,     10'000'000,    25'000'000,  // ms
    50'000'000,    100'000'000,   250'000'000,   500'000'000,                //
    1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};            // s

class Latency {
 public:
  // Records one duration. For the quantiles, below 1 µs counts as 1 µs and
  // above 100 s as 100 s; the buckets and the sum take it as it is (a
  // negative duration, which a steady clock never gives, as 0).
  void add(std::chrono::nanoseconds d) {
    double us = std::chrono::duration<double, std::micro>(d).count();
    h_(std::clamp(us, 1.0, 1e8 * 0.999));
    const std::int64_t ns = std::max<std::int64_t>(d.count(), 0);
    std::size_t i = 0;  // the first bound >= ns; branch-free, as latencies vary
    for (std::int64_t bound : kLatencyBucketsNs) i += ns > bound;
    ++buckets_[i];
    sum_ns_ += static_cast<std::uint64_t>(ns);
  }
  // The Prometheus form: cumulative counts per bound, count and sum.
  LatencyHistogram histogram() const {
    LatencyHistogram out;
    out.upper_bounds.reserve(kLatencyBucketsNs.size());
    out.cumulative.reserve(kLatencyBucketsNs.size());
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kLatencyBucketsNs.size(); ++i) {
      seen += buckets_[i];
      out.upper_bounds.push_back(static_cast<double>(kLatencyBucketsNs[i]) / 1e9);
      out.cumulative.push_back(seen);
    }
    out.count = seen + buckets_.back();
    out.sum_seconds = static_cast<double>(sum_ns_) / 1e9;
    return out;
  }
  // The q-quantile in µs (0 when empty), linearly interpolated in its bin.
  double quantile(double q) const {
    double total = 0;
    for (auto&& x : boost::histogram::indexed(h_)) total += *x;
    if (total == 0) return 0;
    double want = q * total, seen = 0;
    for (auto&& x : boost::histogram::indexed(h_)) {
      if (seen + *x >= want && *x > 0) {
        double f = (want - seen) / *x;
        return x.bin().lower() + f * (x.bin().upper() - x.bin().lower());
      }
      seen += *x;
    }
    return h_.axis().value(h_.axis().size());
  }
  void reset() {
    h_.reset();
    buckets_ = {};
    sum_ns_ = 0;
  }

 private:
  using Axis = boost::histogram::axis::regular<double, boost::histogram::axis::transform::log,
                                               boost::histogram::axis::null_type,
                                               boost::histogram::axis::option::none_t>;
  // 1 µs .. 100 s in 160 bins: about 12% per bin.
  decltype(boost::histogram::make_histogram(Axis(160, 1.0, 1e8))) h_ =
      boost::histogram::make_histogram(Axis(160, 1.0, 1e8));
  std::array<std::uint64_t, kLatencyBucketsNs.size() + 1> buckets_{};  // not cumulative; last: +Inf
  std::uint64_t sum_ns_ = 0;  // of every sample since the start or reset()
};

}  // namespace mp
