// nbd-multipath-ctl: the command-line client of nbd-multipath's control
// socket. Sends one request, prints the answer as tables or JSON.
//
// Exit status: 0 done; 1 the server refused the request (its sentence is
// printed); 2 usage error (nothing was sent); 3 the server could not be
// reached, or did not answer in time.
//
// Single-threaded; blocking socket calls bounded by --timeout.
#include <fmt/format.h>
#include <langinfo.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "server/control_protocol.h"

namespace mp::ctl {
namespace {

using json = nlohmann::json;
namespace control = mp::control;

constexpr int kExitRefused = 1, kExitUsage = 2, kExitUnreachable = 3;
constexpr const char* kRunDir = "/run/nbd-multipath";  // the unit's RuntimeDirectory parent
constexpr const char* kDefaultSocket = "/run/nbd-multipath/ctl.sock";
constexpr const char* kProg = "nbd-multipath-ctl";

bool json_errors = false;  // --json: errors too go to stdout, as a JSON object
bool utf8 = true;          // the locale's character set is UTF-8: tree glyphs and µ

[[noreturn]] void die(int status, const std::string& msg) {
  if (json_errors) {
    std::puts(nlohmann::json{{"error", msg}, {"exit_status", status}}
                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                  .c_str());
  } else {
    std::fprintf(stderr, "%s: %s\n", kProg, msg.c_str());
  }
  std::exit(status);
}

// ------------------------------------------------------------ formatting ----

// Display width of UTF-8 text (one column per code point; enough for µ).
std::size_t width(const std::string& s) {
  return static_cast<std::size_t>(
      std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

std::string pad(const std::string& s, std::size_t w, bool right) {
  std::size_t n = width(s);
  if (n >= w) return s;
  return right ? std::string(w - n, ' ') + s : s + std::string(w - n, ' ');
}

// Columns separated by two blanks; `right[i]` right-aligns column i.
void print_table(const std::vector<std::vector<std::string>>& rows,
                 const std::vector<bool>& right) {
  std::vector<std::size_t> w;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); i++) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], width(r[i]));
    }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); i++) {
      if (i) line += "  ";
      bool last = i + 1 == r.size();
      bool ra = i < right.size() && right[i];
      line += last && !ra ? r[i] : pad(r[i], w[i], ra);
    }
    std::puts(line.c_str());
  }
}

std::string latency(double us) {
  if (!(us > 0)) return "-";
  if (us < 1000) return fmt::format("{:.0f}{}", us, utf8 ? "µs" : "us");
  if (us < 10000) return fmt::format("{:.2f}ms", us / 1000);
  if (us < 1e6) return fmt::format("{:.1f}ms", us / 1000);
  return fmt::format("{:.2f}s", us / 1e6);
}

std::string bytes(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024) return fmt::format("{}B", n);
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  return fmt::format("{:.1f}{}", v, units[u]);
}

std::string local_time(std::int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{}.{:03}", buf, static_cast<int>(((unix_ms % 1000) + 1000) % 1000));
}

// A string field, or "" when absent or not a string.
std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// A value printed plainly: numbers as numbers, strings unquoted, bools on/off.
std::string plain(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return control::dump(v);
}

void print_paths(const json& result) {
  auto paths = result.get<std::vector<PathInfo>>();
  if (paths.empty()) {
    std::puts("no paths");
    return;
  }
  std::vector<std::vector<std::string>> rows{{"name", "uri", "group", "state", "inflight",
                                              "requests", "errors", "timeouts", "failovers", "p50",
                                              "p99"}};
  for (const auto& p : paths)
    rows.push_back({p.name, p.uri, p.group, p.state, std::to_string(p.inflight),
                    std::to_string(p.requests), std::to_string(p.errors),
                    std::to_string(p.timeouts), std::to_string(p.failovers),
                    latency(p.latency_p50_us), latency(p.latency_p99_us)});
  print_table(rows, {false, false, false, false, true, true, true, true, true, true, true});
  // Why a path is not serving, and writes whose outcome is still unknown.
  for (const auto& p : paths) {
    if (p.state != "active" && !p.reason.empty())
      std::puts(fmt::format("{}: {}: {}", p.name, p.state, p.reason).c_str());
    if (p.abandoned_pending)
      std::puts(fmt::format("{}: {} abandoned writes not yet resolved", p.name, p.abandoned_pending)
                    .c_str());
    if (p.dirty_ranges)
      std::puts(fmt::format("{}: {} bytes in {} dirty ranges not yet flushed on it", p.name,
                            p.dirty_bytes, p.dirty_ranges)
                    .c_str());
  }
}

