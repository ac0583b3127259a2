// Unit tests for the engine's operator actions (ControlApi) and live reconfiguration (apply).
#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "tests/unit/fakes.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;

constexpr std::uint64_t kX = 64 * 1024;
constexpr std::uint32_t kLen = 4096;

bool contains(std::string_view s, std::string_view part) {
  return s.find(part) != std::string_view::npos;
}

std::string other(const std::string& name) {
  return name == "A" ? "B" : "A";
}

// The first path of that name in show paths.
std::optional<PathInfo> info(Harness& h, const std::string& name) {
  for (auto& p : h.engine->show_paths())
    if (p.name == name) return p;
  return std::nullopt;
}

std::string state_of(Harness& h, const std::string& name) {
  auto p = info(h, name);
  return p ? p->state : "(absent)";
}

std::vector<std::string> names(Harness& h) {
  std::vector<std::string> v;
  for (auto& p : h.engine->show_paths()) v.push_back(p.name);
  return v;
}

std::optional<GroupInfo> group(Harness& h, const std::string& name) {
  for (auto& g : h.engine->show_groups())
    if (g.name == name) return g;
  return std::nullopt;
}

OpCounters op_stats(const EngineInfo& e, const std::string& op) {
  for (const auto& o : e.ops)
    if (o.op == op) return o;
  FAIL("no counters for " << op);
  return {};
}

bool has_event(Harness& h, std::string_view subject, std::string_view what,
               std::string_view reason) {
  for (const auto& e : h.engine->show_events())
    if (e.subject == subject && e.what == what && contains(e.reason, reason)) return true;
  return false;
}

std::string dump_events(Harness& h) {
  std::string s;
  for (const auto& e : h.engine->show_events())
    s += e.subject + ": " + e.what + ": " + e.reason + "\n";
  return s;
}

// Submits a read at `off`, answers it with 0x01 and returns the path it went to.
std::string read_path(Harness& h, std::uint64_t off = kX) {
  auto r = make_req(h.rt, Op::Read, off, kLen);
  h.engine->submit(*r);
  auto [fp, i] = h.find(Op::Read, off);
  fp->fill(i, std::byte{1});
  fp->complete(i);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  return fp->name();
}

// How many of n sequential reads each path served.
std::map<std::string, int> spread(Harness& h, int n, std::uint64_t off = kX) {
  std::map<std::string, int> m;
  for (int k = 0; k < n; k++) m[read_path(h, off + static_cast<std::uint64_t>(k) * kLen)]++;
  return m;
}

// A request in flight on a chosen path.
struct OnPath {
  std::unique_ptr<TestReq> req;
  FakePath* fp = nullptr;
  std::size_t idx = 0;
};

// Submits requests of `op` at successive offsets from `off`, serving each
// one that lands elsewhere, until one is in flight on `name`.
OnPath in_flight_on(Harness& h, const std::string& name, Op op, std::uint64_t off) {
  for (int k = 0; k < 16; k++, off += kLen) {
    auto r = make_req(h.rt, op, off, kLen, op == Op::Write ? 0x40 + k : -1);
    h.engine->submit(*r);
    auto [fp, i] = h.find(op, off);
    if (fp->name() == name) return {std::move(r), fp, i};
    fp->serve(i);
    REQUIRE(r->calls == 1);
    CHECK(r->err == 0);
  }
  FAIL("no request went to path " << name);
  return {};
}

config::Config group_config(config::Failback fb) {
  auto c = make_config({"F", "S"});
  c.groups = {config::Group{"slow", 0}, config::Group{"fast", 10}};
  c.paths[0].group = "fast";
  c.paths[1].group = "slow";
  c.failover.failback = fb;
  return c;
}

config::Path path_cfg(const std::string& name, const std::string& uri = "") {
  config::Path p;
  p.name = name;
  p.uri = uri.empty() ? "nbd://" + name : uri;
  return p;
}

// A file under /tmp, removed at the end of the test.
struct TempFile {
  std::string name;
  TempFile() {
    char tmpl[] = "/tmp/mp-test-reload-XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    name = tmpl;
  }
  ~TempFile() { unlink(name.c_str()); }
  void write(const std::string& text) {
    FILE* f = std::fopen(name.c_str(), "wb");
    REQUIRE(f);
    REQUIRE(std::fwrite(text.data(), 1, text.size(), f) == text.size());
    REQUIRE(std::fclose(f) == 0);
  }
};

// ---------------------------------------------------------------------------
// show paths, groups, stats, events

TEST_CASE("engine control: show paths reports each path's fields and counters") {
  Harness h(make_config());
  h.bring_up_all();
  auto ps = h.engine->show_paths();
  REQUIRE(ps.size() == 2);
  for (std::size_t k = 0; k < 2; k++) {
    const std::string n = k == 0 ? "A" : "B";
    CHECK(ps[k].name == n);
    CHECK(ps[k].uri == "nbd://" + n);
    CHECK(ps[k].group == "default");
    CHECK(ps[k].state == "active");
    CHECK(ps[k].reason == "probe read succeeded");
    CHECK(ps[k].inflight == 0);
    CHECK(ps[k].requests == 1);  // its probe read
    CHECK(ps[k].bytes == 512);
    CHECK(ps[k].errors == 0);
    CHECK(ps[k].timeouts == 0);
    CHECK(ps[k].failovers == 0);
    CHECK(ps[k].failures == 0);
    CHECK(ps[k].reinstatements == 1);
    CHECK(ps[k].abandoned_pending == 0);
  }

  // A read in flight counts on its path; its 5 ms show in the latency.
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  const std::string pn = p->name();
  CHECK(info(h, pn)->inflight == 1);
  CHECK(info(h, other(pn))->inflight == 0);
  h.rt.t += 5ms;
  p->fill(i, std::byte{1});
  p->complete(i);
  REQUIRE(r->calls == 1);
  auto pi = *info(h, pn);
  CHECK(pi.inflight == 0);
  CHECK(pi.requests == 2);
  CHECK(pi.bytes == 512 + kLen);
  CHECK(pi.latency_p50_us > 0);
  CHECK(pi.latency_p99_us > 4000);
  CHECK(pi.latency_p99_us < 6000);
  // The same attempts in the Prometheus form: the 5 ms read in le 5 ms, not
  // in le 2.5 ms; every completed attempt counted once.
  CHECK(pi.latency.count == 2);
  CHECK(pi.latency.sum_seconds >= 0.005);
  int bounds_seen = 0;
  for (std::size_t b = 0; b < pi.latency.upper_bounds.size(); ++b) {
    if (pi.latency.upper_bounds[b] == 0.0025) {
      CHECK(pi.latency.cumulative[b] == 1);
      bounds_seen++;
    }
    if (pi.latency.upper_bounds[b] == 0.005) {
      CHECK(pi.latency.cumulative[b] == 2);
      bounds_seen++;
    }
  }
  CHECK(bounds_seen == 2);

  // A timed-out attempt: a timeout, a failover and a failure, not an error.
  auto r2 = make_req(h.rt, Op::Read, kX + kLen, kLen);
  h.engine->submit(*r2);
  auto [q, j] = h.find(Op::Read, kX + kLen);
  const std::string qn = q->name();
  h.advance(1000ms);
  pi = *info(h, qn);
  CHECK(pi.state == "failed");
  CHECK(contains(pi.reason, "timed out"));
  CHECK(pi.timeouts == 1);
  CHECK(pi.failovers == 1);
  CHECK(pi.failures == 1);
  CHECK(pi.errors == 0);
  auto [q2, j2] = h.find(Op::Read, kX + kLen);
  CHECK(q2->name() == other(qn));
  q2->serve(j2);
  REQUIRE(r2->calls == 1);
  CHECK(r2->err == 0);

  // Back after its probe: a second reinstatement.
  REQUIRE(h.until_connect(qn, 5s));
  CHECK(state_of(h, qn) == "connecting");
  h.connected(qn);
  CHECK(state_of(h, qn) == "probing");
  h.p(qn).serve(*h.probe_of(qn));
  pi = *info(h, qn);
  CHECK(pi.state == "active");
  CHECK(pi.reason == "reinstated: probe read succeeded");
  CHECK(pi.reinstatements == 2);

  // A transport error counts as an error on the path.
  auto w = make_req(h.rt, Op::Write, kX, kLen, 7);
  h.engine->submit(*w);
  auto [s, k] = h.find(Op::Write, kX);
  const std::string sn = s->name();
  s->complete(k, PathResult::TransportDead, ECONNRESET);
  CHECK(info(h, sn)->errors == 1);
  CHECK(info(h, sn)->state == "failed");
  auto [s2, k2] = h.find(Op::Write, kX);
  s2->serve(k2);
  REQUIRE(w->calls == 1);
  CHECK(w->err == 0);
}

