// One control request line in, one response out: parsing (and refusing
// malformed input with one sentence), dispatch to the ControlApi, and the
// audit line an operator action leaves in the log. Runs on the loop thread.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "server/control_api.h"

namespace mp::control {

struct Outcome {
  nlohmann::json response;
  std::string audit;  // for the log: what an operator action did; "" for queries
  // Set when the answer comes later (reload reads its file off the loop):
  // call it, and the answer arrives through its argument, on the loop thread.
  // `response` and `audit` are then empty.
  std::function<void(std::function<void(Outcome)> answer)> later;
};

// Answers one request line (without its newline). Never throws: whatever
// goes wrong becomes an error response.
Outcome run_request(ControlApi& api, std::string_view line);

// What a well-formed request looks like, for error sentences.
extern const char kRequestExample[];

}  // namespace mp::control
