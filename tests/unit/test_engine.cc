// Unit tests for the multipath engine, driven by FakePaths and a fake clock (no threads, no
// sleeps).
#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/unit/fakes.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;

constexpr std::uint64_t kX = 64 * 1024;  // "block X"
constexpr std::uint32_t kLen = 4096;

long long ms(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

std::string other(const FakePath* p) {
  return p->name() == "A" ? "B" : "A";
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

// Writes `fill` to [off, off+kLen); the path executes and acknowledges it.
FakePath* write_via(Harness& h, std::uint64_t off, int fill) {
  auto w = make_req(h.rt, Op::Write, off, kLen, fill);
  h.engine->submit(*w);
  auto [fp, i] = h.find(Op::Write, off);
  fp->serve(i);
  REQUIRE(w->calls == 1);
  CHECK(w->err == 0);
  return fp;
}

// W1 (0x11) to X goes to one path, times out there and is acknowledged via
// the other. Returns where the abandoned attempt is.
struct Abandoned {
  FakePath* path;   // the failed path W1 is still in flight on
  std::size_t idx;  // W1's index in path->sent
  FakePath* other;  // the path that acknowledged W1's retry
};
Abandoned abandon_w1(Harness& h) {
  auto w1 = make_req(h.rt, Op::Write, kX, kLen, 0x11);
  h.engine->submit(*w1);
  auto [p, i] = h.find(Op::Write, kX);
  h.advance(1000ms);
  REQUIRE(h.state(p->name()) == PathState::Failed);
  auto [q, j] = h.find(Op::Write, kX);
  REQUIRE(q != p);
  q->serve(j);
  REQUIRE(w1->calls == 1);
  REQUIRE(w1->err == 0);
  return {p, i, q};
}

// ---------------------------------------------------------------------------
// Request state machine

TEST_CASE("engine: a read completes with the data its path returned") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  CHECK(r->calls == 0);
  auto [p, i] = h.find(Op::Read, kX);
  CHECK(p->sent[i].cmd.count == kLen);
  p->fill(i, std::byte{0x5a});
  p->complete(i);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  REQUIRE(r->data);
  CHECK(all_eq(r->data.get(), kLen, 0x5a));
  CHECK(h.state(p->name()) == PathState::Active);
  CHECK(h.engine->stats().requests == 1);
  CHECK(h.engine->stats().failed_requests == 0);
}

TEST_CASE("engine: an attempt timeout fails the path and the request succeeds elsewhere") {
  Harness h(make_config());
  h.bring_up_all();
  h.rt.logs.clear();
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  const std::string pn = p->name();

  h.advance(999ms);
  CHECK(h.state(pn) == PathState::Active);
  CHECK(p->disconnects == 0);
  h.advance(1ms);
  CHECK(h.state(pn) == PathState::Failed);
  CHECK(p->disconnects == 1);            // its connection was retired...
  CHECK(p->retired_connections() == 1);  // ...with the read still in flight on it
  CHECK(h.engine->path_stats(pn)->timeouts == 1);
  CHECK(r->calls == 0);

  auto [q, j] = h.find(Op::Read, kX);
  CHECK(q->name() == other(p));
  q->fill(j, std::byte{0x33});
  q->complete(j);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(all_eq(r->data.get(), kLen, 0x33));
  CHECK(h.state(q->name()) == PathState::Active);

  INFO(h.rt.dump_logs());
  CHECK(h.rt.count_logs(LogLevel::Error, {"path " + pn, "timed out"}) == 1);
  CHECK(h.rt.count_logs(LogLevel::Error, {"path " + pn}) == 1);  // logged once, nothing else loud
  CHECK(h.rt.count_logs(LogLevel::Error, {"path " + q->name()}) == 0);
}

TEST_CASE("engine: a transport error fails over without a client error") {
  Harness h(make_config());
  h.bring_up_all();
  auto w = make_req(h.rt, Op::Write, kX, kLen, 0x42);
  h.engine->submit(*w);
  auto [p, i] = h.find(Op::Write, kX);
  p->complete(i, PathResult::TransportDead, ECONNRESET);
  CHECK(h.state(p->name()) == PathState::Failed);
  CHECK(p->disconnects == 1);
  CHECK(w->calls == 0);
  auto [q, j] = h.find(Op::Write, kX);
  CHECK(q != p);
  CHECK(all_eq(q->sent[j].bytes.data(), kLen, 0x42));
  q->complete(j);
  REQUIRE(w->calls == 1);
  CHECK(w->err == 0);
  CHECK(h.engine->path_stats(p->name())->errors == 1);
  // A failed attempt is not an abandoned one: nothing to track.
  CHECK(h.engine->stale_writes().idle());
}

TEST_CASE("engine: server errors on a healthy connection") {
  SUBCASE("ENOSPC goes to the client; the path stays active") {
    Harness h(make_config());
    h.bring_up_all();
    auto w = make_req(h.rt, Op::Write, kX, kLen, 1);
    h.engine->submit(*w);
    auto [p, i] = h.find(Op::Write, kX);
    p->complete(i, PathResult::RemoteError, ENOSPC);
    REQUIRE(w->calls == 1);
    CHECK(w->err == ENOSPC);
    CHECK(h.state(p->name()) == PathState::Active);
    CHECK(p->disconnects == 0);
    CHECK(h.find_all(Op::Write, kX).empty());  // not retried
  }
  SUBCASE("EIO with eio=failover fails the path and retries elsewhere") {
    Harness h(make_config());
    h.bring_up_all();
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    auto [p, i] = h.find(Op::Read, kX);
    p->complete(i, PathResult::RemoteError, EIO);
    CHECK(h.state(p->name()) == PathState::Failed);
    CHECK(r->calls == 0);
    auto [q, j] = h.find(Op::Read, kX);
    CHECK(q != p);
    q->fill(j, std::byte{7});
    q->complete(j);
    REQUIRE(r->calls == 1);
    CHECK(r->err == 0);
    CHECK(all_eq(r->data.get(), kLen, 7));
  }
  SUBCASE("EIO with eio=return goes to the client; the path stays active") {
    auto cfg = make_config();
    cfg.failover.eio = config::EioPolicy::Return;
    Harness h(cfg);
    h.bring_up_all();
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    auto [p, i] = h.find(Op::Read, kX);
    p->complete(i, PathResult::RemoteError, EIO);
    REQUIRE(r->calls == 1);
    CHECK(r->err == EIO);
    CHECK(h.state(p->name()) == PathState::Active);
    CHECK(h.find_all(Op::Read, kX).empty());
  }
}

TEST_CASE("engine: the retry limit ends a request with EIO") {
  auto cfg = make_config({"A", "B", "C"});
  cfg.failover.max_retries = 1;
  Harness h(cfg);
  h.bring_up_all();
  auto w = make_req(h.rt, Op::Write, kX, kLen, 0x11);
  h.engine->submit(*w);
  auto [p1, i1] = h.find(Op::Write, kX);
  p1->complete(i1, PathResult::TransportDead, ECONNRESET);
  CHECK(w->calls == 0);
  auto [p2, i2] = h.find(Op::Write, kX);
  CHECK(p2 != p1);
  p2->complete(i2, PathResult::TransportDead, ECONNRESET);
  REQUIRE(w->calls == 1);
  CHECK(w->err == EIO);
  std::size_t writes = 0;
  for (auto& [n, fp] : h.paths) writes += fp->count(Op::Write);
  CHECK(writes == 2);  // the first attempt and one retry, though a third path works
  CHECK(h.find_all(Op::Write, kX).empty());
  CHECK(h.engine->stats().failed_requests == 1);
  CHECK(h.rt.count_logs(LogLevel::Error, {"write at 65536 failed with EIO", "retries limit"}) == 1);
}

TEST_CASE("engine: a request ends with EIO at its deadline") {
  auto cfg = make_config();
  cfg.timeouts.request = 1500ms;  // shorter than two attempts
  Harness h(cfg);
  h.bring_up_all();
  const auto t0 = h.rt.t;
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  h.advance(1000ms);
  CHECK(h.state(p->name()) == PathState::Failed);
  auto [q, j] = h.find(Op::Read, kX);
  CHECK(q != p);
  h.advance(499ms);
  CHECK(r->calls == 0);
  h.advance(1ms);
  REQUIRE(r->calls == 1);
  CHECK(r->err == EIO);
  CHECK(r->done_at == t0 + 1500ms);
  // The deadline is the request's, not the second path's fault.
  CHECK(h.state(q->name()) == PathState::Active);
  CHECK(h.rt.count_logs(LogLevel::Error, {"read at 65536 failed with EIO", "deadline"}) == 1);
  // Its late reply changes nothing.
  q->fill(j, std::byte{9});
  q->complete(j);
  CHECK(r->calls == 1);
  CHECK(r->err == EIO);
}

TEST_CASE("engine: a late reply to an abandoned read lands in its own buffer") {
  Harness h(make_config());
  h.bring_up_all();
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [p, i] = h.find(Op::Read, kX);
  h.advance(1000ms);
  auto [q, j] = h.find(Op::Read, kX);
  q->fill(j, std::byte{0x33});
  q->complete(j);
  REQUIRE(r->calls == 1);
  REQUIRE(r->err == 0);
  REQUIRE(all_eq(r->data.get(), kLen, 0x33));
  CHECK(r->data.get() != p->sent[i].cmd.data);
  // The hung server wakes up and writes garbage into the abandoned attempt's buffer.
  p->fill(i, std::byte{0xee});
  p->complete(i);
  CHECK(r->calls == 1);
  CHECK(all_eq(r->data.get(), kLen, 0x33));
}

// ---------------------------------------------------------------------------
// Path lifecycle

TEST_CASE("engine: a failed path reconnects with exponential back-off, probes, then serves") {
  auto cfg = make_config();
  cfg.failover.reconnect_max = 500ms;  // not a power-of-two multiple of the 100 ms minimum
  Harness h(cfg);                      // +-25% jitter
  h.bring_up_all();
  FakePath& a = h.p("A");
  h.down("A");
  CHECK(h.state("A") == PathState::Failed);
  const long long nominal[] = {100, 200, 400, 500, 500, 500, 500};
  for (long long nom : nominal) {
    const auto failed_at = h.rt.t;
    REQUIRE(h.until_connect("A", 5s));
    const long long d = ms(a.connect_times.back() - failed_at);
    CAPTURE(nom);
    CAPTURE(d);
    CHECK(d >= nom * 3 / 4);
    CHECK(d <= nom * 5 / 4);
    CHECK(h.state("A") == PathState::Connecting);
    h.down("A", "connection refused");
  }

  // A connection whose probe read fails is failed again.
  REQUIRE(h.until_connect("A", 5s));
  h.connected("A");
  CHECK(h.state("A") == PathState::Probing);
  auto pr = h.probe_of("A");
  REQUIRE(pr.has_value());
  a.complete(*pr, PathResult::RemoteError, EIO);
  CHECK(h.state("A") == PathState::Failed);

  // The next one is Probing until its probe read succeeds; no I/O meanwhile.
  REQUIRE(h.until_connect("A", 5s));
  h.connected("A");
  CHECK(h.state("A") == PathState::Probing);
  CHECK(read_path(h) == "B");
  pr = h.probe_of("A");
  REQUIRE(pr.has_value());
  a.serve(*pr);
  CHECK(h.state("A") == PathState::Active);
  CHECK(h.engine->path_stats("A")->reinstatements >= 1);

  // Reinstatement resets the back-off.
  const auto failed_at = h.rt.t;
  h.down("A");
  REQUIRE(h.until_connect("A", 5s));
  const long long d = ms(a.connect_times.back() - failed_at);
  CHECK(d >= 75);
  CHECK(d <= 125);
}

TEST_CASE("engine: a path whose size differs from the disk is refused") {
  Harness h(make_config());
  h.bring_up("B");
  PathCaps bad = h.caps;
  bad.size = 2u << 20;
  h.connected("A", bad);
  CHECK(h.state("A") == PathState::Failed);
  CHECK(h.p("A").sent.empty());  // not even probed
  INFO(h.rt.dump_logs());
  CHECK(h.rt.count_logs(LogLevel::Debug, {"path A", "2097152", "1048576"}) +
            h.rt.count_logs(LogLevel::Error, {"path A", "2097152", "1048576"}) >=
        1);
  CHECK(read_path(h) == "B");

  // It is tried again; with the right size it serves.
  REQUIRE(h.until_connect("A", 10s));
  h.bring_up("A");
  CHECK(h.state("A") == PathState::Active);

  // A reconnect that comes back with another size is refused again.
  h.down("A");
  REQUIRE(h.until_connect("A", 10s));
  bad.size = 4096;
  h.connected("A", bad);
  CHECK(h.state("A") == PathState::Failed);
  CHECK(h.rt.count_logs(LogLevel::Debug, {"path A", "size 4096", "1048576"}) +
            h.rt.count_logs(LogLevel::Error, {"path A", "size 4096", "1048576"}) >=
        1);
}

TEST_CASE("engine: an NBD path that reconnects with another export description is refused") {
  PathCaps disk = default_caps();
  disk.has_export_name = true;
  disk.has_description = true;
  disk.description = "disk-1";
  Harness h(make_config(), Engine::Options{}, disk);
  h.bring_up_all();
  // A's server is replaced by another disk of the same size.
  h.down("A");
  REQUIRE(h.until_connect("A", 10s));
  PathCaps other = h.caps;
  other.description = "disk-2";
  h.connected("A", other);
  CHECK(h.state("A") == PathState::Failed);
  CHECK(!h.probe_of("A"));  // not probed
  INFO(h.rt.dump_logs());
  CHECK(h.rt.count_logs(LogLevel::Error, {"path A", "'disk-2'", "'disk-1'"}) == 1);
  // One that reports none, where the disk has one, is refused too.
  REQUIRE(h.until_connect("A", 10s));
  PathCaps none = h.caps;
  none.has_description = false;
  none.description.clear();
  h.connected("A", none);
  CHECK(h.state("A") == PathState::Failed);
  CHECK(h.rt.count_logs(LogLevel::Error, {"path A", "description none", "'disk-1'"}) == 1);
  CHECK(read_path(h) == "B");
  // The right disk again: reinstated.
  REQUIRE(h.until_connect("A", 10s));
  h.bring_up("A");
  CHECK(h.state("A") == PathState::Active);
}

TEST_CASE("engine: without a description at start-up, the first NBD path to connect names it") {
  Harness h(make_config({"A", "B", "C"}));  // no NBD path answered at start-up, none pinned
  PathCaps a = h.caps;
  a.has_export_name = true;
  a.has_description = true;
  a.description = "disk-1";
  h.connected("A", a);
  h.p("A").serve(*h.probe_of("A"));
  CHECK(h.state("A") == PathState::Active);
  PathCaps b = a;
  b.description = "disk-2";
  h.connected("B", b);
  CHECK(h.state("B") == PathState::Failed);
  REQUIRE(h.until_connect("B", 10s));
  h.connected("B", a);  // the same description: accepted
  CHECK(h.state("B") == PathState::Probing);
  h.connected("C", h.caps);  // not an NBD path: no description to compare
  CHECK(h.state("C") == PathState::Probing);
}

TEST_CASE("engine: a refused path asks for a wake-up for its reconnect") {
  Harness h(make_config({"A"}));
  const auto refused_at = h.rt.t;
  PathCaps bad = h.caps;
  bad.size = 2u << 20;
  h.connected("A", bad);
  REQUIRE(h.state("A") == PathState::Failed);
  // The reconnect is due reconnect_min (+-25%) from now: the loop must be
  // woken by then, not at the cancelled connect timeout's time.
  REQUIRE(h.rt.wake.has_value());
  CHECK(*h.rt.wake <= refused_at + 125ms);
  h.advance(1s);
  REQUIRE(h.p("A").connect_times.size() >= 2);
  CHECK(ms(h.p("A").connect_times[1] - refused_at) <= 125);
}

TEST_CASE("engine: the checker probes idle active paths and fails one whose probe times out") {
  auto cfg = make_config();
  cfg.checker.interval = 1000ms;
  Harness h(cfg);
  h.bring_up_all();
  h.advance(500ms);
  const std::string busy = read_path(h);  // I/O at 500 ms: not idle at the 1 s tick
  const std::string idle = busy == "A" ? "B" : "A";
  h.advance(500ms);
  auto pr = h.probe_of(idle);
  REQUIRE(pr.has_value());
  CHECK_FALSE(h.probe_of(busy).has_value());
  CHECK(h.engine->path_stats(idle)->probes == 2);  // the first probe, and the checker's
  CHECK(h.engine->path_stats(busy)->probes == 1);

  h.advance(999ms);
  CHECK(h.state(idle) == PathState::Active);
  h.advance(1ms);
  CHECK(h.state(idle) == PathState::Failed);
  INFO(h.rt.dump_logs());
  CHECK(h.rt.count_logs(LogLevel::Error, {"path " + idle, "probe timed out"}) == 1);

  // By now the other path is idle too; its probe succeeds and it stays.
  pr = h.probe_of(busy);
  REQUIRE(pr.has_value());
  h.p(busy).serve(*pr);
  CHECK(h.state(busy) == PathState::Active);
}

// ---------------------------------------------------------------------------
// No usable path

TEST_CASE("engine: no-path policy fail fails at once") {
  auto cfg = make_config({"A"});
  cfg.no_path.policy = config::NoPathPolicy::Fail;
  Harness h(cfg);
  h.bring_up_all();
  h.down("A");
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  REQUIRE(r->calls == 1);
  CHECK(r->err == EIO);
  CHECK(h.engine->waiting() == 0);
  CHECK(h.engine->active_group().empty());
}

TEST_CASE("engine: no-path policy queue") {
  auto cfg = make_config({"A"});
  cfg.no_path.policy = config::NoPathPolicy::Queue;
  cfg.no_path.max_requests = 2;
  Harness h(cfg);
  h.bring_up_all();
  h.down("A");

  SUBCASE("a queued request is dispatched when a path is reinstated") {
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    CHECK(r->calls == 0);
    CHECK(h.engine->waiting() == 1);
    REQUIRE(h.until_connect("A", 5s));
    h.connected("A");
    CHECK(h.find_all(Op::Read, kX).empty());  // not while only probing
    h.p("A").serve(*h.probe_of("A"));
    CHECK(h.engine->waiting() == 0);
    auto [p, i] = h.find(Op::Read, kX);
    p->fill(i, std::byte{3});
    p->complete(i);
    REQUIRE(r->calls == 1);
    CHECK(r->err == 0);
    CHECK(all_eq(r->data.get(), kLen, 3));
    CHECK(h.engine->stats().queued_no_path == 1);
  }
  SUBCASE("it fails with EIO after max_time when no path returns") {
    const auto t1 = h.rt.t;
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    h.advance(4999ms);
    CHECK(r->calls == 0);
    h.advance(1ms);
    REQUIRE(r->calls == 1);
    CHECK(r->err == EIO);
    CHECK(r->done_at == t1 + 5000ms);
    CHECK(h.engine->waiting() == 0);
  }
  SUBCASE("beyond max_requests a request fails at once") {
    auto r1 = make_req(h.rt, Op::Read, kX, kLen);
    auto r2 = make_req(h.rt, Op::Read, kX + kLen, kLen);
    auto r3 = make_req(h.rt, Op::Read, kX + 2 * kLen, kLen);
    h.engine->submit(*r1);
    h.engine->submit(*r2);
    h.engine->submit(*r3);
    CHECK(r1->calls == 0);
    CHECK(r2->calls == 0);
    REQUIRE(r3->calls == 1);
    CHECK(r3->err == EIO);
    CHECK(h.engine->waiting() == 2);
    REQUIRE(h.until_connect("A", 5s));
    h.bring_up("A");
    CHECK(h.engine->waiting() == 0);
    CHECK(h.find_all(Op::Read, kX).size() == 1);
    CHECK(h.find_all(Op::Read, kX + kLen).size() == 1);
    CHECK(h.find_all(Op::Read, kX + 2 * kLen).empty());
  }
}

TEST_CASE("engine: busy backpressure holds a request until the path has room") {
  auto cfg = make_config({"A"});
  cfg.paths[0].max_inflight = 1;
  Harness h(cfg);
  h.bring_up_all();
  auto r1 = make_req(h.rt, Op::Read, kX, kLen);
  auto r2 = make_req(h.rt, Op::Read, kX + kLen, kLen);
  h.engine->submit(*r1);
  h.engine->submit(*r2);
  CHECK(h.engine->waiting() == 1);
  CHECK(h.find_all(Op::Read, kX + kLen).empty());
  CHECK(h.live_pending() == 1);
  auto [p, i] = h.find(Op::Read, kX);
  p->fill(i, std::byte{1});
  p->complete(i);
  CHECK(r1->calls == 1);
  CHECK(h.engine->waiting() == 0);
  auto [q, j] = h.find(Op::Read, kX + kLen);
  CHECK(q == p);
  q->fill(j, std::byte{2});
  q->complete(j);
  REQUIRE(r2->calls == 1);
  CHECK(r2->err == 0);
  CHECK(all_eq(r2->data.get(), kLen, 2));
}

// ---------------------------------------------------------------------------
// Groups

config::Config group_config(config::Failback fb, milliseconds delay = 0ms) {
  auto c = make_config({"F", "S"});
  c.groups = {config::Group{"slow", 0}, config::Group{"fast", 10}};
  c.paths[0].group = "fast";
  c.paths[1].group = "slow";
  c.failover.failback = fb;
  c.failover.failback_delay = delay;
  return c;
}

// Both up (fast first), fast's path fails, I/O moves to slow, fast's path is
// reinstated.
void fail_and_reinstate_fast(Harness& h) {
  h.bring_up("F");
  h.bring_up("S");
  CHECK(h.engine->active_group() == "fast");
  CHECK(read_path(h) == "F");
  h.down("F");
  CHECK(h.engine->active_group() == "slow");
  CHECK(read_path(h) == "S");
  REQUIRE(h.until_connect("F", 5s));
  h.bring_up("F");
  REQUIRE(h.state("F") == PathState::Active);
}

TEST_CASE("engine: path groups fail over and fail back") {
  SUBCASE("failback immediate") {
    Harness h(group_config(config::Failback::Immediate));
    fail_and_reinstate_fast(h);
    CHECK(h.engine->active_group() == "fast");
    CHECK(read_path(h) == "F");
    CHECK(h.engine->stats().group_switches >= 3);
  }
  SUBCASE("failback manual") {
    Harness h(group_config(config::Failback::Manual));
    fail_and_reinstate_fast(h);
    CHECK(h.engine->active_group() == "slow");
    CHECK(read_path(h) == "S");
    h.advance(60s);
    CHECK(read_path(h) == "S");
  }
  SUBCASE("failback delayed 5s") {
    Harness h(group_config(config::Failback::Delayed, 5000ms));
    fail_and_reinstate_fast(h);
    CHECK(h.engine->active_group() == "slow");
    CHECK(read_path(h) == "S");
    h.advance(4999ms);
    CHECK(read_path(h) == "S");
    h.advance(1ms);
    CHECK(h.engine->active_group() == "fast");
    CHECK(read_path(h) == "F");
  }
}

TEST_CASE("engine: with manual failback I/O still starts on the highest-priority group") {
  // The slow group's path happens to finish its probe first at start-up.
  Harness h(group_config(config::Failback::Manual));
  h.bring_up("S");
  h.bring_up("F");
  CHECK(h.engine->active_group() == "fast");
  CHECK(read_path(h) == "F");
}

TEST_CASE(
    "engine: start-up election: the standby answering first serves only until the primary is up") {
  SUBCASE("within the connect window: the primary takes over at once, despite failback: 5s") {
    Harness h(group_config(config::Failback::Delayed, 5000ms));
    h.bring_up("S");  // the standby's probe answered first
    CHECK(h.engine->active_group() == "slow");
    h.advance(3ms);
    h.bring_up("F");
    CHECK(h.engine->active_group() == "fast");
    CHECK(read_path(h) == "F");
    CHECK(h.rt.count_logs(LogLevel::Notice, {"group: slow -> fast: start-up election"}) == 1);
  }
  SUBCASE("after the connect window: an ordinary failback, delayed") {
    auto cfg = group_config(config::Failback::Delayed, 5000ms);
    Harness h(cfg);
    h.bring_up("S");
    h.advance(cfg.timeouts.connect + 1ms);
    if (h.state("F") != PathState::Connecting) REQUIRE(h.until_connect("F", 10s));
    h.bring_up("F");
    CHECK(h.engine->active_group() == "slow");
    h.advance(5000ms);
    CHECK(h.engine->active_group() == "fast");
  }
}

// ---------------------------------------------------------------------------
// Flush

// Two concurrent writes, which land on different paths; both acknowledged.
void dirty_both(Harness& h) {
  auto w1 = make_req(h.rt, Op::Write, kX, kLen, 1);
  auto w2 = make_req(h.rt, Op::Write, kX + kLen, kLen, 2);
  h.engine->submit(*w1);
  h.engine->submit(*w2);
  auto [p1, i1] = h.find(Op::Write, kX);
  auto [p2, i2] = h.find(Op::Write, kX + kLen);
  REQUIRE(p1 != p2);
  p1->serve(i1);
  p2->serve(i2);
  REQUIRE(w1->calls == 1);
  REQUIRE(w2->calls == 1);
}

TEST_CASE("engine: a flush goes to every dirty path and completes when all did") {
  Harness h(make_config());
  h.bring_up_all();
  dirty_both(h);
  auto f = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f);
  auto flushes = h.find_all(Op::Flush, 0);
  REQUIRE(flushes.size() == 2);
  CHECK(flushes[0].first != flushes[1].first);
  flushes[0].first->complete(flushes[0].second);
  CHECK(f->calls == 0);
  flushes[1].first->complete(flushes[1].second);
  REQUIRE(f->calls == 1);
  CHECK(f->err == 0);

  // Nothing written since: one path is enough.
  auto f2 = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f2);
  auto again = h.find_all(Op::Flush, 0);
  REQUIRE(again.size() == 1);
  again[0].first->complete(again[0].second);
  REQUIRE(f2->calls == 1);
  CHECK(f2->err == 0);
}