TEST_CASE("engine control: show groups reports priority, members and the serving group") {
  Harness h(group_config(config::Failback::Immediate));
  h.bring_up("F");
  h.bring_up("S");
  auto gs = h.engine->show_groups();
  REQUIRE(gs.size() == 2);
  CHECK(gs[0].name == "fast");  // highest priority first
  CHECK(gs[0].priority == 10);
  CHECK(gs[0].serving);
  CHECK(gs[0].paths == std::vector<std::string>{"F"});
  CHECK(gs[1].name == "slow");
  CHECK(gs[1].priority == 0);
  CHECK_FALSE(gs[1].serving);
  CHECK(gs[1].paths == std::vector<std::string>{"S"});

  h.down("F");
  CHECK_FALSE(group(h, "fast")->serving);
  CHECK(group(h, "slow")->serving);
  CHECK(group(h, "fast")->paths == std::vector<std::string>{"F"});  // still a member
}

TEST_CASE("engine control: show stats counts each request type, and the no-path queue") {
  Harness h(make_config({"A"}));
  h.bring_up_all();
  auto e = h.engine->show_stats();
  REQUIRE(e.ops.size() == 6);
  std::vector<std::string> ops;
  for (const auto& o : e.ops) ops.push_back(o.op);
  CHECK(ops == std::vector<std::string>{"read", "write", "flush", "trim", "zero", "cache"});
  CHECK(e.requests == 0);
  CHECK(e.queueing);

  auto serve_one = [&](Op op, std::uint64_t off, std::uint32_t len, int fill, PathResult res,
                       int err) {
    auto r = make_req(h.rt, op, off, len, fill);
    h.engine->submit(*r);
    auto [p, i] = h.find(op, off);
    h.rt.t += 2ms;
    if (res == PathResult::Ok)
      p->serve(i);
    else
      p->complete(i, res, err);
    REQUIRE(r->calls == 1);
    return r->err;
  };
  CHECK(serve_one(Op::Read, kX, kLen, -1, PathResult::Ok, 0) == 0);
  CHECK(serve_one(Op::Read, kX, 2 * kLen, -1, PathResult::Ok, 0) == 0);
  CHECK(serve_one(Op::Write, kX, kLen, 3, PathResult::Ok, 0) == 0);
  CHECK(serve_one(Op::Write, kX, kLen, 3, PathResult::RemoteError, ENOSPC) == ENOSPC);
  CHECK(serve_one(Op::Flush, 0, 0, -1, PathResult::Ok, 0) == 0);
  CHECK(serve_one(Op::Zero, 0, kLen, -1, PathResult::Ok, 0) == 0);

  e = h.engine->show_stats();
  CHECK(e.requests == 6);
  CHECK(e.failed_requests == 1);
  auto rd = op_stats(e, "read");
  CHECK(rd.requests == 2);
  CHECK(rd.bytes == 3 * kLen);
  CHECK(rd.errors == 0);
  CHECK(rd.latency_p50_us > 1000);
  CHECK(rd.latency_p99_us > 1000);
  CHECK(rd.latency.count == rd.requests);  // one client-visible latency per request
  CHECK(rd.latency.sum_seconds == doctest::Approx(0.004));
  CHECK(op_stats(e, "write").latency.count == 2);  // the failed one too
  auto wr = op_stats(e, "write");
  CHECK(wr.requests == 2);
  CHECK(wr.bytes == 2 * kLen);
  CHECK(wr.errors == 1);
  CHECK(op_stats(e, "flush").requests == 1);
  CHECK(op_stats(e, "flush").bytes == 0);
  CHECK(op_stats(e, "zero").requests == 1);
  CHECK(op_stats(e, "trim").requests == 0);
  CHECK(op_stats(e, "cache").requests == 0);
  CHECK(e.queued_no_path == 0);
  CHECK(e.waiting == 0);

  // No path: requests queue.
  h.down("A");
  auto q1 = make_req(h.rt, Op::Read, kX, kLen);
  auto q2 = make_req(h.rt, Op::Write, kX, kLen, 1);
  h.engine->submit(*q1);
  h.engine->submit(*q2);
  e = h.engine->show_stats();
  CHECK(e.queued_no_path == 2);
  CHECK(e.waiting == 2);
  CHECK(e.queueing);
  h.rt.t += 30ms;  // less than the reconnect back-off
  REQUIRE(h.until_connect("A", 5s));
  h.bring_up("A");
  e = h.engine->show_stats();
  CHECK(e.waiting == 0);
  CHECK(e.queued_no_path == 2);
  CHECK(e.queued_no_path_ms >= 60);
  h.serve_all();
  CHECK(q1->err == 0);
  CHECK(q2->err == 0);
}

