// Unit tests for the path-state table: the engine makes every allowed change, each with its
// effects (selector usable set, counters, event), and refuses one that is not in the table.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "server/path_state.h"
#include "tests/unit/fakes.h"
#include "tests/unit/slow_paths.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;

constexpr std::uint64_t kX = 64 * 1024;
constexpr std::uint32_t kLen = 4096;

config::Config walk_config(std::initializer_list<const char*> names) {
  config::Config c = make_config(names);
  c.control.events = 100000;  // keep every event of a walk
  return c;
}

std::size_t events_of(Harness& h, const std::string& name, PathState from, PathState to) {
  std::size_t n = 0;
  const std::string what = std::string(to_string(from)) + " -> " + to_string(to);
  // A change within an outage is folded into the path's one "reconnecting"
  // entry (its reason starts with the change).
  for (const auto& e : h.engine->show_events())
    n += e.subject == "path " + name && (e.what == what || (e.what.starts_with("reconnecting") &&
                                                            e.reason.starts_with(what + ":")));
  return n;
}

// Drives the rows of the table and records which ones it saw.
struct Walk {
  std::set<std::pair<PathState, PathState>> seen;

  // `act` takes path `name` through `chain` (from, then each state it enters,
  // in order); each change must be a row and must have the row's effects.
  void step(Harness& h, const std::string& name, std::vector<PathState> chain,
            const std::function<void()>& act) {
    REQUIRE(chain.size() >= 2);
    REQUIRE(h.state(name) == chain.front());
    const PathStats before = *h.engine->path_stats(name);
    std::vector<std::size_t> events;
    std::uint64_t failures = 0, reinstatements = 0;
    // An outage counts once, when it starts: a path that failed before and
    // has not served since is still in it.
    bool outage = before.failures > 0 && !serves_io(chain.front()) &&
                  chain.front() != PathState::Draining && chain.front() != PathState::Removed;
    for (std::size_t i = 0; i + 1 < chain.size(); i++) {
      events.push_back(events_of(h, name, chain[i], chain[i + 1]));
      if (const PathTransition* row = find_transition(chain[i], chain[i + 1])) {
        failures += row->counter == PathCounter::Failures && !outage;
        reinstatements += row->counter == PathCounter::Reinstatements;
      }
      if (chain[i + 1] == PathState::Failed) outage = true;
      if (serves_io(chain[i + 1])) outage = false;
    }
    act();
    INFO(h.rt.dump_logs());
    for (std::size_t i = 0; i + 1 < chain.size(); i++) {
      const std::string change =
          std::string(to_string(chain[i])) + " -> " + to_string(chain[i + 1]);
      INFO(change);
      CHECK(find_transition(chain[i], chain[i + 1]) != nullptr);
    }
    CHECK(h.state(name) == chain.back());
    CHECK(h.engine->usable(name) == serves_io(chain.back()));
    CHECK(h.engine->path_stats(name)->failures == before.failures + failures);
    CHECK(h.engine->path_stats(name)->reinstatements == before.reinstatements + reinstatements);
    for (std::size_t i = 0; i + 1 < chain.size(); i++) {
      const std::string change =
          std::string(to_string(chain[i])) + " -> " + to_string(chain[i + 1]);
      INFO(change);
      CHECK(events_of(h, name, chain[i], chain[i + 1]) == events[i] + 1);
      seen.emplace(chain[i], chain[i + 1]);
    }
  }
};

using S = PathState;

// A write times out on one path and is acknowledged via the other; the first
// path reconnects and probes, and is held. Returns its name and the index of
// the abandoned write on it.
std::pair<std::string, std::size_t> hold_one(Harness& h, Walk& w) {
  h.bring_up_all();
  auto w1 = make_req(h.rt, Op::Write, kX, kLen, 0x11);
  h.engine->submit(*w1);
  auto [p, i] = h.find(Op::Write, kX);
  const std::string pn = p->name();
  h.advance(1000ms);
  REQUIRE(h.state(pn) == S::Failed);
  auto [q, j] = h.find(Op::Write, kX);
  q->serve(j);
  REQUIRE(w1->calls == 1);
  REQUIRE(h.until_connect(pn, 5s));
  w.step(h, pn, {S::Connecting, S::Probing}, [&] { h.connected(pn); });
  w.step(h, pn, {S::Probing, S::Held}, [&] { h.p(pn).serve(*h.probe_of(pn)); });
  return {pn, i};
}