TEST_CASE("engine: a flush over a dirty path that died") {
  SUBCASE("not coherent: it waits for the path, and is sent to it when it returns") {
    Harness h(make_config());
    h.bring_up_all();
    FakePath* p = write_via(h, kX, 1);
    h.down(p->name());
    auto f = make_req(h.rt, Op::Flush, 0, 0);
    h.engine->submit(*f);
    CHECK(f->calls == 0);
    CHECK(h.engine->waiting() == 1);
    CHECK(h.find_all(Op::Flush, 0).empty());
    REQUIRE(h.until_connect(p->name(), 5s));
    h.bring_up(p->name());
    auto fl = h.find_all(Op::Flush, 0);
    REQUIRE(fl.size() == 1);  // the other path holds nothing unflushed
    CHECK(fl[0].first == p);
    fl[0].first->complete(fl[0].second);
    REQUIRE(f->calls == 1);
    CHECK(f->err == 0);
    CHECK(h.engine->waiting() == 0);
  }
  SUBCASE("not coherent: it fails with EIO at its deadline if the path never returns") {
    Harness h(make_config());
    h.bring_up_all();
    FakePath* p = write_via(h, kX, 1);
    h.down(p->name());
    const auto t1 = h.rt.t;
    auto f = make_req(h.rt, Op::Flush, 0, 0);
    h.engine->submit(*f);
    h.advance(9999ms);
    CHECK(f->calls == 0);
    h.advance(1ms);
    REQUIRE(f->calls == 1);
    CHECK(f->err == EIO);
    CHECK(f->done_at == t1 + 10000ms);
    CHECK(h.find_all(Op::Flush, 0).empty());
  }
  SUBCASE("coherent (shared cache): it goes to the live path") {
    auto cfg = make_config();
    cfg.durability.shared_cache = true;
    Harness h(cfg);
    h.bring_up_all();
    FakePath* p = write_via(h, kX, 1);
    h.down(p->name());
    auto f = make_req(h.rt, Op::Flush, 0, 0);
    h.engine->submit(*f);
    CHECK(h.engine->waiting() == 0);
    auto [q, j] = h.find(Op::Flush, 0);
    CHECK(q != p);
    q->complete(j);
    REQUIRE(f->calls == 1);
    CHECK(f->err == 0);
  }
}