TEST_CASE("engine control: show events records state changes, bounded to control.events") {
  auto cfg = make_config();
  cfg.control.events = 6;
  Harness h(cfg);
  h.bring_up_all();
  INFO(dump_events(h));
  CHECK(has_event(h, "path A", "connecting -> probing", "connected"));
  CHECK(has_event(h, "path A", "probing -> active", "probe read succeeded"));
  CHECK(has_event(h, "path B", "probing -> active", "probe read succeeded"));
  CHECK(has_event(h, "engine", "group (none) -> default", ""));
  for (const auto& e : h.engine->show_events()) CHECK(e.unix_ms > 1600000000000);

  h.down("A", "connection reset by peer");
  CHECK(has_event(h, "path A", "active -> failed", "connection reset by peer"));
  for (int k = 0; k < 5; k++) {
    CHECK(h.engine->reinstate_path("A") == "");
    CHECK(h.engine->fail_path("A") == "");
  }
  auto ev = h.engine->show_events();
  INFO(dump_events(h));
  CHECK(ev.size() == 6);
  CHECK(ev.back().subject == "path A");
  CHECK(ev.back().what == "connecting -> failed");
  CHECK(ev.back().reason == "operator: fail");
  CHECK(ev[ev.size() - 2].what == "failed -> connecting");
  CHECK_FALSE(has_event(h, "path A", "probing -> active", ""));  // pushed out
}

// ---------------------------------------------------------------------------
// fail, reinstate, drain

TEST_CASE("engine control: fail path keeps it down until reinstate") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  const std::string pn = p->name(), qn = other(pn);
  const std::size_t connects = p->connect_times.size();

  CHECK(h.engine->fail_path(pn) == "");
  auto pi = *info(h, pn);
  CHECK(pi.state == "failed");
  CHECK(pi.reason == "operator: fail");
  CHECK(p->disconnects == 1);
  CHECK(has_event(h, "path " + pn, "active -> failed", "operator: fail"));
  // Its read moves to the other path.
  CHECK(r->calls == 0);
  auto [q, j] = h.find(Op::Read, kX);
  CHECK(q->name() == qn);
  q->fill(j, std::byte{9});
  q->complete(j);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(all_eq(r->data.get(), kLen, 9));
  CHECK(spread(h, 4)[qn] == 4);

  // No reconnect, however long it waits.
  h.advance(60s);
  CHECK(p->connect_times.size() == connects);
  CHECK(state_of(h, pn) == "failed");
  CHECK(h.engine->fail_path(pn) == "");  // failing it again is harmless
  h.advance(60s);
  CHECK(p->connect_times.size() == connects);

  // Reinstate reconnects at once; it serves after its probe.
  CHECK(h.engine->reinstate_path(pn) == "");
  REQUIRE(p->connect_times.size() == connects + 1);
  CHECK(p->connect_times.back() == h.rt.t);
  CHECK(state_of(h, pn) == "connecting");
  h.connected(pn);
  CHECK(state_of(h, pn) == "probing");
  CHECK(spread(h, 2)[qn] == 2);  // not before its probe
  h.p(pn).serve(*h.probe_of(pn));
  CHECK(state_of(h, pn) == "active");
  CHECK(spread(h, 4)[pn] >= 1);
}

TEST_CASE("engine control: fail path on a path its transport already failed stops its reconnects") {
  Harness h(make_config());
  h.bring_up_all();
  h.down("A");
  const std::size_t connects = h.p("A").connect_times.size();
  CHECK(h.engine->fail_path("A") == "");
  h.advance(60s);
  CHECK(h.p("A").connect_times.size() == connects);
  CHECK(state_of(h, "A") == "failed");
  CHECK(h.engine->reinstate_path("A") == "");
  CHECK(h.p("A").connect_times.size() == connects + 1);
}

TEST_CASE("engine control: unknown names and impossible actions get an error sentence") {
  Harness h(group_config(config::Failback::Immediate));
  h.bring_up("F");
  h.bring_up("S");
  for (auto e : {h.engine->fail_path("nope"), h.engine->reinstate_path("nope"),
                 h.engine->drain_path("nope"), h.engine->switch_group("nope")}) {
    CHECK_FALSE(e.empty());
    CHECK(contains(e, "nope"));
  }
  std::string e = h.engine->reinstate_path("F");
  CHECK(contains(e, "already active"));
  CHECK(state_of(h, "F") == "active");
  CHECK(h.engine->fail_path("S") == "");
  e = h.engine->drain_path("S");
  CHECK(contains(e, "S"));
  CHECK(contains(e, "failed"));
  CHECK(state_of(h, "S") == "failed");
  e = h.engine->switch_group("slow");
  CHECK(contains(e, "slow"));
  CHECK(contains(e, "no usable path"));
  CHECK(h.engine->active_group() == "fast");
  CHECK(h.engine->reinstate_path("S") == "");
  e = h.engine->reinstate_path("S");  // connecting: the probe reinstates it
  CHECK(contains(e, "connecting"));
}

TEST_CASE("engine control: drain path takes no new I/O and lets in-flight I/O finish") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  const std::string pn = p->name(), qn = other(pn);

  CHECK(h.engine->drain_path(pn) == "");
  auto pi = *info(h, pn);
  CHECK(pi.state == "draining");
  CHECK(pi.reason == "operator: drain");
  CHECK(pi.inflight == 1);
  CHECK(p->live(i));  // not abandoned
  CHECK(p->disconnects == 0);
  CHECK(spread(h, 6, 2 * kX)[qn] == 6);

  // The read in flight completes normally, from the draining path.
  p->fill(i, std::byte{0x44});
  p->complete(i);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(all_eq(r->data.get(), kLen, 0x44));
  CHECK(state_of(h, pn) == "draining");
  CHECK(info(h, pn)->inflight == 0);
  CHECK(h.engine->path_stats(pn)->failovers == 0);
  CHECK(contains(h.engine->drain_path(pn), "only an active path can drain"));

  // Reinstate: active again at once, on the same connection.
  CHECK(h.engine->reinstate_path(pn) == "");
  CHECK(state_of(h, pn) == "active");
  CHECK(p->connect_times.size() == 1);
  CHECK(p->disconnects == 0);
  CHECK(spread(h, 4, 2 * kX)[pn] >= 1);
}

// ---------------------------------------------------------------------------
// switch group, queueing, fail queued, reset stats

TEST_CASE("engine control: switch group moves I/O to the lower group; manual failback keeps it") {
  Harness h(group_config(config::Failback::Manual));
  h.bring_up("F");
  h.bring_up("S");
  CHECK(h.engine->active_group() == "fast");
  CHECK(read_path(h) == "F");
  const auto switches = h.engine->show_stats().group_switches;

  CHECK(h.engine->switch_group("slow") == "");
  CHECK(h.engine->active_group() == "slow");
  CHECK(group(h, "slow")->serving);
  CHECK_FALSE(group(h, "fast")->serving);
  CHECK(h.engine->show_stats().group_switches == switches + 1);
  CHECK(has_event(h, "engine", "group fast -> slow", "operator: switch-group"));
  CHECK(spread(h, 4)["S"] == 4);
  CHECK(state_of(h, "F") == "active");  // the fast path stays up, unused

  // The fast group's path fails and comes back: the operator's choice holds.
  h.down("F");
  REQUIRE(h.until_connect("F", 5s));
  h.bring_up("F");
  CHECK(state_of(h, "F") == "active");
  CHECK(h.engine->active_group() == "slow");
  h.advance(60s);
  CHECK(spread(h, 4)["S"] == 4);

  CHECK(h.engine->switch_group("slow") == "");  // already serving: nothing happens
  CHECK(h.engine->active_group() == "slow");
  CHECK(h.engine->switch_group("fast") == "");
  CHECK(spread(h, 2)["F"] == 2);
}

