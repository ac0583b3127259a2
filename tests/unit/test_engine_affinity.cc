// Unit tests for dirty-range affinity (engine_affinity.cc): where requests over a range dirty on
// one path go, the cleaning flushes, dead and draining paths, the bound, shared caches. FakePaths,
// fake clock.
#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include "tests/unit/fakes.h"

namespace mp {
namespace {

using namespace mp::test;
using namespace std::chrono_literals;

constexpr std::uint64_t kX = 64 * 1024;  // "block X" (offset 0 is where probes read)
constexpr std::uint32_t kLen = 4096;

config::Config rr_config(std::initializer_list<const char*> names = {"A", "B"}) {
  config::Config c = make_config(names);
  c.selector.kind = config::SelectorKind::RoundRobin;
  return c;
}

// Submits a request and answers it at once; returns the path it went to.
std::string serve_one(Harness& h, Op op, std::uint64_t off, std::uint32_t len = kLen) {
  auto r = make_req(h.rt, op, off, len, op == Op::Write ? 7 : -1);
  h.engine->submit(*r);
  auto [fp, i] = h.find(op, off);
  fp->serve(i);
  REQUIRE(r->calls == 1);
  CHECK(r->err == 0);
  return fp->name();
}

PathInfo info(Harness& h, const std::string& name) {
  for (auto& p : h.engine->show_paths())
    if (p.name == name) return p;
  FAIL("no path " << name);
  return {};
}

// A client flush, every flush it sends answered.
void flush_all(Harness& h) {
  auto f = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f);
  for (auto [fp, i] : h.find_all(Op::Flush, 0)) fp->complete(i);
  REQUIRE(f->calls == 1);
  CHECK(f->err == 0);
}

TEST_CASE("affinity: requests over a range dirty on a path go to that path") {
  Engine::Options opts;
  SUBCASE("on") {}
  SUBCASE("switched off, the selector's choice: the check below can fail") {
    opts.dirty_range_affinity = false;
  }
  Harness h(rr_config(), opts);
  h.bring_up_all();
  std::string w = serve_one(h, Op::Write, kX);
  std::set<std::string> reads;
  for (int i = 0; i < 6; i++) reads.insert(serve_one(h, Op::Read, kX + (i % 2) * 1024, 1024));
  std::set<std::string> writes;
  for (int i = 0; i < 4; i++) writes.insert(serve_one(h, Op::Write, kX + 2048));
  if (opts.dirty_range_affinity) {
    CHECK(reads == std::set<std::string>{w});
    CHECK(writes == std::set<std::string>{w});
    CHECK(info(h, w).affinity_requests == 10);
    CHECK(info(h, w).dirty_ranges == 1);
    CHECK(info(h, w).dirty_bytes == kLen + 2048);  // the rewrites reach 2 KiB past it
  } else {
    CHECK(reads.size() == 2);  // round-robin spreads them
    CHECK(info(h, w).dirty_ranges == 0);
  }
  // Elsewhere on the disk, the selector still spreads requests.
  std::set<std::string> other;
  for (int i = 0; i < 4; i++) other.insert(serve_one(h, Op::Read, 8 * kX));
  CHECK(other.size() == 2);
}

TEST_CASE("affinity: a FUA write leaves nothing dirty") {
  Harness h(rr_config());
  h.bring_up_all();
  auto w = make_req(h.rt, Op::Write, kX, kLen, 2);
  w->flags = kFua;
  h.engine->submit(*w);
  auto [fp, i] = h.find(Op::Write, kX);
  fp->serve(i);
  REQUIRE(w->calls == 1);
  CHECK(info(h, "A").dirty_ranges == 0);
  CHECK(info(h, "B").dirty_ranges == 0);
  std::set<std::string> reads;
  for (int k = 0; k < 4; k++) reads.insert(serve_one(h, Op::Read, kX));
  CHECK(reads.size() == 2);
}

TEST_CASE("affinity: a completed flush cleans what was acknowledged before it was sent") {
  Harness h(rr_config({"A"}));
  h.bring_up_all();
  serve_one(h, Op::Write, kX);
  // A second write is in flight when the flush is sent, and acknowledged
  // before the flush completes: the flush does not cover it.
  auto w2 = make_req(h.rt, Op::Write, 4 * kX, kLen, 3);
  h.engine->submit(*w2);
  auto [p2, i2] = h.find(Op::Write, 4 * kX);
  auto f = make_req(h.rt, Op::Flush, 0, 0);
  h.engine->submit(*f);
  auto [pf, fi] = h.find(Op::Flush, 0);
  p2->serve(i2);
  CHECK(info(h, "A").dirty_ranges == 2);
  pf->complete(fi);
  REQUIRE(f->calls == 1);
  CHECK(info(h, "A").dirty_ranges == 1);
  CHECK(info(h, "A").dirty_bytes == kLen);
  flush_all(h);
  CHECK(info(h, "A").dirty_ranges == 0);
}

TEST_CASE("affinity: once flushed, requests over the range spread again") {
  Harness h(rr_config());
  h.bring_up_all();
  serve_one(h, Op::Write, kX);
  flush_all(h);
  std::set<std::string> reads;
  for (int i = 0; i < 4; i++) reads.insert(serve_one(h, Op::Read, kX));
  CHECK(reads.size() == 2);
}

TEST_CASE("affinity: a draining path is flushed before its dirty range goes elsewhere") {
  Harness h(rr_config());
  h.bring_up_all();
  std::string w = serve_one(h, Op::Write, kX);
  std::string o = w == "A" ? "B" : "A";
  REQUIRE(h.engine->drain_path(w).empty());
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  // Not sent anywhere yet: a flush goes to the draining path alone.
  CHECK(h.find_all(Op::Read, kX).empty());
  auto flushes = h.find_all(Op::Flush, 0);
  REQUIRE(flushes.size() == 1);
  CHECK(flushes[0].first->name() == w);
  CHECK(info(h, w).cleaning_flushes == 1);
  // A second request over the range waits too, without a second flush.
  auto r2 = make_req(h.rt, Op::Write, kX, kLen, 5);
  h.engine->submit(*r2);
  CHECK(h.find_all(Op::Flush, 0).size() == 1);
  flushes[0].first->complete(flushes[0].second);
  auto [fp, i] = h.find(Op::Read, kX);
  CHECK(fp->name() == o);
  fp->serve(i);
  CHECK(r->calls == 1);
  auto [fw, iw] = h.find(Op::Write, kX);
  CHECK(fw->name() == o);
  fw->serve(iw);
  CHECK(r2->calls == 1);
  CHECK(info(h, w).dirty_ranges == 0);
  CHECK(info(h, o).dirty_ranges == 1);
}

TEST_CASE("affinity: a request over ranges dirty on two paths waits for one to be flushed") {
  Harness h(rr_config());
  h.bring_up_all();
  std::string a = serve_one(h, Op::Write, kX);
  std::string b = serve_one(h, Op::Write, kX + kLen);  // round-robin: the other path
  REQUIRE(a != b);
  auto r = make_req(h.rt, Op::Write, kX, 2 * kLen, 9);
  h.engine->submit(*r);
  CHECK(h.find_all(Op::Write, kX).empty());
  auto flushes = h.find_all(Op::Flush, 0);
  REQUIRE(flushes.size() == 1);
  std::string flushed = flushes[0].first->name();
  flushes[0].first->complete(flushes[0].second);
  auto [fp, i] = h.find(Op::Write, kX);
  CHECK(fp->name() != flushed);  // it goes to the path still holding its range
  fp->serve(i);
  CHECK(r->calls == 1);
  CHECK(info(h, flushed).dirty_ranges == 0);
}

TEST_CASE("affinity: a dead path is not waited for; its ranges stay until a flush covers them") {
  Harness h(rr_config());
  h.bring_up_all();
  std::string w = serve_one(h, Op::Write, kX);
  std::string o = w == "A" ? "B" : "A";
  h.down(w);
  bool evented = false;
  for (const auto& e : h.engine->show_events())
    evented |= e.subject == "path " + w && e.what == "down with dirty ranges";
  CHECK(evented);
  // Reads go to the live path at once (README: they may return older data).
  CHECK(serve_one(h, Op::Read, kX) == o);
  CHECK(h.find_all(Op::Flush, 0).empty());
  CHECK(info(h, w).dirty_ranges == 1);
  // Back, and flushed on its new connection: clean.
  REQUIRE(h.until_connect(w));
  h.bring_up(w);
  flush_all(h);
  CHECK(info(h, w).dirty_ranges == 0);
}

TEST_CASE("affinity: a cleaning flush that fails takes the path down; the request goes on") {
  Harness h(rr_config());
  h.bring_up_all();
  std::string w = serve_one(h, Op::Write, kX);
  std::string o = w == "A" ? "B" : "A";
  REQUIRE(h.engine->drain_path(w).empty());
  auto r = make_req(h.rt, Op::Read, kX, kLen);
  h.engine->submit(*r);
  auto [ff, fi] = h.find(Op::Flush, 0);
  ff->complete(fi, PathResult::TransportDead, ECONNRESET);
  CHECK(h.state(w) == PathState::Failed);
  auto [fp, i] = h.find(Op::Read, kX);
  CHECK(fp->name() == o);
  fp->serve(i);
  CHECK(r->calls == 1);
  CHECK(r->err == 0);
  // The cleaning flush was not retried elsewhere, and its failure is not the
  // client's: the next client flush still waits for the dirty path.
  CHECK(h.p(o).count(Op::Flush) == 0);
}

TEST_CASE("affinity: at the bound the path is flushed, and nothing is dropped") {
  config::Config cfg = rr_config({"A"});
  cfg.durability.max_dirty_ranges = 2;
  Harness h(cfg);
  h.bring_up_all();
  for (int i = 0; i < 2; i++) serve_one(h, Op::Write, (2 * i + 1) * kX);
  CHECK(h.find_all(Op::Flush, 0).empty());
  serve_one(h, Op::Write, 5 * kX);  // a third range: over the bound
  CHECK(info(h, "A").dirty_ranges == 3);
  auto flushes = h.find_all(Op::Flush, 0);
  REQUIRE(flushes.size() == 1);
  // More writes while it is in flight: still tracked, no second flush.
  serve_one(h, Op::Write, 7 * kX);
  CHECK(h.find_all(Op::Flush, 0).size() == 1);
  CHECK(info(h, "A").dirty_ranges == 4);
  flushes[0].first->complete(flushes[0].second);
  // What the flush covered is clean; the write acknowledged after it was
  // sent stays dirty.
  CHECK(info(h, "A").dirty_ranges == 1);
  CHECK(info(h, "A").cleaning_flushes == 1);
  bool evented = false;
  for (const auto& e : h.engine->show_events())
    evented |= e.what == "flush at the dirty-range bound";
  CHECK(evented);
}

TEST_CASE("affinity: a path a reload removes is flushed before its dirty range goes elsewhere") {
  Harness h(rr_config());
  h.bring_up_all();
  REQUIRE(serve_one(h, Op::Write, kX) == "A");  // round-robin's first pick
  std::string summary;
  REQUIRE(h.engine->apply(rr_config({"B"}), false, &summary).empty());
  CHECK(h.state("A") == PathState::Draining);
  auto r = make_req(h.rt, Op::Write, kX, kLen, 4);
  h.engine->submit(*r);
  CHECK(h.find_all(Op::Write, kX).empty());
  auto [ff, fi] = h.find(Op::Flush, 0);
  CHECK(ff->name() == "A");
  ff->complete(fi);
  auto [fp, i] = h.find(Op::Write, kX);
  CHECK(fp->name() == "B");
  fp->serve(i);
  CHECK(r->calls == 1);
  CHECK(r->err == 0);
  // Flushed and idle, A leaves.
  CHECK(h.state("A") == PathState::Removed);
}

TEST_CASE("affinity: a reload to shared-cache true stops tracking") {
  Harness h(rr_config());
  h.bring_up_all();
  std::string w = serve_one(h, Op::Write, kX);
  CHECK(info(h, w).dirty_ranges == 1);
  config::Config next = rr_config();
  next.durability.shared_cache = true;
  std::string summary;
  REQUIRE(h.engine->apply(next, false, &summary).empty());
  CHECK(info(h, w).dirty_ranges == 0);
  std::set<std::string> reads;
  for (int i = 0; i < 4; i++) reads.insert(serve_one(h, Op::Read, kX));
  CHECK(reads.size() == 2);
}

TEST_CASE("affinity: nothing is tracked and nothing changes with a shared cache") {
  config::Config cfg = rr_config();
  cfg.durability.shared_cache = true;
  Harness h(cfg);
  h.bring_up_all();
  serve_one(h, Op::Write, kX);
  std::set<std::string> reads;
  for (int i = 0; i < 4; i++) reads.insert(serve_one(h, Op::Read, kX));
  CHECK(reads.size() == 2);
  for (auto& p : h.engine->show_paths()) {
    CHECK(p.dirty_ranges == 0);
    CHECK(p.affinity_requests == 0);
  }
}

}  // namespace
}  // namespace mp
