// The control socket's wire protocol, shared by the server (server/control.cc)
// and nbd-multipath-ctl: the command table, argument checks, and the JSON
// form of the ControlApi structs.
//
// One request per line: {"command": "fail", "args": ["a"]}; one response per
// line: {"ok": true, "result": ...} or {"ok": false, "error": "sentence"}.
// Header-only and free of I/O: any thread may use it.
#pragma once

#include <array>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "server/control_api.h"

namespace mp {

// JSON field names are the struct members' names (snake_case). Missing fields
// read as their defaults, so an older or newer peer still parses.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(OpCounters, op, requests, bytes, errors, errors_eio,
                                                errors_nospc, errors_perm, errors_other,
                                                latency_p50_us, latency_p99_us)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(PathInfo, name, uri, group, state, reason, inflight,
                                                requests, bytes, errors, transport_errors,
                                                eio_errors, timeouts, failovers, failures,
                                                reinstatements, marginal, latency_p50_us,
                                                latency_p99_us, abandoned_pending, dirty_ranges,
                                                dirty_bytes, affinity_requests, cleaning_flushes,
                                                reconnects)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(GroupInfo, name, priority, serving, paths)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(EngineInfo, requests, failed_requests, retries,
                                                group_switches, queued_no_path, queued_no_path_ms,
                                                waiting, queueing, abandoned_writes,
                                                abandoned_pending, resolved_late, resolved_by_death,
                                                reapplied, unshadowed, shadow_bytes, hedges_sent,
                                                hedges_won, hedges_refused, ops)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Event, unix_ms, subject, what, reason)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DiskInfo, size, block_size, read_only, identity,
                                                selector, no_path, failback, queueing, waiting)

namespace control {

constexpr std::size_t kMaxLine = 64 * 1024;  // longest request line, newline excluded
constexpr std::size_t kMaxArg = 64;          // longest argument: path and group names are shorter

struct Command {
  std::string_view name;  // "show paths"
  std::string_view args;  // usage of the arguments, "" when none: "PATH", "on|off"
  std::size_t min_args, max_args;
  std::string_view help;
};

inline constexpr std::array<Command, 15> kCommands{{
    {"show paths", "", 0, 0, "every path: state, counters, latency"},
    {"show groups", "", 0, 0, "priority groups and their paths"},
    {"show topology", "", 0, 0,
     "the disk, then groups with each path's state (like multipath -ll)"},
    {"show stats", "", 0, 0, "engine counters and per-request-type latency"},
    {"show events", "", 0, 0, "recent state changes, oldest first"},
    {"show config", "", 0, 0, "the effective configuration, secrets redacted"},
    {"fail", "PATH", 1, 1, "take a path out of service until reinstated"},
    {"reinstate", "PATH", 1, 1,
     "reconnect and probe a failed path, or use a draining or marginal path again at once"},
    {"drain", "PATH", 1, 1, "send no new I/O to a path; what is in flight finishes"},
    {"switch-group", "GROUP", 1, 1, "serve I/O from this group"},
    {"queueing", "on|off", 1, 1, "no-path policy: queue requests, or fail them at once"},
    {"fail-queued", "", 0, 0, "fail the requests now waiting for a path with EIO"},
    {"reload", "[--dry-run]", 0, 1,
     "re-read the configuration file and apply it (or only check it)"},
    {"reset-stats", "", 0, 0, "zero the counters"},
    // Not a ControlApi call: lists these commands.
    {"help", "", 0, 0, "list the commands"},
}};

inline const Command* find_command(std::string_view name) {
  for (const auto& c : kCommands)
    if (c.name == name) return &c;
  return nullptr;
}

// "show paths, show groups, ..., help".
inline std::string command_list() {
  std::string s;
  for (const auto& c : kCommands) {
    if (!s.empty()) s += ", ";
    s += c.name;
  }
  return s;
}

// "fail PATH", "reload [--dry-run]".
inline std::string usage(const Command& c) {
  std::string s(c.name);
  if (!c.args.empty()) (s += ' ') += c.args;
  return s;
}

// `text` with its control bytes shown as \n, \t or \xNN, so that echoing a
// client's input never makes a sentence over several lines or a forged log
// line. Invalid UTF-8 is left to control::dump (replaced).
inline std::string printable(std::string_view text) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\n') {
      s += "\\n";
    } else if (c == '\t') {
      s += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      s += "\\x";
      s += kHex[c >> 4];
      s += kHex[c & 15];
    } else {
      s += static_cast<char>(c);
    }
  }
  return s;
}

// 'text' for an error sentence: printable, and at most 64 bytes of it, so
// that echoing a client's input never makes a long response or log line.
inline std::string quote(std::string_view text) {
  constexpr std::size_t kMax = 64;
  std::string s = "'" + printable(text.substr(0, kMax));
  if (text.size() <= kMax) return s + "'";
  return s + "...' (" + std::to_string(text.size()) + " bytes)";
}

// Collapses runs of blanks and trims: "  show   paths " -> "show paths".
inline std::string normalize(std::string_view command) {
  std::string s;
  bool blank = false;
  for (char ch : command) {
    if (ch == ' ' || ch == '\t') {
      blank = !s.empty();
      continue;
    }
    if (blank) s += ' ';
    blank = false;
    s += ch;
  }
  return s;
}

// "" when `command` (normalized) exists and takes these arguments, else one
// sentence saying what is wrong.
inline std::string check(const std::string& command, const std::vector<std::string>& args) {
  const Command* c = find_command(command);
  if (!c) {
    std::string what =
        command.empty() ? std::string("empty command") : "unknown command " + quote(command);
    return what + ": the commands are " + command_list();
  }
  if (args.size() < c->min_args || args.size() > c->max_args) {
    auto count = [](std::size_t n) {
      return std::to_string(n) + (n == 1 ? " argument" : " arguments");
    };
    std::string n = c->min_args == c->max_args ? count(c->max_args)
                    : c->min_args == 0         ? "at most " + count(c->max_args)
                                       : std::to_string(c->min_args) + " to " + count(c->max_args);
    return std::string(c->name) + " takes " + n + " (" + usage(*c) + "), not " +
           std::to_string(args.size());
  }
  if (c->name == "queueing" && args[0] != "on" && args[0] != "off")
    return "queueing takes on or off, not " + quote(args[0]);
  if (c->name == "reload" && !args.empty() && args[0] != "--dry-run")
    return "reload takes only --dry-run, not " + quote(args[0]);
  for (const auto& a : args) {
    if (a.empty()) return std::string(c->name) + ": an argument is empty";
    if (a.size() > kMaxArg)
      return std::string(c->name) + ": the argument " + quote(a) + " is longer than " +
             std::to_string(kMaxArg) + " bytes: path and group names are not";
    for (unsigned char ch : a)
      if (ch < 0x20 || ch == 0x7f)
        return std::string(c->name) + ": the argument " + quote(a) +
               " contains a control character: path and group names do not";
  }
  return "";
}

// Serializes for the wire: one line, invalid UTF-8 replaced rather than thrown.
inline std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace control
}  // namespace mp
