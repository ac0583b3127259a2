// The table of allowed path-state changes (see path_state.h), read from what the engine does.
#include "server/path_state.h"

#include <array>

namespace mp {

const char* to_string(PathState s) {
  switch (s) {
    case PathState::Connecting:
      return "connecting";
    case PathState::Probing:
      return "probing";
    case PathState::Held:
      return "held";
    case PathState::Active:
      return "active";
    case PathState::Marginal:
      return "marginal";
    case PathState::Draining:
      return "draining";
    case PathState::Failed:
      return "failed";
    case PathState::Removed:
      return "removed";
  }
  return "?";
}

namespace {

using S = PathState;
using C = PathCounter;

// Loud rows: a path entering service (-> Active), or leaving it (-> Failed,
// except from Connecting: a reconnect that fails again is routine; ->
// Marginal: it answers, but is too slow to serve).
constexpr std::array kTable{
    // A connect finished and the path's caps fit the disk: its probe read is sent.
    PathTransition{S::Connecting, S::Probing, false, C::None, "connected"},
    // The connect timed out, failed, or the path reaches another disk (refused).
    PathTransition{S::Connecting, S::Failed, false, C::Failures, "connect failed or refused"},
    // A reload removed it while it was connecting: its connection is retired.
    PathTransition{S::Connecting, S::Draining, false, C::None, "removed by a reload"},

    // The probe read succeeded and no abandoned write of it is unresolved.
    PathTransition{S::Probing, S::Active, true, C::Reinstatements, "probe read succeeded"},
    // The probe read succeeded, but an abandoned write sent on an older
    // connection could still land (stale_writes.h).
    PathTransition{S::Probing, S::Held, false, C::None, "abandoned writes unresolved"},
    // The probe read failed or timed out, or the connection was lost, or the operator failed it.
    PathTransition{S::Probing, S::Failed, true, C::Failures, "probe failed or connection lost"},
    // A reload removed it: the probe in flight is abandoned.
    PathTransition{S::Probing, S::Draining, false, C::None, "removed by a reload"},

    // Its last abandoned write resolved: it serves again.
    PathTransition{S::Held, S::Active, true, C::Reinstatements, "abandoned writes resolved"},
    // The connection was lost, or the operator failed it.
    PathTransition{S::Held, S::Failed, true, C::Failures, "connection lost or operator fail"},
    // A reload removed it.
    PathTransition{S::Held, S::Draining, false, C::None, "removed by a reload"},

    // An attempt timed out, the transport died, the server returned EIO, a
    // checker probe failed, or the operator failed it: its requests retry elsewhere.
    PathTransition{S::Active, S::Failed, true, C::Failures, "path failure or operator fail"},
    // The operator drained it, or a reload removed it: no new I/O, in-flight I/O finishes.
    PathTransition{S::Active, S::Draining, false, C::None, "operator drain or removed by reload"},

    // Latency outlier detection found it much slower than its group's other
    // active paths (outlier.h): it keeps its connection and what is in flight
    // finishes; new client I/O goes elsewhere, probe reads measure it.
    PathTransition{S::Active, S::Marginal, true, C::None, "latency outlier"},

    // Its probes' latency is back near its peers' after its ejection time,
    // or it is its group's last usable path, or the operator reinstated it.
    PathTransition{S::Marginal, S::Active, true, C::None, "re-admitted"},
    // A probe read failed or timed out, its connection was lost, or the operator failed it.
    PathTransition{S::Marginal, S::Failed, true, C::Failures, "path failure or operator fail"},
    // A reload removed it: no new I/O (it had none), in-flight I/O finishes.
    PathTransition{S::Marginal, S::Draining, false, C::None, "removed by a reload"},

    // The operator reinstated a drained path (its connection never went away).
    PathTransition{S::Draining, S::Active, true, C::None, "operator reinstate"},
    // An attempt on it failed, its connection was lost, or the operator failed it.
    PathTransition{S::Draining, S::Failed, true, C::Failures, "path failure or operator fail"},
    // Removed by a reload, and now idle and flushed (or its writes are covered).
    PathTransition{S::Draining, S::Removed, false, C::None, "removal finished"},

    // The reconnect back-off elapsed, or the operator reinstated it.
    PathTransition{S::Failed, S::Connecting, false, C::None, "reconnect"},
    // A reload removed it while it was down.
    PathTransition{S::Failed, S::Draining, false, C::None, "removed by a reload"},
    // A path a reload removed failed while draining; now idle: it leaves.
    PathTransition{S::Failed, S::Removed, false, C::None, "removal finished"},
};

}  // namespace

std::span<const PathTransition> path_transitions() {
  return kTable;
}

const PathTransition* find_transition(PathState from, PathState to) {
  for (const PathTransition& t : kTable)
    if (t.from == from && t.to == to) return &t;
  return nullptr;
}

}  // namespace mp
