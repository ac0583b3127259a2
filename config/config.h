// Plain configuration structs for nbd-multipath, and the functions that build them.
//
// Nothing outside config/ sees YAML: the loader turns a file (or the quick
// command-line form) into a validated Config, or into one error sentence that
// names file:line:column and says what to fix.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mp::config {

using Duration = std::chrono::milliseconds;

enum class SelectorKind { RoundRobin, QueueLength, ServiceTime, Latency };
enum class Failback { Immediate, Manual, Delayed };
enum class NoPathPolicy { Fail, Queue };
// What an EIO returned by an upstream on a healthy connection means.
enum class EioPolicy { Failover, Return };

struct Path {
  std::string name;  // unique; defaults to "path<N>" (1-based) when omitted
  std::string uri;   // nbd://, nbds://, nbd+unix://, nbds+unix://, iscsi://
  std::string group = "default";
  unsigned weight = 1;         // round-robin share, 1..1000
  unsigned max_inflight = 64;  // busy cap: requests in flight on this path, 1..4096
  double throughput = 1.0;     // relative throughput for service-time, > 0
  int line = 0;                // 1-based source line, 0 when not from a file
  // iSCSI CHAP, from the YAML (chap: user, secret-file). When empty, the
  // URI's user%password is used, if any.
  std::string chap_user;
  std::string chap_secret;
};

bool is_iscsi(const Path& p);
// The URI for messages: an iscsi:// USER%PASSWORD becomes USER%***.
std::string redacted_uri(const std::string& uri);

struct Group {
  std::string name;
  int priority = 0;  // higher wins
};

struct Selector {
  SelectorKind kind = SelectorKind::Latency;
};

struct Timeouts {
  Duration attempt{2000};   // one attempt on one path
  Duration request{30000};  // overall deadline of a client request, >= attempt
  Duration connect{5000};   // connect + handshake + probe of one path
};

struct Failover {
  unsigned max_retries = 8;  // further attempts after the first, 0..100
  EioPolicy eio = EioPolicy::Failover;
  Failback failback = Failback::Immediate;
  Duration failback_delay{0};   // only with Failback::Delayed
  Duration reconnect_min{100};  // back-off of a failed path's reconnects
  Duration reconnect_max{5000};
};

struct NoPath {
  NoPathPolicy policy = NoPathPolicy::Queue;
  Duration max_time{30000};      // a queued request fails with EIO after this
  unsigned max_requests = 4096;  // beyond this, new requests fail with EIO at once
};

struct Checker {
  Duration interval{1000};  // idle paths are probed this often
};

struct Durability {
  // True when all paths reach one coherent cache (one file on one host, or one
  // array): a flush on any live path then covers writes carried by a path that
  // has since died. False: such a flush waits for that path to come back (up
  // to the request deadline), then fails with EIO.
  bool shared_cache = false;
  // Without a shared cache, the most dirty ranges (see server/dirty_ranges.h)
  // tracked per path before the engine flushes that path to clean them.
  std::uint64_t max_dirty_ranges = 16384;
};

struct StaleWrites {
  std::uint64_t max_bytes = 64ull << 20;  // memory for newer data over unresolved abandoned writes
};

// Latency outlier detection (server/outlier.h): a path much slower than its
// peers becomes marginal (no client I/O, only probe reads) until it is not.
struct Outlier {
  bool enabled = true;
  Duration window{10000};        // samples older than this are forgotten
  unsigned min_samples = 20;     // per path in the window, the path's and each peer's
  double ratio = 5.0;            // marginal when its median > ratio x its peers', > 1
  Duration min_difference{1};    // ... and at least this much slower (a floor for tiny latencies)
  double readmit_ratio = 2.0;    // back when its probes' median <= readmit_ratio x peers', 1..ratio
  Duration probe_interval{200};  // probe reads of a marginal (or unmeasured) path
  Duration base_ejection{10000};  // marginal at least base x times it was made marginal
  Duration max_ejection{300000};  // ... capped; active this long, its count restarts
  unsigned max_share = 50;        // percent of a group's paths that may be marginal, 0..100
};

