// A path's states and the table of the changes allowed between them (in the
// spirit of libnbd's state table). Engine::transition() is the only writer of
// a path's state; it refuses a change that is not in the table (a bug).
//
//                    ┌──────────── back-off elapsed, operator reinstate ◄─────────┐
//                    ▼                                                            │
//   (new) ──► Connecting ──connected──► Probing ──probe ok──────────────► Active  │
//                │                        │  └─probe ok, abandoned writes─► Held  │
//                │                        │                   resolved ──┘  │   │
//                │ connect timed out,     │ probe failed,                   │   │
//                │ refused, failed        │ connection lost                 │   │
//                ▼                        ▼                                 ▼   │
//              Failed ◄──── timeout, transport error, EIO, probe failed ── (Held, Active,
//                │          connection lost, operator fail                Draining)
//                │
//   Draining ◄── operator drain (Active), or removed by a reload (any live state)
//   Draining ──► Active: operator reinstate
//   Draining, Failed ──► Removed: a reload removed it and it is idle and flushed
//
// The table in path_state.cc is the exact list; every row says why.
#pragma once

#include <cstdint>
#include <span>

namespace mp {

enum class PathState : std::uint8_t {
  Connecting,  // a connection is being made (new path, or after the back-off)
  Probing,     // connected; its probe read is in flight
  Held,        // probed, but an abandoned write from an older connection may still land
  Active,      // serving I/O: the only state in its selector's usable set
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
