// Unit tests for server/metrics: the Prometheus text and the HTTP endpoint on a Unix socket and
// TCP.
#include <doctest/doctest.h>
#include <prometheus/check_names.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <asio/buffer.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "server/control_api.h"
#include "server/latency.h"
#include "server/metrics.h"
#include "server/metrics_server.h"
#include "server/versions.h"
#include "tests/unit/no_descriptors.h"

using namespace std::chrono_literals;

namespace {

class FakeApi : public mp::ControlApi {
 public:
  mp::EngineInfo engine;
  std::vector<mp::GroupInfo> groups;
  std::vector<mp::PathInfo> paths;
  int calls = 0;

  std::vector<mp::PathInfo> show_paths() override {
    ++calls;
    return paths;
  }
  std::vector<mp::GroupInfo> show_groups() override { return groups; }
  mp::EngineInfo show_stats() override { return engine; }
  std::vector<mp::Event> show_events() override { return {}; }
  mp::DiskInfo show_disk() override { return {}; }
  std::vector<std::pair<std::string, std::string>> show_config() override { return {}; }
  std::string fail_path(const std::string&) override { return ""; }
  std::string reinstate_path(const std::string&) override { return ""; }
  std::string drain_path(const std::string&) override { return ""; }
  std::string switch_group(const std::string&) override { return ""; }
  std::string set_queueing(bool) override { return ""; }
  std::string fail_queued(std::uint64_t*) override { return ""; }
  std::string reset_stats() override { return ""; }
  void reload(bool, ReloadDone done) override { done("", ""); }
};

// Known numbers: two groups, three paths (one with a name that needs
// escaping, one in a state the renderer does not know), two request types.
FakeApi make_api() {
  FakeApi api;
  mp::EngineInfo& e = api.engine;
  e.requests = 100;
  e.failed_requests = 2;
  e.retries = 3;
  e.group_switches = 1;
  e.queued_no_path = 4;
  e.queued_no_path_ms = 1500;
  e.waiting = 5;
  e.queueing = true;
  e.abandoned_writes = 6;
  e.abandoned_pending = 1;
  e.resolved_late = 2;
  e.resolved_by_death = 3;
  e.reapplied = 7;
  e.unshadowed = 8;
  e.shadow_bytes = 4096;
  e.ops = {mp::OpCounters{"read", 10, 40960, 4, 1, 0, 1, 2, 1500, 25000, {}},
           mp::OpCounters{"write", 20, 81920, 0, 0, 0, 0, 0, 250, 1000, {}}};
  // Reads: 30 µs, 50 µs (on a bound: counts in it), 70 µs, 3 ms, 20 s (past
  // the last bound: only +Inf).
  mp::Latency reads;
  for (auto d : {30us, 50us, 70us, 3000us}) reads.add(d);
  reads.add(20s);
  e.ops[0].latency = reads.histogram();
  e.ops[1].latency = mp::Latency().histogram();
  api.groups = {mp::GroupInfo{"fast", 10, true, {"a", "c"}},
                mp::GroupInfo{"slow", 0, false, {"b"}}};
  mp::PathInfo a;
  a.name = "a";
  a.uri = "nbd+unix:///?socket=/a";
  a.group = "fast";
  a.state = "active";
  a.inflight = 3;
  a.requests = 120;
  a.bytes = 491520;
  a.errors = 1;
  a.timeouts = 2;
  a.failovers = 3;
  a.failures = 4;
  a.reinstatements = 5;
  a.errors = 3;
  a.transport_errors = 1;
  a.eio_errors = 2;
  a.latency_p50_us = 1000;
  a.latency_p99_us = 2500;
  mp::Latency attempts;
  attempts.add(1ms);
  attempts.add(2ms);
  a.latency = attempts.histogram();
  a.abandoned_pending = 1;
  mp::PathInfo b;
  b.name = "b";
  b.group = "slow";
  b.state = "failed";
  b.requests = 7;
  b.latency = mp::Latency().histogram();
  mp::PathInfo c;
  c.name = "we\"ird\\x";
  c.group = "fa\nst";
  c.state = "removed";
  c.latency = mp::Latency().histogram();
  api.paths = {a, b, c};
  return api;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  for (const auto& l : lines)
    if (l == line) return true;
  return false;
}

}  // namespace

