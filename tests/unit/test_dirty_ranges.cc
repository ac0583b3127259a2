// Unit tests for DirtyRanges: coalescing, what a flush clears, overlap queries, the bound.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "server/dirty_ranges.h"

namespace mp {
namespace {

TEST_CASE("dirty ranges: empty, then one write") {
  DirtyRanges d;
  CHECK(d.empty());
  CHECK_FALSE(d.overlaps(0, 4096));
  d.add(4096, 4096, 1);
  CHECK(d.ranges() == 1);
  CHECK(d.bytes() == 4096);
  CHECK(d.overlaps(4096, 1));
  CHECK(d.overlaps(8191, 1));
  CHECK(d.overlaps(0, 4097));
  CHECK_FALSE(d.overlaps(0, 4096));     // ends where the range starts
  CHECK_FALSE(d.overlaps(8192, 4096));  // starts where it ends
  CHECK_FALSE(d.overlaps(4096, 0));     // an empty request overlaps nothing
  d.add(0, 0, 2);                       // an empty write adds nothing
  CHECK(d.ranges() == 1);
}

TEST_CASE("dirty ranges: overlapping and touching writes coalesce") {
  DirtyRanges d;
  d.add(0, 4096, 1);
  d.add(8192, 4096, 2);
  CHECK(d.ranges() == 2);
  CHECK_FALSE(d.overlaps(4096, 4096));  // the gap between them
  d.add(4096, 4096, 3);                 // touches both: one range
  CHECK(d.ranges() == 1);
  CHECK(d.bytes() == 12288);
  d.add(2048, 4096, 4);  // inside it
  CHECK(d.ranges() == 1);
  CHECK(d.bytes() == 12288);
  d.add(100000, 10, 5);
  d.add(0, 200000, 6);  // swallows everything
  CHECK(d.ranges() == 1);
  CHECK(d.bytes() == 200000);
}

TEST_CASE("dirty ranges: a flush clears only what was acknowledged before it was sent") {
  DirtyRanges d;
  d.add(0, 4096, 1);
  d.add(65536, 4096, 2);
  // A flush sent at generation 1 (only the first write acknowledged then).
  d.flushed(1);
  CHECK_FALSE(d.overlaps(0, 4096));
  CHECK(d.overlaps(65536, 4096));
  CHECK(d.bytes() == 4096);
  d.flushed(2);
  CHECK(d.empty());
  CHECK(d.bytes() == 0);
}

TEST_CASE("dirty ranges: a merged range stays dirty until its newest write is covered") {
  DirtyRanges d;
  d.add(0, 4096, 1);
  d.add(4096, 4096, 2);        // merges: the range's newest write is 2
  d.flushed(1);                // a flush sent before write 2 was acknowledged
  CHECK(d.overlaps(0, 4096));  // conservative: kept, never dropped early
  d.flushed(2);
  CHECK(d.empty());
}

TEST_CASE("dirty ranges: clear forgets everything") {
  DirtyRanges d;
  d.add(0, 4096, 1);
  d.add(1 << 20, 4096, 2);
  d.clear();
  CHECK(d.empty());
  CHECK(d.bytes() == 0);
  CHECK_FALSE(d.overlaps(0, std::numeric_limits<std::uint64_t>::max()));
}

TEST_CASE("dirty ranges: offsets at the top of the address space do not wrap") {
  DirtyRanges d;
  const std::uint64_t top = std::numeric_limits<std::uint64_t>::max();
  d.add(top - 4095, 8192, 1);  // clamped at the top
  CHECK(d.overlaps(top - 1, 1));
  CHECK(d.overlaps(top - 4095, 100000));
  CHECK_FALSE(d.overlaps(0, 4096));
  CHECK(d.bytes() == 4095);
}

TEST_CASE("dirty ranges: the bound says when the path must be flushed") {
  DirtyRanges d(3);
  for (std::uint64_t i = 0; i < 3; i++) d.add(i * 8192, 4096, i + 1);
  CHECK(d.ranges() == 3);
  CHECK_FALSE(d.over_limit());
  d.add(3 * 8192, 4096, 4);
  CHECK(d.over_limit());  // tracked all the same: nothing dropped
  CHECK(d.overlaps(3 * 8192, 4096));
  CHECK(d.overlaps(0, 4096));
  d.flushed(4);
  CHECK_FALSE(d.over_limit());
  d.set_max_ranges(0);
  d.add(0, 1, 5);
  CHECK(d.over_limit());
}

// Against a model of every block: the ranges always cover every block whose
// newest acknowledged write no completed flush covers (safety), and never
// cover a block that was never written (coalescing only joins writes).
TEST_CASE("dirty ranges: randomized against a per-block model") {
  const unsigned seed = 20261206;
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  constexpr std::uint64_t kBlocks = 256, kBs = 512;
  for (int run = 0; run < 50; run++) {
    DirtyRanges d;
    std::vector<std::uint64_t> newest(kBlocks, 0);  // generation of the newest write, 0: none
    std::vector<bool> written(kBlocks, false);
    std::uint64_t gen = 0, flushed = 0;
    for (int step = 0; step < 400; step++) {
      auto r = rng() % 10;
      if (r < 7) {
        std::uint64_t b = rng() % kBlocks;
        std::uint64_t n = 1 + rng() % std::min<std::uint64_t>(8, kBlocks - b);
        // Sub-block offsets too: a write need not be block-aligned.
        std::uint64_t off = b * kBs + (rng() % 2 ? rng() % kBs : 0);
        std::uint64_t len = n * kBs - (off - b * kBs);
        d.add(off, len, ++gen);
        for (std::uint64_t i = b; i < b + n; i++) {
          newest[i] = gen;
          written[i] = true;
        }
      } else if (r < 9) {
        // A flush sent some writes ago completes now.
        std::uint64_t sent = flushed + rng() % (gen - flushed + 1);
        d.flushed(sent);
        flushed = sent;
      } else {
        std::uint64_t b = rng() % kBlocks;
        (void)d.overlaps(b * kBs, kBs);
      }
      std::uint64_t sum = 0;
      for (std::uint64_t b = 0; b < kBlocks; b++) {
        bool dirty = d.overlaps(b * kBs, kBs);
        if (newest[b] > flushed) {
          REQUIRE(dirty);
        }
        if (!written[b]) {
          REQUIRE_FALSE(dirty);
        }
        sum += dirty;
      }
      REQUIRE(d.bytes() <= sum * kBs);
      if (flushed == gen) {
        REQUIRE(d.empty());
      }
    }
  }
}

}  // namespace
}  // namespace mp
