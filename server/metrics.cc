// Renders the engine's counters as Prometheus text (see METRICS.md for the names).
#include "server/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <iterator>
#include <string_view>
#include <vector>

namespace mp {
namespace {

using Out = fmt::memory_buffer;

constexpr const char* kStates[] = {"connecting", "probing", "held",    "active",
                                   "marginal",   "failed",  "draining"};

// A label value per the exposition format: backslash, double quote and
// line feed are escaped; everything else (UTF-8 included) goes as is.
std::string label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// A floating-point sample value: 15 significant digits, so that a unit
// conversion's rounding noise (123.4 us -> 0.00012340000000000002 s) is not
// printed; NaN and infinities spelt as the format wants.
std::string value_text(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{:.15g}", v);
}

// Microseconds from a histogram to seconds.
double seconds(double us) {
  return us / 1e6;
}

class Writer {
 public:
  // "# HELP" and "# TYPE" of one family. The help texts are fixed strings
  // with no backslash or line feed, so they need no escaping.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  // `labels` is already escaped: path="a",group="g" (or empty).
  void sample(std::string_view name, std::string_view labels, std::uint64_t v) {
    put(name, labels, fmt::format("{}", v));
  }
  void sample_real(std::string_view name, std::string_view labels, double v) {
    put(name, labels, value_text(v));
  }
  void put(std::string_view name, std::string_view labels, std::string_view value) {
    if (labels.empty())
      fmt::format_to(std::back_inserter(out_), "{} {}\n", name, value);
    else
      fmt::format_to(std::back_inserter(out_), "{}{{{}}} {}\n", name, labels, value);
  }
  std::string take() { return fmt::to_string(out_); }

