// Test doubles for the engine: a scripted FakePath, a manual-clock FakeRuntime and a Harness.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "server/engine.h"
#include "server/path.h"
#include "server/reply_lease.h"
#include "server/runtime.h"

namespace mp::test {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

// Time, randomness, wake-ups and logs under the test's control. No real time.
class FakeRuntime final : public Runtime {
 public:
  struct LogLine {
    LogLevel level;
    std::string text;
  };

  Clock::time_point t = Clock::time_point{} + 1h;
  std::mt19937_64 rng{20240601};
  std::optional<Clock::time_point> wake;  // the engine's latest wish
  std::vector<LogLine> logs;

  Clock::time_point now() const override { return t; }
  std::uint64_t random() override { return rng(); }
  void wake_at(Clock::time_point when) override { wake = when; }
  void log(LogLevel level, const std::string& line) override { logs.push_back({level, line}); }

  // Log lines at `level` that contain every needle.
  std::size_t count_logs(LogLevel level, std::initializer_list<std::string_view> needles) const {
    std::size_t n = 0;
    for (const auto& l : logs) {
      if (l.level != level) continue;
      bool all = true;
      for (auto nd : needles) all = all && l.text.find(nd) != std::string::npos;
      n += all;
    }
    return n;
  }
  std::string dump_logs() const {
    std::string s;
    for (const auto& l : logs) s += "DNWE"[static_cast<int>(l.level)] + (" " + l.text) + "\n";
    return s;
  }
};

// A Path whose connections and replies are driven by the test. A shared
// `disk` (optional) lets tests model what the servers' storage holds.
class FakePath final : public Path {
 public:
  struct Sent {
    Command cmd;
    CommandSink* sink = nullptr;
    unsigned conn = 0;  // connection number it went out on
    Clock::time_point at{};
    std::vector<std::byte> bytes;  // a write's data, copied (cmd.data dies with the attempt)
    bool done = false;
  };

  FakePath(const config::Path& cfg, FakeRuntime& rt, std::vector<std::byte>* disk)
      : name_(cfg.name), uri_(cfg.uri), rt_(rt), disk_(disk) {}

  const std::string& name() const override { return name_; }
  const std::string& uri() const override { return uri_; }
  void connect() override {
    connect_times.push_back(rt_.now());
    conn++;
    up = false;
    connect_pending = true;
  }
  bool submit(const Command& cmd, CommandSink* sink) override {
    if (!up || refuse) return false;
    Sent s;
    s.cmd = cmd;
    s.sink = sink;
    s.conn = conn;
    s.at = rt_.now();
    if (cmd.op == Op::Write && cmd.data) s.bytes.assign(cmd.data, cmd.data + cmd.count);
    sent.push_back(std::move(s));
    if (lend_fd >= 0 && ReplyLease::offered()) ReplyLease::lend(std::make_shared<Lease>(*this));
    return true;
  }
  void disconnect() override {
    disconnects++;
    up = false;
    connect_pending = false;
    retired.push_back(conn);
  }
  unsigned retired_connections() const override {
    unsigned n = 0;
    for (unsigned c : retired)
      for (const auto& s : sent)
        if (s.conn == c && !s.done) {
          n++;
          break;
        }
    return n;
  }

  // ---- test side ----
  bool live(std::size_t i) const { return up && sent[i].conn == conn && !sent[i].done; }
  bool is_probe(std::size_t i) const {
    return sent[i].cmd.op == Op::Read && sent[i].cmd.offset == 0;
  }
  // Not-done commands of `op` at `offset` (on any connection, retired ones too).
  std::vector<std::size_t> pending(Op op, std::uint64_t offset) const {
    std::vector<std::size_t> v;
    for (std::size_t i = 0; i < sent.size(); i++)
      if (!sent[i].done && sent[i].cmd.op == op && sent[i].cmd.offset == offset) v.push_back(i);
    return v;
  }
  std::size_t count(Op op) const {
    std::size_t n = 0;
    for (const auto& s : sent) n += s.cmd.op == op;
    return n;
  }
  // Calls the sink: the reply arrives (or the connection died).
  void complete(std::size_t i, PathResult result = PathResult::Ok, int err = 0) {
    REQUIRE(i < sent.size());
    REQUIRE_FALSE(sent[i].done);
    sent[i].done = true;
    CommandSink* sink = sent[i].sink;
    sink->command_done(result, err);
  }
  // A read's server writes `v` into the destination buffer.
  void fill(std::size_t i, std::byte v) {
    REQUIRE(sent[i].cmd.op == Op::Read);
    std::memset(sent[i].cmd.data, static_cast<int>(v), sent[i].cmd.count);
  }
  // The server executes the command against the disk (read: copy out; write,
  // zero, trim: store), without replying yet.
  void execute(std::size_t i) {
    REQUIRE(disk_);
    const Command& c = sent[i].cmd;
    REQUIRE(c.offset + c.count <= disk_->size());
    switch (c.op) {
      case Op::Read:
        std::memcpy(c.data, disk_->data() + c.offset, c.count);
        break;
      case Op::Write:
        std::memcpy(disk_->data() + c.offset, sent[i].bytes.data(), c.count);
        break;
      case Op::Zero:
      case Op::Trim:
        std::memset(disk_->data() + c.offset, 0, c.count);
        break;
      default:
        break;
    }
  }
  // execute() then reply Ok.
  void serve(std::size_t i) {
    execute(i);
    complete(i);
  }

