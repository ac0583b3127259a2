// What operators can see and do: the engine's side of the control socket and
// of the metrics endpoint. Plain structs out, one-sentence errors back.
//
// Threading: every method runs on the event-loop thread holding the loop
// lock (server/loop_lock.h; the control and metrics servers take it around
// their calls), so implementations need no locking of their own.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mp {

// A latency histogram in Prometheus form (server/latency.h fills it):
// cumulative since the start or the last reset-stats.
struct LatencyHistogram {
  std::vector<double> upper_bounds;       // seconds, ascending ("le"); +Inf is implied
  std::vector<std::uint64_t> cumulative;  // samples <= each bound
  std::uint64_t count = 0;                // every sample (the +Inf bucket)
  double sum_seconds = 0;                 // their total duration
};

// Counters per request type (read, write, flush, trim, zero, cache).
struct OpCounters {
  std::string op;
  std::uint64_t requests = 0;  // completed client requests
  std::uint64_t bytes = 0;
  std::uint64_t errors = 0;        // completed with an error; by kind:
  std::uint64_t errors_eio = 0;    // EIO: includes timeouts and dead paths after failover
  std::uint64_t errors_nospc = 0;  // ENOSPC from the server
  std::uint64_t errors_perm = 0;   // EPERM (or EROFS) from the server
  std::uint64_t errors_other = 0;  // EINVAL, ENOTSUP (fast zero), ...
  double latency_p50_us = 0;       // client-visible latency, from a histogram
  double latency_p99_us = 0;
  LatencyHistogram latency;  // the same latencies, for the metrics endpoint
};

struct PathInfo {
  std::string name, uri, group;
  std::string state;   // connecting, probing, held, active, marginal, failed, draining
  std::string reason;  // why it is in that state
  unsigned inflight = 0;
  std::uint64_t requests = 0, bytes = 0;
  std::uint64_t errors = 0;            // transport errors and EIO from the server; by kind:
  std::uint64_t transport_errors = 0;  // the connection died under a command
  std::uint64_t eio_errors = 0;        // the server replied EIO (failover policy)
  std::uint64_t timeouts = 0;          // attempts that timed out
  std::uint64_t failovers = 0;         // attempts abandoned here and retried elsewhere
  std::uint64_t failures = 0, reinstatements = 0;  // failures: outages, once each
  std::uint64_t reconnects = 0;                    // reconnect attempts
  std::uint64_t marginal = 0;                      // times made marginal (latency outlier)
  double latency_p50_us = 0, latency_p99_us = 0;   // per attempt on this path
  LatencyHistogram latency;                        // the same latencies, for the metrics endpoint
  std::uint64_t abandoned_pending = 0;             // abandoned writes not yet resolved
  // Without a shared cache: what this path acknowledged that no flush on it
  // covers yet (requests over it go to this path), and what that cost.
  std::uint64_t dirty_ranges = 0, dirty_bytes = 0;
  std::uint64_t affinity_requests = 0;  // sent here because they overlapped its dirty ranges
  std::uint64_t cleaning_flushes = 0;   // flushes sent here to clean its dirty ranges
};

struct GroupInfo {
  std::string name;
  int priority = 0;
  bool serving = false;
  std::vector<std::string> paths;
};

// The disk as a whole, for the header of `show topology` (like the first
// lines of `multipath -ll`).
struct DiskInfo {
  std::uint64_t size = 0;
  std::uint32_t block_size = 1;
  bool read_only = false;
  std::string identity;  // iSCSI LU identifier, or NBD export name / description
  std::string selector, no_path, failback;
  bool queueing = true;       // no-path policy in force now (queueing may be switched)
  std::uint64_t waiting = 0;  // requests waiting now
};

struct EngineInfo {
  std::uint64_t requests = 0, failed_requests = 0, retries = 0, group_switches = 0;
  std::uint64_t queued_no_path = 0;     // requests that ever waited with no path
  std::uint64_t queued_no_path_ms = 0;  // their total time waiting
  std::uint64_t waiting = 0;            // waiting now (no path, busy, held)
  bool queueing = true;                 // no-path policy in force: queue (true) or fail
  std::uint64_t abandoned_writes = 0, abandoned_pending = 0, resolved_late = 0,
                resolved_by_death = 0, reapplied = 0, unshadowed = 0, shadow_bytes = 0;
  // Hedged reads: second copies sent, requests their second copy completed,
  // and hedges due but refused by the budget (hedge.max-share).
  std::uint64_t hedges_sent = 0, hedges_won = 0, hedges_refused = 0;
  std::vector<OpCounters> ops;
};

struct Event {
  std::int64_t unix_ms = 0;  // wall-clock time
  std::string subject;       // "path a", "group fast", "engine"
  std::string what;          // "active -> failed", "reload", ...
  std::string reason;
};

class ControlApi {
 public:
  virtual ~ControlApi() = default;

  virtual std::vector<PathInfo> show_paths() = 0;
  virtual std::vector<GroupInfo> show_groups() = 0;
  virtual EngineInfo show_stats() = 0;
  virtual std::vector<Event> show_events() = 0;  // oldest first, the last N
  virtual DiskInfo show_disk() = 0;
  // The effective configuration as "key: value" settings, secrets redacted.
  virtual std::vector<std::pair<std::string, std::string>> show_config() = 0;

  // Each returns "" when done, else one sentence saying what is wrong.
  virtual std::string fail_path(const std::string& path) = 0;
  virtual std::string reinstate_path(const std::string& path) = 0;  // reconnects and probes
  virtual std::string drain_path(const std::string& path) = 0;      // no new I/O; in-flight finish
  virtual std::string switch_group(const std::string& group) = 0;
  virtual std::string set_queueing(bool on) = 0;
  virtual std::string fail_queued(std::uint64_t* failed) = 0;
  virtual std::string reset_stats() = 0;
  // Re-reads the configuration file and applies the difference; with
  // dry_run, only checks it. `done` gets "" or the error, and a summary of
  // what changed (or would). It runs on the loop thread, maybe later: the
  // file is read off the loop.
  using ReloadDone = std::function<void(const std::string& err, const std::string& summary)>;
  virtual void reload(bool dry_run, ReloadDone done) = 0;
};

}  // namespace mp