// The disk line of `show topology`, like the first lines of multipath -ll.
void print_disk(const json& d) {
  auto disk = d.get<DiskInfo>();
  std::string id = disk.identity.empty() ? "" : "  (" + disk.identity + ")";
  std::puts(fmt::format("disk{}  size={} ({} bytes)  block={}  {}", id, bytes(disk.size), disk.size,
                        disk.block_size, disk.read_only ? "ro" : "rw")
                .c_str());
  std::puts(fmt::format("selector={}  no-path={} (queueing {}, {} waiting)  failback={}",
                        disk.selector, disk.no_path, disk.queueing ? "on" : "off", disk.waiting,
                        disk.failback)
                .c_str());
}

// Groups as a tree; with `states`, each path's state, URI and reason. A
// topology result is {disk, groups}; an older server sent the groups only.
void print_tree(const json& in, bool states) {
  if (in.is_object() && in.contains("disk")) print_disk(in["disk"]);
  const json& result = in.is_object() && in.contains("groups") ? in["groups"] : in;
  if (!result.is_array() || result.empty()) {
    std::puts("no groups");
    return;
  }
  for (const auto& g : result) {
    std::string head = fmt::format("{}  priority {}", str(g, "name"), g.value("priority", 0));
    if (std::string st = str(g, "status"); !st.empty())
      head += "  " + st;  // serving, standby or down
    else if (g.value("serving", false))
      head += "  serving";
    std::puts(head.c_str());
    const json& paths = g.contains("paths") ? g["paths"] : json::array();
    std::size_t wn = 0, ws = 0;
    for (const auto& p : paths) {
      wn = std::max(wn, width(p.is_string() ? p.get<std::string>() : str(p, "name")));
      ws = std::max(ws, width(p.is_object() ? str(p, "state") : ""));
    }
    for (std::size_t i = 0; i < paths.size(); i++) {
      const json& p = paths[i];
      const bool last = i + 1 == paths.size();
      std::string line = utf8 ? (last ? "└── " : "├── ") : (last ? "`-- " : "|-- ");
      if (p.is_string() || !states) {
        line += p.is_string() ? p.get<std::string>() : str(p, "name");
      } else {
        line += pad(str(p, "name"), wn, false) + "  " + pad(str(p, "state"), ws, false) + "  " +
                str(p, "uri");
        if (std::string r = str(p, "reason"); !r.empty() && str(p, "state") != "active")
          line += "  (" + r + ")";
      }
      std::puts(line.c_str());
    }
  }
}

