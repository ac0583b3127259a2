// Builds the Prometheus model of the engine's counters at scrape time (see metrics.h).
//
// The families are tables: adding a counter is one row in kEngineMetrics,
// kPathMetrics or kOpMetrics. Names follow Prometheus conventions: base units
// (seconds, bytes), `_total` on counters, a label rather than a name per
// kind (errno, error, state), and histograms for latency.
#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <cstdint>
#include <string_view>
#include <utility>

#include "server/versions.h"

namespace mp {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

constexpr MetricType kCounter = MetricType::Counter;
constexpr MetricType kGauge = MetricType::Gauge;

// ---------------------------------------------------------------------------
// The tables

// One engine-wide sample without labels.
struct EngineMetric {
  const char* name;
  MetricType type;
  const char* help;
  double (*value)(const EngineInfo&);
};

const EngineMetric kEngineMetrics[] = {
    {"nbd_multipath_requests_total", kCounter,
     "Requests submitted to the engine (client requests and the engine's own write-backs).",
     [](const EngineInfo& e) -> double { return e.requests; }},
    {"nbd_multipath_failed_requests_total", kCounter, "Requests that completed with an error.",
     [](const EngineInfo& e) -> double { return e.failed_requests; }},
    {"nbd_multipath_retries_total", kCounter,
     "Requests sent again on another path after an attempt failed or timed out.",
     [](const EngineInfo& e) -> double { return e.retries; }},
    {"nbd_multipath_group_switches_total", kCounter, "Changes of the path group that serves I/O.",
     [](const EngineInfo& e) -> double { return e.group_switches; }},
    {"nbd_multipath_queued_no_path_total", kCounter,
     "Requests that had to wait because no path was usable.",
     [](const EngineInfo& e) -> double { return e.queued_no_path; }},
    {"nbd_multipath_queued_no_path_seconds_total", kCounter,
     "Total time requests waited because no path was usable, in seconds.",
     [](const EngineInfo& e) { return static_cast<double>(e.queued_no_path_ms) / 1e3; }},
    {"nbd_multipath_waiting_requests", kGauge,
     "Requests waiting now for a path (none usable, all busy, or held).",
     [](const EngineInfo& e) -> double { return e.waiting; }},
    {"nbd_multipath_queueing", kGauge,
     "1 while requests queue when no path is usable, 0 while they fail at once.",
     [](const EngineInfo& e) -> double { return e.queueing ? 1 : 0; }},
    {"nbd_multipath_abandoned_writes_total", kCounter,
     "Write attempts abandoned on a failed path while their outcome was unknown.",
     [](const EngineInfo& e) -> double { return e.abandoned_writes; }},
    {"nbd_multipath_abandoned_writes_pending", kGauge,
     "Abandoned writes not yet resolved (they may still land).",
     [](const EngineInfo& e) -> double { return e.abandoned_pending; }},
    {"nbd_multipath_abandoned_writes_resolved_late_total", kCounter,
     "Abandoned writes resolved because their late reply arrived.",
     [](const EngineInfo& e) -> double { return e.resolved_late; }},
    {"nbd_multipath_abandoned_writes_resolved_by_death_total", kCounter,
     "Abandoned writes resolved because their connection died.",
     [](const EngineInfo& e) -> double { return e.resolved_by_death; }},
    {"nbd_multipath_abandoned_writes_reapplied_total", kCounter,
     "Newer data written back over ranges that abandoned writes may have overwritten.",
     [](const EngineInfo& e) -> double { return e.reapplied; }},
    {"nbd_multipath_abandoned_writes_unshadowed_total", kCounter,
     "Abandoned writes whose newer data could not be kept because stale-writes.max-bytes was "
     "reached.",
     [](const EngineInfo& e) -> double { return e.unshadowed; }},
    {"nbd_multipath_shadow_bytes", kGauge,
     "Memory held now for newer data over unresolved abandoned writes, in bytes.",
     [](const EngineInfo& e) -> double { return e.shadow_bytes; }},
    {"nbd_multipath_hedged_reads_sent_total", kCounter,
     "Reads sent a second time, to another path, after waiting past the hedge threshold.",
     [](const EngineInfo& e) -> double { return e.hedges_sent; }},
    {"nbd_multipath_hedged_reads_won_total", kCounter,
     "Hedged reads completed by their second copy's reply.",
     [](const EngineInfo& e) -> double { return e.hedges_won; }},
    {"nbd_multipath_hedged_reads_refused_total", kCounter,
     "Hedges due but refused by the budget (hedge.max-share).",
     [](const EngineInfo& e) -> double { return e.hedges_refused; }},
};

// One sample per path, labels path and group.
struct PathMetric {
  const char* name;
  MetricType type;
  const char* help;
  std::uint64_t PathInfo::*field;
};

const PathMetric kPathMetrics[] = {
    {"nbd_multipath_path_requests_total", kCounter,
     "Attempts sent on this path (client requests, retries, write-backs and health probes).",
     &PathInfo::requests},
    {"nbd_multipath_path_bytes_total", kCounter, "Bytes of the attempts sent on this path.",
     &PathInfo::bytes},
    {"nbd_multipath_path_timeouts_total", kCounter, "Attempts on this path that timed out.",
     &PathInfo::timeouts},
    {"nbd_multipath_path_failovers_total", kCounter,
     "Attempts abandoned on this path and retried on another.", &PathInfo::failovers},
    {"nbd_multipath_path_failures_total", kCounter,
     "Outages of this path: counted once when it fails, not per failed reconnect.",
     &PathInfo::failures},
    {"nbd_multipath_path_reconnects_total", kCounter, "Reconnect attempts of this path.",
     &PathInfo::reconnects},
    {"nbd_multipath_path_reinstatements_total", kCounter,
     "Times this path became usable again after a failure.", &PathInfo::reinstatements},
    {"nbd_multipath_path_marginal_total", kCounter,
     "Times this path was made marginal (a latency outlier).", &PathInfo::marginal},
    {"nbd_multipath_path_abandoned_writes_pending", kGauge,
     "Abandoned writes sent on this path and not yet resolved.", &PathInfo::abandoned_pending},
    {"nbd_multipath_path_dirty_ranges", kGauge,
     "Ranges this path acknowledged that no flush on it covers yet (shared-cache false).",
     &PathInfo::dirty_ranges},
    {"nbd_multipath_path_dirty_bytes", kGauge, "Bytes in those ranges.", &PathInfo::dirty_bytes},
    {"nbd_multipath_path_affinity_requests_total", kCounter,
     "Requests sent to this path because they overlapped its dirty ranges.",
     &PathInfo::affinity_requests},
    {"nbd_multipath_path_cleaning_flushes_total", kCounter,
     "Flushes sent to this path alone to clean its dirty ranges.", &PathInfo::cleaning_flushes},
};

// One sample per request type, label op.
struct OpMetric {
  const char* name;
  const char* help;
  std::uint64_t OpCounters::*field;
};

const OpMetric kOpMetrics[] = {
    {"nbd_multipath_op_requests_total", "Client requests of this type completed.",
     &OpCounters::requests},
    {"nbd_multipath_op_bytes_total", "Bytes of the client requests of this type completed.",
     &OpCounters::bytes},
};

// A counter split by one label: one sample per value, each read from a field.
template <class Info>
struct Split {
  const char* value;
  std::uint64_t Info::*field;
};

// errno="...": every failed client request is in exactly one class.
const Split<OpCounters> kOpErrnos[] = {
    {"EIO", &OpCounters::errors_eio},
    {"ENOSPC", &OpCounters::errors_nospc},
    {"EPERM", &OpCounters::errors_perm},
    {"other", &OpCounters::errors_other},
};

// error="...": every path error is one or the other.
const Split<PathInfo> kPathErrors[] = {
    {"transport", &PathInfo::transport_errors},
    {"eio", &PathInfo::eio_errors},
};

constexpr const char* kStates[] = {"connecting", "probing", "held",    "active",
                                   "marginal",   "failed",  "draining"};

// ---------------------------------------------------------------------------
// Building families

MetricFamily family(const char* name, MetricType type, const char* help) {
  MetricFamily f;
  f.name = name;
  f.type = type;
  f.help = help;
  return f;
}

// A counter or gauge sample, by the family's type.
void add(MetricFamily& f, Labels labels, double v) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == kCounter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  f.metric.push_back(std::move(m));
}

