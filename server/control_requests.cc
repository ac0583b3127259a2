// One control request line in, one response out (see control_requests.h).
#include "server/control_requests.h"

#include <exception>
#include <set>
#include <string>
#include <vector>

#include "server/control_protocol.h"

namespace mp::control {

using json = nlohmann::json;

namespace {

Outcome ok(json result, std::string audit = "") {
  return {json{{"ok", true}, {"result", std::move(result)}}, std::move(audit), {}};
}
Outcome error(const std::string& sentence, std::string audit = "") {
  return {json{{"ok", false}, {"error", sentence}}, std::move(audit), {}};
}

}  // namespace

const char kRequestExample[] =
    "send one JSON object per line, such as {\"command\": \"show paths\"}";

namespace {

// A request is one flat object; anything nested deeper than this is refused
// before it is built (nlohmann parses without recursion, but a 64 KiB line of
// '[' would still become a 64 Ki-deep tree for nothing).
constexpr int kMaxDepth = 8;

// nlohmann's message without its "[json.exception.parse_error.101] " tag,
// printable (its "last read" quotes the input, DEL bytes included).
std::string nlohmann_message(const json::exception& e) {
  std::string m = e.what();
  auto p = m.find("] ");
  if (p != std::string::npos) m.erase(0, p + 2);
  m = control::printable(m);
  // "last read: '...'" quotes the token, which can be most of a 64 KiB line.
  if (m.size() > 200) m = m.substr(0, 200) + "...";
  return m;
}

// Why the parser callback refused a line (thrown out of json::parse).
struct Refused {
  std::string sentence;
};

// Parses one request line. Refuses (throws Refused) a key given twice in one
// object, which nlohmann would otherwise resolve silently (the last one wins),
// and nesting deeper than kMaxDepth. Throws json::exception for invalid JSON
// and numbers out of range (1e999).
json parse_request(std::string_view line) {
  std::vector<std::set<std::string>> keys;  // per open object, the keys seen so far
  int depth = 0;                            // objects and arrays open
  auto check = [&](int, json::parse_event_t event, json& parsed) {
    using E = json::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start:
        if (++depth > kMaxDepth)
          throw Refused{"the request nests objects or arrays deeper than " +
                        std::to_string(kMaxDepth) + " levels: " + kRequestExample};
        if (event == E::object_start) keys.emplace_back();
        break;
      case E::object_end:
        keys.pop_back();
        depth--;
        break;
      case E::array_end:
        depth--;
        break;
      case E::key:
        if (!keys.back().insert(parsed.get<std::string>()).second)
          throw Refused{"the field " + control::quote(parsed.get_ref<const std::string&>()) +
                        " appears twice in one object: give each field once"};
        break;
      case E::value:
        break;
    }
    return true;
  };
  return json::parse(line.begin(), line.end(), check);
}

json topology(ControlApi& api) {
  auto groups = api.show_groups();
  auto paths = api.show_paths();
  auto path_json = [](const PathInfo& p) {
    return json{{"name", p.name},
                {"uri", p.uri},
                {"state", p.state},
                {"reason", p.reason},
                {"inflight", p.inflight}};
  };
  std::vector<bool> placed(paths.size());
  json out = json::array();
  for (const auto& g : groups) {
    json members = json::array();
    for (const auto& name : g.paths) {
      auto it = std::find_if(paths.begin(), paths.end(),
                             [&](const PathInfo& p) { return p.name == name; });
      if (it == paths.end()) {
        members.push_back(json{
            {"name", name}, {"uri", ""}, {"state", "unknown"}, {"reason", ""}, {"inflight", 0}});
        continue;
      }
      placed[it - paths.begin()] = true;
      members.push_back(path_json(*it));
    }
    out.push_back(json{{"name", g.name},
                       {"priority", g.priority},
                       {"serving", g.serving},
                       {"paths", std::move(members)}});
  }
  // A path whose group the engine did not list (should not happen): still shown.
  for (std::size_t i = 0; i < paths.size(); i++) {
    if (placed[i]) continue;
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const json& g) { return g["name"] == paths[i].group; });
    if (it == out.end()) {
      out.push_back(json{
          {"name", paths[i].group}, {"priority", 0}, {"serving", false}, {"paths", json::array()}});
      it = out.end() - 1;
    }
    (*it)["paths"].push_back(path_json(paths[i]));
  }
  // Each group's status, as multipath -ll shows it: serving, standby (an
  // active path, not serving), or down (no active path).
  for (auto& g : out) {
    bool usable = false;
    for (const auto& p : g["paths"]) usable = usable || p["state"] == "active";
    g["status"] = g["serving"] == true ? "serving" : usable ? "standby" : "down";
  }
  return json{{"disk", api.show_disk()}, {"groups", std::move(out)}};
}

