// Unit tests for StaleWriteTracker: shadows, merges, overlays, write-back offers, holds and memory.
#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "server/stale_writes.h"

namespace mp {
namespace {

using namespace std::chrono_literals;

const Clock::time_point kT0 = Clock::time_point{} + 1h;

std::vector<std::byte> bytes(std::size_t n, int v) {
  return std::vector<std::byte>(n, static_cast<std::byte>(v));
}

// What a read of [off, off+len) returns when the path read `bg` everywhere.
std::vector<std::byte> read_back(const StaleWriteTracker& t, std::uint64_t off, std::uint32_t len,
                                 int bg = 0xff) {
  auto buf = bytes(len, bg);
  t.overlay(off, len, buf.data());
  return buf;
}

// True when v[from, to) is all `val`.
bool range_is(const std::vector<std::byte>& v, std::size_t from, std::size_t to, int val) {
  if (to > v.size() || from > to) return false;
  for (std::size_t i = from; i < to; i++)
    if (v[i] != static_cast<std::byte>(val)) return false;
  return true;
}

TEST_CASE("stale: an abandoned write gets a shadow of its data") {
  StaleWriteTracker t(1 << 20);
  CHECK(t.idle());
  Clock::time_point since{};
  CHECK_FALSE(t.oldest(&since));
  auto a = bytes(100, 0xa1);
  t.add(3, 10, 100, 100, a.data(), kT0);
  CHECK_FALSE(t.idle());
  CHECK(t.pending() == 1);
  CHECK(t.shadow_bytes() == 100);
  CHECK(t.counters().abandoned == 1);
  CHECK(t.counters().unshadowed == 0);
  REQUIRE(t.oldest(&since));
  CHECK(since == kT0);
  auto r = read_back(t, 0, 300);
  CHECK(range_is(r, 0, 100, 0xff));
  CHECK(range_is(r, 100, 200, 0xa1));
  CHECK(range_is(r, 200, 300, 0xff));
}

TEST_CASE("stale: merging overlapping shadows keeps the existing (newer) bytes") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), b = bytes(200, 0xb2), n = bytes(100, 0x4e);
  t.add(1, 10, 100, 100, a.data(), kT0);
  t.on_acked_write(100, 100, n.data());  // newest acknowledged data for [100,200)
  t.add(2, 11, 50, 200, b.data(), kT0 + 1s);
  CHECK(t.shadow_bytes() == 200);  // one merged shadow [50,250)
  CHECK(t.pending() == 2);
  auto r = read_back(t, 0, 300);
  CHECK(range_is(r, 0, 50, 0xff));
  CHECK(range_is(r, 50, 100, 0xb2));
  CHECK(range_is(r, 100, 200, 0x4e));  // not overwritten by the older, unacknowledged write
  CHECK(range_is(r, 200, 250, 0xb2));
  CHECK(range_is(r, 250, 300, 0xff));
  Clock::time_point since{};
  REQUIRE(t.oldest(&since));
  CHECK(since == kT0);
}

TEST_CASE("stale: acknowledged writes patch shadows") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), b = bytes(100, 0xb2);
  t.add(1, 10, 100, 100, a.data(), kT0);
  t.add(1, 11, 300, 100, b.data(), kT0);
  REQUIRE(t.shadow_bytes() == 200);

  auto n = bytes(200, 0x4e);
  t.on_acked_write(150, 200, n.data());  // over the end of one and the start of the other
  auto r = read_back(t, 0, 500);
  CHECK(range_is(r, 0, 100, 0xff));
  CHECK(range_is(r, 100, 150, 0xa1));
  CHECK(range_is(r, 150, 200, 0x4e));
  CHECK(range_is(r, 200, 300, 0xff));  // no shadow is created between them
  CHECK(range_is(r, 300, 350, 0x4e));
  CHECK(range_is(r, 350, 400, 0xb2));
  CHECK(range_is(r, 400, 500, 0xff));
  CHECK(t.shadow_bytes() == 200);

  auto m = bytes(60, 0x6d), k = bytes(100, 0x6b);
  t.on_acked_write(50, 60, m.data());    // the first shadow's first 10 bytes
  t.on_acked_write(390, 100, k.data());  // the second shadow's last 10 bytes
  t.on_acked_write(600, 10, k.data());   // no shadow there: nothing changes
  r = read_back(t, 0, 700);
  CHECK(range_is(r, 50, 100, 0xff));
  CHECK(range_is(r, 100, 110, 0x6d));
  CHECK(range_is(r, 110, 150, 0xa1));
  CHECK(range_is(r, 350, 390, 0xb2));
  CHECK(range_is(r, 390, 400, 0x6b));
  CHECK(range_is(r, 400, 700, 0xff));
  CHECK(t.shadow_bytes() == 200);
}