 private:
  Out out_;
};

std::string count(std::uint64_t v) {
  return fmt::format("{}", v);
}

// One engine-wide sample without labels.
struct EngineMetric {
  const char* name;
  const char* type;
  const char* help;
  std::string (*value)(const EngineInfo&);
};

const EngineMetric kEngineMetrics[] = {
    {"nbd_multipath_requests_total", "counter",
     "Requests submitted to the engine (client requests and the engine's own write-backs).",
     [](const EngineInfo& e) { return count(e.requests); }},
    {"nbd_multipath_failed_requests_total", "counter", "Requests that completed with an error.",
     [](const EngineInfo& e) { return count(e.failed_requests); }},
    {"nbd_multipath_retries_total", "counter",
     "Requests sent again on another path after an attempt failed or timed out.",
     [](const EngineInfo& e) { return count(e.retries); }},
    {"nbd_multipath_group_switches_total", "counter", "Changes of the path group that serves I/O.",
     [](const EngineInfo& e) { return count(e.group_switches); }},
    {"nbd_multipath_queued_no_path_total", "counter",
     "Requests that had to wait because no path was usable.",
     [](const EngineInfo& e) { return count(e.queued_no_path); }},
    {"nbd_multipath_queued_no_path_seconds_total", "counter",
     "Total time requests waited because no path was usable, in seconds.",
     [](const EngineInfo& e) {
       return value_text(static_cast<double>(e.queued_no_path_ms) / 1e3);
     }},
    {"nbd_multipath_waiting_requests", "gauge",
     "Requests waiting now for a path (none usable, all busy, or held).",
     [](const EngineInfo& e) { return count(e.waiting); }},
    {"nbd_multipath_queueing", "gauge",
     "1 while requests queue when no path is usable, 0 while they fail at once.",
     [](const EngineInfo& e) { return count(e.queueing ? 1 : 0); }},
    {"nbd_multipath_abandoned_writes_total", "counter",
     "Write attempts abandoned on a failed path while their outcome was unknown.",
     [](const EngineInfo& e) { return count(e.abandoned_writes); }},
    {"nbd_multipath_abandoned_writes_pending", "gauge",
     "Abandoned writes not yet resolved (they may still land).",
     [](const EngineInfo& e) { return count(e.abandoned_pending); }},
    {"nbd_multipath_abandoned_writes_resolved_late_total", "counter",
     "Abandoned writes resolved because their late reply arrived.",
     [](const EngineInfo& e) { return count(e.resolved_late); }},
    {"nbd_multipath_abandoned_writes_resolved_by_death_total", "counter",
     "Abandoned writes resolved because their connection died.",
     [](const EngineInfo& e) { return count(e.resolved_by_death); }},
    {"nbd_multipath_abandoned_writes_reapplied_total", "counter",
     "Newer data written back over ranges that abandoned writes may have overwritten.",
     [](const EngineInfo& e) { return count(e.reapplied); }},
    {"nbd_multipath_abandoned_writes_unshadowed_total", "counter",
     "Abandoned writes whose newer data could not be kept because stale-writes.max-bytes was "
     "reached.",
     [](const EngineInfo& e) { return count(e.unshadowed); }},
    {"nbd_multipath_shadow_bytes", "gauge",
     "Memory held now for newer data over unresolved abandoned writes, in bytes.",
     [](const EngineInfo& e) { return count(e.shadow_bytes); }},
};

struct PathCounter {
  const char* name;
  const char* type;
  const char* help;
  std::uint64_t PathInfo::*field;
};

const PathCounter kPathCounters[] = {
    {"nbd_multipath_path_requests_total", "counter",
     "Attempts sent on this path (client requests, retries, write-backs and health probes).",
     &PathInfo::requests},
    {"nbd_multipath_path_bytes_total", "counter", "Bytes of the attempts sent on this path.",
     &PathInfo::bytes},
    {"nbd_multipath_path_errors_total", "counter", "Transport errors and EIO replies on this path.",
     &PathInfo::errors},
    {"nbd_multipath_path_transport_errors_total", "counter",
     "Of those, commands whose connection died under them.", &PathInfo::transport_errors},
    {"nbd_multipath_path_eio_errors_total", "counter", "Of those, EIO replies from the server.",
     &PathInfo::eio_errors},
    {"nbd_multipath_path_timeouts_total", "counter", "Attempts on this path that timed out.",
     &PathInfo::timeouts},
    {"nbd_multipath_path_failovers_total", "counter",
     "Attempts abandoned on this path and retried on another.", &PathInfo::failovers},
    {"nbd_multipath_path_failures_total", "counter",
     "Outages of this path: counted once when it fails, not per failed reconnect.",
     &PathInfo::failures},
    {"nbd_multipath_path_reconnects_total", "counter", "Reconnect attempts of this path.",
     &PathInfo::reconnects},
    {"nbd_multipath_path_reinstatements_total", "counter",
     "Times this path became usable again after a failure.", &PathInfo::reinstatements},
    {"nbd_multipath_path_marginal_total", "counter",
     "Times this path was made marginal (a latency outlier).", &PathInfo::marginal},
    {"nbd_multipath_path_abandoned_writes_pending", "gauge",
     "Abandoned writes sent on this path and not yet resolved.", &PathInfo::abandoned_pending},
    {"nbd_multipath_path_dirty_ranges", "gauge",
     "Ranges this path acknowledged that no flush on it covers yet (shared-cache false).",
     &PathInfo::dirty_ranges},
    {"nbd_multipath_path_dirty_bytes", "gauge", "Bytes in those ranges.", &PathInfo::dirty_bytes},
    {"nbd_multipath_path_affinity_requests_total", "counter",
     "Requests sent to this path because they overlapped its dirty ranges.",
     &PathInfo::affinity_requests},
    {"nbd_multipath_path_cleaning_flushes_total", "counter",
     "Flushes sent to this path alone to clean its dirty ranges.", &PathInfo::cleaning_flushes},
};

struct OpCounter {
  const char* name;
  const char* help;
  std::uint64_t OpCounters::*field;
};

const OpCounter kOpCounters[] = {
    {"nbd_multipath_op_requests_total", "Client requests of this type completed.",
     &OpCounters::requests},
    {"nbd_multipath_op_bytes_total", "Bytes of the client requests of this type completed.",
     &OpCounters::bytes},
    {"nbd_multipath_op_errors_total", "Client requests of this type that completed with an error.",
     &OpCounters::errors},
    {"nbd_multipath_op_eio_errors_total",
     "Client requests of this type that failed with EIO (timeouts and dead paths included).",
     &OpCounters::errors_eio},
    {"nbd_multipath_op_nospc_errors_total",
     "Client requests of this type that failed with ENOSPC from the server.",
     &OpCounters::errors_nospc},
    {"nbd_multipath_op_perm_errors_total",
     "Client requests of this type that failed with EPERM (or EROFS) from the server.",
     &OpCounters::errors_perm},
    {"nbd_multipath_op_other_errors_total",
     "Client requests of this type that failed with another errno (EINVAL, ENOTSUP).",
     &OpCounters::errors_other},
};

}  // namespace

std::string render_metrics(ControlApi& api) {
  const EngineInfo e = api.show_stats();
  const std::vector<GroupInfo> groups = api.show_groups();
  const std::vector<PathInfo> paths = api.show_paths();
  Writer w;

  for (const auto& m : kEngineMetrics) {
    w.family(m.name, m.type, m.help);
    w.put(m.name, "", m.value(e));
  }

  w.family("nbd_multipath_serving_group", "gauge",
           "1 for the path group that serves I/O now, 0 for the others.");
  for (const auto& g : groups)
    w.sample("nbd_multipath_serving_group", fmt::format("group=\"{}\"", label_value(g.name)),
             g.serving ? 1 : 0);

  std::vector<std::string> op_labels;
  for (const auto& o : e.ops) op_labels.push_back(fmt::format("op=\"{}\"", label_value(o.op)));
  for (const auto& c : kOpCounters) {
    w.family(c.name, "counter", c.help);
    for (std::size_t i = 0; i < e.ops.size(); ++i)
      w.sample(c.name, op_labels[i], e.ops[i].*c.field);
  }
  w.family("nbd_multipath_op_latency_p50_seconds", "gauge",
           "Median client-visible latency of this request type, in seconds.");
  for (std::size_t i = 0; i < e.ops.size(); ++i)
    w.sample_real("nbd_multipath_op_latency_p50_seconds", op_labels[i],
                  seconds(e.ops[i].latency_p50_us));
  w.family("nbd_multipath_op_latency_p99_seconds", "gauge",
           "99th percentile of the client-visible latency of this request type, in seconds.");
  for (std::size_t i = 0; i < e.ops.size(); ++i)
    w.sample_real("nbd_multipath_op_latency_p99_seconds", op_labels[i],
                  seconds(e.ops[i].latency_p99_us));

  std::vector<std::string> path_labels;
  for (const auto& p : paths)
    path_labels.push_back(
        fmt::format("path=\"{}\",group=\"{}\"", label_value(p.name), label_value(p.group)));
  for (const auto& c : kPathCounters) {
    w.family(c.name, c.type, c.help);
    for (std::size_t i = 0; i < paths.size(); ++i)
      w.sample(c.name, path_labels[i], paths[i].*c.field);
  }
  w.family("nbd_multipath_path_inflight", "gauge", "Attempts in flight on this path now.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample("nbd_multipath_path_inflight", path_labels[i], paths[i].inflight);
  w.family("nbd_multipath_path_state", "gauge",
           "1 for the state this path is in now, 0 for the other states.");
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const PathInfo& p = paths[i];
    bool known = false;
    for (const char* s : kStates) {
      known = known || p.state == s;
      w.sample("nbd_multipath_path_state", fmt::format("{},state=\"{}\"", path_labels[i], s),
               p.state == s ? 1 : 0);
    }
    // A state this renderer does not know still shows up, so the 1 is never lost.
    if (!known)
      w.sample("nbd_multipath_path_state",
               fmt::format("{},state=\"{}\"", path_labels[i], label_value(p.state)), 1);
  }
  w.family("nbd_multipath_path_latency_p50_seconds", "gauge",
           "Median latency of one attempt on this path, in seconds.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample_real("nbd_multipath_path_latency_p50_seconds", path_labels[i],
                  seconds(paths[i].latency_p50_us));
  w.family("nbd_multipath_path_latency_p99_seconds", "gauge",
           "99th percentile of the latency of one attempt on this path, in seconds.");
  for (std::size_t i = 0; i < paths.size(); ++i)
    w.sample_real("nbd_multipath_path_latency_p99_seconds", path_labels[i],
                  seconds(paths[i].latency_p99_us));
  return w.take();
}

}  // namespace mp