TEST_CASE("path_state: the engine makes every change of the table, with its effects") {
  Walk w;

  {  // Connecting -> Probing -> Active -> Failed -> Connecting -> Failed; Probing -> Failed
    Harness h(walk_config({"A", "B"}));
    w.step(h, "A", {S::Connecting, S::Probing}, [&] { h.connected("A"); });
    w.step(h, "A", {S::Probing, S::Active}, [&] { h.p("A").serve(*h.probe_of("A")); });
    w.step(h, "A", {S::Active, S::Failed}, [&] { h.down("A"); });
    w.step(h, "A", {S::Failed, S::Connecting}, [&] { REQUIRE(h.until_connect("A")); });
    w.step(h, "A", {S::Connecting, S::Failed}, [&] { h.down("A"); });
    REQUIRE(h.until_connect("A"));
    w.step(h, "A", {S::Connecting, S::Probing}, [&] { h.connected("A"); });
    w.step(h, "A", {S::Probing, S::Failed}, [&] { h.down("A"); });
  }
  {  // Active -> Draining -> Active; Draining -> Failed
    Harness h(walk_config({"A", "B"}));
    h.bring_up_all();
    w.step(h, "A", {S::Active, S::Draining}, [&] { CHECK(h.engine->drain_path("A") == ""); });
    w.step(h, "A", {S::Draining, S::Active}, [&] { CHECK(h.engine->reinstate_path("A") == ""); });
    w.step(h, "A", {S::Active, S::Draining}, [&] { CHECK(h.engine->drain_path("A") == ""); });
    w.step(h, "A", {S::Draining, S::Failed}, [&] { h.down("A"); });
  }
  {  // Active -> Marginal -> Active (re-admitted) -> Marginal -> Active (the last usable path)
    Harness h(walk_config({"A", "B"}));
    h.bring_up_all();
    w.step(h, "B", {S::Active, S::Marginal}, [&] { REQUIRE(make_marginal(h, "B")); });
    w.step(h, "B", {S::Marginal, S::Active}, [&] {
      // Its ejection time passes while its probes answer as fast as A.
      for (int i = 0; i < 200 && h.state("B") == S::Marginal; i++) run_for(h, "B", 0ms, 100ms);
    });
    w.step(h, "B", {S::Active, S::Marginal}, [&] { REQUIRE(make_marginal(h, "B")); });
    w.step(h, "A", {S::Active, S::Failed}, [&] { h.down("A"); });
  }
  {  // Marginal -> Failed; Marginal -> Draining -> Removed
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up_all();
    w.step(h, "C", {S::Active, S::Marginal}, [&] { REQUIRE(make_marginal(h, "C")); });
    w.step(h, "C", {S::Marginal, S::Failed}, [&] { h.down("C"); });
    Harness h2(walk_config({"A", "B", "C"}));
    h2.bring_up_all();
    w.step(h2, "C", {S::Active, S::Marginal}, [&] { REQUIRE(make_marginal(h2, "C")); });
    w.step(h2, "C", {S::Marginal, S::Draining, S::Removed}, [&] {
      CHECK(h2.engine->apply(walk_config({"A", "B"}), false, nullptr) == "");
      serve_probe(h2, "C", 0ms);  // what was in flight finishes
      h2.advance(1h);             // the checker finds it idle
    });
  }
  {  // Probing -> Held -> Active
    Harness h(walk_config({"A", "B"}));
    auto [pn, i] = hold_one(h, w);
    w.step(h, pn, {S::Held, S::Active}, [&] { h.p(pn).serve(i); });
    for (auto [fp, k] : h.find_all(Op::Write, kX)) fp->serve(k);  // the re-apply
    CHECK(h.engine->stale_writes().idle());
  }
  {  // Held -> Failed
    Harness h(walk_config({"A", "B"}));
    auto [pn, i] = hold_one(h, w);
    w.step(h, pn, {S::Held, S::Failed}, [&] { h.down(pn); });
  }
  {  // Held -> Draining -> Removed (a reload removes it)
    Harness h(walk_config({"A", "B"}));
    auto [pn, i] = hold_one(h, w);
    w.step(h, pn, {S::Held, S::Draining, S::Removed}, [&] {
      CHECK(h.engine->apply(walk_config({pn == "A" ? "B" : "A"}), false, nullptr) == "");
    });
  }
  // A reload removes C from each state it can be in.
  const auto remove_c = [](Harness& h) {
    CHECK(h.engine->apply(walk_config({"A", "B"}), false, nullptr) == "");
  };
  {  // Connecting -> Draining -> Removed
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up("A");
    w.step(h, "C", {S::Connecting, S::Draining, S::Removed}, [&] { remove_c(h); });
  }
  {  // Probing -> Draining -> Removed
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up("A");
    h.connected("C");
    w.step(h, "C", {S::Probing, S::Draining, S::Removed}, [&] { remove_c(h); });
  }
  {  // Failed -> Draining -> Removed
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up("A");
    h.down("C");
    w.step(h, "C", {S::Failed, S::Draining, S::Removed}, [&] { remove_c(h); });
  }
  {  // Active -> Draining -> Removed (idle)
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up_all();
    w.step(h, "C", {S::Active, S::Draining, S::Removed}, [&] { remove_c(h); });
  }
  {  // Active -> Draining (busy) -> Failed -> Removed; then Removed -> Failed is refused
    Harness h(walk_config({"A", "B", "C"}));
    h.bring_up("C");
    auto r = make_req(h.rt, Op::Read, kX, kLen);
    h.engine->submit(*r);
    REQUIRE(h.find(Op::Read, kX).first->name() == "C");
    h.bring_up("A");
    w.step(h, "C", {S::Active, S::Draining}, [&] { remove_c(h); });
    w.step(h, "C", {S::Draining, S::Failed}, [&] { h.down("C"); });
    auto [fp, k] = h.find(Op::Read, kX);  // retried on A
    fp->serve(k);
    CHECK(r->calls == 1);
    w.step(h, "C", {S::Failed, S::Removed}, [&] { h.advance(1h); });  // the checker finds it idle

#ifdef NDEBUG  // a debug build asserts instead
    // A removed path that reported down (no path does; the table is the guard).
    h.down("C");
    CHECK(h.state("C") == S::Removed);
    CHECK(h.rt.count_logs(LogLevel::Error, {"path C: refused state change removed -> failed"}) ==
          1);
    CHECK(events_of(h, "C", S::Removed, S::Failed) == 0);
#endif
  }

  for (const PathTransition& row : path_transitions()) {
    const std::string change = std::string(to_string(row.from)) + " -> " + to_string(row.to);
    INFO(change);
    CHECK(w.seen.count({row.from, row.to}) == 1);
  }
}

TEST_CASE("path_state: the table lists changes only, once each, and nothing leaves Removed") {
  std::set<std::pair<PathState, PathState>> rows;
  for (const PathTransition& row : path_transitions()) {
    const std::string change = std::string(to_string(row.from)) + " -> " + to_string(row.to);
    INFO(change);
    CHECK(row.from != row.to);
    CHECK(row.from != PathState::Removed);
    CHECK(rows.emplace(row.from, row.to).second);
    CHECK(find_transition(row.from, row.to) == &row);
    // Entering service is loud; so is leaving it, except a reconnect failing again.
    // A path made marginal leaves service too.
    CHECK(row.loud == (row.to == PathState::Active || row.to == PathState::Marginal ||
                       (row.to == PathState::Failed && row.from != PathState::Connecting)));
  }
  CHECK(find_transition(PathState::Removed, PathState::Failed) == nullptr);
  CHECK(find_transition(PathState::Connecting, PathState::Active) == nullptr);
  CHECK(find_transition(PathState::Failed, PathState::Active) == nullptr);
}

}  // namespace
}  // namespace mp