TEST_CASE("engine: a flush whose dirty path refuses the command does not succeed without it") {
  Harness h(make_config());  // not coherent
  h.bring_up_all();
  dirty_both(h);
  // A's connection is dying: submit() fails before the engine hears path_down.
  h.p("A").refuse = true;
  auto f = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f);
  CHECK(h.state("A") == PathState::Failed);
  CHECK(h.engine->waiting() <= 1);

  SUBCASE("the flush on B succeeds") {
    for (auto [fp, k] : h.find_all(Op::Flush, 0)) fp->complete(k);
    // A's acknowledged writes were never flushed: success now would be a lie.
    CHECK_FALSE((f->calls == 1 && f->err == 0));
    h.p("A").refuse = false;
    REQUIRE(h.until_connect("A", 5s));
    h.bring_up("A");
    for (auto [fp, k] : h.find_all(Op::Flush, 0)) fp->complete(k);
    CHECK(f->calls == 1);
    CHECK(f->err == 0);
    CHECK(h.engine->waiting() == 0);
  }
  SUBCASE("the flush on B times out too") {
    h.advance(1000ms);
    CHECK(h.engine->waiting() <= 1);
    h.advance(10s);
    CHECK(f->calls == 1);  // completed exactly once
    CHECK(f->err == EIO);
    CHECK(h.engine->waiting() == 0);
  }
}