// Hedged reads (server/hedge.h): a client read that has waited longer than a
// high percentile of recent read latency is also sent to another path; the
// first good reply wins. Bounded by a budget, a share of the reads seen.
struct Hedge {
  bool enabled = true;
  double percentile = 95;  // of recent read attempt latency, 50..99.9: the wait before a hedge
  Duration min_delay{1};   // ... but never less than this
  unsigned max_share = 5;  // hedges per 100 client reads at most (token bucket), 0..100
};

// The control socket (nbd-multipath-ctl talks to it). No socket when empty.
struct Control {
  std::string socket;     // absolute path of a Unix socket
  unsigned mode = 0600;   // permission bits of the socket, octal in YAML ("0660")
  std::string group;      // group owning the socket; empty: the server's group
  unsigned events = 256;  // state-change events kept for `show events`, 1..100000
};

// The Prometheus text endpoint. Off when both are empty; at most one is set.
struct Metrics {
  std::string socket;  // absolute path of a Unix socket
  std::string listen;  // "127.0.0.1:PORT" (loopback only; PORT 0 picks a free port)
};

struct Config {
  std::vector<Path> paths;
  std::vector<Group> groups;  // every group a path names exists here
  Selector selector;
  Timeouts timeouts;
  Failover failover;
  NoPath no_path;
  Checker checker;
  Durability durability;
  StaleWrites stale_writes;
  Outlier outlier;
  Hedge hedge;
  Control control;
  Metrics metrics;
  // The iSCSI LU identifier every iSCSI path must reach ("naa.6000..."); empty:
  // the first path that answers sets it.
  std::string identity;
  // The export description (NBD_INFO_DESCRIPTION) every NBD path must report;
  // empty: all NBD paths must report the same as the first that answers
  // (which may be none).
  std::string export_description;
  std::string source;  // file name, or "command line"
};

// Either a Config or an error sentence ("disk.yaml:12:5: ...").
struct LoadResult {
  std::optional<Config> config;
  std::string error;
  explicit operator bool() const { return config.has_value(); }
};

// Reads and validates a YAML file.
LoadResult load_file(const std::string& filename);
// Parses YAML text; `name` stands in for the file name in messages.
LoadResult load_string(const std::string& text, const std::string& name);

// The quick form: nbdkit multipath path=URI [path=URI ...] [key=value ...].
// Keys: path, selector, timeout, request-timeout, connect-timeout, no-path,
// retries, shared-cache, outlier, hedge. Unknown keys are refused.
struct QuickArgs {
  std::vector<std::string> paths;
  std::vector<std::pair<std::string, std::string>> options;
};
LoadResult from_quick_args(const QuickArgs& args);
// What the plugin was given: config=FILE (when `filename` is not empty) or
// the quick form, never both.
LoadResult load(const std::string& filename, const QuickArgs& args);

// Checks a URI's form for a path ("nbd://host[:port][/export]",
// "nbd+unix:///export?socket=/path", ...). Returns "" when good, else a sentence.
std::string check_uri(const std::string& uri);

// Parses "250ms", "5s", "1.5s", "2m". Returns nullopt on bad input.
std::optional<Duration> parse_duration(const std::string& text);

const char* to_string(SelectorKind k);

// The effective settings, one "key: value" each in a fixed order, keys as in
// the YAML ("timeouts.attempt", "paths.a.weight"); passwords redacted and
// secrets shown only as set (settings.cc).
using Settings = std::vector<std::pair<std::string, std::string>>;
Settings settings(const Config& c);
// Every setting that differs: "timeouts.attempt: 1s -> 2s", "paths.c.uri:
// ... (new)", "... (gone)".
std::vector<std::string> changed_settings(const Config& from, const Config& to);

// Quotes text from a file, a command line or a server for a message: 'text',
// with invalid UTF-8 and invisible characters escaped (\xff, \u202e), and
// cut after 80 characters ("...").
std::string quote(std::string_view text);

}  // namespace mp::config