void add_histogram(MetricFamily& f, Labels labels, const LatencyHistogram& h) {
  ClientMetric m;
  m.label = std::move(labels);
  m.histogram.sample_count = h.count;
  m.histogram.sample_sum = h.sum_seconds;
  for (std::size_t i = 0; i < h.upper_bounds.size() && i < h.cumulative.size(); ++i)
    m.histogram.bucket.push_back({h.cumulative[i], h.upper_bounds[i]});
  f.metric.push_back(std::move(m));  // the serializer adds le="+Inf" (= count)
}

Labels with(Labels base, const char* name, std::string value) {
  base.push_back({name, std::move(value)});
  return base;
}

void engine_families(const EngineInfo& e, std::vector<MetricFamily>& out) {
  for (const auto& m : kEngineMetrics) {
    MetricFamily f = family(m.name, m.type, m.help);
    add(f, {}, m.value(e));
    out.push_back(std::move(f));
  }
}

void group_families(const std::vector<GroupInfo>& groups, std::vector<MetricFamily>& out) {
  MetricFamily f = family("nbd_multipath_serving_group", kGauge,
                          "1 for the path group that serves I/O now, 0 for the others.");
  for (const auto& g : groups) add(f, {{"group", g.name}}, g.serving ? 1 : 0);
  out.push_back(std::move(f));
}