// ---------------------------------------------------------------------------
// Stale writes

TEST_CASE("engine: a late abandoned write is undone by re-applying the newest data") {
  Harness h(make_config());
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  const StaleWriteTracker& tr = h.engine->stale_writes();
  CHECK(tr.pending() == 1);
  CHECK(tr.counters().abandoned == 1);
  CHECK(tr.shadow_bytes() == kLen);

  CHECK(write_via(h, kX, 0x22) == q);

  // The path returns older bytes (W1's); the read still sees W2.
  auto rd = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*rd);
  auto [rp, k] = h.find(Op::Read, kX);
  CHECK(rp == q);
  rp->fill(k, std::byte{0x11});
  rp->complete(k);
  REQUIRE(rd->calls == 1);
  CHECK(rd->err == 0);
  CHECK(all_eq(rd->data.get(), kLen, 0x22));

  // The hung server wakes up: it applies W1 over W2, then replies.
  p->serve(i);
  CHECK(all_eq(h.disk.data() + kX, kLen, 0x11));
  CHECK(tr.counters().resolved_late == 1);
  CHECK(tr.pending() == 0);
  auto [ap, m] = h.find(Op::Write, kX);  // the re-apply
  CHECK(ap == q);
  CHECK(ap->sent[m].cmd.count == kLen);
  CHECK(all_eq(ap->sent[m].bytes.data(), kLen, 0x22));
  CHECK_FALSE(tr.idle());
  ap->serve(m);
  CHECK(tr.idle());
  CHECK(tr.shadow_bytes() == 0);
  CHECK(tr.counters().reapplied >= 1);
  CHECK(all_eq(h.disk.data() + kX, kLen, 0x22));
  CHECK(h.engine->stats().failed_requests == 0);
}

