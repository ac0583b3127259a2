// Unit tests for the control socket server: a real ControlServer on an
// io_context run by the test thread, a fake ControlApi, and clients on real
// Unix sockets that never block (the loop runs until a condition, no sleeps).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "server/control.h"
#include "server/control_protocol.h"
#include "server/fd_limits.h"
#include "tests/unit/no_descriptors.h"

namespace mp {
namespace {

using json = nlohmann::json;
using asio::local::stream_protocol;
using namespace std::chrono_literals;

// Records every call; paths "a" and "b" in group "fast", "c" in "slow".
struct FakeControlApi : ControlApi {
  std::vector<std::string> calls;
  std::vector<Event> events;
  bool throw_on_reset = false;
  bool queueing = true;

  std::string known(const std::string& name, const char* what) {
    if (name == "a" || name == "b" || name == "c") return "";
    return std::string("no ") + what + " named '" + name + "': the paths are a, b, c";
  }

  std::vector<PathInfo> show_paths() override {
    calls.push_back("show_paths");
    PathInfo a;
    a.name = "a";
    a.uri = "nbd+unix:///?socket=/tmp/a.sock";
    a.group = "fast";
    a.state = "active";
    a.inflight = 3;
    a.requests = 1000;
    a.bytes = 4096000;
    a.errors = 1;
    a.timeouts = 2;
    a.failovers = 3;
    a.latency_p50_us = 250;
    a.latency_p99_us = 12500;
    PathInfo b = a;
    b.name = "b";
    b.state = "failed";
    b.reason = "operator: fail";
    PathInfo c = a;
    c.name = "c";
    c.group = "slow";
    return {a, b, c};
  }
  std::vector<GroupInfo> show_groups() override {
    calls.push_back("show_groups");
    return {{"fast", 10, true, {"a", "b"}}, {"slow", 0, false, {"c"}}};
  }
  EngineInfo show_stats() override {
    calls.push_back("show_stats");
    EngineInfo e;
    e.requests = 42;
    e.queueing = queueing;
    e.ops.push_back({"read", 40, 163840, 0, 0, 0, 0, 0, 100.5, 900, {}});
    e.ops.push_back({"write", 2, 8192, 1, 1, 0, 0, 0, 300, 3000, {}});
    return e;
  }
  std::vector<Event> show_events() override {
    calls.push_back("show_events");
    return events;
  }
  DiskInfo show_disk() override {
    calls.push_back("show_disk");
    DiskInfo d;
    d.size = 1 << 20;
    d.selector = "round-robin";
    return d;
  }
  std::vector<std::pair<std::string, std::string>> show_config() override {
    calls.push_back("show_config");
    return {{"selector", "round-robin"}, {"timeouts.attempt", "2s"}};
  }
  std::string fail_path(const std::string& p) override {
    calls.push_back("fail " + p);
    return known(p, "path");
  }
  std::string reinstate_path(const std::string& p) override {
    calls.push_back("reinstate " + p);
    return known(p, "path");
  }
  std::string drain_path(const std::string& p) override {
    calls.push_back("drain " + p);
    return known(p, "path");
  }
  std::string switch_group(const std::string& g) override {
    calls.push_back("switch-group " + g);
    return g == "fast" || g == "slow" ? ""
                                      : "no group named '" + g + "': the groups are fast, slow";
  }
  std::string set_queueing(bool on) override {
    calls.push_back(on ? "queueing on" : "queueing off");
    queueing = on;
    return "";
  }
  std::string fail_queued(std::uint64_t* failed) override {
    calls.push_back("fail-queued");
    *failed = 3;
    return "";
  }
  std::string reset_stats() override {
    calls.push_back("reset-stats");
    if (throw_on_reset) throw std::runtime_error("boom");
    return "";
  }
  void reload(bool dry_run, ReloadDone done) override {
    calls.push_back(dry_run ? "reload --dry-run" : "reload");
    if (defer_reload) {
      deferred.push_back(
          [dry_run, done] { done("", dry_run ? "would add path d" : "added path d"); });
      return;
    }
    done("", dry_run ? "would add path d" : "added path d");
  }
  bool defer_reload = false;                    // answer reloads when the test says
  std::vector<std::function<void()>> deferred;  // the reload answers held back
};

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/mpctl.XXXXXX";
    REQUIRE(::mkdtemp(t) != nullptr);
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A server on its own io_context; the test thread runs the loop.
struct Rig {
  asio::io_context io;
  FakeControlApi api;
  TempDir dir;
  config::Control cfg;
  std::vector<std::string> logs;
  std::unique_ptr<ControlServer> server;

  explicit Rig(ControlLimits lim = {}, unsigned mode = 0600, std::string group = "") {
    cfg.socket = dir.path + "/ctl.sock";
    cfg.mode = mode;
    cfg.group = std::move(group);
    server = std::make_unique<ControlServer>(
        io, api, cfg, [this](bool, const std::string& m) { logs.push_back(m); }, lim);
  }

  // Runs the loop until pred() holds; false after `limit`.
  template <class Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (io.stopped()) io.restart();
      io.run_one_for(5ms);
    }
    return true;
  }

  bool logged(const std::string& needle) const {
    for (const auto& l : logs)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
};

// A client whose socket never blocks: sends and receives let the loop run.
struct Client {
  Rig& rig;
  stream_protocol::socket sock;
  std::string buf;
  bool closed = false;

  explicit Client(Rig& r) : rig(r), sock(r.io) {
    sock.connect(stream_protocol::endpoint(r.cfg.socket));
    sock.non_blocking(true);
  }

  void send(std::string_view data) {
    std::size_t off = 0;
    while (off < data.size()) {
      std::error_code ec;
      std::size_t n = sock.write_some(asio::buffer(data.substr(off)), ec);
      if (ec == asio::error::would_block) {
        if (rig.io.stopped()) rig.io.restart();
        rig.io.run_one_for(5ms);
        continue;
      }
      REQUIRE_MESSAGE(!ec, ec.message());
      off += n;
    }
  }