void op_families(const std::vector<OpCounters>& ops, std::vector<MetricFamily>& out) {
  auto op = [](const OpCounters& o) { return Labels{{"op", o.op}}; };
  for (const auto& m : kOpMetrics) {
    MetricFamily f = family(m.name, kCounter, m.help);
    for (const auto& o : ops) add(f, op(o), static_cast<double>(o.*m.field));
    out.push_back(std::move(f));
  }
  MetricFamily errors =
      family("nbd_multipath_op_errors_total", kCounter,
             "Client requests of this type that completed with an error, by errno: EIO (timeouts "
             "and dead paths included), ENOSPC, EPERM (or EROFS), other (EINVAL, ENOTSUP).");
  for (const auto& o : ops)
    for (const auto& s : kOpErrnos)
      add(errors, with(op(o), "errno", s.value), static_cast<double>(o.*s.field));
  out.push_back(std::move(errors));
  MetricFamily latency = family(
      "nbd_multipath_op_latency_seconds", MetricType::Histogram,
      "Client-visible latency of the requests of this type, from submission to reply, retries "
      "and waiting included, in seconds.");
  for (const auto& o : ops) add_histogram(latency, op(o), o.latency);
  out.push_back(std::move(latency));
}

void path_families(const std::vector<PathInfo>& paths, std::vector<MetricFamily>& out) {
  auto where = [](const PathInfo& p) { return Labels{{"path", p.name}, {"group", p.group}}; };
  for (const auto& m : kPathMetrics) {
    MetricFamily f = family(m.name, m.type, m.help);
    for (const auto& p : paths) add(f, where(p), static_cast<double>(p.*m.field));
    out.push_back(std::move(f));
  }
  MetricFamily errors =
      family("nbd_multipath_path_errors_total", kCounter,
             "Errors on this path, by kind: transport (the connection died under a command) or eio "
             "(the server replied EIO).");
  for (const auto& p : paths)
    for (const auto& s : kPathErrors)
      add(errors, with(where(p), "error", s.value), static_cast<double>(p.*s.field));
  out.push_back(std::move(errors));

  MetricFamily inflight =
      family("nbd_multipath_path_inflight", kGauge, "Attempts in flight on this path now.");
  for (const auto& p : paths) add(inflight, where(p), p.inflight);
  out.push_back(std::move(inflight));

  MetricFamily state = family("nbd_multipath_path_state", kGauge,
                              "1 for the state this path is in now, 0 for the other states.");
  for (const auto& p : paths) {
    bool known = false;
    for (const char* s : kStates) {
      known = known || p.state == s;
      add(state, with(where(p), "state", s), p.state == s ? 1 : 0);
    }
    // A state this renderer does not know still shows up, so the 1 is never lost.
    if (!known) add(state, with(where(p), "state", p.state), 1);
  }
  out.push_back(std::move(state));

  MetricFamily latency = family("nbd_multipath_path_latency_seconds", MetricType::Histogram,
                                "Latency of one attempt on this path, in seconds.");
  for (const auto& p : paths) add_histogram(latency, where(p), p.latency);
  out.push_back(std::move(latency));
}

// Read once: libnbd's version comes from a handle created for the purpose.
const Labels& build_labels() {
  static const Labels labels = [] {
    Labels l{{"version", version()}, {"nbdkit", nbdkit_build_version()}};
    for (const auto& [key, value] : library_versions()) {
      std::string_view k = key;
      if (k.ends_with("_version")) k.remove_suffix(8);
      l.push_back({std::string(k), value});
    }
    return l;
  }();
  return labels;
}

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  const EngineInfo e = api_.show_stats();
  std::vector<MetricFamily> out;
  MetricFamily info = family("nbd_multipath_build_info", kGauge,
                             "Always 1; the labels say which versions this server runs: its own, "
                             "and the nbdkit, libnbd, libiscsi and yaml-cpp it was built with.");
  add(info, build_labels(), 1);
  out.push_back(std::move(info));
  engine_families(e, out);
  group_families(api_.show_groups(), out);
  op_families(e.ops, out);
  path_families(api_.show_paths(), out);
  return out;
}

std::string render_metrics(ControlApi& api) {
  return prometheus::TextSerializer().Serialize(MetricsCollector(api).Collect());
}

}  // namespace mp
