// Latency histograms (Boost.Histogram, log-spaced bins) and their quantiles.
#pragma once

#include <boost/histogram.hpp>
#include <chrono>
#include <cmath>

namespace mp {

class Latency {
 public:
  // Records one duration. Below 1 µs counts as 1 µs; above 100 s, as 100 s.
  void add(std::chrono::nanoseconds d) {
    double us = std::chrono::duration<double, std::micro>(d).count();
    h_(std::clamp(us, 1.0, 1e8 * 0.999));
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
  void reset() { h_.reset(); }

 private:
  using Axis = boost::histogram::axis::regular<double, boost::histogram::axis::transform::log,
                                               boost::histogram::axis::null_type,
                                               boost::histogram::axis::option::none_t>;
  // 1 µs .. 100 s in 160 bins: about 12% per bin.
  decltype(boost::histogram::make_histogram(Axis(160, 1.0, 1e8))) h_ =
      boost::histogram::make_histogram(Axis(160, 1.0, 1e8));
};

}  // namespace mp