  // Takes what has arrived; notes EOF or a reset.
  void pump() {
    char tmp[65536];
    while (!closed) {
      std::error_code ec;
      std::size_t n = sock.read_some(asio::buffer(tmp), ec);
      if (ec == asio::error::would_block) return;
      if (ec) {
        closed = true;  // eof, or a reset after the server closed on unread input
        return;
      }
      buf.append(tmp, n);
    }
  }

  std::optional<std::string> line() {
    rig.run_until([&] {
      pump();
      return closed || buf.find('\n') != std::string::npos;
    });
    auto nl = buf.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    std::string l = buf.substr(0, nl);
    buf.erase(0, nl + 1);
    return l;
  }

  json response() {
    auto l = line();
    REQUIRE_MESSAGE(l.has_value(), "no response line");
    json j = json::parse(*l);  // every response is valid JSON
    REQUIRE(j.is_object());
    REQUIRE(j.contains("ok"));
    return j;
  }

  json request(const json& req) {
    send(control::dump(req) + "\n");
    return response();
  }
  json command(const std::string& cmd, std::vector<std::string> args = {}) {
    json req{{"command", cmd}};
    if (!args.empty()) req["args"] = args;
    return request(req);
  }

  bool wait_closed(std::chrono::milliseconds limit = 5000ms) {
    return rig.run_until(
        [&] {
          pump();
          return closed;
        },
        limit);
  }
};

std::string error_of(const json& r) {
  REQUIRE(r["ok"] == false);
  return r["error"].get<std::string>();
}

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

TEST_CASE("show commands return the engine's structs as snake_case JSON") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);

  json r = c.command("show paths");
  REQUIRE(r["ok"] == true);
  REQUIRE(r["result"].size() == 3);
  const json& a = r["result"][0];
  CHECK(a["name"] == "a");
  CHECK(a["uri"] == "nbd+unix:///?socket=/tmp/a.sock");
  CHECK(a["group"] == "fast");
  CHECK(a["state"] == "active");
  CHECK(a["inflight"] == 3);
  CHECK(a["requests"] == 1000);
  CHECK(a["timeouts"] == 2);
  CHECK(a["failovers"] == 3);
  CHECK(a["latency_p50_us"] == 250.0);
  CHECK(a["latency_p99_us"] == 12500.0);
  CHECK(a.contains("abandoned_pending"));
  CHECK(r["result"][1]["reason"] == "operator: fail");

  r = c.command("show groups");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"] ==
        json::parse(R"([{"name":"fast","priority":10,"serving":true,"paths":["a","b"]},
                                       {"name":"slow","priority":0,"serving":false,"paths":["c"]}])"));

  r = c.command("show topology");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"]["disk"]["size"] == 1 << 20);
  CHECK(r["result"]["disk"]["selector"] == "round-robin");
  const json& tg = r["result"]["groups"];
  REQUIRE(tg.size() == 2);
  CHECK(tg[0]["name"] == "fast");
  CHECK(tg[0]["serving"] == true);
  CHECK(tg[0]["status"] == "serving");
  CHECK(tg[0]["paths"][1]["name"] == "b");
  CHECK(tg[0]["paths"][1]["state"] == "failed");
  CHECK(tg[0]["paths"][1]["reason"] == "operator: fail");
  CHECK(tg[1]["paths"][0]["name"] == "c");
  CHECK(tg[1]["status"] == (tg[1]["paths"][0]["state"] == "active" ? "standby" : "down"));

  r = c.command("show config");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"] == json::parse(R"([{"key":"selector","value":"round-robin"},
                                       {"key":"timeouts.attempt","value":"2s"}])"));

  r = c.command("show stats");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"]["requests"] == 42);
  CHECK(r["result"]["queueing"] == true);
  CHECK(r["result"]["ops"][0]["op"] == "read");
  CHECK(r["result"]["ops"][0]["latency_p50_us"] == 100.5);
  CHECK(r["result"].contains("queued_no_path_ms"));
  EngineInfo back = r["result"].get<EngineInfo>();  // the CLI's view
  CHECK(back.ops.size() == 2);
  CHECK(back.ops[1].errors == 1);

  rig.api.events = {{1700000000123, "path a", "active -> failed", "timeout"}};
  r = c.command("show events");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"] == json::parse(R"([{"unix_ms":1700000000123,"subject":"path a",
                                        "what":"active -> failed","reason":"timeout"}])"));

  r = c.command("  show   paths ");  // blanks are normalized
  CHECK(r["ok"] == true);

  r = c.command("help");
  REQUIRE(r["ok"] == true);
  CHECK(r["result"].size() == control::kCommands.size());
}