TEST_CASE("engine: an abandoned write resolved by its connection's death is re-applied too") {
  Harness h(make_config());
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  write_via(h, kX, 0x22);
  // The server applied W1 and then the connection died before the reply.
  p->execute(i);
  p->complete(i, PathResult::TransportDead, ECONNRESET);
  const StaleWriteTracker& tr = h.engine->stale_writes();
  CHECK(tr.counters().resolved_by_death == 1);
  CHECK(tr.counters().resolved_late == 0);
  auto [ap, m] = h.find(Op::Write, kX);
  CHECK(all_eq(ap->sent[m].bytes.data(), kLen, 0x22));
  ap->serve(m);
  CHECK(tr.idle());
  CHECK(all_eq(h.disk.data() + kX, kLen, 0x22));
}

TEST_CASE("engine: a path with an unresolved abandoned write is held after its probe") {
  Harness h(make_config());
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  const std::string pn = p->name();
  REQUIRE(h.until_connect(pn, 5s));
  h.connected(pn);
  CHECK(h.state(pn) == PathState::Probing);
  h.p(pn).serve(*h.probe_of(pn));
  CHECK(h.state(pn) == PathState::Held);
  // No I/O goes to a held path.
  CHECK(read_path(h) == q->name());
  CHECK(read_path(h) == q->name());
  // W1's late reply arrives: the path serves again.
  p->serve(i);
  CHECK(h.state(pn) == PathState::Active);
  for (auto [fp, k] : h.find_all(Op::Write, kX)) fp->serve(k);  // the re-apply
  CHECK(h.engine->stale_writes().idle());
}

