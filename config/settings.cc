// A Config as flat "key: value" settings, for `show config` and for the
// changes `reload --dry-run` lists. Secrets never appear.
#include <algorithm>
#include <cstdio>
#include <string>

#include "config/config_internal.h"

namespace mp::config {

using namespace detail;

namespace {

const char* to_text(Failback f) {
  switch (f) {
    case Failback::Immediate:
      return "immediate";
    case Failback::Manual:
      return "manual";
    case Failback::Delayed:
      return "delayed";
  }
  return "?";
}

std::string number(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", d);
  return buf;
}

std::string octal(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0%o", m);
  return buf;
}

}  // namespace

Settings settings(const Config& c) {
  Settings s;
  auto add = [&s](std::string k, std::string v) { s.emplace_back(std::move(k), std::move(v)); };
  for (const auto& p : c.paths) {
    const std::string k = "paths." + p.name + ".";
    add(k + "uri", redacted_uri(p.uri));
    add(k + "group", p.group);
    add(k + "weight", std::to_string(p.weight));
    add(k + "max-inflight", std::to_string(p.max_inflight));
    add(k + "throughput", number(p.throughput));
    if (!p.chap_user.empty()) add(k + "chap.user", p.chap_user);
    if (!p.chap_secret.empty()) add(k + "chap.secret", "(set, not shown)");
  }
  for (const auto& g : c.groups) add("groups." + g.name + ".priority", std::to_string(g.priority));
  add("selector", to_string(c.selector.kind));
  add("timeouts.attempt", format_duration(c.timeouts.attempt));
  add("timeouts.request", format_duration(c.timeouts.request));
  add("timeouts.connect", format_duration(c.timeouts.connect));
  add("failover.retries", std::to_string(c.failover.max_retries));
  add("failover.eio", c.failover.eio == EioPolicy::Failover ? "failover" : "return");
  add("failover.failback", c.failover.failback == Failback::Delayed
                               ? format_duration(c.failover.failback_delay)
                               : to_text(c.failover.failback));
  add("failover.reconnect-min", format_duration(c.failover.reconnect_min));
  add("failover.reconnect-max", format_duration(c.failover.reconnect_max));
  add("no-path.policy", c.no_path.policy == NoPathPolicy::Queue ? "queue" : "fail");
  add("no-path.max-time", format_duration(c.no_path.max_time));
  add("no-path.max-requests", std::to_string(c.no_path.max_requests));
  add("checker.interval", format_duration(c.checker.interval));
  add("durability.shared-cache", c.durability.shared_cache ? "true" : "false");
  add("stale-writes.max-bytes", format_bytes(c.stale_writes.max_bytes));
  add("durability.max-dirty-ranges", std::to_string(c.durability.max_dirty_ranges));
  add("outlier.enabled", c.outlier.enabled ? "true" : "false");
  add("outlier.window", format_duration(c.outlier.window));
  add("outlier.min-samples", std::to_string(c.outlier.min_samples));
  add("outlier.ratio", number(c.outlier.ratio));
  add("outlier.min-difference", format_duration(c.outlier.min_difference));
  add("outlier.readmit-ratio", number(c.outlier.readmit_ratio));
  add("outlier.probe-interval", format_duration(c.outlier.probe_interval));
  add("outlier.base-ejection-time", format_duration(c.outlier.base_ejection));
  add("outlier.max-ejection-time", format_duration(c.outlier.max_ejection));
  add("outlier.max-share", std::to_string(c.outlier.max_share) + "%");
  add("hedge.enabled", c.hedge.enabled ? "true" : "false");
  add("hedge.percentile", number(c.hedge.percentile));
  add("hedge.min-delay", format_duration(c.hedge.min_delay));
  add("hedge.max-share", std::to_string(c.hedge.max_share) + "%");
  add("control.socket", c.control.socket.empty() ? "(none)" : c.control.socket);
  add("control.mode", octal(c.control.mode));
  add("control.group", c.control.group.empty() ? "(the server's)" : c.control.group);
  add("control.events", std::to_string(c.control.events));
  add("metrics.socket", c.metrics.socket.empty() ? "(none)" : c.metrics.socket);
  add("metrics.listen", c.metrics.listen.empty() ? "(none)" : c.metrics.listen);
  add("identity", c.identity.empty() ? "(the first path's)" : c.identity);
  add("export-description",
      c.export_description.empty() ? "(the first path's)" : c.export_description);
  return s;
}

std::vector<std::string> changed_settings(const Config& from, const Config& to) {
  const Settings a = settings(from), b = settings(to);
  auto find = [](const Settings& s, const std::string& k) {
    return std::find_if(s.begin(), s.end(), [&](const auto& kv) { return kv.first == k; });
  };
  std::vector<std::string> out;
  for (const auto& [k, v] : b) {
    auto it = find(a, k);
    if (it == a.end())
      out.push_back(k + ": " + v + " (new)");
    else if (it->second != v)
      out.push_back(k + ": " + it->second + " -> " + v);
  }
  for (const auto& [k, v] : a)
    if (find(b, k) == b.end()) out.push_back(k + ": " + v + " (gone)");
  return out;
}

}  // namespace mp::config
