// Unit tests for hedged reads in the engine (engine_hedge.cc): when a read is hedged, where to,
// which reply completes it, what happens to the loser, and what is never hedged. Fake paths,
// fake clock.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "tests/unit/fakes.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;

// Hedging on, no floor, a budget that never runs out unless a test says so.
config::Config hedge_config(std::initializer_list<const char*> names = {"A", "B"},
                            unsigned share = 100) {
  auto c = make_config(names);
  c.hedge.enabled = true;
  c.hedge.min_delay = 0ms;
  c.hedge.max_share = share;
  c.durability.shared_cache = true;  // no dirty-range affinity unless a test turns it on
  return c;
}

constexpr std::uint64_t kOff = 64 * 1024;  // the reads under test; warm-up stays below

// HedgePolicy::kMinSamples reads, each answered after 2 ms: the threshold is 2 ms.
void warm_up(Harness& h) {
  for (std::size_t i = 0; i < HedgePolicy::kMinSamples; i++) {
    const std::uint64_t off = 4096 * (1 + i % 8);
    auto r = make_req(h.rt, Op::Read, off, 4096);
    h.engine->submit(*r);
    h.advance(2ms);
    auto [p, k] = h.find(Op::Read, off);
    p->serve(k);
    REQUIRE(r->calls == 1);
  }
  REQUIRE(h.engine->hedging().counters().sent == 0);
}

Harness& started(Harness& h) {
  h.bring_up_all();
  warm_up(h);
  return h;
}

TEST_CASE("hedge: a read unanswered past the threshold is sent to the other path, not before") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  h.engine->submit(*r);
  REQUIRE(h.find_all(Op::Read, kOff).size() == 1);
  h.advance(1900us);  // below the threshold (2 ms): one copy
  CHECK(h.find_all(Op::Read, kOff).size() == 1);
  h.advance(100us);  // at it: a second copy, on the other path
  auto all = h.find_all(Op::Read, kOff);
  REQUIRE(all.size() == 2);
  CHECK(all[0].first != all[1].first);
  CHECK(h.engine->hedging().counters().sent == 1);
  CHECK(h.engine->show_stats().hedges_sent == 1);
  CHECK(r->calls == 0);
}

TEST_CASE("hedge: with no other active path, no hedge timer wakes the loop") {
  Harness h(hedge_config({"A"}));
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  h.engine->submit(*r);
  // The engine's next wake-up is one of its other timers (the outlier tick,
  // the attempt's), not the hedge's at 2 ms.
  REQUIRE(h.rt.wake);
  CHECK(*h.rt.wake - h.rt.t >= 100ms);
  CHECK(h.rt.count_logs(LogLevel::Debug, {"hedged if not answered"}) == 0);
  h.advance(10ms);
  CHECK(h.find_all(Op::Read, kOff).size() == 1);
  auto [p, k] = h.find(Op::Read, kOff);
  p->serve(k);
  CHECK(r->calls == 1);
}

TEST_CASE("hedge: the threshold follows the reads' latency") {
  Harness h(hedge_config());
  started(h);
  // The disk gets slower: 10 ms per read for a window's worth of reads.
  for (std::size_t n = 0; n < HedgePolicy::kWindow; n++) {
    auto r = make_req(h.rt, Op::Read, kOff, 4096);
    h.engine->submit(*r);
    h.advance(10ms);
    // A hedge may have gone out while the threshold still was lower: the first reply wins.
    auto all = h.find_all(Op::Read, kOff);
    REQUIRE(!all.empty());
    for (auto [p, k] : all) p->serve(k);
    REQUIRE(r->calls == 1);
  }
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  h.engine->submit(*r);
  h.advance(9ms);  // 2 ms was the threshold before: now a 9 ms wait is normal
  CHECK(h.find_all(Op::Read, kOff).size() == 1);
  h.advance(1ms);
  CHECK(h.find_all(Op::Read, kOff).size() == 2);
}

TEST_CASE("hedge: the budget refuses hedges beyond max-share, and counts them") {
  Harness h(hedge_config({"A", "B"}, 5));  // 20 warm-up reads at 5%: one hedge saved up
  started(h);
  auto r1 = make_req(h.rt, Op::Read, kOff, 4096);
  auto r2 = make_req(h.rt, Op::Read, kOff + 4096, 4096);
  h.engine->submit(*r1);
  h.engine->submit(*r2);
  h.advance(5ms);
  const auto n1 = h.find_all(Op::Read, kOff).size(), n2 = h.find_all(Op::Read, kOff + 4096).size();
  CHECK(n1 + n2 == 3);  // one of them hedged, the other not (the second read added 0.05)
  const auto& c = h.engine->hedging().counters();
  CHECK(c.sent == 1);
  CHECK(c.refused == 1);
  CHECK(h.engine->show_stats().hedges_refused == 1);
}

// A hedged read: the first copy and the hedge, identified.
struct Race {
  FakePath* first;
  std::size_t fi;
  FakePath* hedge;
  std::size_t hi;
};
Race hedged_read(Harness& h, TestReq& r) {
  h.engine->submit(r);
  auto [fp, fi] = h.find(Op::Read, r.offset);
  h.advance(2ms);
  for (auto [p, k] : h.find_all(Op::Read, r.offset))
    if (p != fp) return Race{fp, fi, p, k};
  FAIL("not hedged");
  return {};
}