TEST_CASE("operator actions call the ControlApi and return its sentence") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);

  json r = c.command("fail", {"a"});
  CHECK(r == json::parse(R"({"ok":true,"result":null})"));
  CHECK(rig.api.calls.back() == "fail a");
  CHECK(rig.logged("control: fail a: done"));

  r = c.command("fail", {"zz"});
  CHECK(error_of(r) == "no path named 'zz': the paths are a, b, c");
  CHECK(rig.logged("control: fail zz: no path named 'zz'"));

  CHECK(c.command("reinstate", {"a"})["ok"] == true);
  CHECK(rig.api.calls.back() == "reinstate a");
  CHECK(c.command("drain", {"b"})["ok"] == true);
  CHECK(rig.api.calls.back() == "drain b");
  CHECK(c.command("switch-group", {"slow"})["ok"] == true);
  CHECK(rig.api.calls.back() == "switch-group slow");
  CHECK(error_of(c.command("switch-group", {"nope"})) ==
        "no group named 'nope': the groups are fast, slow");

  r = c.command("queueing", {"off"});
  CHECK(r["result"] == json{{"queueing", false}});
  CHECK(rig.api.calls.back() == "queueing off");
  r = c.command("queueing", {"on"});
  CHECK(r["result"] == json{{"queueing", true}});
  CHECK(has(error_of(c.command("queueing", {"maybe"})), "on or off"));

  r = c.command("fail-queued");
  CHECK(r["result"] == json{{"failed", 3}});

  r = c.command("reload", {"--dry-run"});
  CHECK(r["result"] == json{{"dry_run", true}, {"summary", "would add path d"}});
  CHECK(rig.api.calls.back() == "reload --dry-run");
  r = c.command("reload");
  CHECK(r["result"] == json{{"dry_run", false}, {"summary", "added path d"}});
  CHECK(rig.api.calls.back() == "reload");
  CHECK(has(error_of(c.command("reload", {"--force"})), "only --dry-run"));

  CHECK(c.command("reset-stats")["ok"] == true);
  CHECK(rig.api.calls.back() == "reset-stats");

  rig.api.throw_on_reset = true;
  CHECK(error_of(c.command("reset-stats")) == "internal error while running reset-stats: boom");
}

TEST_CASE("bad requests get one-sentence errors and the session goes on") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  auto err = [&](std::string_view line) {
    c.send(std::string(line) + "\n");
    return error_of(c.response());
  };

  std::string e = err(R"({"command":"frobnicate"})");
  CHECK(has(e, "unknown command 'frobnicate'"));
  CHECK(
      has(e, "show paths, show groups, show topology, show stats, show events, show config, fail"));
  CHECK(has(err(R"({"command":"fail"})"), "fail takes 1 argument (fail PATH), not 0"));
  CHECK(has(err(R"({"command":"show paths","args":["x"]})"), "takes 0 arguments"));
  CHECK(has(err(R"({"command":"reload","args":["--dry-run","x"]})"),
            "reload takes at most 1 argument (reload [--dry-run]), not 2"));
  CHECK(has(err(R"({"command":"fail","args":[1]})"), "args must be an array of strings"));
  CHECK(has(err(R"({"command":"fail","args":"a"})"), "args must be an array of strings"));
  CHECK(has(err(R"({"command":5})"), "command must be a string, not a number"));
  CHECK(has(err(R"({"args":[]})"), "no command field"));
  CHECK(has(err(R"({"command":"show paths","extra":1})"), "unknown field 'extra'"));
  CHECK(has(err(R"([1,2])"), "JSON but a array, not an object"));
  CHECK(has(err(R"("show paths")"), "not an object"));
  CHECK(has(err("42"), "not an object"));
  CHECK(has(err(""), "empty request line"));
  e = err("{\"command\": show paths}");
  CHECK(has(e, "invalid JSON: parse error at line 1, column 13: syntax error"));
  CHECK(has(err(std::string("\xff\xfe\x00garbage\x01", 11)), "invalid JSON"));
  // Deep nesting is refused as soon as it is seen, whatever the line holds.
  CHECK(has(err(std::string(20000, '[') + std::string(20000, ']')),
            "nests objects or arrays deeper than 8 levels"));
  CHECK(has(err(std::string(65536, '[')), "deeper than 8 levels"));
  CHECK(has(err(R"({"command":"fail","args":[[[[[[[[["a"]]]]]]]]]})"), "deeper than 8 levels"));
  // Numbers out of range: an error, not an exception out of the loop.
  CHECK(has(err("1e999"), "invalid JSON: number overflow parsing '1e999'"));
  CHECK(has(err(R"({"command":-1e999})"), "number overflow"));
  CHECK(has(err(R"({"command":"fail","args":[123456789012345678901234567890]})"),
            "args must be an array of strings, but one is a number"));
  // A key given twice is refused (nlohmann alone would keep the last one).
  e = err(R"({"command":"show paths","command":"fail","args":["a"]})");
  CHECK(e == "the field 'command' appears twice in one object: give each field once");
  CHECK(has(err(R"({"command":"fail","args":["a"],"args":["b"]})"), "'args' appears twice"));
  CHECK(has(err(R"({"command":"fail","args":[{"x":1,"x":2}]})"), "'x' appears twice"));
  // Echoed input is bounded, and invalid UTF-8 or NUL in it never throws.
  e = err("{\"command\":\"" + std::string(60000, 'x') + "\"}");
  CHECK(has(e, "unknown command 'xxxx"));
  CHECK(has(e, "...' (60000 bytes)"));
  CHECK(e.size() < 400);
  CHECK(has(err("{\"command\":\"\xc3\x28\xff\"}"), "invalid JSON"));  // nlohmann checks UTF-8
  CHECK(has(err("{\"\xff\xfe\":1}"), "invalid JSON"));
  // Cut inside a two-byte character: replaced when the response is encoded.
  CHECK(has(err("{\"command\":\"" + std::string(63, 'x') + "\xc3\xa9\"}"), "unknown command"));
  CHECK(has(err(R"({"command":"show paths\u0000"})"), "unknown command 'show paths\\x00'"));
  CHECK(has(err(R"({"command":"show\npaths\t"})"), "unknown command 'show\\npaths'"));
  CHECK(has(err(std::string("{\"command\":\"show paths\"}\0", 25)),
            "invalid JSON: a NUL byte at column 25"));
  CHECK(has(err(std::string("{\"command\":\"show paths\"}\0{\"command\":\"fail\"}", 42)),
            "a NUL byte at column 25"));
  CHECK(has(err(R"({"command":"fail","args":{"path":"a"}})"), "args must be an array of strings"));
  CHECK(has(err(R"({"command":"fail","args":null})"), "args must be an array of strings"));
  CHECK(has(err(R"({"command":"fail","args":[""]})"), "an argument is empty"));
  CHECK(has(err(R"({"command":"fail","args":["a\nfake log line"]})"), "control character"));
  CHECK(has(err("{\"command\":\"fail\",\"args\":[\"" + std::string(100, 'a') + "\"]}"),
            "longer than 64 bytes"));
  CHECK(has(err("   "), "empty request line"));
  CHECK(rig.api.calls.empty());

  // Still serving, and CRLF line ends are accepted.
  c.send("{\"command\":\"show stats\"}\r\n");
  CHECK(c.response()["ok"] == true);
}