// The command, already checked against the table.
Outcome dispatch(ControlApi& api, const std::string& cmd, const std::vector<std::string>& args) {
  std::string audit = cmd;
  for (const auto& a : args) (audit += ' ') += a;
  audit = "control: " + audit;
  auto action = [&](const std::string& err, json result = nullptr) {
    if (!err.empty()) return error(err, audit + ": " + err);
    return ok(std::move(result), audit + ": done");
  };

  if (cmd == "show paths") return ok(api.show_paths());
  if (cmd == "show groups") return ok(api.show_groups());
  if (cmd == "show topology") return ok(topology(api));
  if (cmd == "show stats") return ok(api.show_stats());
  if (cmd == "show events") return ok(api.show_events());
  if (cmd == "show config") {
    json list = json::array();
    for (const auto& [k, v] : api.show_config()) list.push_back(json{{"key", k}, {"value", v}});
    return ok(std::move(list));
  }
  if (cmd == "fail") return action(api.fail_path(args[0]));
  if (cmd == "reinstate") return action(api.reinstate_path(args[0]));
  if (cmd == "drain") return action(api.drain_path(args[0]));
  if (cmd == "switch-group") return action(api.switch_group(args[0]));
  if (cmd == "queueing") {
    bool on = args[0] == "on";
    return action(api.set_queueing(on), json{{"queueing", on}});
  }
  if (cmd == "fail-queued") {
    std::uint64_t failed = 0;
    std::string err = api.fail_queued(&failed);
    return action(err, json{{"failed", failed}});
  }
  if (cmd == "reload") {
    // The file is read off the loop: the answer comes later.
    const bool dry_run = !args.empty();
    Outcome o;
    o.later = [&api, dry_run, audit](std::function<void(Outcome)> answer) {
      api.reload(dry_run, [dry_run, audit, answer = std::move(answer)](const std::string& err,
                                                                       const std::string& summary) {
        Outcome r;
        try {
          r = err.empty() ? ok(json{{"dry_run", dry_run}, {"summary", summary}}, audit + ": done")
                          : error(err, audit + ": " + err);
          if (err.empty() && !summary.empty()) r.audit += " (" + summary + ")";
        } catch (const std::exception& e) {
          r = Outcome{};
          r.response = json{{"ok", false}, {"error", "internal error"}};
        }
        answer(std::move(r));
      });
    };
    return o;
  }
  if (cmd == "reset-stats") return action(api.reset_stats());
  if (cmd == "help") {
    json list = json::array();
    for (const auto& c : control::kCommands)
      list.push_back(json{{"command", c.name}, {"args", c.args}, {"help", c.help}});
    return ok(std::move(list));
  }
  return error("command '" + cmd + "' is in the table but not implemented");
}

Outcome run(ControlApi& api, std::string_view line) {
  if (line.find_first_not_of(" \t") == std::string_view::npos)
    return error(std::string("empty request line: ") + kRequestExample);
  // nlohmann stops at a NUL byte as at the end of the input, ignoring the
  // rest of the line: refuse it instead (JSON has no raw NUL anywhere).
  if (auto nul = line.find('\0'); nul != std::string_view::npos)
    return error("invalid JSON: a NUL byte at column " + std::to_string(nul + 1) + ": " +
                 kRequestExample);
  json req;
  try {
    req = parse_request(line);
  } catch (const Refused& r) {
    return error(r.sentence);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e999
    return error("invalid JSON: " + nlohmann_message(e) + ": " + kRequestExample);
  }
  if (!req.is_object())
    return error(std::string("the request is JSON but a ") + req.type_name() +
                 ", not an object: " + kRequestExample);
  std::string command;
  std::vector<std::string> args;
  bool have_command = false;
  for (auto& [key, value] : req.items()) {
    if (key == "command") {
      if (!value.is_string())
        return error(std::string("command must be a string, not a ") + value.type_name());
      command = control::normalize(value.get_ref<const std::string&>());
      have_command = true;
    } else if (key == "args") {
      if (!value.is_array())
        return error(std::string("args must be an array of strings, not a ") + value.type_name());
      for (const auto& a : value) {
        if (!a.is_string())
          return error(std::string("args must be an array of strings, but one is a ") +
                       a.type_name());
        args.push_back(a.get<std::string>());
      }
    } else {
      return error("unknown field " + control::quote(key) +
                   " in the request: only command and args are allowed");
    }
  }
  if (!have_command)
    return error(std::string("the request has no command field: ") + kRequestExample);
  if (std::string err = control::check(command, args); !err.empty()) return error(err);
  try {
    return dispatch(api, command, args);
  } catch (const std::exception& e) {
    return error("internal error while running " + command + ": " + e.what(),
                 "control: " + command + ": internal error: " + e.what());
  }
}

// run() with nothing escaping: whatever throws becomes an error response, so
// no request can reach the event loop with an exception (it would end the
// process, and the disk with it).
}  // namespace

Outcome run_request(ControlApi& api, std::string_view line) {
  try {
    return run(api, line);
  } catch (const std::exception& e) {
    return error(std::string("internal error while handling the request: ") + e.what() +
                     ": report this as a bug",
                 std::string("control: internal error: ") + e.what());
  } catch (...) {
    return error("internal error while handling the request: report this as a bug",
                 "control: internal error");
  }
}

}  // namespace mp::control