void print_stats(const json& result) {
  // The struct's order first, then whatever a newer server added.
  static const char* order[] = {"requests",          "failed_requests",   "retries",
                                "group_switches",    "queueing",          "waiting",
                                "queued_no_path",    "queued_no_path_ms", "abandoned_writes",
                                "abandoned_pending", "resolved_late",     "resolved_by_death",
                                "reapplied",         "unshadowed",        "shadow_bytes",
                                "hedges_sent",       "hedges_won",        "hedges_refused"};
  std::vector<std::pair<std::string, std::string>> kv;
  for (const char* k : order)
    if (result.contains(k)) {
      const json& v = result[k];
      std::string s = std::string(k) == "queueing" && v.is_boolean()
                          ? (v.get<bool>() ? "on" : "off")
                          : plain(v);
      if (std::string(k) == "shadow_bytes" && v.is_number_unsigned() && v.get<std::uint64_t>())
        s += " (" + bytes(v.get<std::uint64_t>()) + ")";
      kv.emplace_back(k, s);
    }
  for (const auto& [k, v] : result.items())
    if (k != "ops" && std::find_if(std::begin(order), std::end(order),
                                   [&](const char* o) { return k == o; }) == std::end(order))
      kv.emplace_back(k, plain(v));
  std::size_t w = 0;
  for (const auto& [k, v] : kv) w = std::max(w, k.size() + 1);
  for (const auto& [k, v] : kv) std::puts((pad(k + ":", w, false) + " " + v).c_str());

  auto ops = result.value("ops", json::array()).get<std::vector<OpCounters>>();
  if (ops.empty()) return;
  std::puts("");
  std::vector<std::vector<std::string>> rows{{"op", "requests", "bytes", "errors", "p50", "p99"}};
  for (const auto& o : ops)
    rows.push_back({o.op, std::to_string(o.requests), bytes(o.bytes), std::to_string(o.errors),
                    latency(o.latency_p50_us), latency(o.latency_p99_us)});
  print_table(rows, {false, true, true, true, true, true});
}

void print_events(const json& result) {
  auto events = result.get<std::vector<Event>>();
  if (events.empty()) {
    std::puts("no events");
    return;
  }
  std::size_t ws = 0, ww = 0;
  for (const auto& e : events) {
    ws = std::max(ws, width(e.subject));
    ww = std::max(ww, width(e.what));
  }
  for (const auto& e : events) {
    std::string line = local_time(e.unix_ms) + "  " + pad(e.subject, ws, false) + "  ";
    line += e.reason.empty() ? e.what : pad(e.what, ww, false) + "  " + e.reason;
    std::puts(line.c_str());
  }
}

void print_result(const std::string& cmd, const json& result) {
  if (cmd == "show paths") return print_paths(result);
  if (cmd == "show groups") return print_tree(result, false);
  if (cmd == "show topology") return print_tree(result, true);
  if (cmd == "show stats") return print_stats(result);
  if (cmd == "show events") return print_events(result);
  if (cmd == "show config") {
    for (const auto& kv : result) std::puts((str(kv, "key") + ": " + str(kv, "value")).c_str());
    return;
  }
  if (cmd == "queueing")
    return (void)std::puts(result.value("queueing", false) ? "queueing on" : "queueing off");
  if (cmd == "fail-queued") {
    auto n = result.value("failed", std::uint64_t{0});
    return (void)std::puts(fmt::format("failed {} queued request{}", n, n == 1 ? "" : "s").c_str());
  }
  if (cmd == "reload") {
    std::string summary = str(result, "summary");
    if (summary.empty()) summary = "no changes";
    return (void)std::puts(
        (result.value("dry_run", false) ? "dry run: " + summary : summary).c_str());
  }
  if (result.is_null()) return (void)std::puts("ok");
  std::puts(result.dump(2).c_str());
}

// The show commands, as a list for a sentence, and with their help.
std::string show_list() {
  std::vector<std::string> names;
  for (const auto& c : control::kCommands)
    if (std::string_view(c.name).starts_with("show ")) names.emplace_back(c.name);
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return s;
}

std::string show_help() {
  std::string s = fmt::format("Usage: {} [OPTIONS] show WHAT [--json]\n", kProg);
  for (const auto& c : control::kCommands)
    if (std::string_view(c.name).starts_with("show "))
      s += fmt::format("  {:<16}  {}\n", control::usage(c), c.help);
  return s + "show WHAT --help (or help show WHAT) says more about one of them.";
}

std::string help_footer() {
  std::string s = "Commands:\n";
  std::size_t w = 0;
  for (const auto& c : control::kCommands) w = std::max(w, control::usage(c).size());
  for (const auto& c : control::kCommands)
    s += fmt::format("  {:<{}}  {}\n", control::usage(c), w, c.help);
  s += fmt::format(
      "\nThe socket is --socket (or --disk NAME: {}/NAME/ctl.sock), else $NBD_MULTIPATH_CTL,\n"
      "else {}.\n"
      "Exit status: 0 done; 1 the server refused the request; 2 usage error;\n"
      "3 the server could not be reached or did not answer in time.\n"
      "See nbd-multipath-ctl(8) and nbdkit-multipath-plugin(1).",
      kRunDir, kDefaultSocket);
  return s;
}