TEST_CASE("stale: overlay of partial overlaps at both ends") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1);
  t.add(1, 10, 100, 100, a.data(), kT0);
  auto r = read_back(t, 50, 100);  // [50,150): the shadow covers the second half
  CHECK(range_is(r, 0, 50, 0xff));
  CHECK(range_is(r, 50, 100, 0xa1));
  r = read_back(t, 150, 100);  // [150,250): the shadow covers the first half
  CHECK(range_is(r, 0, 50, 0xa1));
  CHECK(range_is(r, 50, 100, 0xff));
  r = read_back(t, 120, 10);  // inside
  CHECK(range_is(r, 0, 10, 0xa1));
  r = read_back(t, 0, 100);  // just before
  CHECK(range_is(r, 0, 100, 0xff));
  r = read_back(t, 200, 10);  // just after
  CHECK(range_is(r, 0, 10, 0xff));
}

TEST_CASE("stale: zero writes shadow and patch zeros") {
  StaleWriteTracker t(1 << 20);
  t.add(1, 10, 0, 100, nullptr, kT0);  // an abandoned zero/trim
  auto r = read_back(t, 0, 150);
  CHECK(range_is(r, 0, 100, 0x00));
  CHECK(range_is(r, 100, 150, 0xff));

  auto a = bytes(100, 0xa1);
  t.add(1, 11, 200, 100, a.data(), kT0);
  t.on_acked_write(250, 20, nullptr);  // an acknowledged zero
  r = read_back(t, 200, 100);
  CHECK(range_is(r, 0, 50, 0xa1));
  CHECK(range_is(r, 50, 70, 0x00));
  CHECK(range_is(r, 70, 100, 0xa1));
}

TEST_CASE("stale: take_ready offers a shadow only when no unresolved write overlaps it") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), b = bytes(100, 0xb2), c = bytes(100, 0xc3);
  auto ia = t.add(1, 10, 0, 100, a.data(), kT0);
  auto ib = t.add(2, 11, 50, 100, b.data(), kT0);    // merged shadow [0,150)
  auto ic = t.add(2, 12, 1000, 100, c.data(), kT0);  // a separate one
  CHECK(t.take_ready().empty());
  t.resolve(ia, true);
  CHECK(t.take_ready().empty());  // ib still overlaps [0,150)
  t.resolve(ib, false);
  auto jobs = t.take_ready();
  REQUIRE(jobs.size() == 1);  // not [1000,1100): ic is unresolved
  CHECK(jobs[0].offset == 0);
  REQUIRE(jobs[0].data.size() == 150);
  CHECK(range_is(jobs[0].data, 0, 100, 0xa1));  // the older shadow's bytes kept in the merge
  CHECK(range_is(jobs[0].data, 100, 150, 0xb2));
  CHECK(t.take_ready().empty());  // being written back at this generation
  t.reapplied(jobs[0], true);
  CHECK(t.shadow_bytes() == 100);
  CHECK(t.counters().reapplied == 1);
  CHECK_FALSE(t.idle());
  t.resolve(ic, true);
  jobs = t.take_ready();
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].offset == 1000);
  t.reapplied(jobs[0], true);
  CHECK(t.idle());
  CHECK(t.shadow_bytes() == 0);
  CHECK(t.counters().resolved_late == 2);
  CHECK(t.counters().resolved_by_death == 1);
}

