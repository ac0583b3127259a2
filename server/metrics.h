// The /metrics body: the engine's counters as a prometheus-cpp model and its text format.
//
// Nothing here runs per request. The engine keeps its own plain counters and
// histograms (engine_internal.h, latency.h); a scrape reads one snapshot of
// them through ControlApi on the loop thread, MetricsCollector turns it into
// prometheus::MetricFamily values, and prometheus::TextSerializer writes them.
// The names are listed in METRICS.md.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <string>
#include <vector>

#include "server/control_api.h"

namespace mp {

// Builds every family from the engine's state at the time of Collect().
class MetricsCollector final : public prometheus::Collectable {
 public:
  // `api` must outlive the collector.
  explicit MetricsCollector(ControlApi& api) : api_(api) {}
  // Runs on the loop thread (it calls ControlApi).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  ControlApi& api_;
};

// The whole /metrics body in the Prometheus text exposition format 0.0.4.
// Runs on the loop thread (it calls ControlApi).
std::string render_metrics(ControlApi& api);

}  // namespace mp