// ------------------------------------------------------------ transport ----

// Sends `request` and returns the response line. Exits with status 3 when the
// server cannot be reached or does not answer before `deadline`.
std::string exchange(const std::string& path, const std::string& request, double timeout) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(timeout));
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    die(kExitUsage,
        fmt::format("socket path {} is longer than {} bytes", path, sizeof addr.sun_path - 1));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    die(kExitUnreachable, fmt::format("cannot create a socket: {}", std::strerror(errno)));
  // Bounds connect() (a server whose backlog is full) and send().
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout);
  tv.tv_usec = static_cast<suseconds_t>((timeout - std::floor(timeout)) * 1e6);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    std::string hint;
    switch (err) {
      case ENOENT:
        hint =
            "is nbdkit multipath running with control.socket set to this path? (choose "
            "another with -s or $NBD_MULTIPATH_CTL)";
        break;
      case EACCES:
      case EPERM:
        hint =
            "check the socket's mode and group (control.mode, control.group) and the "
            "directory's permissions, or run as root";
        break;
      case ECONNREFUSED:
        if (struct stat st; ::stat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
          hint = "that file is not a socket: check the path";
          break;
        }
        hint =
            "nothing listens there: the server exited and left its socket behind, or is "
            "still starting";
        break;
      case EAGAIN:
      case EINPROGRESS:
        hint = "the server is not accepting connections (stuck or overloaded)";
        break;
      case ENOTSOCK:
        hint = "that file is not a socket: check the path";
        break;
      default:
        hint = "check the path";
    }
    die(kExitUnreachable,
        fmt::format("cannot connect to {}: {}: {}", path, std::strerror(err), hint));
  }

  std::string out = request + "\n";
  for (std::size_t off = 0; off < out.size();) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      die(kExitUnreachable, fmt::format("cannot send to {}: {}", path,
                                        errno == EAGAIN ? "timed out" : std::strerror(errno)));
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);  // one request: the server closes once it has answered

  std::string in;
  char buf[65536];
  for (;;) {
    if (auto nl = in.find('\n'); nl != std::string::npos) {
      in.resize(nl);
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0)
      die(kExitUnreachable, fmt::format("no answer from {} within {} s: is the server stuck? "
                                        "(--timeout sets the limit)",
                                        path, timeout));
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count() + 1, 60000)));
    if (rc < 0 && errno != EINTR)
      die(kExitUnreachable, fmt::format("poll: {}", std::strerror(errno)));
    if (rc <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      die(kExitUnreachable, fmt::format("cannot read from {}: {}", path, std::strerror(errno)));
    if (n == 0) {
      if (in.empty())
        die(kExitUnreachable, fmt::format("{} closed the connection without answering", path));
      break;  // a last line without newline
    }
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return in;
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; i++) json_errors = json_errors || std::strcmp(argv[i], "--json") == 0;
  std::setlocale(LC_CTYPE, "");
  utf8 = std::strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
  CLI::App app{
      "Shows the state of an nbd-multipath disk and runs operator actions, through its "
      "control socket.",
      kProg};
  app.set_version_flag("--version", std::string(kProg) + " " + MP_VERSION);
  const char* env = std::getenv("NBD_MULTIPATH_CTL");
  std::string socket = env && *env ? env : kDefaultSocket;
  bool json_out = false;
  double timeout = 10;
  std::string disk;
  auto* socket_opt =
      app.add_option("-s,--socket", socket, "the control socket (control.socket in the YAML)");
  app.add_option("-d,--disk", disk,
                 "the disk served by nbd-multipath@NAME.service: its socket "
                 "/run/nbd-multipath/NAME/ctl.sock")
      ->excludes(socket_opt)
      ->check([](const std::string& v) -> std::string {
        if (!v.empty() && v.find('/') == std::string::npos && v != "." && v != "..") return "";
        return "--disk takes the unit's instance name (NAME in nbd-multipath@NAME), not '" + v +
               "'";
      });
  app.add_flag("--json", json_out, "print the result as JSON (may also follow COMMAND)");
  app.add_option("--timeout", timeout, "seconds to wait for the server (default 10)")
      ->check([](const std::string& v) -> std::string {
        try {
          std::size_t used = 0;
          double d = std::stod(v, &used);
          if (used == v.size() && d > 0 && d <= 86400) return "";
        } catch (const std::exception&) {
        }
        return "--timeout must be a number of seconds, more than 0 and at most 86400, not '" + v +
               "'";
      });
  app.prefix_command();  // COMMAND and everything after it, e.g. reload --dry-run
  app.footer(help_footer());
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (json_errors) die(kExitUsage, e.what());
    app.exit(e);
    return kExitUsage;
  }

  if (!disk.empty()) socket = std::string(kRunDir) + "/" + disk + "/ctl.sock";
  std::vector<std::string> words;
  for (auto& w : app.remaining()) {
    if (w == "--json")
      json_out = true;
    else
      words.push_back(w);
  }
  if (words.empty())
    die(kExitUsage,
        "no command given: the commands are " + control::command_list() + " (see --help)");
  if (words[0].size() > 1 && words[0][0] == '-')
    die(kExitUsage, "unknown option " + words[0] + " (see --help)");
  // help COMMAND: the same as COMMAND --help.
  if (words[0] == "help" && words.size() > 1) {
    words.erase(words.begin());
    words.push_back("--help");
  }
  auto is_help = [](const std::string& a) { return a == "--help" || a == "-h"; };
  std::string command = words[0];
  std::size_t first_arg = 1;
  if (command == "show") {
    if (words.size() < 2 || is_help(words[1])) {
      if (words.size() < 2) die(kExitUsage, "show what? " + show_list() + " (see --help)");
      std::puts(show_help().c_str());
      return 0;
    }
    command += " " + words[1];
    first_arg = 2;
  }
  std::vector<std::string> args(words.begin() + static_cast<long>(first_arg), words.end());
  // COMMAND --help: that command's usage and help.
  if (std::find_if(args.begin(), args.end(), is_help) != args.end()) {
    const control::Command* c = control::find_command(command);
    if (!c) die(kExitUsage, "unknown command " + control::quote(command) + " (see --help)");
    std::puts(
        fmt::format("Usage: {} [OPTIONS] {}\n{}", kProg, control::usage(*c), c->help).c_str());
    return 0;
  }
  if (std::string err = control::check(command, args); !err.empty())
    die(kExitUsage, err + " (see --help)");
  if (command == "help") {
    std::puts(help_footer().c_str());
    return 0;
  }

  json req{{"command", command}};
  if (!args.empty()) req["args"] = args;
  std::string line = exchange(socket, control::dump(req), timeout);

  json resp;
  try {
    resp = json::parse(line);
  } catch (const json::parse_error&) {
    die(kExitRefused,
        fmt::format("{} answered with something that is not JSON: {:.200}", socket, line));
  }
  if (!resp.is_object() || !resp.contains("ok"))
    die(kExitRefused, fmt::format("{} answered with an unexpected response: {:.200}", socket,
                                  control::dump(resp)));
  if (resp["ok"] != true) die(kExitRefused, str(resp, "error"));
  const json& result = resp.contains("result") ? resp["result"] : json();
  if (json_out) {
    std::puts(result.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  try {
    print_result(command, result);
  } catch (const json::exception& e) {
    die(kExitRefused, fmt::format("cannot read the server's answer: {} (try --json)", e.what()));
  }
  return 0;
}

}  // namespace
}  // namespace mp::ctl

int main(int argc, char** argv) {
  return mp::ctl::run(argc, argv);
}
