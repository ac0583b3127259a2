// Unit tests for marginal paths in the engine (engine_outlier.cc): a slow path is made marginal
// and gets no client I/O, reads or writes; it is probed, re-admitted, kept as the last usable
// path, cleared by the operator, and still flushed. Fake paths, fake clock.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "tests/unit/fakes.h"
#include "tests/unit/slow_paths.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;
using S = PathState;

const PathInfo* info(Harness& h, const std::string& name) {
  static std::vector<PathInfo> v;
  v = h.engine->show_paths();
  for (const auto& p : v)
    if (p.name == name) return &p;
  return nullptr;
}

TEST_CASE("engine outlier: a slow path becomes marginal and gets no more client I/O") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  REQUIRE(make_marginal(h, "B"));
  const PathInfo* b = info(h, "B");
  REQUIRE(b);
  CHECK(b->state == "marginal");
  CHECK(b->marginal == 1);
  CHECK(b->reason.find("latency outlier: median 20.0 ms") != std::string::npos);
  bool evented = false;
  for (const auto& e : h.engine->show_events())
    evented |= e.subject == "path B" && e.what == "active -> marginal";
  CHECK(evented);
  CHECK(h.rt.count_logs(LogLevel::Warning, {"path B: active -> marginal: latency outlier"}) == 1);
  // Reads and writes alike go to A now (serve_slowly checks each succeeds).
  CHECK(serve_slowly(h, "B", 20ms, 50, Op::Read, 300) == 0);
  CHECK(serve_slowly(h, "B", 20ms, 50, Op::Write, 400) == 0);
  // ... while B is measured by probe reads.
  h.advance(250ms);
  CHECK(h.probe_of("B").has_value());
}

TEST_CASE("engine outlier: switched off, the slow path keeps its share") {
  auto c = make_config({"A", "B"});
  c.outlier.enabled = false;
  Harness h(c);
  h.bring_up_all();
  CHECK_FALSE(make_marginal(h, "B"));
  CHECK(serve_slowly(h, "B", 20ms, 40) > 10);
}

TEST_CASE("engine outlier: re-admitted when its probes are fast again, after its ejection time") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  REQUIRE(make_marginal(h, "B"));
  const Clock::time_point since = h.rt.t;
  run_for(h, "B", 20ms, 30s);  // probes stay slow: still marginal long after the 10 s
  CHECK(h.state("B") == S::Marginal);
  // Fast again: back once fast probes are most of the window (10 s).
  run_for(h, "B", 0ms, 10s);
  CHECK(h.state("B") == S::Active);
  CHECK(h.rt.t - since >= 10s);
  CHECK(info(h, "B")->reason.find("re-admitted: latency back near its peers'") !=
        std::string::npos);
  CHECK(serve_slowly(h, "B", 0ms, 40, Op::Read, 100) > 10);  // it carries I/O again
}

TEST_CASE("engine outlier: a flapping path stays out longer each time") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  for (int round = 1; round <= 3; round++) {
    CAPTURE(round);
    REQUIRE(make_marginal(h, "B"));
    const Clock::time_point since = h.rt.t;
    while (h.state("B") == S::Marginal && h.rt.t - since < 60s) run_for(h, "B", 0ms, 100ms);
    REQUIRE(h.state("B") == S::Active);
    const auto out = h.rt.t - since;
    CHECK(out >= 10s * round);
    CHECK(out < 10s * round + 1s);
  }
}

TEST_CASE("engine outlier: the last usable path is re-admitted at once") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  REQUIRE(make_marginal(h, "B"));
  h.down("A");
  CHECK(h.state("B") == S::Active);
  CHECK(info(h, "B")->reason == "re-admitted: the last usable path of its group");
  // Client I/O goes on, through B, without an error.
  CHECK(serve_slowly(h, "B", 20ms, 5, Op::Read, 500) == 5);
  // And it is not made marginal again while it is alone.
  serve_slowly(h, "B", 20ms, 40, Op::Read, 600);
  h.advance(1s);
  CHECK(h.state("B") == S::Active);
}

TEST_CASE("engine outlier: the operator's reinstate clears it") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  REQUIRE(make_marginal(h, "B"));
  CHECK(h.engine->reinstate_path("B") == "");
  CHECK(h.state("B") == S::Active);
  CHECK(info(h, "B")->reason == "operator: reinstate (marginal cleared)");
}

TEST_CASE("engine outlier: a marginal path's acknowledged writes are still flushed on it") {
  Harness h(make_config({"A", "B"}));
  h.bring_up_all();
  REQUIRE(serve_slowly(h, "B", 0ms, 10, Op::Write, 0) > 0);  // B acknowledged some
  REQUIRE(make_marginal(h, "B"));
  auto f = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f);
  bool on_b = false;
  for (auto [fp, k] : h.find_all(Op::Flush, 0)) {
    on_b |= fp->name() == "B";
    fp->serve(k);
  }
  CHECK(on_b);
  CHECK(f->calls == 1);
  CHECK(f->err == 0);
}

}  // namespace
}  // namespace mp