  // A lease on this path's replies (server/reply_lease.h), lent to a thread
  // that offered to read when lend_fd >= 0: it polls lend_fd, and its read()
  // calls on_lease_read. Counts what the lessee did.
  struct Lease final : ReplyLease {
    explicit Lease(FakePath& p) : path(p) {}
    int fd() const override { return path.lend_fd; }
    void read() override {
      path.lease_reads++;
      if (path.on_lease_read) path.on_lease_read();
    }
    void end() override { path.leases_ended++; }
    FakePath& path;
  };
  int lend_fd = -1;
  std::function<void()> on_lease_read;
  int lease_reads = 0, leases_ended = 0;

  std::deque<Sent> sent;  // deque: completions may submit more while we hold references
  bool up = false;        // the current connection is ready
  bool refuse = false;    // submit() fails although the engine was not told (dying connection)
  bool connect_pending = false;
  unsigned conn = 0;  // current connection number (first connect: 1)
  std::vector<unsigned> retired;
  std::vector<Clock::time_point> connect_times;
  unsigned disconnects = 0;

 private:
  std::string name_, uri_;
  FakeRuntime& rt_;
  std::vector<std::byte>* disk_;
};

// A request that records its completion instead of waking a thread.
struct TestReq : Request {
  FakeRuntime* rt = nullptr;
  int calls = 0;
  Clock::time_point done_at{};
};

inline std::unique_ptr<TestReq> make_req(FakeRuntime& rt, Op op, std::uint64_t offset,
                                         std::uint32_t count, int fill = -1) {
  auto r = std::make_unique<TestReq>();
  r->rt = &rt;
  r->op = op;
  r->offset = offset;
  r->count = count;
  if (fill >= 0) {
    r->data = std::make_shared_for_overwrite<std::byte[]>(count);
    std::memset(r->data.get(), fill, count);
  }
  r->on_done = [](Request& req) {
    auto& t = static_cast<TestReq&>(req);
    t.calls++;
    t.done_at = t.rt->now();
  };
  return r;
}

inline bool all_eq(const std::byte* p, std::size_t n, int v) {
  if (!p) return false;
  for (std::size_t i = 0; i < n; i++)
    if (p[i] != static_cast<std::byte>(v)) return false;
  return true;
}

inline PathCaps default_caps() {
  PathCaps c;
  c.size = 1u << 20;
  c.can_flush = c.can_fua = c.can_trim = c.can_zero = true;
  return c;
}

// Paths named `names`, all in group "default"; short timeouts; the checker
// effectively off (1 h) and no hedged reads unless a test turns them on.
inline config::Config make_config(std::initializer_list<const char*> names = {"A", "B"}) {
  config::Config c;
  c.groups = {config::Group{"default", 0}};
  for (const char* n : names) {
    config::Path p;
    p.name = n;
    p.uri = std::string("nbd://") + n;
    c.paths.push_back(p);
  }
  c.timeouts.attempt = 1000ms;
  c.timeouts.request = 10000ms;
  c.timeouts.connect = 5000ms;
  c.failover.reconnect_min = 100ms;
  c.failover.reconnect_max = 800ms;
  c.no_path.max_time = 5000ms;
  c.checker.interval = 1h;
  // service-time, not the default latency selector: these tests expect its
  // deterministic picks (an idle path by throughput, equal ones in turn).
  // The latency selector draws two paths at random; it has its own tests.
  c.selector.kind = config::SelectorKind::ServiceTime;
  // Hedged reads would send a second copy of any read a test keeps waiting:
  // off here; tests/unit/test_engine_hedge.cc turns them on.
  c.hedge.enabled = false;
  c.source = "test";
  return c;
}

// An engine over FakePaths, with the fake clock.
struct Harness {
  FakeRuntime rt;
  std::vector<std::byte> disk;
  PathCaps caps;
  std::map<std::string, FakePath*> paths;
  PathListener* listener = nullptr;
  std::unique_ptr<Engine> engine;

  explicit Harness(config::Config cfg, Engine::Options opts = Engine::Options{},
                   PathCaps disk_caps = default_caps())
      : disk(disk_caps.size), caps(disk_caps) {
    Engine::PathFactory factory = [this](const config::Path& pc, PathListener& l) -> PathPtr {
      listener = &l;
      auto p = std::make_unique<FakePath>(pc, rt, &disk);
      paths[pc.name] = p.get();
      return p;
    };
    engine = std::make_unique<Engine>(std::move(cfg), rt, factory, caps, opts);
    engine->start();
  }