TEST_CASE("engine: without stale-write tracking a late write corrupts reads (unsafe variant)") {
  Harness h(make_config(), Engine::Options{.track_stale_writes = false, .read_config = {}});
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  const StaleWriteTracker& tr = h.engine->stale_writes();
  CHECK(tr.idle());
  CHECK(tr.counters().abandoned == 0);
  write_via(h, kX, 0x22);
  // No hold: the old path serves again at once although W1 is unresolved.
  REQUIRE(h.until_connect(p->name(), 5s));
  h.bring_up(p->name());
  CHECK(h.state(p->name()) == PathState::Active);
  // W1 lands late, over W2. Nothing writes W2 back.
  p->serve(i);
  CHECK(h.find_all(Op::Write, kX).empty());
  // A read now returns W1's bytes: the acknowledged W2 is lost.
  auto rd = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*rd);
  auto [rp, k] = h.find(Op::Read, kX);
  rp->serve(k);
  REQUIRE(rd->calls == 1);
  CHECK(rd->err == 0);
  CHECK(all_eq(rd->data.get(), kLen, 0x11));
}

TEST_CASE("engine: an abandoned write over the memory bound holds newer writes to its range") {
  auto cfg = make_config();
  cfg.stale_writes.max_bytes = 1024;  // smaller than the 4 KiB write
  Harness h(cfg);
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);  // its own retry is not held
  const StaleWriteTracker& tr = h.engine->stale_writes();
  CHECK(tr.counters().unshadowed == 1);
  CHECK(tr.shadow_bytes() == 0);
  CHECK(tr.pending() == 1);

  const auto t1 = h.rt.t;
  auto w2 = make_req(h.rt, Op::Write, kX + 1024, 1024, 0x22);
  h.engine->submit(*w2);
  CHECK(w2->calls == 0);
  CHECK(h.engine->waiting() == 1);
  CHECK(h.find_all(Op::Write, kX + 1024).empty());
  // Writes elsewhere and reads are not held.
  CHECK(write_via(h, kX + 2 * kLen, 0x33) == q);
  CHECK(read_path(h, kX) == q->name());

  SUBCASE("until the abandoned write resolves") {
    p->complete(i);
    CHECK(h.engine->waiting() == 0);
    auto [wp, k] = h.find(Op::Write, kX + 1024);
    CHECK(all_eq(wp->sent[k].bytes.data(), 1024, 0x22));
    wp->serve(k);
    REQUIRE(w2->calls == 1);
    CHECK(w2->err == 0);
  }
  SUBCASE("or fails with EIO at its deadline") {
    h.advance(9999ms);
    CHECK(w2->calls == 0);
    h.advance(1ms);
    REQUIRE(w2->calls == 1);
    CHECK(w2->err == EIO);
    CHECK(w2->done_at == t1 + 10000ms);
    CHECK(h.engine->waiting() == 0);
  }
}

