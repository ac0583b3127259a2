// A path's states and the table of the changes allowed between them (in the
// spirit of libnbd's state table). Engine::transition() is the only writer of
// a path's state; it refuses a change that is not in the table (a bug).
//
// The usual life of a path:
//
//   (new) ─► Connecting ─connected─► Probing ─probe ok─► Active ─failure─► Failed
//                ▲                      └─probe ok, abandoned writes─► Held  │
//                │                               unresolved    resolved ─► Active
//                └──────────────── back-off elapsed ─────────────────────────┘
//
// Every allowed change (the rows of path_state.cc), from (row) to (column):
//
//   from \ to     Connecting Probing Held Active Marginal Draining Failed Removed
//   Connecting        .         c      .     .       .        r       f      .
//   Probing           .         .      h     p       .        r       f      .
//   Held              .         .      .     w       .        r       f      .
//   Active            .         .      .     .       m       d r      f      .
//   Marginal          .         .      .    a o      .        r       f      .
//   Draining          .         .      .     o       .        .       f      x
//   Failed            b         .      .     .       .        r       .      x
//
//   c  connected, its caps fit the disk     p  probe read succeeded
//   h  probe read succeeded, but an abandoned write of an older connection is unresolved
//   w  its last abandoned write resolved    o  operator reinstate (a drained path)
//   d  operator drain                       r  removed by a reload
//   f  failure: connect failed, timed out or refused; attempt timeout, transport
//      error or EIO; probe failed; connection lost; operator fail
//   x  a removed path is idle and flushed: it leaves
//   b  reconnect: back-off elapsed, or operator reinstate
//   m  latency outlier: much slower than its group's other active paths (outlier.h)
//   a  re-admitted: its probes' latency is back near its peers', or it is the
//      group's last usable path
//
// Only Active serves I/O (serves_io): the selector's usable set follows.
#pragma once

#include <cstdint>
#include <span>

namespace mp {

enum class PathState : std::uint8_t {
  Connecting,  // a connection is being made (new path, or after the back-off)
  Probing,     // connected; its probe read is in flight
  Held,        // probed, but an abandoned write from an older connection may still land
  Active,      // serving I/O: the only state in its selector's usable set
  Marginal,    // connected but a latency outlier: no client I/O, only probe reads that measure it
  Draining,    // no new I/O; in-flight requests finish (operator drain, or a reload removed it)
  Failed,      // out of service, waiting for its reconnect (or for the operator's reinstate)
  Removed      // a reload removed it and it has left; final
};
const char* to_string(PathState s);

// The selector's usable set is exactly the paths in a state that serves I/O.
constexpr bool serves_io(PathState s) {
  return s == PathState::Active;
}

// The per-path counter a change bumps (PathStats).
enum class PathCounter : std::uint8_t { None, Failures, Reinstatements };

struct PathTransition {
  PathState from;
  PathState to;
  bool loud;  // logged at error level: what an operator must see (leaving or entering service)
  PathCounter counter;
  const char* why;  // when the engine makes this change
};

// Every allowed change, one row each. A state set again to itself is not a
// change (only its reason is updated) and is not listed.
std::span<const PathTransition> path_transitions();
// The row for from -> to, or nullptr when that change is not allowed.
const PathTransition* find_transition(PathState from, PathState to);

}  // namespace mp
