// One control request line in, one response out: parsing (and refusing
// malformed input with one sentence), dispatch to the ControlApi, and the
// audit line an operator action leaves in the log. Runs on the loop thread.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "server/control_api.h"

namespace mp::control {

struct Outcome {
  nlohmann::json response;
  std::string audit;  // for the log: what an operator action did; "" for queries
};

// Answers one request line (without its newline). Never throws: whatever
// goes wrong becomes an error response.
Outcome run_request(ControlApi& api, std::string_view line);

// What a well-formed request looks like, for error sentences.
extern const char kRequestExample[];

}  // namespace mp::control