TEST_CASE("engine: a read in flight while a re-apply completes still sees the newest data") {
  Harness h(make_config());
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  write_via(h, kX, 0x22);                        // W2 acknowledged
  p->serve(i);                                   // W1 lands late over W2 and replies
  auto [ap, m] = h.find(Op::Write, kX);          // the re-apply of W2, in flight
  auto rd = make_req(h.rt, Op::Read, kX, kLen);  // issued after W2 was acknowledged
  h.engine->submit(*rd);
  auto reads = h.find_all(Op::Read, kX);
  if (reads.size() == 1) {
    auto [rp, k] = reads[0];
    rp->execute(k);  // the server reads W1's stale bytes now...
    ap->serve(m);    // ...then applies the re-apply, whose reply comes first
    rp->complete(k);
  } else {
    ap->serve(m);
    h.serve_all();
  }
  REQUIRE(rd->calls == 1);
  CHECK(rd->err == 0);
  CHECK(all_eq(rd->data.get(), kLen, 0x22));
}

TEST_CASE("engine: a client write racing a re-apply is not undone by it") {
  Harness h(make_config());
  h.bring_up_all();
  auto [p, i, q] = abandon_w1(h);
  write_via(h, kX, 0x22);                // W2 acknowledged
  p->serve(i);                           // W1 lands late over W2 and replies
  auto [ap, m] = h.find(Op::Write, kX);  // the re-apply of W2, in flight
  auto w3 = make_req(h.rt, Op::Write, kX, kLen, 0x33);
  h.engine->submit(*w3);
  std::pair<FakePath*, std::size_t> w3cmd{nullptr, 0};
  for (auto c : h.find_all(Op::Write, kX))
    if (all_eq(c.first->sent[c.second].bytes.data(), kLen, 0x33)) w3cmd = c;
  if (w3cmd.first) {
    w3cmd.first->execute(w3cmd.second);  // the server applies W3...
    ap->serve(m);                        // ...then the re-apply, and answers it first
    w3cmd.first->complete(w3cmd.second);
  } else {
    ap->serve(m);  // the engine held W3 back: fine
  }
  h.settle(2h);  // a healthy world for a while: reconnects, checker ticks, re-applies
  REQUIRE(w3->calls == 1);
  CHECK(w3->err == 0);
  // W3 was acknowledged last: a read must return it.
  auto rd = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*rd);
  h.serve_all();
  REQUIRE(rd->calls == 1);
  CHECK(rd->err == 0);
  CHECK(all_eq(rd->data.get(), kLen, 0x33));
  CHECK(all_eq(h.disk.data() + kX, kLen, 0x33));
}