TEST_CASE("render_metrics: engine, group, op and path samples") {
  FakeApi api = make_api();
  const std::string text = mp::render_metrics(api);
  const auto lines = lines_of(text);
  INFO(text);
  for (const char* expected : {
           "nbd_multipath_requests_total 100",
           "nbd_multipath_failed_requests_total 2",
           "nbd_multipath_retries_total 3",
           "nbd_multipath_group_switches_total 1",
           "nbd_multipath_queued_no_path_total 4",
           "nbd_multipath_queued_no_path_seconds_total 1.5",
           "nbd_multipath_waiting_requests 5",
           "nbd_multipath_queueing 1",
           "nbd_multipath_abandoned_writes_total 6",
           "nbd_multipath_abandoned_writes_pending 1",
           "nbd_multipath_abandoned_writes_resolved_late_total 2",
           "nbd_multipath_abandoned_writes_resolved_by_death_total 3",
           "nbd_multipath_abandoned_writes_reapplied_total 7",
           "nbd_multipath_abandoned_writes_unshadowed_total 8",
           "nbd_multipath_shadow_bytes 4096",
           "nbd_multipath_serving_group{group=\"fast\"} 1",
           "nbd_multipath_serving_group{group=\"slow\"} 0",
           "nbd_multipath_op_requests_total{op=\"read\"} 10",
           "nbd_multipath_op_requests_total{op=\"write\"} 20",
           "nbd_multipath_op_bytes_total{op=\"read\"} 40960",
           "nbd_multipath_op_bytes_total{op=\"write\"} 81920",
           "nbd_multipath_op_errors_total{op=\"read\",errno=\"EIO\"} 1",
           "nbd_multipath_op_errors_total{op=\"read\",errno=\"ENOSPC\"} 0",
           "nbd_multipath_op_errors_total{op=\"read\",errno=\"EPERM\"} 1",
           "nbd_multipath_op_errors_total{op=\"read\",errno=\"other\"} 2",
           "nbd_multipath_op_errors_total{op=\"write\",errno=\"EIO\"} 0",
           "nbd_multipath_path_requests_total{path=\"a\",group=\"fast\"} 120",
           "nbd_multipath_path_requests_total{path=\"b\",group=\"slow\"} 7",
           "nbd_multipath_path_bytes_total{path=\"a\",group=\"fast\"} 491520",
           "nbd_multipath_path_errors_total{path=\"a\",group=\"fast\",error=\"transport\"} 1",
           "nbd_multipath_path_errors_total{path=\"a\",group=\"fast\",error=\"eio\"} 2",
           "nbd_multipath_path_errors_total{path=\"b\",group=\"slow\",error=\"eio\"} 0",
           "nbd_multipath_path_timeouts_total{path=\"a\",group=\"fast\"} 2",
           "nbd_multipath_path_failovers_total{path=\"a\",group=\"fast\"} 3",
           "nbd_multipath_path_failures_total{path=\"a\",group=\"fast\"} 4",
           "nbd_multipath_path_reinstatements_total{path=\"a\",group=\"fast\"} 5",
           "nbd_multipath_path_abandoned_writes_pending{path=\"a\",group=\"fast\"} 1",
           "nbd_multipath_path_inflight{path=\"a\",group=\"fast\"} 3",
           "nbd_multipath_path_inflight{path=\"b\",group=\"slow\"} 0",
           "nbd_multipath_path_latency_seconds_bucket{path=\"a\",group=\"fast\",le=\"0.001\"} 1",
           "nbd_multipath_path_latency_seconds_bucket{path=\"a\",group=\"fast\",le=\"0.0025\"} 2",
           "nbd_multipath_path_latency_seconds_bucket{path=\"a\",group=\"fast\",le=\"+Inf\"} 2",
           "nbd_multipath_path_latency_seconds_count{path=\"a\",group=\"fast\"} 2",
           "nbd_multipath_path_latency_seconds_sum{path=\"a\",group=\"fast\"} 0.003",
           "nbd_multipath_path_latency_seconds_count{path=\"b\",group=\"slow\"} 0",
       }) {
    CHECK_MESSAGE(has_line(lines, expected), expected);
  }
}