  FakePath& p(const std::string& name) {
    auto it = paths.find(name);
    REQUIRE(it != paths.end());
    return *it->second;
  }
  std::optional<PathState> state(const std::string& name) const { return engine->state(name); }

  // The path's pending connect finishes with these caps.
  void connected(const std::string& name, std::optional<PathCaps> with = {}) {
    FakePath& fp = p(name);
    fp.up = true;
    fp.connect_pending = false;
    listener->path_connected(fp, with ? *with : caps);
  }
  void down(const std::string& name, const std::string& reason = "connection reset by peer") {
    FakePath& fp = p(name);
    fp.up = false;
    fp.connect_pending = false;
    listener->path_down(fp, reason);
  }
  // The path's probe read (a read at offset 0 on its live connection).
  std::optional<std::size_t> probe_of(const std::string& name) {
    FakePath& fp = p(name);
    for (std::size_t i = 0; i < fp.sent.size(); i++)
      if (fp.live(i) && fp.is_probe(i)) return i;
    return std::nullopt;
  }
  // Connect and pass the probe: Active (or Held).
  void bring_up(const std::string& name) {
    connected(name);
    auto i = probe_of(name);
    REQUIRE(i.has_value());
    p(name).serve(*i);
  }
  void bring_up_all() {
    for (auto& [n, fp] : paths) bring_up(n);
    for (auto& [n, fp] : paths) REQUIRE(state(n) == PathState::Active);
  }

  // Moves time to each wake-up the engine asked for up to now+d, running
  // timers at each, then to now+d.
  void advance(Clock::duration d) { advance_to(rt.t + d); }
  void advance_to(Clock::time_point target) {
    for (int guard = 0; rt.wake && *rt.wake <= target; guard++) {
      REQUIRE(guard < 1000000);
      if (*rt.wake > rt.t) rt.t = *rt.wake;
      rt.wake.reset();
      engine->run_timers();
    }
    if (target > rt.t) rt.t = target;
    engine->run_timers();
  }
  // Like advance, but stops right after the wake-up at which pred() holds.
  bool advance_until(const std::function<bool()>& pred, Clock::duration limit) {
    Clock::time_point target = rt.t + limit;
    for (int guard = 0; !pred() && rt.wake && *rt.wake <= target; guard++) {
      REQUIRE(guard < 1000000);
      if (*rt.wake > rt.t) rt.t = *rt.wake;
      rt.wake.reset();
      engine->run_timers();
    }
    if (!pred()) advance_to(target);
    return pred();
  }
  // Until the path asks for a new connection.
  bool until_connect(const std::string& name, Clock::duration limit = 60s) {
    FakePath& fp = p(name);
    std::size_t n = fp.connect_times.size();
    return advance_until([&] { return fp.connect_times.size() > n; }, limit);
  }

  // The one command of `op` at `offset` that is pending on a live connection.
  std::pair<FakePath*, std::size_t> find(Op op, std::uint64_t offset) {
    std::vector<std::pair<FakePath*, std::size_t>> all = find_all(op, offset);
    INFO(rt.dump_logs());
    REQUIRE(all.size() == 1);
    return all[0];
  }
  std::vector<std::pair<FakePath*, std::size_t>> find_all(Op op, std::uint64_t offset) {
    std::vector<std::pair<FakePath*, std::size_t>> all;
    for (auto& [n, fp] : paths)
      for (std::size_t i : fp->pending(op, offset))
        if (fp->live(i)) all.emplace_back(fp, i);
    return all;
  }
  std::size_t live_pending() {
    std::size_t n = 0;
    for (auto& [name, fp] : paths)
      for (std::size_t i = 0; i < fp->sent.size(); i++) n += fp->live(i);
    return n;
  }

  // A healthy world: every connect succeeds and every command on a live
  // connection is executed against the disk and answered Ok, in order.
  void serve_all() {
    for (bool more = true; more;) {
      more = false;
      for (auto& [n, fp] : paths) {
        if (fp->connect_pending) {
          connected(n);
          more = true;
        }
        for (std::size_t i = 0; i < fp->sent.size(); i++)
          if (fp->live(i)) {
            fp->serve(i);
            more = true;
          }
      }
    }
  }
  // Runs the healthy world for d of fake time.
  void settle(Clock::duration d) {
    Clock::time_point target = rt.t + d;
    serve_all();
    for (int guard = 0; rt.wake && *rt.wake <= target; guard++) {
      REQUIRE(guard < 1000000);
      if (*rt.wake > rt.t) rt.t = *rt.wake;
      rt.wake.reset();
      engine->run_timers();
      serve_all();
    }
    if (target > rt.t) rt.t = target;
    engine->run_timers();
    serve_all();
  }
};

}  // namespace mp::test