TEST_CASE("engine control: set queueing off fails queued requests at once, and new ones") {
  Harness h(make_config({"A"}));
  h.bring_up_all();
  h.down("A");
  auto r1 = make_req(h.rt, Op::Read, kX, kLen);
  auto r2 = make_req(h.rt, Op::Write, kX, kLen, 1);
  h.engine->submit(*r1);
  h.engine->submit(*r2);
  CHECK(r1->calls == 0);
  CHECK(h.engine->show_stats().waiting == 2);

  CHECK(h.engine->set_queueing(false) == "");
  REQUIRE(r1->calls == 1);
  CHECK(r1->err == EIO);
  REQUIRE(r2->calls == 1);
  CHECK(r2->err == EIO);
  auto e = h.engine->show_stats();
  CHECK_FALSE(e.queueing);
  CHECK(e.waiting == 0);
  CHECK(has_event(h, "engine", "queueing off", "operator"));

  auto r3 = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r3);
  REQUIRE(r3->calls == 1);
  CHECK(r3->err == EIO);

  CHECK(h.engine->set_queueing(true) == "");
  CHECK(h.engine->show_stats().queueing);
  auto r4 = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r4);
  CHECK(r4->calls == 0);
  CHECK(h.engine->show_stats().waiting == 1);
  REQUIRE(h.until_connect("A", 5s));
  h.bring_up("A");
  h.serve_all();
  REQUIRE(r4->calls == 1);
  CHECK(r4->err == 0);
}

TEST_CASE("engine control: fail queued fails only requests waiting for a path") {
  SUBCASE("no path") {
    Harness h(make_config({"A"}));
    h.bring_up_all();
    std::uint64_t n = 99;
    CHECK(h.engine->fail_queued(&n) == "");
    CHECK(n == 0);
    h.down("A");
    std::vector<std::unique_ptr<TestReq>> rs;
    for (int k = 0; k < 3; k++) {
      rs.push_back(make_req(h.rt, Op::Read, kX + static_cast<std::uint64_t>(k) * kLen, kLen));
      h.engine->submit(*rs.back());
    }
    CHECK(h.engine->fail_queued(&n) == "");
    CHECK(n == 3);
    for (auto& r : rs) {
      REQUIRE(r->calls == 1);
      CHECK(r->err == EIO);
    }
    CHECK(h.engine->show_stats().waiting == 0);
    CHECK(h.engine->show_stats().queueing);  // the policy stays
    auto r4 = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r4);
    CHECK(r4->calls == 0);
    CHECK(h.engine->fail_queued(&n) == "");
    CHECK(n == 1);
    CHECK(r4->err == EIO);
  }
  SUBCASE("a request waiting for a busy path is not failed") {
    auto cfg = make_config({"A"});
    cfg.paths[0].max_inflight = 1;
    Harness h(cfg);
    h.bring_up_all();
    auto r1 = make_req(h.rt, Op::Read, kX, kLen);
    auto r2 = make_req(h.rt, Op::Read, kX + kLen, kLen);
    h.engine->submit(*r1);
    h.engine->submit(*r2);
    REQUIRE(h.engine->waiting() == 1);
    std::uint64_t n = 99;
    CHECK(h.engine->fail_queued(&n) == "");
    CHECK(n == 0);
    CHECK(r2->calls == 0);
    h.serve_all();
    CHECK(r1->err == 0);
    CHECK(r2->calls == 1);
    CHECK(r2->err == 0);
  }
}

TEST_CASE("engine control: reset stats zeroes the counters") {
  Harness h(make_config());
  h.bring_up_all();
  for (int k = 0; k < 3; k++) {
    auto w = make_req(h.rt, Op::Write, kX, kLen, k);
    h.engine->submit(*w);
    h.rt.t += 1ms;
    h.serve_all();
    REQUIRE(w->calls == 1);
  }
  h.down("A");
  CHECK(h.engine->show_stats().requests == 3);

  CHECK(h.engine->reset_stats() == "");
  auto e = h.engine->show_stats();
  CHECK(e.requests == 0);
  CHECK(e.failed_requests == 0);
  CHECK(e.group_switches == 0);
  for (const auto& o : e.ops) {
    CHECK(o.requests == 0);
    CHECK(o.bytes == 0);
    CHECK(o.errors == 0);
    CHECK(o.latency_p50_us == 0);
    CHECK(o.latency.count == 0);
    CHECK(o.latency.sum_seconds == 0);
  }
  for (const auto& p : h.engine->show_paths()) {
    CHECK(p.requests == 0);
    CHECK(p.bytes == 0);
    CHECK(p.errors == 0);
    CHECK(p.failures == 0);
    CHECK(p.reinstatements == 0);
    CHECK(p.latency_p99_us == 0);
    CHECK(p.latency.count == 0);
  }
  CHECK(state_of(h, "A") == "failed");  // states are not counters
  CHECK(has_event(h, "engine", "reset-stats", "operator"));
  read_path(h);
  CHECK(h.engine->show_stats().requests == 1);
  CHECK(op_stats(h.engine->show_stats(), "read").requests == 1);
}

// ---------------------------------------------------------------------------
// apply(Config)

TEST_CASE("engine control: apply with dry run changes nothing and says what it would do") {
  Harness h(make_config());
  h.bring_up_all();
  const auto events = h.engine->show_events().size();
  auto next = make_config({"A", "C"});
  next.paths[0].weight = 3;
  std::string summary;
  CHECK(h.engine->apply(next, true, &summary) == "");
  CHECK(summary == "add C; remove B; change A; set paths.A.weight: 1 -> 3");
  CHECK(h.paths.count("C") == 0);
  CHECK(names(h) == std::vector<std::string>{"A", "B"});
  CHECK(state_of(h, "A") == "active");
  CHECK(state_of(h, "B") == "active");
  CHECK(h.p("B").disconnects == 0);
  CHECK(h.engine->show_events().size() == events);
  auto s = spread(h, 4);
  CHECK(s["A"] == 2);  // weights unchanged
  CHECK(s["B"] == 2);

  // The same without dry run does it.
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary == "add C; remove B; change A; set paths.A.weight: 1 -> 3");
  CHECK(h.paths.count("C") == 1);
  CHECK(names(h) == std::vector<std::string>{"A", "C"});
  CHECK(has_event(h, "engine", "reload", "add C; remove B; change A"));
}