TEST_CASE("hedge: the hedge's reply first completes the read; the loser's late reply is dropped") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  const std::byte* hedge_buf = race.hedge->sent[race.hi].cmd.data;
  const std::byte* first_buf = race.first->sent[race.fi].cmd.data;
  race.hedge->fill(race.hi, std::byte{0xbb});
  race.hedge->complete(race.hi);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(r->data.get() == hedge_buf);  // the winner's buffer, not the loser's
  CHECK(r->data.get() != first_buf);
  CHECK(all_eq(r->data.get(), 4096, 0xbb));
  CHECK(h.engine->hedging().counters().won == 1);
  // The loser is not a failure: past its attempt timeout its path is still active.
  h.advance(3s);
  CHECK(h.state(race.first->name()) == PathState::Active);
  const PathStats* st = h.engine->path_stats(race.first->name());
  CHECK(st->timeouts == 0);
  CHECK(st->failovers == 0);
  CHECK(st->errors == 0);
  // Its late reply writes its own buffer only; the client's data stays the winner's.
  race.first->fill(race.fi, std::byte{0xaa});
  race.first->complete(race.fi);
  CHECK(r->calls == 1);
  CHECK(all_eq(r->data.get(), 4096, 0xbb));
  CHECK(h.state(race.first->name()) == PathState::Active);
  CHECK(h.engine->show_paths()[0].inflight + h.engine->show_paths()[1].inflight == 0);
}

TEST_CASE("hedge: the first copy's reply first completes the read; the hedge's is dropped") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  const std::byte* first_buf = race.first->sent[race.fi].cmd.data;
  race.first->fill(race.fi, std::byte{0xaa});
  race.first->complete(race.fi);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(r->data.get() == first_buf);
  CHECK(all_eq(r->data.get(), 4096, 0xaa));
  CHECK(h.engine->hedging().counters().won == 0);
  race.hedge->fill(race.hi, std::byte{0xbb});
  race.hedge->complete(race.hi, PathResult::TransportDead, ENOTCONN);  // dropped too: no failure
  CHECK(r->calls == 1);
  CHECK(all_eq(r->data.get(), 4096, 0xaa));
  CHECK(h.state(race.hedge->name()) == PathState::Active);
}

TEST_CASE("hedge: no hedge goes to a path still holding the unanswered loser of a race") {
  Harness h(hedge_config());
  started(h);
  auto r1 = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r1);
  race.hedge->complete(race.hi);  // the first copy lost and stays unanswered on its path
  REQUIRE(r1->calls == 1);
  // The next slow read goes to the other path (the stalled one counts the
  // loser in flight) and is not hedged back to the stalled one.
  auto r2 = make_req(h.rt, Op::Read, kOff + 4096, 4096);
  h.engine->submit(*r2);
  auto [p2, k2] = h.find(Op::Read, kOff + 4096);
  CHECK(p2 == race.hedge);
  h.advance(20ms);
  CHECK(h.find_all(Op::Read, kOff + 4096).size() == 1);
  CHECK(h.engine->hedging().counters().sent == 1);
  // Once the stalled path answers, it may take hedges again.
  race.first->complete(race.fi);
  auto r3 = make_req(h.rt, Op::Read, kOff + 8192, 4096);
  h.engine->submit(*r3);
  h.advance(20ms);
  CHECK(h.find_all(Op::Read, kOff + 8192).size() == 2);
  (void)k2;
}

TEST_CASE("hedge: a path holding only unanswered losers is probed by the checker") {
  auto c = hedge_config();
  c.checker.interval = 1s;
  Harness h(c);
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  race.hedge->serve(race.hi);
  REQUIRE(r->calls == 1);
  const std::string hung = race.first->name();
  // Its server hangs: the loser never answers. The checker's probe finds it.
  REQUIRE(h.advance_until([&] { return h.probe_of(hung).has_value(); }, 3s));
  h.advance(1s);  // the probe's attempt timeout
  CHECK(h.state(hung) == PathState::Failed);
}

TEST_CASE("hedge: a server error from one copy waits for the other") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  race.first->complete(race.fi, PathResult::RemoteError, EINVAL);
  CHECK(r->calls == 0);  // not failed early
  race.hedge->fill(race.hi, std::byte{0xbb});
  race.hedge->complete(race.hi);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(all_eq(r->data.get(), 4096, 0xbb));
}

TEST_CASE(
    "hedge: a path error on one copy takes that path down but neither fails nor retries the "
    "read while the other copy is out") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  const auto retries = h.engine->stats().retries;
  race.hedge->complete(race.hi, PathResult::TransportDead, ECONNRESET);
  CHECK(h.state(race.hedge->name()) == PathState::Failed);  // a real error, not a lost race
  CHECK(r->calls == 0);
  CHECK(h.find_all(Op::Read, kOff).size() == 1);  // no retry sent
  race.first->fill(race.fi, std::byte{0xaa});
  race.first->complete(race.fi);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  CHECK(all_eq(r->data.get(), 4096, 0xaa));
  CHECK(h.engine->stats().retries == retries);
}

