// The /metrics body: the engine's counters in the Prometheus text format.
#pragma once

#include <string>

#include "server/control_api.h"

namespace mp {

// The whole /metrics body in the Prometheus text exposition format 0.0.4.
// Runs on the loop thread (it calls ControlApi).
std::string render_metrics(ControlApi& api);

}  // namespace mp