TEST_CASE("engine control: apply adds a path, which serves after its probe") {
  auto cfg = make_config();
  cfg.selector.kind = config::SelectorKind::RoundRobin;
  Harness h(cfg);
  h.bring_up_all();
  auto next = cfg;
  next.paths.push_back(path_cfg("C"));
  std::string summary;
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary == "add C; remove none; change none");
  REQUIRE(h.paths.count("C") == 1);
  FakePath& c = h.p("C");
  CHECK(c.connect_pending);
  CHECK(c.connect_times.size() == 1);
  CHECK(c.uri() == "nbd://C");
  auto ci = *info(h, "C");
  CHECK(ci.state == "connecting");
  CHECK(ci.uri == "nbd://C");
  CHECK(ci.group == "default");
  CHECK(group(h, "default")->paths == std::vector<std::string>{"A", "B", "C"});
  CHECK(spread(h, 4)["C"] == 0);  // not before it is up

  h.connected("C");
  CHECK(state_of(h, "C") == "probing");
  h.p("C").serve(*h.probe_of("C"));
  CHECK(state_of(h, "C") == "active");
  auto s = spread(h, 6);
  CHECK(s["A"] == 2);
  CHECK(s["B"] == 2);
  CHECK(s["C"] == 2);
}

TEST_CASE("engine control: apply removes a path: it drains, then leaves") {
  Harness h(make_config({"A", "B", "C"}));
  h.bring_up_all();
  FakePath* b = &h.p("B");
  std::string summary;

  SUBCASE("in flight and dirty: leaves after its read completes and a flush") {
    auto w = in_flight_on(h, "B", Op::Write, 0);
    w.fp->serve(w.idx);  // acknowledged: B is dirty
    REQUIRE(w.req->calls == 1);
    auto r = in_flight_on(h, "B", Op::Read, kX);

    CHECK(h.engine->apply(make_config({"A", "C"}), false, &summary) == "");
    CHECK(summary == "add none; remove B; change none");
    auto bi = *info(h, "B");
    CHECK(bi.state == "draining");
    CHECK(bi.reason == "removed by reload");
    CHECK(bi.inflight == 1);
    CHECK(b->live(r.idx));
    CHECK(b->disconnects == 0);
    const std::size_t sent = b->sent.size();
    CHECK(spread(h, 6, 2 * kX)["B"] == 0);
    CHECK(b->sent.size() == sent);
    CHECK(contains(h.engine->fail_path("B"), "being removed"));
    CHECK(contains(h.engine->reinstate_path("B"), "being removed"));

    // Its read completes normally.
    b->fill(r.idx, std::byte{0x77});
    b->complete(r.idx);
    REQUIRE(r.req->calls == 1);
    CHECK(r.req->err == 0);
    CHECK(all_eq(r.req->data.get(), kLen, 0x77));
    CHECK(state_of(h, "B") == "draining");  // its write is not flushed yet

    // A flush reaches it; once flushed it leaves.
    auto f = make_req(h.rt, Op::Flush, 0, 0);
    h.engine->submit(*f);
    bool to_b = false;
    for (auto [fp, i] : h.find_all(Op::Flush, 0)) {
      to_b = to_b || fp == b;
      fp->complete(i);
    }
    CHECK(to_b);
    REQUIRE(f->calls == 1);
    CHECK(f->err == 0);
  }
  SUBCASE("idle and clean: leaves at once") {
    CHECK(h.engine->apply(make_config({"A", "C"}), false, &summary) == "");
  }
  SUBCASE("failed, with a reconnect pending: leaves at once and never reconnects") {
    h.down("B");
    const std::size_t connects = b->connect_times.size();
    CHECK(h.engine->apply(make_config({"A", "C"}), false, &summary) == "");
    h.advance(60s);
    CHECK(b->connect_times.size() == connects);
  }
  SUBCASE("drained by the operator first") {
    CHECK(h.engine->drain_path("B") == "");
    CHECK(h.engine->apply(make_config({"A", "C"}), false, &summary) == "");
  }

  INFO(dump_events(h));
  CHECK_FALSE(info(h, "B"));
  CHECK(names(h) == std::vector<std::string>{"A", "C"});
  CHECK(group(h, "default")->paths == std::vector<std::string>{"A", "C"});
  CHECK(h.engine->state("B") == PathState::Removed);
  CHECK(b->disconnects >= 1);
  CHECK_FALSE(b->up);
  CHECK(has_event(h, "path B", "draining -> removed", "removed by reload"));
  CHECK(contains(h.engine->fail_path("B"), "no path named 'B'"));
  const std::size_t sent = b->sent.size();
  CHECK(spread(h, 4, 3 * kX)["B"] == 0);
  CHECK(b->sent.size() == sent);
}

TEST_CASE(
    "engine control: apply keeps a path with the same name and URI and changes its settings") {
  auto cfg = make_config();
  cfg.selector.kind = config::SelectorKind::RoundRobin;
  Harness h(cfg);
  h.bring_up_all();
  FakePath* a = &h.p("A");
  FakePath* b = &h.p("B");
  auto r = in_flight_on(h, "A", Op::Read, kX);  // across the apply

  auto next = cfg;
  next.paths[0].weight = 3;
  std::string summary;
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary == "add none; remove none; change A; set paths.A.weight: 1 -> 3");
  CHECK(&h.p("A") == a);
  CHECK(a->connect_times.size() == 1);
  CHECK(a->disconnects == 0);
  CHECK(b->connect_times.size() == 1);
  CHECK(b->disconnects == 0);
  CHECK(state_of(h, "A") == "active");
  CHECK(info(h, "A")->inflight == 1);
  CHECK(a->live(r.idx));
  a->fill(r.idx, std::byte{5});
  a->complete(r.idx);
  REQUIRE(r.req->calls == 1);
  CHECK(r.req->err == 0);
  auto s = spread(h, 8, 2 * kX);
  CHECK(s["A"] == 6);
  CHECK(s["B"] == 2);

  // B moves to a new, lower group: I/O stays in default.
  auto next2 = next;
  next2.groups.push_back(config::Group{"spare", -10});
  next2.paths[1].group = "spare";
  CHECK(h.engine->apply(next2, false, &summary) == "");
  CHECK(summary ==
        "add none; remove none; change B; set paths.B.group: default -> spare, "
        "groups.spare.priority: -10 (new)");
  CHECK(info(h, "B")->group == "spare");
  CHECK(group(h, "default")->paths == std::vector<std::string>{"A"});
  CHECK(group(h, "spare")->paths == std::vector<std::string>{"B"});
  CHECK(group(h, "default")->serving);
  CHECK(spread(h, 4, 2 * kX)["A"] == 4);
  CHECK(b->disconnects == 0);
  CHECK(b->connect_times.size() == 1);
  // ... and it serves once A is gone.
  CHECK(h.engine->fail_path("A") == "");
  CHECK(group(h, "spare")->serving);
  CHECK(spread(h, 2, 2 * kX)["B"] == 2);
}