TEST_CASE("render_metrics: one state gauge per state name, exactly one of them 1") {
  FakeApi api = make_api();
  const auto lines = lines_of(mp::render_metrics(api));
  const std::string a = "nbd_multipath_path_state{path=\"a\",group=\"fast\",state=\"";
  CHECK(has_line(lines, a + "active\"} 1"));
  for (const char* s : {"connecting", "probing", "held", "marginal", "failed", "draining"})
    CHECK(has_line(lines, a + s + "\"} 0"));
  CHECK(has_line(lines, "nbd_multipath_path_state{path=\"b\",group=\"slow\",state=\"failed\"} 1"));
  CHECK(has_line(lines, "nbd_multipath_path_state{path=\"b\",group=\"slow\",state=\"active\"} 0"));
  std::map<std::string, int> ones, samples;
  for (const auto& l : lines) {
    if (l.rfind("nbd_multipath_path_state{", 0) != 0) continue;
    std::string path = l.substr(l.find("path=\""), l.find(",group=") - l.find("path=\""));
    samples[path]++;
    if (l.ends_with("} 1")) ones[path]++;
  }
  CHECK(samples.size() == 3);
  for (const auto& [path, n] : ones) CHECK_MESSAGE(n == 1, path);
  CHECK(ones.size() == 3);
  CHECK(samples["path=\"a\""] == 7);
  // A state the renderer does not know is added, so the path still has its 1.
  CHECK(samples["path=\"we\\\"ird\\\\x\""] == 8);
}

TEST_CASE("render_metrics: label values are escaped") {
  FakeApi api = make_api();
  const auto lines = lines_of(mp::render_metrics(api));
  CHECK(has_line(lines,
                 "nbd_multipath_path_requests_total{path=\"we\\\"ird\\\\x\",group=\"fa\\nst\"} 0"));
  CHECK(has_line(
      lines,
      "nbd_multipath_path_state{path=\"we\\\"ird\\\\x\",group=\"fa\\nst\",state=\"removed\"} 1"));
}