TEST_CASE("several requests in one write are answered in order") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  c.send(
      "{\"command\":\"fail\",\"args\":[\"a\"]}\n"
      "garbage\n"
      "{\"command\":\"reinstate\",\"args\":[\"a\"]}\n");
  CHECK(c.response()["ok"] == true);
  CHECK(c.response()["ok"] == false);
  CHECK(c.response()["ok"] == true);
  CHECK(rig.api.calls == std::vector<std::string>{"fail a", "reinstate a"});
}

TEST_CASE("a flood of requests is handled in batches, letting other handlers run") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  std::string reqs;
  for (int i = 0; i < 200; i++) reqs += "{\"command\":\"show groups\"}\n";
  c.send(reqs);
  REQUIRE(rig.run_until([&] { return rig.api.calls.size() >= 32; }));
  std::size_t seen = 0;
  bool ran = false;
  asio::post(rig.io, [&] {
    seen = rig.api.calls.size();
    ran = true;
  });
  for (int i = 0; i < 200; i++) REQUIRE(c.response()["ok"] == true);
  CHECK(ran);
  CHECK(seen < 200);
}

TEST_CASE("clients that go away are not worth a log line") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  {
    Client c(rig);
    c.send("{\"command\": \"sh");  // half a request, then gone
    REQUIRE(rig.run_until([&] { return rig.server->sessions() == 1; }));
  }
  {
    Client c(rig);
    c.send("{\"command\":\"show stats\"}\n");  // a request, and gone before the answer
  }
  CHECK(rig.run_until([&] { return rig.server->sessions() == 0; }));
  CHECK(rig.logs.empty());
}

TEST_CASE("a line longer than 64 KiB gets an error and the connection is closed") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  {
    Client ok(rig);  // exactly the limit: parsed (and refused as JSON), still open
    ok.send(std::string(control::kMaxLine, 'x') + "\n");
    std::string e = error_of(ok.response());
    CHECK(has(e, "invalid JSON"));
    CHECK(e.size() < 400);  // the quoted token is cut short
    CHECK(ok.command("show stats")["ok"] == true);
  }
  Client c(rig);
  c.send(std::string(control::kMaxLine + 100, 'x'));  // no newline
  CHECK(has(error_of(c.response()), "request line longer than 65536 bytes"));
  CHECK(c.wait_closed());
  CHECK(rig.logged("longer than 65536 bytes"));

  Client d(rig);  // one over the limit, with its newline
  d.send(std::string(control::kMaxLine + 1, 'x') + "\n");
  CHECK(has(error_of(d.response()), "longer than"));
  CHECK(d.wait_closed());
  CHECK(rig.run_until([&] { return rig.server->sessions() == 0; }));

  Client e(rig);  // the server goes on
  CHECK(e.command("show stats")["ok"] == true);
}

TEST_CASE("a half-closed client gets its pending responses, then EOF") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  c.send("{\"command\":\"show paths\"}\n{\"command\":\"fail\",\"args\":[\"a\"]}\n");
  c.sock.shutdown(stream_protocol::socket::shutdown_send);
  CHECK(c.response()["ok"] == true);
  CHECK(c.response()["ok"] == true);
  CHECK(c.wait_closed());
  CHECK(c.buf.empty());

  // The last line of a half-closed client needs no newline.
  Client d(rig);
  d.send("{\"command\":\"show stats\"}");
  d.sock.shutdown(stream_protocol::socket::shutdown_send);
  CHECK(d.response()["result"]["requests"] == 42);
  CHECK(d.wait_closed());
  CHECK(rig.run_until([&] { return rig.server->sessions() == 0; }));
}

TEST_CASE("many sessions at once, and a cap on their number") {
  ControlLimits lim;
  lim.max_sessions = 20;
  Rig rig(lim);
  REQUIRE(rig.server->start() == "");
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 20; i++) clients.push_back(std::make_unique<Client>(rig));
  for (auto& c : clients) c->send("{\"command\":\"show groups\"}\n");
  for (auto& c : clients) CHECK(c->response()["ok"] == true);
  CHECK(rig.server->sessions() == 20);

  Client extra(rig);
  CHECK(has(error_of(extra.response()), "too many control connections (20 open)"));
  CHECK(extra.wait_closed());
  Client extra2(rig);
  CHECK(extra2.wait_closed());
  CHECK(std::count_if(rig.logs.begin(), rig.logs.end(), [](const std::string& l) {
          return has(l, "refusing connections: 20 sessions already open");
        }) == 1);  // logged once, not per refusal

  clients.clear();  // abandoned: the server notices the EOFs
  CHECK(rig.run_until([&] { return rig.server->sessions() == 0; }));
  Client again(rig);
  CHECK(again.command("show stats")["ok"] == true);
}

TEST_CASE("idle sessions are closed") {
  ControlLimits lim;
  lim.idle = 50ms;
  Rig rig(lim);
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  CHECK(c.command("show stats")["ok"] == true);
  CHECK(c.wait_closed(2000ms));
  CHECK(rig.server->sessions() == 0);
}