TEST_CASE(
    "engine control: apply with a new URI for a name removes the old path and adds a new one") {
  Harness h(make_config());
  h.bring_up_all();
  FakePath* oldb = &h.p("B");
  auto r = in_flight_on(h, "B", Op::Read, kX);

  auto next = make_config();
  next.paths[1].uri = "nbd://B2";
  std::string summary;
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary == "add B; remove B; change none");
  FakePath* newb = &h.p("B");
  REQUIRE(newb != oldb);
  CHECK(newb->uri() == "nbd://B2");
  CHECK(newb->connect_pending);
  auto ps = h.engine->show_paths();
  REQUIRE(ps.size() == 3);
  CHECK(ps[1].name == "B");
  CHECK(ps[1].uri == "nbd://B");
  CHECK(ps[1].state == "draining");
  CHECK(ps[2].name == "B");
  CHECK(ps[2].uri == "nbd://B2");
  CHECK(ps[2].state == "connecting");

  // The old connection's read completes normally; then it leaves.
  CHECK(oldb->live(r.idx));
  oldb->fill(r.idx, std::byte{6});
  oldb->complete(r.idx);
  REQUIRE(r.req->calls == 1);
  CHECK(r.req->err == 0);
  CHECK(all_eq(r.req->data.get(), kLen, 6));
  ps = h.engine->show_paths();
  REQUIRE(ps.size() == 2);
  CHECK(ps[1].uri == "nbd://B2");
  CHECK(oldb->disconnects == 1);

  h.bring_up("B");
  CHECK(state_of(h, "B") == "active");
  CHECK(spread(h, 4, 2 * kX)["B"] >= 1);
  CHECK(oldb->sent.size() == 2);  // its probe and the read
}

TEST_CASE("engine control: re-applying a config while a replaced path still drains adds nothing") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = in_flight_on(h, "B", Op::Read, kX);  // keeps the old B draining
  auto next = make_config();
  next.paths[1].uri = "nbd://B2";
  std::string summary;
  REQUIRE(h.engine->apply(next, false, &summary) == "");
  FakePath* newb = &h.p("B");

  // The same configuration again: nothing to do.
  CHECK(h.engine->apply(next, true, &summary) == "");
  CHECK(summary == "add none; remove none; change none");
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary == "add none; remove none; change none");
  CHECK(&h.p("B") == newb);  // no third connection for B
  CHECK(newb->connect_times.size() == 1);
  int b2 = 0;
  for (const auto& p : h.engine->show_paths()) b2 += p.uri == "nbd://B2";
  CHECK(b2 == 1);
  r.fp->complete(r.idx);
  CHECK(r.req->calls == 1);
}

TEST_CASE(
    "engine control: operator actions on a name whose replaced path still drains act on the new "
    "one") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = in_flight_on(h, "B", Op::Read, kX);  // keeps the old B draining
  auto next = make_config();
  next.paths[1].uri = "nbd://B2";
  std::string summary;
  REQUIRE(h.engine->apply(next, false, &summary) == "");
  FakePath* newb = &h.p("B");
  h.bring_up("B");
  CHECK(h.engine->fail_path("B") == "");
  CHECK(newb->disconnects == 1);
  int failed = 0;
  for (const auto& p : h.engine->show_paths()) failed += p.uri == "nbd://B2" && p.state == "failed";
  CHECK(failed == 1);
  CHECK(r.fp->live(r.idx));  // the old one just drains
  r.fp->complete(r.idx);
  CHECK(r.req->calls == 1);
}

TEST_CASE(
    "engine control: apply refuses a config that leaves no active path, and changes nothing") {
  Harness h(make_config());
  h.bring_up_all();
  CHECK(h.engine->fail_path("B") == "");
  const auto events = h.engine->show_events().size();
  std::string summary;

  auto next = make_config({"B", "C"});
  std::string e = h.engine->apply(next, false, &summary);
  CHECK(contains(e, "no path that serves I/O now would remain"));
  CHECK(summary == "add C; remove A; change none");
  CHECK(
      contains(h.engine->apply(next, true, &summary), "no path that serves I/O now would remain"));

  auto next2 = make_config();
  next2.paths[0].uri = "nbd://A2";  // a new URI is a new path: A would go
  CHECK(contains(h.engine->apply(next2, false, &summary),
                 "no path that serves I/O now would remain"));

  CHECK(h.paths.count("C") == 0);
  CHECK(names(h) == std::vector<std::string>{"A", "B"});
  CHECK(state_of(h, "A") == "active");
  CHECK(state_of(h, "B") == "failed");
  CHECK(h.p("A").disconnects == 0);
  CHECK(h.p("A").connect_times.size() == 1);
  CHECK(h.engine->show_events().size() == events);
  CHECK(read_path(h) == "A");
}

TEST_CASE("engine control: apply changes the selector, timeouts and no-path policy at once") {
  auto cfg = make_config();
  cfg.paths[1].throughput = 100;  // service-time: B wins every idle pick
  Harness h(cfg);
  h.bring_up_all();
  CHECK(spread(h, 4)["B"] == 4);

  auto next = cfg;
  next.selector.kind = config::SelectorKind::RoundRobin;
  next.timeouts.attempt = 300ms;
  std::string summary;
  CHECK(h.engine->apply(next, false, &summary) == "");
  CHECK(summary ==
        "add none; remove none; change none; set selector: service-time -> round-robin, "
        "timeouts.attempt: 1s -> 300ms");
  auto s = spread(h, 4);
  CHECK(s["A"] == 2);
  CHECK(s["B"] == 2);

  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  h.advance(299ms);
  CHECK(state_of(h, p->name()) == "active");
  h.advance(1ms);
  CHECK(state_of(h, p->name()) == "failed");
  CHECK(contains(info(h, p->name())->reason, "timed out after 300 ms"));
  h.serve_all();
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);

  auto next2 = next;
  next2.no_path.policy = config::NoPathPolicy::Fail;
  CHECK(h.engine->apply(next2, false, &summary) == "");
  CHECK_FALSE(h.engine->show_stats().queueing);
}

// Every group lists only paths whose own group is that group.
void check_group_members(Harness& h) {
  for (const auto& g : h.engine->show_groups())
    for (const auto& m : g.paths) {
      CAPTURE(g.name);
      CAPTURE(m);
      for (const auto& p : h.engine->show_paths())
        if (p.name == m) CHECK(p.group == g.name);
    }
}