TEST_CASE("stale: a write-back at an old generation keeps the shadow and offers it again") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), n = bytes(10, 0x4e);
  t.resolve(t.add(1, 10, 0, 100, a.data(), kT0), true);
  auto j1 = t.take_ready();
  REQUIRE(j1.size() == 1);
  t.on_acked_write(10, 10, n.data());  // a newer write while the write-back is in flight
  t.reapplied(j1[0], true);
  CHECK_FALSE(t.idle());
  CHECK(t.shadow_bytes() == 100);
  auto r = read_back(t, 0, 100);
  CHECK(range_is(r, 10, 20, 0x4e));
  auto j2 = t.take_ready();
  REQUIRE(j2.size() == 1);
  CHECK(j2[0].gen != j1[0].gen);
  CHECK(range_is(j2[0].data, 0, 10, 0xa1));
  CHECK(range_is(j2[0].data, 10, 20, 0x4e));
  CHECK(range_is(j2[0].data, 20, 100, 0xa1));
  t.reapplied(j2[0], true);
  CHECK(t.idle());
  CHECK(t.shadow_bytes() == 0);
  CHECK(t.counters().reapplied == 2);
}

TEST_CASE("stale: a failed write-back is offered again") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1);
  t.resolve(t.add(1, 10, 0, 100, a.data(), kT0), true);
  auto j1 = t.take_ready();
  REQUIRE(j1.size() == 1);
  t.reapplied(j1[0], false);
  CHECK(t.counters().reapplied == 0);
  CHECK(t.shadow_bytes() == 100);
  auto j2 = t.take_ready();
  REQUIRE(j2.size() == 1);
  CHECK(j2[0].gen == j1[0].gen);
  CHECK(j2[0].data == j1[0].data);
  t.reapplied(j2[0], true);
  CHECK(t.idle());
}

TEST_CASE("stale: a new abandoned write over a shadow being written back keeps it") {
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), b = bytes(50, 0xb2);
  t.resolve(t.add(1, 10, 0, 100, a.data(), kT0), true);
  auto j1 = t.take_ready();
  REQUIRE(j1.size() == 1);
  auto ib = t.add(2, 11, 20, 50, b.data(), kT0);
  t.reapplied(j1[0], true);
  CHECK_FALSE(t.idle());
  CHECK(t.shadow_bytes() == 100);
  CHECK(t.take_ready().empty());  // ib unresolved
  t.resolve(ib, true);
  auto j2 = t.take_ready();
  REQUIRE(j2.size() == 1);
  CHECK(range_is(j2[0].data, 0, 100, 0xa1));  // the shadow's (acknowledged) bytes won
  t.reapplied(j2[0], true);
  CHECK(t.idle());
}

TEST_CASE("stale: a shadow is not dropped while an older write-back of it is in flight") {
  // Two write-backs of one range in flight on different connections may land
  // in either order: only a write-back sent after every older one finished
  // may end the shadow.
  StaleWriteTracker t(1 << 20);
  auto a = bytes(100, 0xa1), n = bytes(100, 0x4e);
  t.resolve(t.add(1, 10, 0, 100, a.data(), kT0), true);
  auto j1 = t.take_ready();  // write-back #1 (A's bytes) goes out
  REQUIRE(j1.size() == 1);
  t.on_acked_write(0, 100, n.data());  // the client writes N meanwhile
  auto j2 = t.take_ready();
  if (j2.empty()) {
    // Not offered while #1 is in flight: #1 ends, then N is written back.
    t.reapplied(j1[0], true);
    CHECK_FALSE(t.idle());
    auto j3 = t.take_ready();
    REQUIRE(j3.size() == 1);
    CHECK(range_is(j3[0].data, 0, 100, 0x4e));
    t.reapplied(j3[0], true);
    CHECK(t.idle());
  } else {
    // #2 (N) goes out while #1 is still in flight, and ends first.
    REQUIRE(j2.size() == 1);
    CHECK(range_is(j2[0].data, 0, 100, 0x4e));
    t.reapplied(j2[0], true);
    CHECK_FALSE(t.idle());  // #1 may still land after #2, over N
    auto r = read_back(t, 0, 100);
    CHECK(range_is(r, 0, 100, 0x4e));
    t.reapplied(j1[0], true);
    auto j3 = t.take_ready();  // so N must be written back once more
    REQUIRE(j3.size() == 1);
    CHECK(range_is(j3[0].data, 0, 100, 0x4e));
    t.reapplied(j3[0], true);
    CHECK(t.idle());
  }
}