TEST_CASE("a client that stops reading is held back, then dropped, and others are served") {
  ControlLimits lim;
  lim.max_output = 64 * 1024;
  lim.write_stall = 200ms;
  Rig rig(lim);
  REQUIRE(rig.server->start() == "");
  for (int i = 0; i < 3000; i++)
    rig.api.events.push_back({i, "path a", "active -> failed", std::string(100, 'r')});

  Client hog(rig);
  std::string reqs;
  for (int i = 0; i < 100; i++) reqs += "{\"command\":\"show events\"}\n";
  hog.send(reqs);  // ~400 KB of output per request; the hog reads none of it

  // Back-pressure: the server stops taking the hog's requests.
  CHECK(rig.run_until([&] { return !rig.api.calls.empty(); }));
  Client other(rig);
  CHECK(other.command("show stats")["ok"] == true);
  auto shown = std::count(rig.api.calls.begin(), rig.api.calls.end(), "show_events");
  CHECK(shown <= 2);

  CHECK(rig.run_until([&] { return rig.logged("stopped reading"); }));
  CHECK(rig.server->sessions() == 1);  // the other one
  CHECK(hog.wait_closed());
  CHECK(other.command("show stats")["ok"] == true);
}

TEST_CASE("the socket gets the configured mode and group") {
  SUBCASE("0600") {
    Rig rig({}, 0600);
    REQUIRE(rig.server->start() == "");
    struct stat st;
    REQUIRE(::stat(rig.cfg.socket.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
  }
  SUBCASE("0666, whatever the umask") {
    mode_t old = ::umask(077);
    Rig rig({}, 0666);
    std::string err = rig.server->start();
    ::umask(old);
    REQUIRE(err == "");
    struct stat st;
    REQUIRE(::stat(rig.cfg.socket.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0666);
  }
  SUBCASE("the process's own group, by name") {
    group* g = ::getgrgid(::getegid());
    REQUIRE(g != nullptr);
    Rig rig({}, 0660, g->gr_name);
    REQUIRE(rig.server->start() == "");
    struct stat st;
    REQUIRE(::stat(rig.cfg.socket.c_str(), &st) == 0);
    CHECK(st.st_gid == ::getegid());
    CHECK((st.st_mode & 07777) == 0660);
  }
  SUBCASE("another group, when allowed (root)") {
    group* g = ::getgrnam("nogroup");
    if (::geteuid() != 0 || !g) return;
    gid_t gid = g->gr_gid;
    Rig rig({}, 0660, "nogroup");
    REQUIRE(rig.server->start() == "");
    struct stat st;
    REQUIRE(::stat(rig.cfg.socket.c_str(), &st) == 0);
    CHECK(st.st_gid == gid);
  }
  SUBCASE("a group that does not exist") {
    Rig rig({}, 0660, "no-such-group-mp");
    std::string err = rig.server->start();
    CHECK(
        has(err, "control socket " + rig.cfg.socket + ": group 'no-such-group-mp' does not exist"));
    CHECK(!std::filesystem::exists(rig.cfg.socket));
  }
}

TEST_CASE("start refuses what it must, and takes over a stale socket") {
  SUBCASE("stale socket from an earlier run") {
    Rig rig;
    {
      stream_protocol::acceptor old(rig.io, stream_protocol::endpoint(rig.cfg.socket));
    }  // closed, file left behind
    REQUIRE(std::filesystem::exists(rig.cfg.socket));
    CHECK(rig.server->start() == "");
    Client c(rig);
    CHECK(c.command("show stats")["ok"] == true);
  }
  SUBCASE("a live server on the path") {
    Rig rig;
    REQUIRE(rig.server->start() == "");
    ControlServer second(rig.io, rig.api, rig.cfg, [](bool, const std::string&) {});
    CHECK(has(second.start(), "another server is listening on it"));
    Client c(rig);  // the first one is untouched
    CHECK(c.command("show stats")["ok"] == true);
  }
  SUBCASE("not a socket") {
    Rig rig;
    std::ofstream(rig.cfg.socket) << "data";
    CHECK(has(rig.server->start(), "exists and is not a socket"));
    CHECK(std::filesystem::exists(rig.cfg.socket));
  }
  SUBCASE("missing directory") {
    Rig rig;
    rig.cfg.socket = rig.dir.path + "/nodir/ctl.sock";
    ControlServer s(rig.io, rig.api, rig.cfg, [](bool, const std::string&) {});
    CHECK(has(s.start(), "the directory " + rig.dir.path + "/nodir does not exist: create it"));
  }
  SUBCASE("path too long") {
    Rig rig;
    rig.cfg.socket = rig.dir.path + "/" + std::string(120, 's');
    ControlServer s(rig.io, rig.api, rig.cfg, [](bool, const std::string&) {});
    CHECK(has(s.start(), "must be shorter than 108 bytes"));
  }
  SUBCASE("no socket configured") {
    Rig rig;
    rig.cfg.socket.clear();
    ControlServer s(rig.io, rig.api, rig.cfg, [](bool, const std::string&) {});
    CHECK(s.start() == "");
  }
}

TEST_CASE("stop closes sessions and removes only its own socket file") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  CHECK(c.command("show stats")["ok"] == true);
  rig.server->stop();
  CHECK(!std::filesystem::exists(rig.cfg.socket));
  CHECK(c.wait_closed());
  CHECK(rig.server->sessions() == 0);
  rig.server->stop();  // idempotent

  // Restart; then another server takes the path over: stop leaves its file.
  REQUIRE(rig.server->start() == "");
  ::unlink(rig.cfg.socket.c_str());
  ControlServer second(rig.io, rig.api, rig.cfg, [](bool, const std::string&) {});
  REQUIRE(second.start() == "");
  rig.server->stop();
  CHECK(std::filesystem::exists(rig.cfg.socket));
  Client d(rig);
  CHECK(d.command("show stats")["ok"] == true);
}

TEST_CASE("destroying the server with handlers pending is safe") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  CHECK(c.command("show stats")["ok"] == true);
  c.send("{\"command\":\"show paths\"}\n");  // not yet handled
  rig.server.reset();
  rig.run_until([] { return false; }, 50ms);  // late handlers run against nothing
  CHECK(c.wait_closed());
}

TEST_CASE("handle_line without a socket") {
  FakeControlApi api;
  CHECK(json::parse(ControlServer::handle_line(api, R"({"command":"fail","args":["b"]})")) ==
        json::parse(R"({"ok":true,"result":null})"));
  CHECK(api.calls == std::vector<std::string>{"fail b"});
  // Invalid UTF-8 from anywhere is replaced, never thrown.
  json r = json::parse(ControlServer::handle_line(api, "{\"command\":\"\xc3\x28\"}"));
  CHECK(r["ok"] == false);
}

// ------------------------------------------------------------------ fuzz ----

// Is `response` exactly one line of JSON: {"ok":true,"result":...} or
// {"ok":false,"error":"one line"}? "" when it is, else what is wrong.
std::string bad_response(const std::string& response) {
  if (response.find('\n') != std::string::npos) return "more than one line";
  json r;
  try {
    r = json::parse(response);
  } catch (const json::exception& e) {
    return std::string("not JSON: ") + e.what();
  }
  if (!r.is_object() || !r.contains("ok") || !r["ok"].is_boolean()) return "no boolean ok";
  if (r["ok"] == true) return r.contains("result") && r.size() == 2 ? "" : "ok without result";
  if (r.size() != 2 || !r.contains("error") || !r["error"].is_string()) return "no error text";
  const auto& e = r["error"].get_ref<const std::string&>();
  if (e.empty() || e.size() > 1024) return "error text empty or over 1 KiB";
  for (unsigned char c : e)
    if (c < 0x20 || c == 0x7f) return "a control character in the error text";
  return "";
}

std::string hex(std::string_view s) {
  static const char d[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s.substr(0, 256)) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out + (s.size() > 256 ? "..." : "");
}

// Random and mutated request lines from one seed: valid requests of every
// command, then byte flips, truncations, insertions of hostile tokens
// (numbers out of range, deep nesting, duplicate keys, invalid UTF-8, NUL,
// escapes), spliced pieces and raw random bytes.
struct LineFuzzer {
  std::mt19937_64 rng;
  explicit LineFuzzer(std::uint64_t seed) : rng(seed) {}

  std::size_t below(std::size_t n) { return n == 0 ? 0 : rng() % n; }

  std::string valid() {
    const auto& c = control::kCommands[below(control::kCommands.size())];
    static const char* const kArgs[] = {"a",    "b",  "c",   "zz",        "fast",
                                        "slow", "on", "off", "--dry-run", ""};
    json req{{"command", std::string(c.name)}};
    std::size_t n = below(c.max_args + 2);
    if (n > 0 || below(4) == 0) {
      json args = json::array();
      for (std::size_t i = 0; i < n; i++) args.push_back(kArgs[below(std::size(kArgs))]);
      req["args"] = args;
    }
    std::string line = req.dump(below(3) == 0 ? 1 : -1);  // sometimes pretty: inner newlines
    std::erase(line, '\n');
    return line;
  }

  std::string token() {
    static const char* const kTokens[] = {"1e999",
                                          "-1e999",
                                          "123456789012345678901234567890",
                                          "-0",
                                          "1e-999",
                                          "0.0000001e400",
                                          "NaN",
                                          "Infinity",
                                          "true",
                                          "null",
                                          "\"",
                                          "\\",
                                          "\\u0000",
                                          "\\ud800",
                                          "\\uDFFF\\ud800",
                                          "\xff",
                                          "\xc3",
                                          "\xc3\x28",
                                          "\xe2\x82",
                                          "\xf0\x9f\x98",
                                          "\xed\xa0\x80",
                                          "\r",
                                          "\t",
                                          "\x7f",
                                          "{}",
                                          "[]",
                                          ",",
                                          ":",
                                          "}",
                                          "]",
                                          ",\"command\":\"fail\"",
                                          ",\"args\":[\"a\"]",
                                          ",\"args\":{\"x\":1}",
                                          ",\"command\":\"show paths\"",
                                          "\"command\":\"reset-stats\","};
    std::string t = kTokens[below(std::size(kTokens))];
    switch (below(6)) {
      case 0:
        return std::string(1 + below(40), '[') + t;
      case 1:
        return std::string(1 + below(40), '{');
      case 2:
        return std::string(1, static_cast<char>(below(256)));  // NUL included
      default:
        return t;
    }
  }

  std::string mutate(std::string line) {
    for (std::size_t rounds = 1 + below(4); rounds > 0; rounds--) {
      std::size_t at = below(line.size() + 1);
      switch (below(9)) {
        case 8:  // a field given again: {"command":"show paths","command":"fail"}
          if (auto close = line.rfind('}'); close != std::string::npos && close > 1)
            line.insert(close, below(2) ? ",\"command\":\"fail\"" : ",\"args\":[\"a\"]");
          break;
        case 7:  // a value replaced by a hostile token: {"command":1e999}
        {
          std::size_t colon = line.find(':', below(line.size() + 1));
          if (colon == std::string::npos) colon = line.find(':');
          if (colon == std::string::npos) break;
          std::size_t end = line.find_first_of(",}", colon);
          line.replace(colon + 1, end == std::string::npos ? 0 : end - colon - 1, token());
          break;
        }
        case 0:  // byte flip
          if (!line.empty()) line[below(line.size())] ^= static_cast<char>(1 + below(255));
          break;
        case 1:  // truncation
          line.resize(at);
          break;
        case 2:
        case 3:  // insertion of a hostile token
          line.insert(at, token());
          break;
        case 4:  // a piece of another request spliced in
        {
          std::string other = valid();
          std::size_t from = below(other.size());
          line.insert(at, other.substr(from, below(other.size() - from + 1)));
          break;
        }
        case 5:  // deep nesting around it
        {
          std::size_t depth = 1 + below(below(2) ? 12 : 3000);
          line = std::string(depth, '[') + line + std::string(below(depth + 1), ']');
          break;
        }
        case 6:  // a byte run
          line.insert(at, std::string(1 + below(300), static_cast<char>(below(256))));
          break;
      }
    }
    return line;
  }

  std::string line() {
    switch (below(10)) {
      case 0: {  // raw random bytes
        std::string s(below(200), '\0');
        for (auto& c : s) c = static_cast<char>(below(256));
        return s;
      }
      case 1:
        return valid();
      default:
        return mutate(valid());
    }
  }
};

// MP_FUZZ_SEED, else one random seed for the whole run (printed by each test).
std::uint64_t fuzz_seed() {
  static const std::uint64_t seed = [] {
    const char* s = std::getenv("MP_FUZZ_SEED");
    return s && *s ? std::strtoull(s, nullptr, 0) : std::uint64_t{std::random_device{}()};
  }();
  return seed;
}

std::size_t fuzz_lines(std::size_t dflt) {
  if (const char* s = std::getenv("MP_FUZZ_LINES"); s && *s) return std::strtoull(s, nullptr, 0);
  return dflt;
}

TEST_CASE("fuzz: every random or mutated line gets exactly one line of JSON") {
  const std::uint64_t seed = fuzz_seed();
  const std::size_t count = fuzz_lines(20000);
  MESSAGE("fuzz seed " << seed << " (MP_FUZZ_SEED=" << seed << " reproduces this run)");
  LineFuzzer fz(seed);
  FakeControlApi api;
  std::size_t ok = 0, refused = 0, bad = 0;
  // How often each hardened path was taken: each must be reached.
  std::map<std::string, std::size_t> seen{{"number overflow", 0}, {"appears twice", 0},
                                          {"deeper than", 0},     {"NUL byte", 0},
                                          {"parse error", 0},     {"args must be", 0}};
  for (std::size_t i = 0; i < count; i++) {
    std::string line = fz.line();
    std::string r;
    try {
      r = ControlServer::handle_line(api, line);
    } catch (...) {
      FAIL("seed " << seed << " line " << i << " threw; line (hex) " << hex(line));
    }
    if (std::string why = bad_response(r); !why.empty()) {
      if (bad++ < 5)
        FAIL_CHECK("seed " << seed << " line " << i << ": " << why << "; line (hex) " << hex(line)
                           << "; response " << r);
      continue;
    }
    json j = json::parse(r);
    (j["ok"] == true ? ok : refused)++;
    if (j["ok"] == false)
      for (auto& [what, n] : seen) n += has(j["error"].get<std::string>(), what);
  }
  MESSAGE(count << " lines: " << ok << " answered, " << refused << " refused");
  for (const auto& [what, n] : seen) {
    MESSAGE(what << ": " << n);
    CHECK_MESSAGE(n > 0, "no line reached '" << what << "'");
  }
  CHECK(bad == 0);
  CHECK(refused > count / 2);  // the mutations do reach the error paths
  CHECK(ok > 0);
}

TEST_CASE("fuzz over a session: one response per line, in order, and the session goes on") {
  const std::uint64_t seed = fuzz_seed() + 1;  // other lines than the test above
  const std::size_t count = fuzz_lines(20000) / 10;
  MESSAGE("fuzz seed " << seed - 1 << " (MP_FUZZ_SEED=" << seed - 1 << " reproduces this run)");
  LineFuzzer fz(seed);
  Rig rig;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  std::string batch;
  std::size_t sent = 0, got = 0;
  auto drain = [&](std::size_t until) {
    while (got < until) {
      auto l = c.line();
      REQUIRE_MESSAGE(l.has_value(), "seed " << seed << ": no response " << got);
      std::string why = bad_response(*l);
      REQUIRE_MESSAGE(why.empty(), "seed " << seed << " response " << got << ": " << why);
      got++;
    }
  };
  while (sent < count) {
    std::string line = fz.line();
    std::replace(line.begin(), line.end(), '\n', ' ');  // one line each
    if (!line.empty() && line.back() == '\r') line.back() = ' ';
    batch += line + (fz.below(2) ? "\n" : "\r\n");
    sent++;
    if (fz.below(16) == 0 || sent == count) {
      // Sent in random slices, so lines arrive split across reads.
      for (std::size_t off = 0; off < batch.size();) {
        std::size_t n = 1 + fz.below(4096);
        c.send(std::string_view(batch).substr(off, n));
        off += n;
      }
      batch.clear();
      drain(sent);
    }
  }
  CHECK(got == count);
  CHECK(c.command("show stats")["ok"] == true);
  CHECK(!c.closed);
}

// ------------------------------------------------------------ pipelining ----

TEST_CASE("a reload answered later holds the lines behind it, and answers stay in order") {
  Rig rig;
  rig.api.defer_reload = true;
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  Client other(rig);
  c.send("{\"command\":\"reload\"}\n{\"command\":\"show paths\"}\n");
  // The reload is asked for; the request behind it waits for its answer.
  REQUIRE(rig.run_until([&] { return rig.api.deferred.size() == 1; }));
  for (int i = 0; i < 20; i++) rig.io.poll();
  c.pump();
  CHECK(c.buf.empty());
  CHECK(rig.api.calls.back() == "reload");
  // Meanwhile another session is served: the loop is not blocked.
  CHECK(other.command("show paths")["ok"] == true);
  rig.api.deferred.front()();
  json first = c.response();
  CHECK(first["ok"] == true);
  CHECK(first["result"]["summary"] == "added path d");
  CHECK(c.response()["ok"] == true);  // then show paths
  CHECK(rig.api.calls.back() == "show_paths");
  CHECK(rig.logged("control: reload: done (added path d)"));
}

TEST_CASE("a client that hangs up while its reload is pending: the session ends with the answer") {
  Rig rig;
  rig.api.defer_reload = true;
  REQUIRE(rig.server->start() == "");
  {
    Client c(rig);
    c.send("{\"command\":\"reload\"}\n");
    REQUIRE(rig.run_until([&] { return rig.api.deferred.size() == 1; }));
  }
  for (int i = 0; i < 20; i++) rig.io.poll();
  CHECK(rig.server->sessions() == 1);  // the reload still runs, and is logged when done
  rig.api.deferred.front()();
  REQUIRE(rig.run_until([&] { return rig.server->sessions() == 0; }));
  CHECK(rig.logged("control: reload: done"));
  Client c(rig);
  CHECK(c.command("show paths")["ok"] == true);
}

TEST_CASE("a client may pipeline 20,000 requests before it reads any response") {
  ControlLimits lim;
  lim.write_stall = 5000ms;
  Rig rig(lim);
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  std::string reqs;
  for (int i = 0; i < 20000; i++) reqs += "{\"command\":\"show paths\"}\n";  // 520 KB
  // Completes although the client reads nothing meanwhile: the server keeps
  // taking requests (up to max_input) while its responses back up.
  c.send(reqs);
  CHECK(rig.server->sessions() == 1);
  int answered = 0;
  for (int i = 0; i < 20000; i++) {
    auto l = c.line();
    REQUIRE_MESSAGE(l.has_value(), "response " << i << " missing");
    answered += json::parse(*l)["ok"] == true;
  }
  CHECK(answered == 20000);
  CHECK(!rig.logged("stopped reading"));
}

TEST_CASE(
    "a client that pipelines and never reads is closed; it can read what was sent, then EOF") {
  ::signal(SIGPIPE, SIG_DFL);  // a server write to a closed peer must not raise it
  ControlLimits lim;
  // Long enough for the client to finish sending 520 KB under tsan (at 200 ms
  // the session was dropped as stalled mid-send there).
  lim.write_stall = 2000ms;
  Rig rig(lim);
  REQUIRE(rig.server->start() == "");
  Client c(rig);
  std::string reqs;
  for (int i = 0; i < 20000; i++) reqs += "{\"command\":\"show paths\"}\n";
  c.send(reqs);  // completes, as above
  CHECK(rig.run_until([&] { return rig.logged("stopped reading"); }));
  CHECK(rig.server->sessions() == 0);
  // What the kernel took before the close is there, in order; then EOF.
  std::string data;
  std::error_code ec;
  c.sock.non_blocking(false);
  char tmp[65536];
  while (!ec) data.append(tmp, c.sock.read_some(asio::buffer(tmp), ec));
  CHECK(ec == asio::error::eof);
  auto lines = std::count(data.begin(), data.end(), '\n');
  MESSAGE("a client that never read got " << lines << " of 20000 responses (" << data.size()
                                          << " bytes) and then EOF");
  CHECK(lines > 0);
  CHECK(lines < 20000);
  CHECK(json::parse(data.substr(0, data.find('\n')))["ok"] == true);
  // A client that closes with responses pending: the server's write fails
  // with EPIPE, never SIGPIPE (asio sends with MSG_NOSIGNAL).
  for (int i = 0; i < 20; i++) {
    Client gone(rig);
    gone.send(reqs.substr(0, 26 * 2000));
    REQUIRE(rig.run_until([&] { return rig.api.calls.size() > 0; }));
  }
  CHECK(rig.run_until([&] { return rig.server->sessions() == 0; }));
  Client after(rig);
  CHECK(after.command("show stats")["ok"] == true);
  ::signal(SIGPIPE, SIG_IGN);
}

// ----------------------------------------------------------- descriptors ----

int count_in(const std::vector<std::string>& logs, const std::string& needle) {
  return static_cast<int>(std::count_if(logs.begin(), logs.end(), [&](const std::string& l) {
    return l.find(needle) != std::string::npos;
  }));
}

TEST_CASE("out of descriptors: the control socket still answers, one at a time, logged once") {
  Rig rig;
  REQUIRE(rig.server->start() == "");
  // Clients' sockets are made first: the table is full afterwards.
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 3; i++) clients.push_back(std::make_unique<Client>(rig));
  {
    NoDescriptors full;
    for (auto& c : clients) {
      CHECK(c->command("show paths")["ok"] == true);
      c->sock.shutdown(stream_protocol::socket::shutdown_send);
      CHECK(c->wait_closed());  // its descriptor becomes the reserve again
    }
    CHECK(count_in(rig.logs, "out of file descriptors (limit ") == 1);
    CHECK(rig.logged("control socket " + rig.cfg.socket + ": out of file descriptors"));
    CHECK(rig.server->sessions() == 0);
    full.free_some(4);
    Client c(rig);  // accepted normally: recovered
    CHECK(c.command("show stats")["ok"] == true);
  }
  CHECK(count_in(rig.logs, "file descriptors are available again") == 1);
  CHECK(count_in(rig.logs, "out of file descriptors") == 1);
}

std::string g_fd_limit_said;  // what raise_fd_limit reported
void record_debug(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_fd_limit_said = buf;
}

TEST_CASE("raise_fd_limit raises the soft limit to the hard limit") {
  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit low = saved;
  low.rlim_cur = 64;
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
  raise_fd_limit(record_debug);
  rlimit now{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &now) == 0);
  CHECK(now.rlim_cur == (saved.rlim_max == RLIM_INFINITY ? now.rlim_cur : saved.rlim_max));
  CHECK(now.rlim_cur > 64);
  CHECK(
      has(g_fd_limit_said, "raised the open-file limit (RLIMIT_NOFILE) from 64 to the hard limit"));
  ::setrlimit(RLIMIT_NOFILE, &saved);
}

}  // namespace
}  // namespace mp