TEST_CASE("hedge: both copies failing fails the read as one copy would") {
  Harness h(hedge_config());
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  race.first->complete(race.fi, PathResult::RemoteError, EINVAL);
  race.hedge->complete(race.hi, PathResult::RemoteError, EINVAL);
  REQUIRE(r->calls == 1);
  CHECK(r->err == EINVAL);
}

TEST_CASE("hedge: writes, trims, zeroes, flushes and cache requests are never hedged") {
  Harness h(hedge_config());
  started(h);
  const Op ops[] = {Op::Write, Op::Trim, Op::Zero, Op::Flush, Op::Cache};
  for (Op op : ops) {
    const std::string name = to_string(op);
    CAPTURE(name);
    if (op == Op::Flush) {  // a flush goes to the dirty paths: make one dirty first
      auto w = make_req(h.rt, Op::Write, kOff, 4096, 0x11);
      h.engine->submit(*w);
      auto [p, k] = h.find(Op::Write, kOff);
      p->serve(k);
    }
    auto r = make_req(h.rt, op, op == Op::Flush ? 0 : kOff, op == Op::Flush ? 0 : 4096,
                      op == Op::Write ? 0x5a : -1);
    h.engine->submit(*r);
    h.advance(50ms);  // 25 times the threshold
    auto all = h.find_all(op, op == Op::Flush ? 0 : kOff);
    // One copy; a flush, one per dirty path (its own fan-out, not a hedge).
    if (op != Op::Flush) CHECK(all.size() == 1);
    for (std::size_t i = 0; i < all.size(); i++)
      for (std::size_t j = i + 1; j < all.size(); j++) CHECK(all[i].first != all[j].first);
    CHECK(h.engine->hedging().counters().sent == 0);
    for (auto [p, k] : all) p->serve(k);
    CHECK(r->calls == 1);
  }
  CHECK(h.engine->hedging().counters().sent == 0);
}

TEST_CASE("hedge: a read routed by dirty-range affinity is not hedged") {
  auto c = hedge_config();
  c.durability.shared_cache = false;  // affinity on
  Harness h(c);
  started(h);
  // A write acknowledged by one path and not flushed: that path alone has it.
  auto w = make_req(h.rt, Op::Write, kOff, 4096, 0x5a);
  h.engine->submit(*w);
  auto [holder, k] = h.find(Op::Write, kOff);
  holder->serve(k);
  REQUIRE(w->calls == 1);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  h.engine->submit(*r);
  h.advance(50ms);
  auto all = h.find_all(Op::Read, kOff);
  REQUIRE(all.size() == 1);
  CHECK(all[0].first == holder);
  all[0].first->serve(all[0].second);
  CHECK(all_eq(r->data.get(), 4096, 0x5a));
  CHECK(h.engine->hedging().counters().sent == 0);
  // A read of a clean range in the same disk is hedged (the mechanism is on).
  auto clean = make_req(h.rt, Op::Read, kOff + 8192, 4096);
  h.engine->submit(*clean);
  h.advance(50ms);
  CHECK(h.find_all(Op::Read, kOff + 8192).size() == 2);
}

TEST_CASE(
    "hedge: a hedge that wins over an abandoned write's range still gets the shadow overlay") {
  Harness h(hedge_config({"A", "B", "C"}));
  started(h);
  // A write hangs on its path, times out, and is retried and acknowledged
  // elsewhere; the hung copy stays unresolved (it may still land).
  auto w = make_req(h.rt, Op::Write, kOff, 4096, 0x5a);
  h.engine->submit(*w);
  auto [hung, wi] = h.find(Op::Write, kOff);
  h.advance(1000ms);  // the attempt timeout
  REQUIRE(h.state(hung->name()) == PathState::Failed);
  auto [p2, k2] = h.find(Op::Write, kOff);
  p2->serve(k2);
  REQUIRE(w->calls == 1);
  REQUIRE(h.engine->stale_writes().pending() == 1);
  // A read of the range, hedged; the hedge answers first with what the
  // storage held before (as if the stale write had landed over the new one).
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  Race race = hedged_read(h, *r);
  REQUIRE(race.hedge != hung);
  race.hedge->fill(race.hi, std::byte{0x11});
  race.hedge->complete(race.hi);
  REQUIRE(r->calls == 1);
  CHECK(h.engine->hedging().counters().won == 1);
  CHECK(all_eq(r->data.get(), 4096, 0x5a));  // the newest acknowledged data
  (void)wi;
}

TEST_CASE("hedge: switched off, a slow read waits on its one path") {
  auto c = hedge_config();
  c.hedge.enabled = false;
  Harness h(c);
  started(h);
  auto r = make_req(h.rt, Op::Read, kOff, 4096);
  h.engine->submit(*r);
  h.advance(500ms);
  CHECK(h.find_all(Op::Read, kOff).size() == 1);
  CHECK(h.engine->hedging().counters().sent == 0);
}

}  // namespace
}  // namespace mp