TEST_CASE("stale: must_hold ignores the same request and shadowed writes") {
  StaleWriteTracker t(50);  // writes over 50 bytes get no shadow
  auto d = bytes(100, 0xd4);
  auto id = t.add(1, 7, 100, 100, d.data(), kT0);
  CHECK(t.counters().unshadowed == 1);
  CHECK(t.shadow_bytes() == 0);
  CHECK(t.must_hold(150, 10, 8));                 // another request, overlapping
  CHECK(t.must_hold(90, 11, 8));                  // touches its first byte
  CHECK(t.must_hold(199, 1, 8));                  // touches its last byte
  CHECK(t.must_hold(0, 1000, 8));                 // covers it
  CHECK_FALSE(t.must_hold(150, 10, 7));           // its own request's retry
  CHECK_FALSE(t.must_hold(90, 10, 8));            // adjacent before
  CHECK_FALSE(t.must_hold(200, 10, 8));           // adjacent after
  auto s = t.add(1, 9, 1000, 40, d.data(), kT0);  // fits: shadowed
  CHECK(t.shadow_bytes() == 40);
  CHECK_FALSE(t.must_hold(1000, 10, 8));  // a shadowed write never holds
  t.resolve(id, true);
  CHECK_FALSE(t.must_hold(150, 10, 8));
  t.resolve(s, true);
}

TEST_CASE("stale: pending_on follows unresolved writes per path") {
  StaleWriteTracker t(1 << 20);
  auto d = bytes(10, 1);
  auto a = t.add(3, 1, 0, 10, d.data(), kT0);
  auto b = t.add(3, 2, 100, 10, d.data(), kT0 + 1s);
  auto c = t.add(4, 3, 200, 10, d.data(), kT0 + 2s);
  CHECK(t.pending_on(3));
  CHECK(t.pending_on(4));
  CHECK_FALSE(t.pending_on(5));
  t.resolve(a, true);
  CHECK(t.pending_on(3));
  Clock::time_point since{};
  REQUIRE(t.oldest(&since));
  CHECK(since == kT0 + 1s);
  t.resolve(b, false);
  CHECK_FALSE(t.pending_on(3));
  t.resolve(b, false);  // unknown by now: no effect
  t.resolve(999, true);
  CHECK(t.counters().resolved_late == 1);
  CHECK(t.counters().resolved_by_death == 1);
  CHECK(t.pending() == 1);
  t.resolve(c, true);
  CHECK_FALSE(t.pending_on(4));
  CHECK_FALSE(t.oldest(&since));
}

TEST_CASE("stale: memory accounting over merges and drops") {
  StaleWriteTracker t(300);
  auto a = bytes(100, 0xa1), b = bytes(100, 0xb2), c = bytes(200, 0xc3), d = bytes(100, 0xd4);
  auto ia = t.add(1, 1, 0, 100, a.data(), kT0);
  CHECK(t.shadow_bytes() == 100);
  auto ib = t.add(1, 2, 200, 100, b.data(), kT0);
  CHECK(t.shadow_bytes() == 200);
  auto ic = t.add(1, 3, 50, 200, c.data(), kT0);  // bridges both: one [0,300), exactly the bound
  CHECK(t.shadow_bytes() == 300);
  CHECK(t.counters().unshadowed == 0);
  auto r = read_back(t, 0, 300);
  CHECK(range_is(r, 0, 100, 0xa1));
  CHECK(range_is(r, 100, 200, 0xc3));
  CHECK(range_is(r, 200, 300, 0xb2));
  auto id = t.add(1, 4, 250, 100, d.data(), kT0);  // would make [0,350): over the bound
  CHECK(t.counters().unshadowed == 1);
  CHECK(t.shadow_bytes() == 300);
  r = read_back(t, 0, 400);
  CHECK(range_is(r, 200, 300, 0xb2));  // existing shadow untouched
  CHECK(range_is(r, 300, 400, 0xff));
  auto ie = t.add(1, 5, 1000, 1, d.data(), kT0);  // even one more byte does not fit
  CHECK(t.counters().unshadowed == 2);
  for (auto i : {ia, ib, ic, id, ie}) t.resolve(i, true);
  auto jobs = t.take_ready();
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].offset == 0);
  CHECK(jobs[0].data.size() == 300);
  t.reapplied(jobs[0], true);
  CHECK(t.shadow_bytes() == 0);
  CHECK(t.idle());
  // The memory is free again.
  auto e = bytes(300, 0xe5);
  t.add(1, 6, 0, 300, e.data(), kT0);
  CHECK(t.shadow_bytes() == 300);
  CHECK(t.counters().unshadowed == 2);
}

}  // namespace
}  // namespace mp
