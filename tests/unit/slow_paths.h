// Test helpers for slow paths: serve client requests with a per-path delay until the engine
// makes a path marginal, and answer the probes of marginal paths.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>

#include "tests/unit/fakes.h"

namespace mp::test {

// Sends `n` client requests of `op` one after the other (4 KiB each, in the
// disk's first 800 KiB after block 0, from block `first` on),
// each served by whichever path the engine picks; those on `slow` are
// answered `delay` later, and so are its probes. Returns how many requests
// went to `slow`.
inline int serve_slowly(Harness& h, const std::string& slow, Clock::duration delay, int n,
                        Op op = Op::Read, unsigned first = 0) {
  int on_slow = 0;
  for (int i = 0; i < n; i++) {
    // Probes (checker, outlier) are answered like everything else.
    for (auto& [name, fp] : h.paths)
      if (auto j = h.probe_of(name)) {
        if (name == slow) h.advance(delay);
        if (auto k = h.probe_of(name)) fp->serve(*k);
      }
    const std::uint64_t off = 4096ull * (1 + (first + static_cast<unsigned>(i)) % 200);
    auto r = make_req(h.rt, op, off, 4096, op == Op::Write ? 0x5a : -1);
    h.engine->submit(*r);
    auto [p, k] = h.find(op, off);
    if (p->name() == slow) {
      on_slow++;
      h.advance(delay);
    }
    p->serve(k);
    REQUIRE(r->calls == 1);
    REQUIRE(r->err == 0);
  }
  return on_slow;
}

// Answers the pending probe read of `name`, if any, after `delay`.
inline bool serve_probe(Harness& h, const std::string& name, Clock::duration delay) {
  auto i = h.probe_of(name);
  if (!i) return false;
  h.advance(delay);
  if (auto j = h.probe_of(name)) h.p(name).serve(*j);
  return true;
}

// Runs the disk for `d` of fake time: a client read every 100 ms, probes
// answered as soon as they are sent (those of `slow` after `delay`).
inline void run_for(Harness& h, const std::string& slow, Clock::duration delay, Clock::duration d) {
  const Clock::time_point end = h.rt.t + d;
  unsigned i = 0;
  auto probe_pending = [&] {
    for (auto& [name, fp] : h.paths)
      if (h.probe_of(name)) return true;
    return false;
  };
  while (h.rt.t < end) {
    serve_slowly(h, slow, delay, 1, Op::Read, i++);  // answers pending probes first
    const Clock::time_point until = std::min(end, h.rt.t + std::chrono::milliseconds(100));
    if (until > h.rt.t) h.advance_until(probe_pending, until - h.rt.t);
  }
}

// Drives `slow` (20 ms per request against 0 on the others) until the engine
// makes it marginal; false if it did not within 200 requests.
inline bool make_marginal(Harness& h, const std::string& slow) {
  for (int round = 0; round < 10; round++) {
    serve_slowly(h, slow, std::chrono::milliseconds(20), 20, Op::Read,
                 20 * static_cast<unsigned>(round));
    if (h.state(slow) == PathState::Marginal) return true;
  }
  h.advance(std::chrono::milliseconds(300));  // the next outlier tick
  return h.state(slow) == PathState::Marginal;
}

}  // namespace mp::test