// ---------------------------------------------------------------------------
// Shutdown

TEST_CASE("engine: shutdown fails queued and in-flight requests with EIO at once") {
  auto cfg = make_config({"A"});
  cfg.paths[0].max_inflight = 1;
  Harness h(cfg);
  h.bring_up_all();
  auto r1 = make_req(h.rt, Op::Read, kX, kLen);
  auto r2 = make_req(h.rt, Op::Write, kX + kLen, kLen, 1);
  h.engine->submit(*r1);
  h.engine->submit(*r2);
  REQUIRE(h.engine->waiting() == 1);
  auto [p, i] = h.find(Op::Read, kX);
  h.engine->shutdown();
  REQUIRE(r1->calls == 1);
  CHECK(r1->err == EIO);
  REQUIRE(r2->calls == 1);
  CHECK(r2->err == EIO);
  CHECK(h.engine->waiting() == 0);
  // A late reply to the in-flight read changes nothing.
  p->fill(i, std::byte{1});
  p->complete(i);
  CHECK(r1->calls == 1);
  CHECK(r1->err == EIO);
  // New requests fail at once too.
  auto r3 = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r3);
  REQUIRE(r3->calls == 1);
  CHECK(r3->err == EIO);
  CHECK(h.find_all(Op::Write, kX + kLen).empty());
}

}  // namespace
}  // namespace mp