TEST_CASE("engine control: apply removes a path together with its group") {
  Harness h(group_config(config::Failback::Immediate));
  h.bring_up("F");
  h.bring_up("S");
  std::string summary;

  SUBCASE("the path still drains while a new, higher group arrives") {
    CHECK(h.engine->switch_group("slow") == "");
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    auto [p, i] = h.find(Op::Read, kX);
    REQUIRE(p->name() == "S");
    auto next = group_config(config::Failback::Immediate);
    next.paths.pop_back();  // S
    next.paths.push_back(path_cfg("X"));
    next.paths.back().group = "extra";
    next.groups = {config::Group{"fast", 10}, config::Group{"extra", 20}};
    CHECK(h.engine->apply(next, false, &summary) == "");
    CHECK(summary ==
          "add X; remove S; change none; set groups.extra.priority: 20 (new), "
          "groups.slow.priority: 0 (gone)");
    CHECK(state_of(h, "S") == "draining");
    CHECK(info(h, "S")->group == "slow");
    check_group_members(h);  // S is not a member of fast, nor of extra
    CHECK(group(h, "fast")->paths == std::vector<std::string>{"F"});
    CHECK(h.engine->active_group() == "fast");
    p->serve(i);
    REQUIRE(r->calls == 1);
    CHECK(r->err == 0);
    CHECK_FALSE(info(h, "S"));
    h.bring_up("X");
    CHECK(h.engine->active_group() == "extra");
    CHECK(read_path(h) == "X");
    check_group_members(h);
  }
  SUBCASE("idle: it leaves at once") {
    // The draining path's group is gone: nothing may index groups_ with its
    // old group index (AddressSanitizer, or -D_GLIBCXX_ASSERTIONS, catch it).
    auto next = group_config(config::Failback::Immediate);
    next.paths.pop_back();  // S
    next.groups = {config::Group{"fast", 10}};
    CHECK(h.engine->apply(next, false, &summary) == "");
    CHECK(summary == "add none; remove S; change none; set groups.slow.priority: 0 (gone)");
    CHECK(names(h) == std::vector<std::string>{"F"});
    auto gs = h.engine->show_groups();
    REQUIRE(gs.size() == 1);
    CHECK(gs[0].name == "fast");
    CHECK(gs[0].paths == std::vector<std::string>{"F"});
    CHECK(read_path(h) == "F");
  }
}

TEST_CASE("engine control: 100 applies adding and removing a path while requests flow") {
  auto base = make_config();
  base.selector.kind = config::SelectorKind::RoundRobin;
  for (auto& p : base.paths) p.max_inflight = 4;
  auto with_c = base;
  with_c.paths.push_back(path_cfg("C"));
  with_c.paths.back().max_inflight = 4;

  Harness h(base);
  h.bring_up_all();
  std::vector<FakePath*> all;  // every FakePath ever made: the map keeps the newest per name
  auto note = [&] {
    for (auto& [n, fp] : h.paths)
      if (std::find(all.begin(), all.end(), fp) == all.end()) all.push_back(fp);
  };
  // A healthy world: connects succeed, commands on live connections are
  // served, and those left on retired ones end with the connection.
  auto serve = [&] {
    for (bool more = true; more;) {
      more = false;
      for (FakePath* fp : all) {
        if (fp->connect_pending) {
          fp->up = true;
          fp->connect_pending = false;
          h.listener->path_connected(*fp, h.caps);
          more = true;
        }
        for (std::size_t i = 0; i < fp->sent.size(); i++) {
          if (fp->sent[i].done) continue;
          if (fp->live(i))
            fp->serve(i);
          else
            fp->complete(i, PathResult::TransportDead, ECONNRESET);
          more = true;
        }
      }
    }
  };
  note();

  std::vector<std::unique_ptr<TestReq>> reqs;
  std::string summary;
  for (int it = 0; it < 100; it++) {
    CAPTURE(it);
    const std::uint64_t base_off = static_cast<std::uint64_t>(it % 16) * 16 * kLen;
    for (int k = 0; k < 4; k++) {
      const std::uint64_t off = base_off + static_cast<std::uint64_t>(2 * k) * kLen;
      reqs.push_back(make_req(h.rt, Op::Read, off, kLen));
      h.engine->submit(*reqs.back());
      reqs.push_back(make_req(h.rt, Op::Write, off + kLen, kLen, it & 0xff));
      h.engine->submit(*reqs.back());
    }
    config::Config next = it % 2 == 0 ? with_c : base;
    if (it % 4 == 0) next.paths[1].weight = 3;
    if (it % 8 == 0) next.selector.kind = config::SelectorKind::QueueLength;
    REQUIRE(h.engine->apply(next, false, &summary) == "");
    CHECK(contains(summary, it % 2 == 0 ? "add C" : "remove C"));
    if (it % 10 == 4) {  // removed again while it is still connecting
      REQUIRE(h.engine->apply(base, false, &summary) == "");
      CHECK(contains(summary, "remove C"));
      note();
      REQUIRE(h.engine->apply(with_c, false, &summary) == "");
      CHECK(contains(summary, "add C"));
    }
    note();
    h.rt.t += 1ms;
    serve();
    reqs.push_back(make_req(h.rt, Op::Flush, 0, 0));
    h.engine->submit(*reqs.back());
    serve();
    for (auto& r : reqs) {
      REQUIRE(r->calls == 1);
      CHECK(r->err == 0);
    }
    reqs.clear();
  }

  INFO(dump_events(h));
  CHECK(names(h) == std::vector<std::string>{"A", "B"});
  for (const auto& p : h.engine->show_paths()) {
    CHECK(p.state == "active");
    CHECK(p.inflight == 0);
  }
  auto e = h.engine->show_stats();
  CHECK(e.failed_requests == 0);
  CHECK(e.waiting == 0);
  CHECK(e.abandoned_pending == 0);
  std::size_t c_reads = 0, c_paths = 0;
  for (FakePath* fp : all)
    if (fp->name() == "C") {
      c_paths++;
      for (const auto& sent : fp->sent)
        c_reads += sent.cmd.op == Op::Read && sent.cmd.count == kLen;
      CHECK_FALSE(fp->up);
    }
  CHECK(c_paths == 60);
  CHECK(c_reads > 0);

  // No in-flight count leaked: the busy caps still allow 4 + 4.
  for (int k = 0; k < 9; k++) {
    reqs.push_back(make_req(h.rt, Op::Read, static_cast<std::uint64_t>(k) * kLen, kLen));
    h.engine->submit(*reqs.back());
  }
  CHECK(h.live_pending() == 8);
  CHECK(h.engine->waiting() == 1);
  serve();
  for (auto& r : reqs) {
    REQUIRE(r->calls == 1);
    CHECK(r->err == 0);
  }
}

// ---------------------------------------------------------------------------
// reload()

// Engine::reload with the file read inline (no read_config in the options):
// the answer comes before it returns.
std::string reload_now(Engine& e, bool dry_run, std::string* summary) {
  std::string err = "no answer";
  e.reload(dry_run, [&](const std::string& er, const std::string& su) {
    err = er;
    *summary = su;
  });
  return err;
}

constexpr const char* kYamlAB = R"(paths:
  - name: A
    uri: nbd://A
  - name: B
    uri: nbd://B
timeouts: { attempt: 1s, request: 10s, connect: 5s }
checker: { interval: 60m }
hedge: { enabled: false }  # as make_config
selector: service-time     # as make_config
)";