TEST_CASE("render_metrics: the exposition format's structure") {
  FakeApi api = make_api();
  const std::string text = mp::render_metrics(api);
  INFO(text);
  REQUIRE(!text.empty());
  CHECK(text.back() == '\n');
  const auto lines = lines_of(text);

  // # HELP, then # TYPE, then the family's samples; each family once, each
  // series (name and labels) once.
  const std::regex help(R"(# HELP (nbd_multipath_[a-z0-9_]+) [^\n]+)");
  const std::regex type(R"(# TYPE (nbd_multipath_[a-z0-9_]+) (counter|gauge|histogram))");
  const std::regex sample(
      R"(([a-z_:][a-z0-9_:]*)(?:\{((?:[a-z_]+="(?:[^"\\\n]|\\\\|\\"|\\n)*",?)*)\})? ([-+]?[0-9.e+-]+|NaN|[+-]Inf))");
  std::set<std::string> seen, series;
  std::string current, current_type, after_help;
  int families = 0, samples = 0, histograms = 0;
  for (const auto& l : lines) {
    std::smatch m;
    if (std::regex_match(l, m, help)) {
      CHECK_MESSAGE(seen.insert(m[1]).second, "family twice: " << m[1]);
      CHECK_MESSAGE(prometheus::CheckMetricName(m[1]), m[1]);
      after_help = m[1];
      current.clear();
      ++families;
    } else if (std::regex_match(l, m, type)) {
      CHECK_MESSAGE(m[1] == after_help, "TYPE without its HELP: " << l);
      current = m[1];
      current_type = m[2];
      if (current_type == "counter") CHECK_MESSAGE(current.ends_with("_total"), current);
      if (current_type != "counter") CHECK_MESSAGE(!current.ends_with("_total"), current);
      if (current_type == "histogram") {
        CHECK_MESSAGE(current.ends_with("_seconds"), current);
        ++histograms;
      }
      after_help.clear();
    } else {
      REQUIRE_MESSAGE(std::regex_match(l, m, sample), "not a sample line: " << l);
      std::string name = m[1];
      if (current_type == "histogram")
        for (const char* suffix : {"_bucket", "_sum", "_count"})
          if (name == current + suffix) name = current;
      CHECK_MESSAGE(name == current, "sample outside its family: " << l);
      CHECK_MESSAGE(series.insert(l.substr(0, l.rfind(' '))).second, "series twice: " << l);
      ++samples;
    }
  }
  CHECK(families >= 30);
  CHECK(histograms == 2);
  CHECK(samples > families);
  for (const char* name : {"nbd_multipath_path_state", "nbd_multipath_serving_group",
                           "nbd_multipath_op_latency_seconds", "nbd_multipath_path_latency_seconds",
                           "nbd_multipath_build_info", "nbd_multipath_queueing"})
    CHECK_MESSAGE(seen.count(name) == 1, name);
  // Gone: quantile gauges, and a metric name per error class.
  for (const auto& name : seen) {
    CHECK_MESSAGE(name.find("_p50_") == std::string::npos, name);
    CHECK_MESSAGE(name.find("_p99_") == std::string::npos, name);
    for (const char* kind : {"_eio_", "_nospc_", "_perm_", "_other_", "_transport_"})
      CHECK_MESSAGE(name.find(kind) == std::string::npos, name);
  }
}

TEST_CASE("render_metrics: the model's label names are valid and errors carry their class") {
  FakeApi api = make_api();
  const auto families = mp::MetricsCollector(api).Collect();
  std::map<std::string, const prometheus::MetricFamily*> by_name;
  for (const auto& f : families) {
    by_name[f.name] = &f;
    for (const auto& m : f.metric) {
      std::set<std::string> names;
      for (const auto& l : m.label) {
        CHECK_MESSAGE(prometheus::CheckLabelName(l.name), f.name << " " << l.name);
        CHECK_MESSAGE(names.insert(l.name).second, f.name << " repeats " << l.name);
      }
    }
  }
  // Summed over the errno label, a type's errors are its failed requests;
  // each class is its own sample.
  const auto* op_errors = by_name.at("nbd_multipath_op_errors_total");
  std::map<std::string, double> per_op;
  std::map<std::string, std::set<std::string>> classes;
  for (const auto& m : op_errors->metric) {
    std::string op, err;
    for (const auto& l : m.label) (l.name == "op" ? op : l.name == "errno" ? err : op) = l.value;
    per_op[op] += m.counter.value;
    classes[op].insert(err);
  }
  for (const auto& o : api.engine.ops) {
    CHECK_MESSAGE(per_op[o.op] == static_cast<double>(o.errors), o.op);
    CHECK(classes[o.op] == std::set<std::string>{"EIO", "ENOSPC", "EPERM", "other"});
  }
  const auto* path_errors = by_name.at("nbd_multipath_path_errors_total");
  double a_errors = 0;
  for (const auto& m : path_errors->metric)
    if (m.label.at(0).value == "a") {
      CHECK(m.label.at(2).name == "error");
      a_errors += m.counter.value;
    }
  CHECK(a_errors == static_cast<double>(api.paths[0].errors));
}

TEST_CASE("render_metrics: latency histograms are cumulative, with +Inf equal to the count") {
  FakeApi api = make_api();
  const std::string text = mp::render_metrics(api);
  const auto lines = lines_of(text);
  INFO(text);
  const std::string r = "nbd_multipath_op_latency_seconds_bucket{op=\"read\",le=\"";
  CHECK(has_line(lines, r + "5e-05\"} 2"));  // 30 µs and 50 µs: a bound is inclusive
  CHECK(has_line(lines, r + "0.0001\"} 3"));
  CHECK(has_line(lines, r + "0.0025\"} 3"));
  CHECK(has_line(lines, r + "0.005\"} 4"));
  CHECK(has_line(lines, r + "10\"} 4"));
  CHECK(has_line(lines, r + "+Inf\"} 5"));  // 20 s
  CHECK(has_line(lines, "nbd_multipath_op_latency_seconds_count{op=\"read\"} 5"));
  CHECK(has_line(lines, "nbd_multipath_op_latency_seconds_sum{op=\"read\"} 20.00315"));
  CHECK(has_line(lines, "nbd_multipath_op_latency_seconds_count{op=\"write\"} 0"));

  // Every histogram series: the bounds ascend, the counts never fall, and the
  // +Inf bucket is the count.
  const std::regex bucket(R"re((nbd_multipath_[a-z_]+)_bucket\{(.*),le="([^"]+)"\} ([0-9]+))re");
  std::map<std::string, std::vector<std::pair<double, std::uint64_t>>> buckets;
  for (const auto& l : lines) {
    std::smatch m;
    if (!std::regex_match(l, m, bucket)) continue;
    const double le = m[3] == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(m[3]);
    buckets[m[1].str() + "{" + m[2].str() + "}"].emplace_back(le, std::stoull(m[4]));
  }
  CHECK(buckets.size() == 2 + 3);  // two request types, three paths
  for (const auto& [key, list] : buckets) {
    CHECK_MESSAGE(list.size() == mp::kLatencyBucketsNs.size() + 1, key);
    for (std::size_t i = 1; i < list.size(); ++i) {
      CHECK_MESSAGE(list[i - 1].first < list[i].first, key);
      CHECK_MESSAGE(list[i - 1].second <= list[i].second, key);
    }
    const std::string count_line = key.substr(0, key.find('{')) + "_count" +
                                   key.substr(key.find('{')) + " " +
                                   std::to_string(list.back().second);
    CHECK_MESSAGE(has_line(lines, count_line), count_line);
    CHECK_MESSAGE(list.back().first == std::numeric_limits<double>::infinity(), key);
  }
}

TEST_CASE("render_metrics: build info") {
  FakeApi api;
  const auto lines = lines_of(mp::render_metrics(api));
  std::string libnbd;
  for (const auto& [k, v] : mp::library_versions())
    if (k == "libnbd_version") libnbd = v;
  REQUIRE(!libnbd.empty());
  CHECK(has_line(lines, "# TYPE nbd_multipath_build_info gauge"));
  bool found = false;
  for (const auto& l : lines)
    if (l.starts_with("nbd_multipath_build_info{")) {
      found = true;
      CHECK(l.ends_with("} 1"));
      CHECK(l.find(std::string("version=\"") + mp::version() + "\"") != std::string::npos);
      CHECK(l.find(std::string("nbdkit=\"") + mp::nbdkit_build_version() + "\"") !=
            std::string::npos);
      CHECK(l.find("libnbd=\"" + libnbd + "\"") != std::string::npos);
      CHECK(l.find("libiscsi=\"") != std::string::npos);
    }
  CHECK(found);
}

TEST_CASE("render_metrics: seconds are printed without conversion noise") {
  FakeApi api = make_api();
  mp::Latency l;
  l.add(123400ns);  // 123.4 µs: 0.00012340000000000002 s in full
  api.paths[0].latency = l.histogram();
  api.engine.queued_no_path_ms = 123456789;
  const auto lines = lines_of(mp::render_metrics(api));
  CHECK(has_line(lines,
                 "nbd_multipath_path_latency_seconds_sum{path=\"a\",group=\"fast\"} 0.0001234"));
  CHECK(has_line(lines, "nbd_multipath_queued_no_path_seconds_total 123456.789"));
}

TEST_CASE("render_metrics: nothing configured yet still renders every family") {
  FakeApi api;
  api.engine.queueing = false;
  const std::string text = mp::render_metrics(api);
  const auto lines = lines_of(text);
  CHECK(has_line(lines, "nbd_multipath_queueing 0"));
  CHECK(has_line(lines, "nbd_multipath_queued_no_path_seconds_total 0"));
  CHECK(has_line(lines, "# TYPE nbd_multipath_path_state gauge"));
  CHECK(has_line(lines, "# TYPE nbd_multipath_path_latency_seconds histogram"));
  CHECK(text.find("nbd_multipath_path_state{") == std::string::npos);
}

// ---------------------------------------------------------------------------
// The endpoint, driven from this thread: the server and the clients share one
// io_context, run here until a condition holds or a deadline passes.

namespace {

template <class Pred>
bool run_until(asio::io_context& io, Pred done, std::chrono::milliseconds limit = 5000ms) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(20ms);
  }
  return true;
}

struct Reply {
  bool done = false;
  std::string data;
  std::error_code ec;
  std::chrono::steady_clock::time_point at;
};

// Connects, sends `request` (possibly nothing), and reads until the server closes.
template <class Proto>
std::shared_ptr<Reply> exchange(asio::io_context& io, const typename Proto::endpoint& ep,
                                std::string request) {
  auto r = std::make_shared<Reply>();
  auto s = std::make_shared<typename Proto::socket>(io);
  auto req = std::make_shared<std::string>(std::move(request));
  auto finish = [r, s](std::error_code ec) {
    r->ec = ec;
    r->done = true;
    r->at = std::chrono::steady_clock::now();
  };
  auto read_all = [r, s, finish] {
    asio::async_read(*s, asio::dynamic_buffer(r->data),
                     [finish](std::error_code ec, std::size_t) { finish(ec); });
  };
  s->async_connect(ep, [s, req, read_all, finish](std::error_code ec) {
    if (ec) return finish(ec);
    if (req->empty()) return read_all();
    asio::async_write(*s, asio::buffer(*req),
                      [read_all](std::error_code, std::size_t) { read_all(); });
  });
  return r;
}

struct Http {
  std::string status;  // "200 OK"
  std::map<std::string, std::string> headers;
  std::string body;
};

Http parse(const std::string& raw) {
  Http h;
  std::size_t end = raw.find("\r\n\r\n");
  REQUIRE_MESSAGE(end != std::string::npos, "no end of head in: " << raw);
  std::vector<std::string> head;
  std::size_t pos = 0;
  while (pos < end) {
    std::size_t eol = raw.find("\r\n", pos);
    head.push_back(raw.substr(pos, eol - pos));
    pos = eol + 2;
  }
  REQUIRE(!head.empty());
  REQUIRE(head[0].rfind("HTTP/1.0 ", 0) == 0);
  h.status = head[0].substr(9);
  for (std::size_t i = 1; i < head.size(); ++i) {
    std::size_t colon = head[i].find(": ");
    REQUIRE(colon != std::string::npos);
    h.headers[head[i].substr(0, colon)] = head[i].substr(colon + 2);
  }
  h.body = raw.substr(end + 4);
  return h;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mp-metrics-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

struct LogSink {
  std::vector<std::pair<bool, std::string>> lines;
  mp::MetricsServer::Log fn() {
    return [this](bool error, const std::string& line) { lines.emplace_back(error, line); };
  }
};

using Unix = asio::local::stream_protocol;

std::shared_ptr<Reply> unix_get(asio::io_context& io, const std::string& path,
                                const std::string& request) {
  return exchange<Unix>(io, Unix::endpoint(path), request);
}

Http unix_request(asio::io_context& io, const std::string& path, const std::string& request) {
  auto r = unix_get(io, path, request);
  REQUIRE(run_until(io, [&] { return r->done; }));
  CHECK_MESSAGE((r->ec == asio::error::eof || !r->ec), r->ec.message());
  return parse(r->data);
}

}  // namespace

TEST_CASE("MetricsServer on a Unix socket") {
  asio::io_context io;
  FakeApi api = make_api();
  TempDir dir;
  LogSink log;
  mp::config::Metrics cfg;
  cfg.socket = dir.path + "/metrics.sock";
  mp::MetricsServer server(io, api, cfg, log.fn());
  REQUIRE(server.start() == "");
  CHECK(server.where() == cfg.socket);
  REQUIRE(log.lines.size() == 1);
  CHECK_FALSE(log.lines[0].first);
  CHECK(log.lines[0].second ==
        "metrics: listening on unix socket " + cfg.socket + " (GET /metrics)");
  struct stat st;
  REQUIRE(::stat(cfg.socket.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == mp::MetricsServer::kSocketMode);

  SUBCASE("GET /metrics answers 200 with the rendered text") {
    Http h =
        unix_request(io, cfg.socket, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    CHECK(h.status == "200 OK");
    CHECK(h.headers["Content-Type"] == "text/plain; version=0.0.4");
    CHECK(h.headers["Connection"] == "close");
    CHECK(h.headers["Content-Length"] == std::to_string(h.body.size()));
    CHECK(h.body == mp::render_metrics(api));
    CHECK(h.body.find("nbd_multipath_op_requests_total{op=\"write\"} 20\n") != std::string::npos);
  }
  SUBCASE("the numbers are read at each scrape") {
    Http h1 = unix_request(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n");
    api.engine.ops[1].requests = 21;
    Http h2 = unix_request(io, cfg.socket, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    CHECK(h1.body.find("{op=\"write\"} 20\n") != std::string::npos);
    CHECK(h2.body.find("{op=\"write\"} 21\n") != std::string::npos);
  }
  SUBCASE("another path is 404") {
    Http h = unix_request(io, cfg.socket, "GET /nope HTTP/1.0\r\n\r\n");
    CHECK(h.status == "404 Not Found");
    CHECK(h.headers["Content-Length"] == std::to_string(h.body.size()));
    CHECK(h.body.find("/metrics") != std::string::npos);
    CHECK(unix_request(io, cfg.socket, "GET / HTTP/1.0\r\n\r\n").status == "404 Not Found");
  }
  SUBCASE("another method is 405 with Allow") {
    Http h = unix_request(io, cfg.socket, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    CHECK(h.status == "405 Method Not Allowed");
    CHECK(h.headers["Allow"] == "GET, HEAD");
  }
  SUBCASE("HEAD gets the headers only") {
    Http h = unix_request(io, cfg.socket, "HEAD /metrics HTTP/1.0\r\n\r\n");
    CHECK(h.status == "200 OK");
    CHECK(h.body.empty());
    CHECK(h.headers["Content-Length"] == std::to_string(mp::render_metrics(api).size()));
  }
  SUBCASE("a malformed request line is 400") {
    CHECK(unix_request(io, cfg.socket, "hello\r\n\r\n").status == "400 Bad Request");
    CHECK(unix_request(io, cfg.socket, "GET /metrics\r\n\r\n").status == "400 Bad Request");
    CHECK(unix_request(io, cfg.socket, "GET  /metrics HTTP/1.0\r\n\r\n").status ==
          "400 Bad Request");
    CHECK(unix_request(io, cfg.socket, "GET /metrics FTP/1.0\r\n\r\n").status == "400 Bad Request");
  }
  SUBCASE("bare line feeds are accepted") {
    CHECK(unix_request(io, cfg.socket, "GET /metrics HTTP/1.0\n\n").status == "200 OK");
  }
  SUBCASE("a head larger than the limit is 431") {
    std::string big =
        "GET /metrics HTTP/1.0\r\nX-Fill: " + std::string(mp::MetricsServer::kMaxHead, 'x') +
        "\r\n\r\n";
    auto r = unix_get(io, cfg.socket, big);
    REQUIRE(run_until(io, [&] { return r->done; }));
    INFO(r->ec.message());
    CHECK(r->data.rfind("HTTP/1.0 431 ", 0) == 0);
  }
  SUBCASE("stop() closes the listener and removes the socket file") {
    server.stop();
    CHECK_FALSE(std::filesystem::exists(cfg.socket));
    auto r = unix_get(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n");
    REQUIRE(run_until(io, [&] { return r->done; }));
    CHECK(r->ec);
    CHECK(r->data.empty());
    server.stop();  // idempotent
  }
  CHECK(api.calls >= 0);
}

TEST_CASE("MetricsServer: a silent client is disconnected, then its slot serves others") {
  asio::io_context io;
  FakeApi api = make_api();
  TempDir dir;
  LogSink log;
  mp::config::Metrics cfg;
  cfg.socket = dir.path + "/m.sock";
  mp::MetricsServer server(io, api, cfg, log.fn());
  server.set_timeout(100ms);
  REQUIRE(server.start() == "");

  SUBCASE("one silent client") {
    const auto t0 = std::chrono::steady_clock::now();
    auto silent = unix_get(io, cfg.socket, "");
    REQUIRE(run_until(io, [&] { return silent->done; }));
    CHECK(silent->data.empty());
    CHECK(silent->at - t0 >= 100ms);
    CHECK(unix_request(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n").status == "200 OK");
  }
  SUBCASE("every slot taken by silent clients: the next one waits for a free slot") {
    std::vector<std::shared_ptr<Reply>> silent;
    for (unsigned i = 0; i < mp::MetricsServer::kMaxConnections; ++i)
      silent.push_back(unix_get(io, cfg.socket, ""));
    auto waiting = unix_get(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n");
    REQUIRE(run_until(io, [&] { return waiting->done; }));
    CHECK(waiting->data.rfind("HTTP/1.0 200 OK\r\n", 0) == 0);
    // It was served only once a silent client had been dropped.
    auto first_drop = std::chrono::steady_clock::time_point::max();
    for (auto& s : silent)
      if (s->done) first_drop = std::min(first_drop, s->at);
    CHECK(first_drop <= waiting->at);
    REQUIRE(run_until(io, [&] {
      for (auto& s : silent)
        if (!s->done) return false;
      return true;
    }));
    for (auto& s : silent) CHECK(s->data.empty());
  }
  CHECK(std::none_of(log.lines.begin(), log.lines.end(), [](const auto& l) { return l.first; }));
}

TEST_CASE("MetricsServer: an existing socket file") {
  asio::io_context io;
  FakeApi api = make_api();
  TempDir dir;
  LogSink log;
  mp::config::Metrics cfg;
  cfg.socket = dir.path + "/m.sock";

  SUBCASE("a stale socket (nobody listening) is replaced") {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::strcpy(sa.sun_path, cfg.socket.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    ::close(fd);
    REQUIRE(std::filesystem::exists(cfg.socket));
    mp::MetricsServer server(io, api, cfg, log.fn());
    REQUIRE(server.start() == "");
    CHECK(unix_request(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n").status == "200 OK");
  }
  SUBCASE("a live socket is refused") {
    mp::MetricsServer first(io, api, cfg, log.fn());
    REQUIRE(first.start() == "");
    mp::MetricsServer second(io, api, cfg, log.fn());
    CHECK(second.start() == "metrics socket " + cfg.socket +
                                ": another server is listening on it: stop that server, or "
                                "choose another path");
    second.stop();
    CHECK(std::filesystem::exists(cfg.socket));  // the second one leaves the first's file alone
    CHECK(unix_request(io, cfg.socket, "GET /metrics HTTP/1.0\r\n\r\n").status == "200 OK");
  }
  SUBCASE("a file that is not a socket is refused and kept") {
    std::ofstream(cfg.socket) << "data";
    mp::MetricsServer server(io, api, cfg, log.fn());
    CHECK(server.start().find("the path exists and is not a socket") != std::string::npos);
    CHECK(std::filesystem::is_regular_file(cfg.socket));
  }
  SUBCASE("a missing directory is an error sentence") {
    cfg.socket = dir.path + "/no/such/dir/m.sock";
    mp::MetricsServer server(io, api, cfg, log.fn());
    CHECK(server.start() == "metrics socket " + cfg.socket + ": cannot bind: the directory " +
                                dir.path + "/no/such/dir does not exist: create it");
  }
}

TEST_CASE("MetricsServer on loopback TCP with port 0") {
  asio::io_context io;
  FakeApi api = make_api();
  LogSink log;
  mp::config::Metrics cfg;
  cfg.listen = "127.0.0.1:0";
  mp::MetricsServer server(io, api, cfg, log.fn());
  REQUIRE(server.start() == "");
  std::smatch m;
  const std::string where = server.where();
  REQUIRE(std::regex_match(where, m, std::regex(R"(127\.0\.0\.1:([0-9]+))")));
  const unsigned port = static_cast<unsigned>(std::stoul(m[1]));
  CHECK(port > 0);
  CHECK(port < 65536);
  REQUIRE(log.lines.size() == 1);
  CHECK(log.lines[0].second == "metrics: listening on " + where + " (GET /metrics)");

  using Tcp = asio::ip::tcp;
  Tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  auto r = exchange<Tcp>(io, ep, "GET /metrics HTTP/1.0\r\n\r\n");
  REQUIRE(run_until(io, [&] { return r->done; }));
  Http h = parse(r->data);
  CHECK(h.status == "200 OK");
  CHECK(h.body == mp::render_metrics(api));
  auto r404 = exchange<Tcp>(io, ep, "GET /other HTTP/1.0\r\n\r\n");
  REQUIRE(run_until(io, [&] { return r404->done; }));
  CHECK(parse(r404->data).status == "404 Not Found");
}

TEST_CASE("MetricsServer: configurations start() refuses") {
  asio::io_context io;
  FakeApi api;
  LogSink log;
  mp::config::Metrics cfg;
  SUBCASE("neither") {
    mp::MetricsServer s(io, api, cfg, log.fn());
    CHECK(s.start() == "the metrics endpoint has neither socket nor listen");
  }
  SUBCASE("not loopback") {
    cfg.listen = "0.0.0.0:9100";
    mp::MetricsServer s(io, api, cfg, log.fn());
    CHECK(s.start().find("is not a loopback address") != std::string::npos);
  }
  SUBCASE("not ADDRESS:PORT") {
    cfg.listen = "localhost:9100";
    mp::MetricsServer s(io, api, cfg, log.fn());
    CHECK(s.start().find("is not ADDRESS:PORT") != std::string::npos);
  }
  CHECK(log.lines.empty());
}

TEST_CASE("MetricsServer: out of descriptors, it still answers, and says so once") {
  asio::io_context io;
  FakeApi api = make_api();
  TempDir dir;
  LogSink log;
  mp::config::Metrics cfg;
  cfg.socket = dir.path + "/m.sock";
  mp::MetricsServer server(io, api, cfg, log.fn());
  REQUIRE(server.start() == "");
  // Clients' sockets are made first: the table is full afterwards.
  std::vector<Unix::socket> clients;
  for (int i = 0; i < 3; i++) clients.emplace_back(io, Unix());
  {
    mp::NoDescriptors full;
    for (auto& c : clients) {
      c.connect(Unix::endpoint(cfg.socket));
      asio::write(c, asio::buffer(std::string("GET /metrics HTTP/1.0\r\n\r\n")));
      std::string data;
      std::error_code ec;
      bool done = false;
      asio::async_read(c, asio::dynamic_buffer(data), [&](std::error_code e, std::size_t) {
        ec = e;
        done = true;
      });
      REQUIRE(run_until(io, [&] { return done; }));
      CHECK(ec == asio::error::eof);
      CHECK(parse(data).status == "200 OK");
    }
  }
  auto exhausted = std::count_if(log.lines.begin(), log.lines.end(), [](const auto& l) {
    return l.first && l.second.find("out of file descriptors (limit ") != std::string::npos;
  });
  CHECK(exhausted == 1);
}