TEST_CASE("engine control: reload without a configuration file is an error") {
  auto cfg = make_config();
  cfg.source = "command line";
  Harness h(cfg);
  h.bring_up_all();
  std::string summary;
  CHECK(contains(reload_now(*h.engine, false, &summary), "config=FILE"));
  CHECK(contains(reload_now(*h.engine, true, &summary), "config=FILE"));
  CHECK(names(h) == std::vector<std::string>{"A", "B"});
}

TEST_CASE("engine control: reload re-reads the file") {
  TempFile f;
  f.write(kYamlAB);
  auto cfg = make_config();
  cfg.source = f.name;
  Harness h(cfg);
  h.bring_up_all();
  std::string summary;

  CHECK(reload_now(*h.engine, false, &summary) == "");
  CHECK(summary ==
        "add none; remove none; change none; set failover.reconnect-max: 800ms -> 5s, "
        "no-path.max-time: 5s -> 30s");

  f.write(R"(paths:
  - name: A
    uri: nbd://A
    weight: 2
  - name: C
    uri: nbd://C
selector: round-robin
timeouts: { attempt: 1s, request: 10s, connect: 5s }
checker: { interval: 60m }
hedge: { enabled: false }  # as make_config
)");
  CHECK(reload_now(*h.engine, true, &summary) == "");
  CHECK(summary ==
        "add C; remove B; change A; set paths.A.weight: 1 -> 2, selector: service-time -> "
        "round-robin");
  CHECK(h.paths.count("C") == 0);
  CHECK(names(h) == std::vector<std::string>{"A", "B"});

  CHECK(reload_now(*h.engine, false, &summary) == "");
  CHECK(summary ==
        "add C; remove B; change A; set paths.A.weight: 1 -> 2, selector: service-time -> "
        "round-robin");
  CHECK(names(h) == std::vector<std::string>{"A", "C"});
  h.bring_up("C");
  auto s = spread(h, 6);
  CHECK(s["A"] == 4);
  CHECK(s["C"] == 2);

  SUBCASE("invalid YAML: an error naming file:line:col, and the running config stays") {
    const auto before = h.engine->show_paths();
    const auto events = h.engine->show_events().size();
    for (const char* bad : {"paths:\n  - name: A\n    uri: nbd://A\n   - name: B\n",
                            "paths:\n  - name: A\n    uri: ftp://A\n",
                            "paths:\n  - name: A\n    uri: nbd://A\n    wieght: 3\n"}) {
      CAPTURE(bad);
      f.write(bad);
      std::string e = reload_now(*h.engine, false, &summary);
      CAPTURE(e);
      CHECK(std::regex_search(e, std::regex(f.name + ":[0-9]+:[0-9]+: ")));
      CHECK(contains(e, "running configuration stays"));
      CHECK_FALSE(reload_now(*h.engine, true, &summary).empty());
    }
    auto after = h.engine->show_paths();
    REQUIRE(after.size() == before.size());
    for (std::size_t k = 0; k < after.size(); k++) {
      CHECK(after[k].name == before[k].name);
      CHECK(after[k].uri == before[k].uri);
      CHECK(after[k].state == before[k].state);
    }
    CHECK(h.engine->show_events().size() == events);
    s = spread(h, 6);
    CHECK(s["A"] == 4);  // the weights stay too
  }
  SUBCASE("a file that is gone") {
    unlink(f.name.c_str());
    std::string e = reload_now(*h.engine, false, &summary);
    CHECK(contains(e, f.name));
    CHECK(names(h) == std::vector<std::string>{"A", "C"});
  }
}

TEST_CASE("engine control: reload applies only the finished configuration, when it arrives") {
  TempFile f;
  f.write(kYamlAB);
  auto cfg = make_config();
  cfg.source = f.name;
  std::vector<std::pair<std::string, std::function<void(config::LoadResult)>>> reads;
  Engine::Options opts;
  opts.read_config = [&](const std::string& file, std::function<void(config::LoadResult)> done) {
    reads.emplace_back(file, std::move(done));  // held, as a reader thread would
  };
  Harness h(cfg, opts);
  h.bring_up_all();
  f.write(R"(paths:
  - name: A
    uri: nbd://A
timeouts: { attempt: 1s, request: 10s, connect: 5s }
checker: { interval: 60m }
hedge: { enabled: false }  # as make_config
selector: service-time     # as make_config
)");
  std::string err = "no answer", summary;
  h.engine->reload(false, [&](const std::string& e, const std::string& s) {
    err = e;
    summary = s;
  });
  REQUIRE(reads.size() == 1);
  CHECK(reads[0].first == f.name);
  CHECK(err == "no answer");  // nothing applied yet: both paths still serve
  CHECK(names(h) == std::vector<std::string>{"A", "B"});
  auto s = spread(h, 4);
  CHECK(s["B"] == 2);
  reads[0].second(config::load_file(f.name));
  CHECK(err == "");
  CHECK(summary ==
        "add none; remove B; change none; set failover.reconnect-max: 800ms -> 5s, "
        "no-path.max-time: 5s -> 30s");
}

TEST_CASE("engine control: one outage is one failure, one error line and one folded event") {
  auto cfg = make_config();
  cfg.control.events = 8;
  Harness h(cfg);
  h.bring_up_all();
  h.down("A", "connection reset by peer");
  for (int k = 0; k < 20; k++) {  // reconnects that fail again
    REQUIRE(h.until_connect("A"));
    h.down("A", "connection refused");
  }
  INFO(dump_events(h));
  INFO(h.rt.dump_logs());
  const PathStats& st = *h.engine->path_stats("A");
  CHECK(st.failures == 1);
  CHECK(st.reconnects == 20);
  CHECK(h.rt.count_logs(LogLevel::Error, {"path A"}) == 1);
  CHECK(h.rt.count_logs(LogLevel::Error, {"path A: active -> failed: connection reset by peer"}) ==
        1);
  CHECK(h.rt.count_logs(LogLevel::Notice, {"path A: probing -> active"}) == 1);  // at start
  // The failure is still in the ring; the attempts are one entry.
  CHECK(has_event(h, "path A", "active -> failed", "connection reset by peer"));
  std::size_t folded = 0;
  for (const auto& e : h.engine->show_events())
    folded += e.subject == "path A" && e.what.starts_with("reconnecting");
  CHECK(folded == 1);
  // Back in service: the next failure is a new outage.
  REQUIRE(h.until_connect("A"));
  h.connected("A");
  h.p("A").serve(*h.probe_of("A"));
  CHECK(h.engine->usable("A"));
  CHECK(h.rt.count_logs(LogLevel::Notice, {"path A:", "-> active: reinstated"}) == 1);
  h.down("A", "connection reset by peer");
  CHECK(h.engine->path_stats("A")->failures == 2);
  CHECK(h.rt.count_logs(LogLevel::Error, {"path A"}) == 2);
}

}  // namespace
}  // namespace mp
