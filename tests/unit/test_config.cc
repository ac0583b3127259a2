// Unit tests for config/: YAML loading, validation messages, durations, URIs and the quick form.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "config/config.h"

using namespace mp::config;
using namespace std::chrono_literals;

namespace {

LoadResult load(const std::string& yaml) {
  return load_string(yaml, "t.yaml");
}

// Asserts that `yaml` is refused with an error that starts with `prefix`
// ("t.yaml:LINE:COL: ") and contains `phrase`, and is one line.
void expect_error(const std::string& yaml, const std::string& prefix, const std::string& phrase) {
  LoadResult r = load(yaml);
  INFO("yaml:\n" << yaml << "\nerror: " << r.error);
  REQUIRE_FALSE(r);
  CHECK_FALSE(r.config.has_value());
  CHECK(r.error.rfind(prefix, 0) == 0);
  CHECK(r.error.find(phrase) != std::string::npos);
  CHECK(r.error.find('\n') == std::string::npos);
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

const Group* find_group(const Config& c, const std::string& name) {
  for (const auto& g : c.groups)
    if (g.name == name) return &g;
  return nullptr;
}

}  // namespace

TEST_CASE("a file with every key loads every field") {
  LoadResult r = load(R"(paths:
  - name: a
    uri: nbd+unix:///?socket=/run/a.sock
    group: primary
    weight: 3
    max-inflight: 128
    throughput: 2.5
  - name: b
    uri: nbds://10.0.0.2:10810/disk
    group: secondary
groups:
  - name: primary
    priority: 10
  - name: secondary
    priority: -1
selector: round-robin
timeouts:
  attempt: 500ms
  request: 1m
  connect: 1.5s
failover:
  retries: 3
  eio: return
  failback: 30s
  reconnect-min: 50ms
  reconnect-max: 10s
no-path:
  policy: fail
  max-time: 2m
  max-requests: 100
checker:
  interval: 250ms
durability:
  shared-cache: true
  max-dirty-ranges: 500
stale-writes:
  max-bytes: 128MiB
control:
  socket: /run/mp/ctl.sock
  mode: "0660"
  group: root
  events: 1000
metrics:
  listen: 127.0.0.1:9100
)");
  INFO(r.error);
  REQUIRE(r);
  const Config& c = *r.config;
  CHECK(r.error.empty());
  CHECK(c.source == "t.yaml");

  REQUIRE(c.paths.size() == 2);
  CHECK(c.paths[0].name == "a");
  CHECK(c.paths[0].uri == "nbd+unix:///?socket=/run/a.sock");
  CHECK(c.paths[0].group == "primary");
  CHECK(c.paths[0].weight == 3);
  CHECK(c.paths[0].max_inflight == 128);
  CHECK(c.paths[0].throughput == doctest::Approx(2.5));
  CHECK(c.paths[0].line == 2);
  CHECK(c.paths[1].name == "b");
  CHECK(c.paths[1].uri == "nbds://10.0.0.2:10810/disk");
  CHECK(c.paths[1].group == "secondary");
  CHECK(c.paths[1].weight == 1);
  CHECK(c.paths[1].max_inflight == 64);
  CHECK(c.paths[1].throughput == doctest::Approx(1.0));
  CHECK(c.paths[1].line == 8);

  REQUIRE(c.groups.size() == 2);
  CHECK(c.groups[0].name == "primary");
  CHECK(c.groups[0].priority == 10);
  CHECK(c.groups[1].name == "secondary");
  CHECK(c.groups[1].priority == -1);
  CHECK(find_group(c, "default") == nullptr);

  CHECK(c.selector.kind == SelectorKind::RoundRobin);
  CHECK(c.timeouts.attempt == 500ms);
  CHECK(c.timeouts.request == 60s);
  CHECK(c.timeouts.connect == 1500ms);
  CHECK(c.failover.max_retries == 3);
  CHECK(c.failover.eio == EioPolicy::Return);
  CHECK(c.failover.failback == Failback::Delayed);
  CHECK(c.failover.failback_delay == 30s);
  CHECK(c.failover.reconnect_min == 50ms);
  CHECK(c.failover.reconnect_max == 10s);
  CHECK(c.no_path.policy == NoPathPolicy::Fail);
  CHECK(c.no_path.max_time == 120s);
  CHECK(c.no_path.max_requests == 100);
  CHECK(c.checker.interval == 250ms);
  CHECK(c.durability.shared_cache == true);
  CHECK(c.durability.max_dirty_ranges == 500);
  CHECK(c.stale_writes.max_bytes == 128ull << 20);
  CHECK(c.control.socket == "/run/mp/ctl.sock");
  CHECK(c.control.mode == 0660);
  CHECK(c.control.group == "root");
  CHECK(c.control.events == 1000);
  CHECK(c.metrics.socket.empty());
  CHECK(c.metrics.listen == "127.0.0.1:9100");
}

TEST_CASE("a file with only paths gets every default") {
  LoadResult r = load(R"(paths:
  - uri: nbd://a.example
  - uri: nbd://b.example:10809/export
)");
  INFO(r.error);
  REQUIRE(r);
  const Config& c = *r.config;
  REQUIRE(c.paths.size() == 2);
  CHECK(c.paths[0].name == "path1");
  CHECK(c.paths[1].name == "path2");
  for (const auto& p : c.paths) {
    CHECK(p.group == "default");
    CHECK(p.weight == 1);
    CHECK(p.max_inflight == 64);
    CHECK(p.throughput == doctest::Approx(1.0));
  }
  CHECK(c.paths[0].line == 2);
  CHECK(c.paths[1].line == 3);
  REQUIRE(c.groups.size() == 1);
  CHECK(c.groups[0].name == "default");
  CHECK(c.groups[0].priority == 0);
  CHECK(c.selector.kind == SelectorKind::Latency);
  CHECK(c.timeouts.attempt == 2s);
  CHECK(c.timeouts.request == 30s);
  CHECK(c.timeouts.connect == 5s);
  CHECK(c.failover.max_retries == 8);
  CHECK(c.failover.eio == EioPolicy::Failover);
  CHECK(c.failover.failback == Failback::Immediate);
  CHECK(c.failover.failback_delay == 0ms);
  CHECK(c.failover.reconnect_min == 100ms);
  CHECK(c.failover.reconnect_max == 5s);
  CHECK(c.no_path.policy == NoPathPolicy::Queue);
  CHECK(c.no_path.max_time == 30s);
  CHECK(c.no_path.max_requests == 4096);
  CHECK(c.checker.interval == 1s);
  CHECK(c.durability.shared_cache == false);
  CHECK(c.durability.max_dirty_ranges == 16384);
  CHECK(c.stale_writes.max_bytes == 64ull << 20);
  CHECK(c.control.socket.empty());
  CHECK(c.control.mode == 0600);
  CHECK(c.control.group.empty());
  CHECK(c.control.events == 256);
  CHECK(c.metrics.socket.empty());
  CHECK(c.metrics.listen.empty());
  CHECK(c.source == "t.yaml");
}

TEST_CASE("groups: the implicit default, declared default and mixes") {
  SUBCASE("paths in a declared group and in the implicit default") {
    LoadResult r = load(R"(paths:
  - uri: nbd://a
    group: fast
  - uri: nbd://b
groups:
  - name: fast
    priority: 5
)");
    INFO(r.error);
    REQUIRE(r);
    REQUIRE(r.config->groups.size() == 2);
    REQUIRE(find_group(*r.config, "fast"));
    CHECK(find_group(*r.config, "fast")->priority == 5);
    REQUIRE(find_group(*r.config, "default"));
    CHECK(find_group(*r.config, "default")->priority == 0);
  }
  SUBCASE("declaring default gives it a priority") {
    LoadResult r = load(R"(paths:
  - uri: nbd://a
groups:
  - name: default
    priority: 7
)");
    INFO(r.error);
    REQUIRE(r);
    REQUIRE(r.config->groups.size() == 1);
    CHECK(r.config->groups[0].name == "default");
    CHECK(r.config->groups[0].priority == 7);
  }
  SUBCASE("no path in default: default is not listed") {
    LoadResult r = load(R"(paths:
  - uri: nbd://a
    group: g
groups:
  - name: g
)");
    INFO(r.error);
    REQUIRE(r);
    REQUIRE(r.config->groups.size() == 1);
    CHECK(r.config->groups[0].name == "g");
    CHECK(r.config->groups[0].priority == 0);
  }
  SUBCASE("empty sections are allowed") {
    LoadResult r = load("paths:\n  - uri: nbd://a\ngroups:\ntimeouts:\nfailover:\n");
    INFO(r.error);
    REQUIRE(r);
    CHECK(r.config->timeouts.attempt == 2s);
  }
}

TEST_CASE("failback forms and other accepted spellings") {
  auto with = [](const std::string& tail) { return load("paths:\n  - uri: nbd://a\n" + tail); };
  SUBCASE("manual") {
    LoadResult r = with("failover:\n  failback: manual\n");
    REQUIRE(r);
    CHECK(r.config->failover.failback == Failback::Manual);
  }
  SUBCASE("immediate") {
    LoadResult r = with("failover:\n  failback: immediate\n");
    REQUIRE(r);
    CHECK(r.config->failover.failback == Failback::Immediate);
  }
  SUBCASE("delay in minutes") {
    LoadResult r = with("failover:\n  failback: 2m\n");
    REQUIRE(r);
    CHECK(r.config->failover.failback == Failback::Delayed);
    CHECK(r.config->failover.failback_delay == 120s);
  }
  SUBCASE("byte counts") {
    LoadResult r = with("stale-writes:\n  max-bytes: 1048576\n");
    REQUIRE(r);
    CHECK(r.config->stale_writes.max_bytes == 1048576);
    r = with("stale-writes:\n  max-bytes: 2G\n");
    REQUIRE(r);
    CHECK(r.config->stale_writes.max_bytes == 2ull << 30);
    r = with("stale-writes:\n  max-bytes: 4096KiB\n");
    REQUIRE(r);
    CHECK(r.config->stale_writes.max_bytes == 4ull << 20);
  }
  SUBCASE("booleans") {
    LoadResult r = with("durability:\n  shared-cache: yes\n");
    REQUIRE(r);
    CHECK(r.config->durability.shared_cache);
    r = with("durability:\n  shared-cache: false\n");
    REQUIRE(r);
    CHECK_FALSE(r.config->durability.shared_cache);
  }
  SUBCASE("selectors") {
    CHECK(with("selector: queue-length\n").config->selector.kind == SelectorKind::QueueLength);
    CHECK(with("selector: service-time\n").config->selector.kind == SelectorKind::ServiceTime);
    CHECK(with("selector: round-robin\n").config->selector.kind == SelectorKind::RoundRobin);
  }
  SUBCASE("request equal to attempt is fine") {
    LoadResult r = with("timeouts:\n  attempt: 30s\n");
    INFO(r.error);
    REQUIRE(r);
    CHECK(r.config->timeouts.attempt == r.config->timeouts.request);
  }
  SUBCASE("flow style") {
    LoadResult r = load("{paths: [{uri: 'nbd://a', weight: 2}], selector: round-robin}");
    INFO(r.error);
    REQUIRE(r);
    CHECK(r.config->paths[0].weight == 2);
  }
}

TEST_CASE("YAML syntax errors") {
  SUBCASE("unclosed flow mapping") {
    expect_error("paths: [ {uri: nbd://h\n", "t.yaml:2:1: ", "YAML syntax error");
  }
  SUBCASE("bad indentation") {
    expect_error("paths:\n  - uri: nbd://a\n weight: 1\n", "t.yaml:3:", "YAML syntax error");
  }
  SUBCASE("tab indentation says so") {
    expect_error("paths:\n\t- uri: nbd://a\n", "t.yaml:2:", "indent with spaces, not tabs");
  }
  SUBCASE("two documents") {
    expect_error("paths:\n  - uri: nbd://a\n---\npaths: []\n", "t.yaml:4:1: ", "2 YAML documents");
  }
}

TEST_CASE("unknown and duplicate keys") {
  SUBCASE("unknown path key with a close match") {
    expect_error("paths:\n  - uri: nbd://a\n    wieght: 3\n", "t.yaml:3:5: ",
                 "unknown key 'wieght' in a path (did you mean 'weight'?): use one of name, uri, "
                 "group, weight, max-inflight, throughput");
  }
  SUBCASE("snake_case key suggests the kebab-case one") {
    expect_error("paths:\n  - uri: nbd://a\n    max_inflight: 3\n",
                 "t.yaml:3:5: ", "did you mean 'max-inflight'?");
  }
  SUBCASE("unknown top-level key") {
    expect_error("path:\n  - uri: nbd://a\n", "t.yaml:1:1: ", "did you mean 'paths'?");
  }
  SUBCASE("unknown key far from any allowed key has no suggestion") {
    LoadResult r = load("paths:\n  - uri: nbd://a\ncolour: blue\n");
    REQUIRE_FALSE(r);
    CHECK(r.error.rfind("t.yaml:3:1: unknown key 'colour' in the top level: use one of paths, "
                        "groups, selector",
                        0) == 0);
    CHECK_FALSE(contains(r.error, "did you mean"));
  }
  SUBCASE("unknown key in a section") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  atempt: 1s\n", "t.yaml:4:3: ",
                 "unknown key 'atempt' in timeouts: (did you mean 'attempt'?): use one of "
                 "attempt, request, connect");
  }
  SUBCASE("unknown key in a group") {
    expect_error("paths:\n  - uri: nbd://a\ngroups:\n  - name: default\n    prio: 3\n",
                 "t.yaml:5:5: ", "unknown key 'prio' in a group");
  }
  SUBCASE("key given twice") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: 2\n    weight: 3\n",
                 "t.yaml:4:5: ", "key 'weight' appears twice in a path (first on line 3)");
  }
}

TEST_CASE("wrong types") {
  SUBCASE("weight is text") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: abc\n",
                 "t.yaml:3:13: ", "weight must be an integer, not 'abc'");
  }
  SUBCASE("weight is a fraction") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: 1.5\n",
                 "t.yaml:3:13: ", "weight must be an integer, not '1.5'");
  }
  SUBCASE("weight is a sequence") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: [1]\n",
                 "t.yaml:3:13: ", "weight must be an integer, not a sequence");
  }
  SUBCASE("empty value points at the key") {
    expect_error("paths:\n  - uri: nbd://a\n    weight:\n", "t.yaml:3:5: ", "weight has no value");
  }
  SUBCASE("throughput is text") {
    expect_error("paths:\n  - uri: nbd://a\n    throughput: fast\n",
                 "t.yaml:3:17: ", "throughput must be a number, not 'fast'");
  }
  SUBCASE("priority is text") {
    expect_error("paths:\n  - uri: nbd://a\ngroups:\n  - name: default\n    priority: high\n",
                 "t.yaml:5:15: ", "priority must be an integer, not 'high'");
  }
  SUBCASE("shared-cache is not a boolean") {
    expect_error("paths:\n  - uri: nbd://a\ndurability:\n  shared-cache: maybe\n",
                 "t.yaml:4:17: ", "durability.shared-cache must be true or false, not 'maybe'");
  }
  SUBCASE("max-dirty-ranges is out of range") {
    expect_error("paths:\n  - uri: nbd://a\ndurability:\n  max-dirty-ranges: 0\n",
                 "t.yaml:4:21: ", "durability.max-dirty-ranges must be from 1 to 1048576, not '0'");
  }
  SUBCASE("max-bytes is text") {
    expect_error("paths:\n  - uri: nbd://a\nstale-writes:\n  max-bytes: lots\n",
                 "t.yaml:4:14: ", "stale-writes.max-bytes must be a byte count");
  }
  SUBCASE("selector is unknown, with a suggestion") {
    expect_error("paths:\n  - uri: nbd://a\nselector: round-robbin\n", "t.yaml:3:11: ",
                 "selector must be round-robin, queue-length, service-time or latency, not "
                 "'round-robbin' (did you mean 'round-robin'?)");
  }
  SUBCASE("eio policy is unknown") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  eio: panic\n",
                 "t.yaml:4:8: ", "failover.eio must be failover or return, not 'panic'");
  }
  SUBCASE("no-path policy is unknown") {
    expect_error("paths:\n  - uri: nbd://a\nno-path:\n  policy: wait\n",
                 "t.yaml:4:11: ", "no-path.policy must be queue or fail, not 'wait'");
  }
  SUBCASE("failback is neither word nor duration") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  failback: later\n",
                 "t.yaml:4:13: ", "failover.failback must be immediate, manual or a duration");
  }
  SUBCASE("a section is a scalar") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts: 5s\n", "t.yaml:3:11: ",
                 "timeouts must be a mapping of attempt, request or connect, not '5s'");
  }
  SUBCASE("the top level is a sequence") {
    expect_error("- uri: nbd://a\n", "t.yaml:1:1: ", "the top level must be a mapping");
  }
  SUBCASE("a path is a bare URI") {
    expect_error("paths:\n  - nbd://a\n", "t.yaml:2:5: ",
                 "each path must be a mapping with a uri, not 'nbd://a': write '- uri: nbd://a'");
  }
  SUBCASE("paths is a mapping") {
    expect_error("paths:\n  uri: nbd://a\n", "t.yaml:2:3: ", "paths must be a sequence");
  }
  SUBCASE("a path name with a blank") {
    expect_error("paths:\n  - uri: nbd://a\n    name: a b\n",
                 "t.yaml:3:11: ", "path name 'a b' contains a blank");
  }
}

TEST_CASE("durations in the file") {
  SUBCASE("a bare integer needs a unit") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  attempt: 5\n",
                 "t.yaml:4:12: ", "timeouts.attempt '5' has no unit: units are required");
  }
  SUBCASE("negative") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  connect: -5s\n",
                 "t.yaml:4:12: ", "timeouts.connect '-5s' is negative");
  }
  SUBCASE("zero attempt") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  attempt: 0s\n",
                 "t.yaml:4:12: ", "timeouts.attempt must be at least 1ms, not '0s'");
  }
  SUBCASE("garbage") {
    expect_error("paths:\n  - uri: nbd://a\nno-path:\n  max-time: soon\n",
                 "t.yaml:4:13: ", "no-path.max-time must be a duration such as 250ms");
  }
  SUBCASE("checker interval below 10ms") {
    expect_error("paths:\n  - uri: nbd://a\nchecker:\n  interval: 5ms\n",
                 "t.yaml:4:13: ", "checker.interval must be at least 10ms, not '5ms'");
  }
  SUBCASE("too long") {
    expect_error("paths:\n  - uri: nbd://a\nno-path:\n  max-time: 999999999m\n",
                 "t.yaml:4:13: ", "is too long");
  }
}

TEST_CASE("out-of-range values state the range") {
  SUBCASE("weight 0") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: 0\n",
                 "t.yaml:3:13: ", "weight must be from 1 to 1000, not '0'");
  }
  SUBCASE("weight 1001") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: 1001\n",
                 "t.yaml:3:13: ", "weight must be from 1 to 1000, not '1001'");
  }
  SUBCASE("weight beyond 64 bits") {
    expect_error("paths:\n  - uri: nbd://a\n    weight: 99999999999999999999999\n",
                 "t.yaml:3:13: ", "weight must be from 1 to 1000");
  }
  SUBCASE("max-inflight 4097") {
    expect_error("paths:\n  - uri: nbd://a\n    max-inflight: 4097\n",
                 "t.yaml:3:19: ", "max-inflight must be from 1 to 4096, not '4097'");
  }
  SUBCASE("throughput 0") {
    expect_error("paths:\n  - uri: nbd://a\n    throughput: 0\n",
                 "t.yaml:3:17: ", "throughput must be greater than 0, not '0'");
  }
  SUBCASE("throughput inf") {
    expect_error("paths:\n  - uri: nbd://a\n    throughput: inf\n",
                 "t.yaml:3:17: ", "throughput must be a number, not 'inf'");
  }
  SUBCASE("retries 101") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  retries: 101\n",
                 "t.yaml:4:12: ", "failover.retries must be from 0 to 100, not '101'");
  }
  SUBCASE("retries -1") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  retries: -1\n",
                 "t.yaml:4:12: ", "failover.retries must be from 0 to 100, not '-1'");
  }
  SUBCASE("max-requests 0") {
    expect_error("paths:\n  - uri: nbd://a\nno-path:\n  max-requests: 0\n",
                 "t.yaml:4:17: ", "no-path.max-requests must be from 1 to 1000000, not '0'");
  }
  SUBCASE("max-bytes below 1MiB") {
    expect_error("paths:\n  - uri: nbd://a\nstale-writes:\n  max-bytes: 1000K\n", "t.yaml:4:14: ",
                 "stale-writes.max-bytes must be at least 1MiB (1048576 bytes), not '1000K'");
  }
  SUBCASE("max-bytes overflows 64 bits") {
    expect_error("paths:\n  - uri: nbd://a\nstale-writes:\n  max-bytes: 99999999999999GiB\n",
                 "t.yaml:4:14: ", "is too large");
  }
  SUBCASE("delayed failback of 0s") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  failback: 0s\n",
                 "t.yaml:4:13: ", "failover.failback must be at least 1ms");
  }
}

TEST_CASE("paths: missing, empty, without uri, bad uri, duplicate names") {
  SUBCASE("empty sequence") {
    expect_error("paths: []\n",
                 "t.yaml:1:8: ", "paths: is empty: add at least one path with a uri");
  }
  SUBCASE("no value") {
    expect_error("selector: round-robin\npaths:\n",
                 "t.yaml:2:1: ", "paths: is empty: add at least one path with a uri");
  }
  SUBCASE("no paths key") {
    expect_error("selector: round-robin\n", "t.yaml:1:1: ", "paths: is missing");
  }
  SUBCASE("empty file") {
    expect_error("", "t.yaml:1:1: ", "the file is empty");
  }
  SUBCASE("comment-only file") {
    expect_error("# nothing\n", "t.yaml:1:1: ", "the file is empty");
  }
  SUBCASE("missing uri points at the name") {
    expect_error("paths:\n  - uri: nbd://a\n  - name: b\n    weight: 2\n",
                 "t.yaml:3:11: ", "path 'b' has no uri");
  }
  SUBCASE("missing uri without a name points at the entry") {
    expect_error("paths:\n  - uri: nbd://a\n  - weight: 2\n",
                 "t.yaml:3:5: ", "path 'path2' has no uri");
  }
  SUBCASE("bad uri uses check_uri's sentence") {
    expect_error("paths:\n  - uri: http://x\n", "t.yaml:2:10: ",
                 "unsupported scheme 'http' in 'http://x': use nbd://HOST[:PORT][/EXPORT]");
  }
  SUBCASE("unix uri without socket") {
    expect_error("paths:\n  - uri: nbd+unix:///disk\n", "t.yaml:2:10: ", "has no socket=");
  }
  SUBCASE("duplicate names name both lines") {
    expect_error("paths:\n  - name: a\n    uri: nbd://x\n  - name: a\n    uri: nbd://y\n",
                 "t.yaml:4:11: ", "path name 'a' is used on lines 2 and 4");
  }
  SUBCASE("explicit name clashes with a default name") {
    expect_error("paths:\n  - uri: nbd://x\n  - name: path1\n    uri: nbd://y\n",
                 "t.yaml:3:11: ", "path name 'path1' is used on lines 2 and 3");
  }
}

TEST_CASE("groups: duplicates, unknown, unused, unnamed") {
  SUBCASE("duplicate group names") {
    expect_error(R"(paths:
  - uri: nbd://a
    group: g
groups:
  - name: g
  - name: g
)",
                 "t.yaml:6:11: ", "group name 'g' is used on lines 5 and 6");
  }
  SUBCASE("unknown group") {
    expect_error(R"(paths:
  - uri: nbd://a
    group: primary
groups:
  - name: primry
)",
                 "t.yaml:3:12: ",
                 "unknown group 'primary' (did you mean 'primry'?): declare it under groups: or "
                 "use one of primry, default");
  }
  SUBCASE("unknown group with no groups section") {
    expect_error("paths:\n  - uri: nbd://a\n    group: fast\n",
                 "t.yaml:3:12: ", "unknown group 'fast'");
  }
  SUBCASE("declared group without paths") {
    expect_error(R"(paths:
  - uri: nbd://a
groups:
  - name: spare
    priority: 1
)",
                 "t.yaml:4:11: ", "group 'spare' has no paths: remove it or put a path in it");
  }
  SUBCASE("declared default without paths") {
    expect_error(R"(paths:
  - uri: nbd://a
    group: g
groups:
  - name: g
  - name: default
)",
                 "t.yaml:6:11: ", "group 'default' has no paths");
  }
  SUBCASE("group without a name") {
    expect_error("paths:\n  - uri: nbd://a\ngroups:\n  - priority: 1\n",
                 "t.yaml:4:5: ", "this group has no name");
  }
}

TEST_CASE("cross-field rules") {
  SUBCASE("request shorter than attempt") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  attempt: 5s\n  request: 1s\n",
                 "t.yaml:5:12: ",
                 "timeouts.request (1s) is shorter than timeouts.attempt (5s): make "
                 "timeouts.request at least as long as timeouts.attempt");
  }
  SUBCASE("attempt longer than the default request points at attempt") {
    expect_error("paths:\n  - uri: nbd://a\ntimeouts:\n  attempt: 1m\n",
                 "t.yaml:4:12: ", "timeouts.request (30s) is shorter than timeouts.attempt (1m)");
  }
  SUBCASE("reconnect-max shorter than reconnect-min") {
    expect_error(
        "paths:\n  - uri: nbd://a\nfailover:\n  reconnect-min: 2s\n  reconnect-max: 500ms\n",
        "t.yaml:5:18: ",
        "failover.reconnect-max (500ms) is shorter than failover.reconnect-min (2s)");
  }
  SUBCASE("reconnect-min above the default max points at min") {
    expect_error("paths:\n  - uri: nbd://a\nfailover:\n  reconnect-min: 10s\n",
                 "t.yaml:4:18: ", "is shorter than failover.reconnect-min (10s)");
  }
}

namespace {

// The configuration from `section` (YAML text after one path), which must load.
Config with_section(const std::string& section) {
  LoadResult r = load("paths:\n  - uri: nbd://a\n" + section);
  INFO("yaml:\n" << section << "\nerror: " << r.error);
  REQUIRE(r);
  return *r.config;
}

void expect_section_error(const std::string& section, const std::string& prefix,
                          const std::string& phrase) {
  expect_error("paths:\n  - uri: nbd://a\n" + section, prefix, phrase);
}

}  // namespace

TEST_CASE("control: accepted forms") {
  SUBCASE("socket alone takes the defaults") {
    Config c = with_section("control:\n  socket: /run/mp/ctl.sock\n");
    CHECK(c.control.socket == "/run/mp/ctl.sock");
    CHECK(c.control.mode == 0600);
    CHECK(c.control.group.empty());
    CHECK(c.control.events == 256);
  }
  SUBCASE("an empty section is no section") {
    Config c = with_section("control:\n");
    CHECK(c.control.socket.empty());
  }
  SUBCASE("mode as a quoted string") {
    CHECK(with_section("control:\n  socket: /s\n  mode: \"0660\"\n").control.mode == 0660);
    CHECK(with_section("control:\n  socket: /s\n  mode: '0640'\n").control.mode == 0640);
  }
  SUBCASE("mode as a plain YAML number with a leading 0") {
    CHECK(with_section("control:\n  socket: /s\n  mode: 0660\n").control.mode == 0660);
    CHECK(with_section("control:\n  socket: /s\n  mode: 0777\n").control.mode == 0777);
    CHECK(with_section("control:\n  socket: /s\n  mode: 0\n").control.mode == 0);
    CHECK(with_section("control:\n  socket: /s\n  mode: 00\n").control.mode == 0);
    CHECK(with_section("control:\n  socket: /s\n  mode: 0o600\n").control.mode == 0600);
  }
  SUBCASE("an existing group") {
    CHECK(with_section("control:\n  socket: /s\n  group: root\n").control.group == "root");
  }
  SUBCASE("events at both ends of the range") {
    CHECK(with_section("control:\n  socket: /s\n  events: 1\n").control.events == 1);
    CHECK(with_section("control:\n  socket: /s\n  events: 100000\n").control.events == 100000);
  }
  SUBCASE("the longest socket path sockaddr_un holds") {
    std::string path = "/" + std::string(106, 'x');
    CHECK(with_section("control:\n  socket: " + path + "\n").control.socket == path);
  }
}

TEST_CASE("control: errors") {
  SUBCASE("no socket") {
    expect_section_error("control:\n  mode: \"0660\"\n", "t.yaml:3:1: ",
                         "control: has no socket: add 'socket: /run/nbd-multipath/ctl.sock'");
  }
  SUBCASE("relative socket path") {
    expect_section_error("control:\n  socket: run/ctl.sock\n",
                         "t.yaml:4:11: ", "control.socket 'run/ctl.sock' is not an absolute path");
  }
  SUBCASE("socket path names a directory") {
    expect_section_error("control:\n  socket: /run/mp/\n", "t.yaml:4:11: ",
                         "control.socket '/run/mp/' ends with / and so names a directory");
  }
  SUBCASE("socket path too long for sockaddr_un") {
    expect_section_error("control:\n  socket: /" + std::string(107, 'x') + "\n", "t.yaml:4:11: ",
                         "control.socket is 108 bytes long, but a Unix socket path can be at "
                         "most 107 bytes");
  }
  SUBCASE("socket has no value") {
    expect_section_error("control:\n  socket:\n", "t.yaml:4:3: ", "control.socket has no value");
  }
  SUBCASE("mode without a leading 0, plain or quoted") {
    expect_section_error("control:\n  socket: /s\n  mode: 660\n", "t.yaml:5:9: ",
                         "control.mode must be octal permission bits with a leading 0, such as "
                         "0660 or \"0600\", not '660'");
    expect_section_error("control:\n  socket: /s\n  mode: \"660\"\n", "t.yaml:5:9: ",
                         "control.mode must be octal permission bits with a leading 0");
  }
  SUBCASE("mode that is not a number") {
    expect_section_error("control:\n  socket: /s\n  mode: rw-rw----\n",
                         "t.yaml:5:9: ", "control.mode must be octal permission bits");
    expect_section_error("control:\n  socket: /s\n  mode: 0x1b0\n",
                         "t.yaml:5:9: ", "control.mode must be octal permission bits");
    expect_section_error("control:\n  socket: /s\n  mode: \"\"\n",
                         "t.yaml:5:9: ", "control.mode must be octal permission bits");
    expect_section_error("control:\n  socket: /s\n  mode: 0o\n",
                         "t.yaml:5:9: ", "control.mode must be octal permission bits");
  }
  SUBCASE("mode with digits 8 or 9") {
    expect_section_error("control:\n  socket: /s\n  mode: 0680\n", "t.yaml:5:9: ",
                         "control.mode '0680' is not octal: use only the digits 0 to 7");
  }
  SUBCASE("mode above 0777") {
    expect_section_error("control:\n  socket: /s\n  mode: 01777\n",
                         "t.yaml:5:9: ", "control.mode must be from 0 to 0777, not '01777'");
    expect_section_error("control:\n  socket: /s\n  mode: 07777777777777777777777\n",
                         "t.yaml:5:9: ", "control.mode must be from 0 to 0777");
  }
  SUBCASE("group that does not exist") {
    expect_section_error("control:\n  socket: /s\n  group: no-such-group-mp\n", "t.yaml:5:10: ",
                         "group 'no-such-group-mp' does not exist: set control.group to an "
                         "existing group");
  }
  SUBCASE("group with a blank") {
    expect_section_error("control:\n  socket: /s\n  group: \"disk users\"\n",
                         "t.yaml:5:10: ", "control.group 'disk users' contains a blank");
  }
  SUBCASE("events out of range") {
    expect_section_error("control:\n  socket: /s\n  events: 0\n",
                         "t.yaml:5:11: ", "control.events must be from 1 to 100000, not '0'");
    expect_section_error("control:\n  socket: /s\n  events: 100001\n",
                         "t.yaml:5:11: ", "control.events must be from 1 to 100000, not '100001'");
  }
  SUBCASE("unknown key with a suggestion") {
    expect_section_error("control:\n  socket: /s\n  evnets: 5\n", "t.yaml:5:3: ",
                         "unknown key 'evnets' in control: (did you mean 'events'?): use one of "
                         "socket, mode, group, events");
  }
  SUBCASE("the section is a scalar") {
    expect_section_error("control: /run/ctl.sock\n", "t.yaml:3:10: ",
                         "control must be a mapping of socket, mode, group or events, not "
                         "'/run/ctl.sock'");
  }
}

TEST_CASE("metrics: accepted forms") {
  SUBCASE("a Unix socket") {
    Config c = with_section("metrics:\n  socket: /run/mp/metrics.sock\n");
    CHECK(c.metrics.socket == "/run/mp/metrics.sock");
    CHECK(c.metrics.listen.empty());
  }
  SUBCASE("an empty section is off") {
    Config c = with_section("metrics:\n");
    CHECK(c.metrics.socket.empty());
    CHECK(c.metrics.listen.empty());
  }
  SUBCASE("IPv4 loopback, any address in 127.0.0.0/8") {
    CHECK(with_section("metrics:\n  listen: 127.0.0.1:9100\n").metrics.listen == "127.0.0.1:9100");
    CHECK(with_section("metrics:\n  listen: 127.1.2.3:80\n").metrics.listen == "127.1.2.3:80");
  }
  SUBCASE("port 0 and port 65535") {
    CHECK(with_section("metrics:\n  listen: 127.0.0.1:0\n").metrics.listen == "127.0.0.1:0");
    CHECK(with_section("metrics:\n  listen: 127.0.0.1:65535\n").metrics.listen ==
          "127.0.0.1:65535");
  }
  SUBCASE("IPv6 loopback in brackets, canonical form kept") {
    CHECK(with_section("metrics:\n  listen: \"[::1]:9100\"\n").metrics.listen == "[::1]:9100");
    CHECK(with_section("metrics:\n  listen: \"[0:0:0:0:0:0:0:1]:9100\"\n").metrics.listen ==
          "[::1]:9100");
  }
  SUBCASE("leading zeros of the port are dropped") {
    CHECK(with_section("metrics:\n  listen: 127.0.0.1:09100\n").metrics.listen == "127.0.0.1:9100");
  }
  SUBCASE("control and metrics on different sockets") {
    Config c = with_section(
        "control:\n  socket: /run/mp/ctl.sock\nmetrics:\n  socket: /run/mp/metrics.sock\n");
    CHECK(c.control.socket == "/run/mp/ctl.sock");
    CHECK(c.metrics.socket == "/run/mp/metrics.sock");
  }
}

TEST_CASE("metrics: errors") {
  SUBCASE("both socket and listen: the second one is named") {
    expect_section_error("metrics:\n  socket: /m.sock\n  listen: 127.0.0.1:9100\n", "t.yaml:5:3: ",
                         "metrics has both socket and listen: keep one, since the endpoint "
                         "serves either a Unix socket or a loopback TCP address");
    expect_section_error("metrics:\n  listen: 127.0.0.1:9100\n  socket: /m.sock\n",
                         "t.yaml:5:3: ", "metrics has both socket and listen");
  }
  SUBCASE("a non-loopback IPv4 address says why") {
    LoadResult r = load("paths:\n  - uri: nbd://a\nmetrics:\n  listen: 0.0.0.0:9100\n");
    REQUIRE_FALSE(r);
    CHECK(r.error ==
          "t.yaml:4:11: metrics.listen address '0.0.0.0' is not a loopback address: only "
          "127.0.0.0/8 and ::1 are allowed, because the metrics endpoint has no authentication "
          "(to scrape it from another host, put an authenticating proxy in front of it)");
  }
  SUBCASE("other non-loopback addresses") {
    expect_section_error("metrics:\n  listen: 10.1.2.3:9100\n", "t.yaml:4:11: ",
                         "metrics.listen address '10.1.2.3' is not a loopback address");
    expect_section_error("metrics:\n  listen: \"[::]:9100\"\n",
                         "t.yaml:4:11: ", "metrics.listen address '::' is not a loopback address");
    expect_section_error("metrics:\n  listen: \"[::ffff:127.0.0.1]:9100\"\n",
                         "t.yaml:4:11: ", "is not a loopback address");
    expect_section_error("metrics:\n  listen: 128.0.0.1:9100\n",
                         "t.yaml:4:11: ", "is not a loopback address");
  }
  SUBCASE("a host name is not a numeric address") {
    expect_section_error("metrics:\n  listen: localhost:9100\n", "t.yaml:4:11: ",
                         "metrics.listen 'localhost:9100' names 'localhost', which is not a "
                         "numeric address: write the address itself, as in 127.0.0.1:9100");
  }
  SUBCASE("no port") {
    expect_section_error("metrics:\n  listen: 127.0.0.1\n", "t.yaml:4:11: ",
                         "metrics.listen '127.0.0.1' has no port: add one, as in 127.0.0.1:9100 "
                         "(port 0 picks a free port)");
    expect_section_error("metrics:\n  listen: \"127.0.0.1:\"\n", "t.yaml:4:11: ", "has no port");
    expect_section_error("metrics:\n  listen: \"[::1]\"\n", "t.yaml:4:11: ", "has no port");
  }
  SUBCASE("port out of range or not a number") {
    expect_section_error("metrics:\n  listen: 127.0.0.1:65536\n", "t.yaml:4:11: ",
                         "port '65536' in metrics.listen is not a port number: use a port from 0 "
                         "to 65535");
    expect_section_error("metrics:\n  listen: 127.0.0.1:99999999999999999999\n",
                         "t.yaml:4:11: ", "is not a port number");
    expect_section_error("metrics:\n  listen: 127.0.0.1:http\n",
                         "t.yaml:4:11: ", "metrics.listen must be a loopback address and a port");
  }
  SUBCASE("a bare IPv6 address needs brackets") {
    expect_section_error("metrics:\n  listen: \"::1:9100\"\n", "t.yaml:4:11: ",
                         "looks like a bare IPv6 address: put the address in brackets");
  }
  SUBCASE("a URL or other extras are refused") {
    for (const char* text :
         {"http://127.0.0.1:9100/metrics", "127.0.0.1:9100/metrics", "user@127.0.0.1:9100",
          "127.0.0.1:9100?x=1", "127.0.0.1%20:9100", "\":9100\""}) {
      expect_section_error(std::string("metrics:\n  listen: ") + text + "\n", "t.yaml:4:11: ",
                           "metrics.listen must be a loopback address and a port, such as "
                           "127.0.0.1:9100 or [::1]:9100, not ");
    }
  }
  SUBCASE("relative socket path") {
    expect_section_error("metrics:\n  socket: metrics.sock\n", "t.yaml:4:11: ",
                         "metrics.socket 'metrics.sock' is not an absolute path: use a path that "
                         "starts with /, such as /run/nbd-multipath/metrics.sock");
  }
  SUBCASE("the same socket as control") {
    expect_section_error("control:\n  socket: /run/s\nmetrics:\n  socket: /run/s\n",
                         "t.yaml:6:11: ",
                         "metrics.socket is the same path as control.socket: give each its own "
                         "path");
  }
  SUBCASE("listen is a sequence") {
    expect_section_error("metrics:\n  listen: [127.0.0.1, 9100]\n", "t.yaml:4:11: ",
                         "metrics.listen must be an address such as 127.0.0.1:9100 or "
                         "[::1]:9100, not a sequence");
  }
  SUBCASE("unknown key with a suggestion") {
    expect_section_error("metrics:\n  listn: 127.0.0.1:1\n", "t.yaml:4:3: ",
                         "unknown key 'listn' in metrics: (did you mean 'listen'?): use one of "
                         "socket, listen");
  }
}

TEST_CASE("load_file") {
  SUBCASE("missing file") {
    LoadResult r = load_file("/nonexistent/dir/disk.yaml");
    REQUIRE_FALSE(r);
    CHECK(r.error == "/nonexistent/dir/disk.yaml: cannot read: No such file or directory");
  }
  SUBCASE("a directory") {
    LoadResult r = load_file("/");
    REQUIRE_FALSE(r);
    CHECK(r.error.rfind("/: cannot read: ", 0) == 0);
  }
  SUBCASE("a real file, good then bad") {
    char name[] = "/tmp/mp-config-test-XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    const std::string good = "# two paths\npaths:\n  - uri: nbd://a\n  - uri: nbd://b\n";
    REQUIRE(write(fd, good.data(), good.size()) == static_cast<ssize_t>(good.size()));
    close(fd);
    LoadResult r = load_file(name);
    INFO(r.error);
    CHECK(r);
    if (r) {
      CHECK(r.config->source == name);
      REQUIRE(r.config->paths.size() == 2);
      CHECK(r.config->paths[1].line == 4);
    }
    FILE* f = std::fopen(name, "w");
    REQUIRE(f);
    std::fputs("paths:\n  - uri: nbd://a\n    weight: heavy\n", f);
    std::fclose(f);
    LoadResult bad = load_file(name);
    std::remove(name);
    REQUIRE_FALSE(bad);
    CHECK(bad.error == std::string(name) + ":3:13: weight must be an integer, not 'heavy'");
  }
}

TEST_CASE("parse_duration") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("5s") == 5s);
  CHECK(parse_duration("1.5s") == 1500ms);
  CHECK(parse_duration("2m") == 120s);
  CHECK(parse_duration("0.5m") == 30s);
  CHECK(parse_duration("1.25s") == 1250ms);
  CHECK(parse_duration("0.001s") == 1ms);
  CHECK(parse_duration("1.000000000000000000000s") == 1s);
  CHECK(parse_duration("007s") == 7s);
  CHECK(parse_duration("0s") == 0ms);
  CHECK(parse_duration("0ms") == 0ms);
  CHECK(parse_duration("525600m") == std::chrono::hours(24 * 365));

  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("5"));  // units are required
  CHECK_FALSE(parse_duration("1.5"));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("ms"));
  CHECK_FALSE(parse_duration("5h"));
  CHECK_FALSE(parse_duration("5 s"));
  CHECK_FALSE(parse_duration(" 5s"));
  CHECK_FALSE(parse_duration("5S"));
  CHECK_FALSE(parse_duration("-5s"));
  CHECK_FALSE(parse_duration("+5s"));
  CHECK_FALSE(parse_duration(".5s"));
  CHECK_FALSE(parse_duration("5.s"));
  CHECK_FALSE(parse_duration("1e3ms"));
  CHECK_FALSE(parse_duration("1.5ms"));       // not a whole millisecond
  CHECK_FALSE(parse_duration("0.0000001m"));  // not a whole millisecond
  CHECK_FALSE(parse_duration("525601m"));     // longer than a year
  CHECK_FALSE(parse_duration("99999999999999999999999999m"));
}

TEST_CASE("check_uri") {
  SUBCASE("good") {
    for (const char* uri : {
             "nbd://host",
             "nbd://host:10809",
             "nbd://host/export",
             "nbd://host:10809/export",
             "nbd://192.168.1.2/",
             "nbd://[::1]:10809/disk",
             "nbds://host/export?tls-certificates=/etc/pki/nbd",
             "nbds://alice@host/export",
             "nbd+unix:///?socket=/run/a.sock",
             "nbd+unix:///export?socket=/run/a.sock",
             "nbd+unix:?socket=/run/a.sock",
             "nbds+unix:///?socket=%2Frun%2Fa.sock",
         }) {
      INFO(uri);
      CHECK(check_uri(uri) == "");
    }
  }
  SUBCASE("iscsi") {
    CHECK(check_uri("iscsi://192.0.2.1/iqn.2026-11.com.example:disk/1") == "");
    CHECK(check_uri("iscsi://u%p@192.0.2.1:3261/iqn.2026-11.com.example:disk/0") == "");
    CHECK(contains(check_uri("iscsi://192.0.2.1/iqn.2026-11.com.example:disk"),
                   "must name a target and a LUN"));
    CHECK(contains(check_uri("iscsi://192.0.2.1/disk/1"), "is not an iSCSI name"));
    CHECK(contains(check_uri("iscsi://192.0.2.1/iqn.x:y/99999"), "is not a LUN number"));
    CHECK(contains(check_uri("iscsi://u%secret@192.0.2.1/iqn.x:y/z"), "u%***@"));
    CHECK(!contains(check_uri("iscsi://u%secret@192.0.2.1/iqn.x:y/z"), "secret"));
    CHECK(redacted_uri("iscsi://u%pw@h/iqn.x:y/1") == "iscsi://u%***@h/iqn.x:y/1");
    CHECK(redacted_uri("nbd://h/x") == "nbd://h/x");
  }
  SUBCASE("unsupported scheme") {
    CHECK(check_uri("http://x") ==
          "unsupported scheme 'http' in 'http://x': use nbd://HOST[:PORT][/EXPORT], "
          "nbds://HOST[:PORT][/EXPORT], nbd+unix:///[EXPORT]?socket=PATH, "
          "nbds+unix:///[EXPORT]?socket=PATH or "
          "iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN");
    CHECK(contains(check_uri("NBD://x"), "unsupported scheme 'NBD'"));
    CHECK(contains(check_uri("host:10809"), "unsupported scheme 'host'"));
  }
  SUBCASE("bad") {
    struct Case {
      const char* uri;
      const char* phrase;
    };
    for (const Case& c : {
             Case{"", "the URI is empty"},
             Case{"/run/a.sock", "has no scheme"},
             Case{"nbd://a b", "is not a valid URI (error at character 8)"},
             Case{"nbd:///export", "has no host: use nbd://HOST[:PORT][/EXPORT]"},
             Case{"nbds://", "has no host: use nbds://HOST[:PORT][/EXPORT]"},
             Case{"nbd://host:0",
                  "port '0' in 'nbd://host:0' is not a port number: use a port "
                  "from 1 to 65535"},
             Case{"nbd://host:65536/x", "port '65536'"},
             Case{"nbd://host:/x", "port ''"},
             Case{"nbd://host?socket=/run/a.sock", "has socket= but nbd:// connects over TCP"},
             Case{"nbd://host/x#frag", "has a fragment ('#frag')"},
             Case{"nbd+unix://host/?socket=/run/a.sock", "names a host or port"},
             Case{"nbd+unix:///export", "has no socket= in its query"},
             Case{"nbds+unix:///?tls=on", "has no socket= in its query"},
             Case{"nbd+unix:///?socket=run/a.sock",
                  "socket path 'run/a.sock' in 'nbd+unix:///?socket=run/a.sock' is not absolute"},
             Case{"nbd+unix:///?socket=", "is not absolute"},
             Case{"nbd+unix:///?socket=/a&socket=/b", "has socket= twice"},
         }) {
      INFO(c.uri);
      std::string err = check_uri(c.uri);
      CHECK(contains(err, c.phrase));
      CHECK(err.find('\n') == std::string::npos);
    }
  }
}

TEST_CASE("from_quick_args") {
  SUBCASE("paths get names and the default group") {
    LoadResult r = from_quick_args({{"nbd://a", "nbd+unix:///?socket=/run/b.sock"}, {}});
    INFO(r.error);
    REQUIRE(r);
    const Config& c = *r.config;
    CHECK(c.source == "command line");
    REQUIRE(c.paths.size() == 2);
    CHECK(c.paths[0].name == "path1");
    CHECK(c.paths[0].uri == "nbd://a");
    CHECK(c.paths[1].name == "path2");
    CHECK(c.paths[1].uri == "nbd+unix:///?socket=/run/b.sock");
    CHECK(c.paths[1].group == "default");
    CHECK(c.paths[1].line == 0);
    REQUIRE(c.groups.size() == 1);
    CHECK(c.groups[0].name == "default");
    CHECK(c.groups[0].priority == 0);
    CHECK(c.selector.kind == SelectorKind::Latency);
    CHECK(c.timeouts.attempt == 2s);
    CHECK(c.timeouts.request == 30s);
    CHECK(c.no_path.policy == NoPathPolicy::Queue);
    CHECK(c.failover.max_retries == 8);
    CHECK_FALSE(c.durability.shared_cache);
  }
  SUBCASE("every option") {
    LoadResult r = from_quick_args({{"nbd://a", "nbd://b"},
                                    {{"selector", "round-robin"},
                                     {"timeout", "500ms"},
                                     {"request-timeout", "10s"},
                                     {"connect-timeout", "3s"},
                                     {"no-path", "fail"},
                                     {"retries", "2"},
                                     {"shared-cache", "yes"},
                                     {"path", "nbd://c"}}});
    INFO(r.error);
    REQUIRE(r);
    const Config& c = *r.config;
    CHECK(c.selector.kind == SelectorKind::RoundRobin);
    CHECK(c.timeouts.attempt == 500ms);
    CHECK(c.timeouts.request == 10s);
    CHECK(c.timeouts.connect == 3s);
    CHECK(c.no_path.policy == NoPathPolicy::Fail);
    CHECK(c.failover.max_retries == 2);
    CHECK(c.durability.shared_cache);
    REQUIRE(c.paths.size() == 3);
    CHECK(c.paths[2].name == "path3");
    CHECK(c.paths[2].uri == "nbd://c");
  }
  SUBCASE("shared-cache spellings") {
    for (const char* yes : {"true", "1", "yes"}) {
      LoadResult r = from_quick_args({{"nbd://a"}, {{"shared-cache", yes}}});
      REQUIRE(r);
      CHECK(r.config->durability.shared_cache);
    }
    for (const char* no : {"false", "0", "no"}) {
      LoadResult r = from_quick_args({{"nbd://a"}, {{"shared-cache", no}}});
      REQUIRE(r);
      CHECK_FALSE(r.config->durability.shared_cache);
    }
    LoadResult r = from_quick_args({{"nbd://a"}, {{"shared-cache", "sometimes"}}});
    REQUIRE_FALSE(r);
    CHECK(r.error == "command line: shared-cache must be true or false, not 'sometimes'");
  }
  SUBCASE("unknown parameter") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"foo", "1"}}});
    REQUIRE_FALSE(r);
    CHECK(r.error ==
          "command line: unknown parameter 'foo': use one of path, config, selector, timeout, "
          "request-timeout, connect-timeout, no-path, retries, shared-cache, outlier, hedge");
  }
  SUBCASE("unknown parameter close to a known one") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"timout", "1s"}}});
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "unknown parameter 'timout' (did you mean 'timeout'?)"));
  }
  SUBCASE("no paths") {
    LoadResult r = from_quick_args({{}, {{"timeout", "1s"}}});
    REQUIRE_FALSE(r);
    CHECK(r.error.rfind("command line: no paths given: add at least one path=URI", 0) == 0);
  }
  SUBCASE("bad uri") {
    LoadResult r = from_quick_args({{"nbd://a", "ftp://b"}, {}});
    REQUIRE_FALSE(r);
    CHECK(r.error.rfind("command line: unsupported scheme 'ftp' in 'ftp://b': use ", 0) == 0);
  }
  SUBCASE("bad values") {
    struct Case {
      const char* key;
      const char* value;
      const char* error;
    };
    for (const Case& c : {
             Case{"timeout", "5", "command line: timeout '5' has no unit: units are required"},
             Case{"timeout", "0ms", "command line: timeout must be at least 1ms, not '0ms'"},
             Case{"request-timeout", "-1s", "command line: request-timeout '-1s' is negative"},
             Case{"connect-timeout", "x", "command line: connect-timeout must be a duration"},
             Case{"retries", "101", "command line: retries must be from 0 to 100, not '101'"},
             Case{"retries", "two", "command line: retries must be an integer, not 'two'"},
             Case{"selector", "fastest",
                  "command line: selector must be round-robin, "
                  "queue-length, service-time or latency, not 'fastest'"},
             Case{"no-path", "wait", "command line: no-path must be queue or fail, not 'wait'"},
         }) {
      INFO(c.key << "=" << c.value);
      LoadResult r = from_quick_args({{"nbd://a"}, {{c.key, c.value}}});
      REQUIRE_FALSE(r);
      CHECK(r.error.rfind(c.error, 0) == 0);
    }
  }
  SUBCASE("timeout longer than request-timeout") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"timeout", "1m"}}});
    REQUIRE_FALSE(r);
    CHECK(r.error ==
          "command line: request-timeout (30s) is shorter than timeout (1m): make "
          "request-timeout at least as long as timeout");
    r = from_quick_args({{"nbd://a"}, {{"timeout", "1m"}, {"request-timeout", "2m"}}});
    CHECK(r);
  }
  SUBCASE("an option given twice") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"retries", "1"}, {"retries", "2"}}});
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "retries= is given twice"));
  }
  SUBCASE("config= among quick parameters") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"config", "/etc/disk.yaml"}}});
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "config= cannot be combined"));
  }
}

TEST_CASE("to_string(SelectorKind)") {
  CHECK(std::string(to_string(SelectorKind::RoundRobin)) == "round-robin");
  CHECK(std::string(to_string(SelectorKind::QueueLength)) == "queue-length");
  CHECK(std::string(to_string(SelectorKind::ServiceTime)) == "service-time");
}

TEST_CASE("every file in config/examples loads") {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(__FILE__).parent_path() / ".." / ".." / "config" / "examples";
  REQUIRE(fs::is_directory(dir));
  // The examples name the CHAP secret file where an installed disk keeps it;
  // here a temporary one stands in for it.
  char secret_name[] = "/tmp/mp-chap-secret-XXXXXX";
  int fd = mkstemp(secret_name);
  REQUIRE(fd >= 0);
  const std::string secret = secret_name;
  const std::string secret_text = "example-secret\n";
  REQUIRE(write(fd, secret_text.data(), secret_text.size()) ==
          static_cast<ssize_t>(secret_text.size()));
  close(fd);
  auto load_example = [&](const fs::path& file) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    std::string yaml = text.str();
    const std::string installed = "/etc/nbd-multipath/chap.secret";
    for (auto at = yaml.find(installed); at != std::string::npos; at = yaml.find(installed))
      yaml.replace(at, installed.size(), secret);
    return load_string(yaml, file.string());
  };
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    LoadResult r = load_example(entry.path());
    INFO(entry.path().string() << ": " << r.error);
    CHECK(r);
  }
  CHECK(count >= 4);

  LoadResult full = load_example(dir / "full.yaml");
  REQUIRE(full);
  CHECK(full.config->identity == "naa.60000000000000000e00000000010001");
  CHECK(full.config->paths.back().chap_secret == "example-secret");
  CHECK(full.config->outlier.max_share == 50);
  std::remove(secret_name);
  CHECK(full.config->groups.size() >= 2);
  CHECK(full.config->control.socket == "/run/nbd-multipath/ctl.sock");
  CHECK(full.config->control.mode == 0660);
  CHECK(full.config->metrics.socket == "/run/nbd-multipath/metrics.sock");
  LoadResult fb = load_file((dir / "groups-failback.yaml").string());
  REQUIRE(fb);
  CHECK(fb.config->failover.failback == Failback::Delayed);
  CHECK(fb.config->no_path.policy == NoPathPolicy::Queue);
  CHECK(fb.config->groups.size() == 2);
}

TEST_CASE("names: counted in characters, blank, control and invisible characters refused") {
  auto path_named = [](const std::string& name) {
    return "paths:\n  - uri: nbd://a\n    name: \"" + name + "\"\n";
  };
  auto repeat = [](const std::string& s, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) out += s;
    return out;
  };
  const std::string e_acute = "\xc3\xa9";  // é: 2 bytes, 1 character
  SUBCASE("33 and 64 two-byte characters are accepted, 65 are not") {
    for (int n : {33, 64}) {
      LoadResult r = load(path_named(repeat(e_acute, n)));
      INFO(n << ": " << r.error);
      REQUIRE(r);
      CHECK(r.config->paths[0].name == repeat(e_acute, n));
    }
    expect_error(path_named(repeat(e_acute, 65)), "t.yaml:3:11: ", "is longer than 64 characters");
    expect_error(path_named(repeat("a", 65)), "t.yaml:3:11: ", "is longer than 64 characters");
    CHECK(load(path_named("\xe6\x97\xa5\xe6\x9c\xac-\xf0\x9f\x92\xbe")));  // CJK and an emoji
  }
  SUBCASE("invisible and blank characters") {
    struct Case {
      const char* text;
      const char* code;
    };
    for (const Case& c : {
             Case{"a\xe2\x80\xae"
                  "b",
                  "U+202E"},  // right-to-left override
             Case{"a\xe2\x80\x8b"
                  "b",
                  "U+200B"},  // zero-width space
             Case{"a\xc2\xa0"
                  "b",
                  "U+00A0"},  // no-break space
             Case{"a\xe2\x80\xa8"
                  "b",
                  "U+2028"},  // line separator
             Case{"a\xe2\x80\xa9"
                  "b",
                  "U+2029"},  // paragraph separator
             Case{"a\xef\xbb\xbf"
                  "b",
                  "U+FEFF"},  // BOM / zero-width no-break space
             Case{"a\xe2\x81\xa6"
                  "b",
                  "U+2066"},  // left-to-right isolate
             Case{"a\xc2\xad"
                  "b",
                  "U+00AD"},  // soft hyphen
             Case{"a\xc2\x85"
                  "b",
                  "U+0085"},  // C1 control (NEL)
             Case{"a\xe3\x80\x80"
                  "b",
                  "U+3000"},  // ideographic space
             Case{"a\xe3\x85\xa4"
                  "b",
                  "U+3164"},  // Hangul filler
             Case{"a\xf3\xa0\x81\x81"
                  "b",
                  "U+E0041"},  // tag latin capital A
             Case{"a\\tb", "U+0009"},
             Case{"a\\x7fb", "U+007F"},
             Case{"a b", "U+0020"},
         }) {
      INFO(c.code);
      LoadResult r = load(path_named(c.text));
      REQUIRE_FALSE(r);
      CHECK(contains(r.error, "contains a blank, control or invisible character"));
      CHECK(contains(r.error, c.code));
      // The message shows the character escaped, never the character itself.
      if (static_cast<unsigned char>(c.text[1]) >= 0x80)
        CHECK(r.error.find(c.text) == std::string::npos);
    }
    LoadResult r =
        load("groups:\n  - name: \"g\xe2\x80\x8b\"\npaths:\n  - {uri: nbd://a, group: g}\n");
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "group name 'g\\u200b' contains a blank, control or invisible"));
  }
  SUBCASE("invalid UTF-8") {
    // Quoted with \x escapes so that yaml-cpp passes the bytes through.
    for (const char* bad : {"a\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xe2\x80"}) {
      LoadResult r = load("paths:\n  - uri: nbd://a\n    name: '" + std::string(bad) + "'\n");
      INFO(r.error);
      REQUIRE_FALSE(r);
      // yaml-cpp may refuse some of these itself; either way one sentence, no raw bytes.
      CHECK(r.error.find('\n') == std::string::npos);
      CHECK(r.error.find(bad) == std::string::npos);
    }
    LoadResult r = load("paths:\n  - uri: nbd://a\n    name: 'ab\xff'\n");
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "path name 'ab\\xff' is not valid UTF-8 (byte 3)"));
  }
  SUBCASE("quote() escapes and shortens") {
    CHECK(quote("ok") == "'ok'");
    CHECK(quote("a\tb") == "'a\\x09b'");
    CHECK(quote("\xe2\x80\xae"
                "abc") == "'\\u202eabc'");
    CHECK(quote("\xff") == "'\\xff'");
    CHECK(quote(e_acute) == "'" + e_acute + "'");
    CHECK(quote(repeat(e_acute, 100)) == "'" + repeat(e_acute, 80) + "...'");
  }
}

// No timing checks here (a loaded CI machine makes them flaky): a mechanism
// switched off shows as a hang or an out-of-memory, which ctest's timeout and
// the sanitizers catch.
TEST_CASE("huge values and files are refused in bounded time and memory") {
  const std::string big(10 << 20, 'x');  // 10 MiB
  SUBCASE("a value longer than 4096 bytes, for every kind of key") {
    const std::string v(5000, 'x');
    for (const std::string& yaml : {
             "paths:\n  - uri: nbd://a\nselector: " + v + "\n",
             "paths:\n  - uri: nbd://a\nfailover:\n  eio: " + v + "\n",
             "paths:\n  - uri: nbd://a\n    weight: " + v + "\n",
             "paths:\n  - uri: nbd://a\n    name: " + v + "\n",
             "paths:\n  - uri: nbd://" + v + "\n",
             "paths:\n  - uri: nbd://a\nexport-description: " + v + "\n",
             "paths:\n  - uri: nbd://a\n? " + v + "\n: 1\n",
         }) {
      LoadResult r = load(yaml);
      INFO(r.error);
      REQUIRE_FALSE(r);
      CHECK(contains(r.error, " bytes long, more than the 4096 any value may have: shorten it"));
      CHECK(r.error.size() < 300);
    }
    // At the limit, the usual message, without a suggestion.
    LoadResult r = load("paths:\n  - uri: nbd://a\nselector: " + std::string(4096, 'x') + "\n");
    REQUIRE_FALSE(r);
    CHECK(contains(
        r.error, "selector must be round-robin, queue-length, service-time or latency, not 'xxx"));
    CHECK(!contains(r.error, "did you mean"));
  }
  SUBCASE("text larger than 256 KiB") {
    LoadResult r = load("paths:\n  - uri: nbd://a\nselector: " + big + "\n");
    REQUIRE_FALSE(r);
    CHECK(r.error ==
          "t.yaml: the file is larger than 256 KiB, the most a configuration may be: check that it "
          "is the right file (a configuration is a few kilobytes)");
  }
  SUBCASE("a file larger than 256 KiB, and one that never ends") {
    char name[] = "/tmp/mp-config-test-XXXXXX";
    int fd = mkstemp(name);
    REQUIRE(fd >= 0);
    const std::string text = "paths:\n  - uri: nbd://a\nfailover:\n  eio: " + big + "\n";
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    LoadResult r = load_file(name);
    std::remove(name);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, std::string(name) + ": the file is larger than 256 KiB"));
    LoadResult z = load_file("/dev/zero");
    REQUIRE_FALSE(z);
    CHECK(contains(z.error, "/dev/zero: the file is larger than 256 KiB"));
  }
  SUBCASE("the quick form: a huge value, a huge unknown key") {
    LoadResult r = from_quick_args({{"nbd://a"}, {{"selector", big}}});
    REQUIRE_FALSE(r);
    CHECK(r.error ==
          "command line: selector= is 10485760 bytes long, more than the 4096 any "
          "value may have: shorten it");
    // The "did you mean" search skips words far longer than every key: an
    // edit distance over 10 MiB would take seconds and gigabytes.
    LoadResult k = from_quick_args({{"nbd://a"}, {{big, "1"}}});
    REQUIRE_FALSE(k);
    CHECK(contains(k.error, "command line: unknown parameter 'xxxx"));
    CHECK(!contains(k.error, "did you mean"));
    CHECK(k.error.size() < 400);
    LoadResult u = from_quick_args({{"nbd://" + big}, {}});
    REQUIRE_FALSE(u);
    CHECK(contains(u.error, "the URI is 10485766 bytes long"));
  }
  SUBCASE("more than 256 paths") {
    std::string yaml = "paths:\n  - &p {uri: nbd://a}\n";
    for (int i = 0; i < 256; ++i) yaml += "  - *p\n";
    LoadResult r = load(yaml);
    REQUIRE_FALSE(r);
    CHECK(contains(r.error, "paths: has 257 entries, more than the 256 a disk may have"));
    QuickArgs q;
    q.paths.assign(257, "nbd://a");
    CHECK(contains(from_quick_args(q).error, "257 paths given, more than the 256"));
  }
  SUBCASE("an alias bomb: aliases are shared, never expanded") {
    // 10^30 leaves if expanded; yaml-cpp shares aliased nodes, and the
    // loader stops at the first entry that is not a mapping.
    std::string yaml =
        "paths:\n  - uri: nbd://a\ngroups:\n  - &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 30; ++i) {
      std::string a = "*a" + std::to_string(i - 1);
      yaml += "  - &a" + std::to_string(i) + " [" + a;
      for (int j = 1; j < 10; ++j) yaml += ", " + a;
      yaml += "]\n";
    }
    LoadResult r = load(yaml);
    REQUIRE_FALSE(r);
    CHECK(contains(
        r.error,
        "t.yaml:4:5: each group must be a mapping with name and priority, not a sequence"));
  }
  SUBCASE("deep nesting is refused by yaml-cpp") {
    LoadResult r = load("paths: " + std::string(100000, '[') + std::string(100000, ']') + "\n");
    REQUIRE_FALSE(r);
    CHECK(r.error.find('\n') == std::string::npos);
  }
}

TEST_CASE("negative durations, control characters and tls= in URIs, export-description") {
  SUBCASE("a negative duration without a unit is negative") {
    for (const char* v : {"-1", "-1s", "-0.5", "-2ms"}) {
      LoadResult r = from_quick_args({{"nbd://a"}, {{"timeout", v}}});
      INFO(r.error);
      REQUIRE_FALSE(r);
      CHECK(contains(r.error, "is negative: durations must be positive, such as 250ms, 5s or 2m"));
      CHECK(!contains(r.error, "-1s or"));
    }
    CHECK(parse_duration("-0s") == 0ms);
  }
  SUBCASE("control characters, raw or percent-encoded") {
    for (const char* uri : {
             "nbd+unix:///?socket=/run/a.sock%00junk",
             "nbd+unix:///?socket=/run/a.sock%0a",
             "nbd+unix:///exp%1Fort?socket=/run/a.sock",
             "nbd://host/a%7fb",
             "nbds://host/x?tls-certificates=/etc/%09pki",
             "iscsi://192.0.2.1/iqn.2026-11.com.example:d%00isk/1",
         }) {
      INFO(std::string(uri) << ": " << check_uri(uri));
      CHECK(contains(check_uri(uri), "contains a control character (%"));
    }
    CHECK(contains(check_uri(std::string("nbd://host/a\x01"
                                         "b")),
                   "contains a control character"));
    // libiscsi's USER%PASSWORD is not percent-encoding.
    CHECK(check_uri("iscsi://u%00pw@192.0.2.1/iqn.2026-11.com.example:disk/1") == "");
    CHECK(check_uri("nbd+unix:///a%20b?socket=/run/a%2Bb.sock") == "");
  }
  SUBCASE("tls= and tls-* parameters") {
    CHECK(check_uri("nbd+unix:///?socket=/run/a.sock&tls=require") ==
          "'nbd+unix:///?socket=/run/a.sock&tls=require' has 'tls=require', which libnbd ignores: "
          "nbd+unix:// never uses TLS, so use nbds+unix:// for TLS, or drop 'tls=require'");
    CHECK(contains(check_uri("nbd://host/x?tls=on"), "so use nbds:// for TLS, or drop 'tls=on'"));
    CHECK(contains(check_uri("nbds+unix:///?socket=/run/a.sock&tls=off"),
                   "which libnbd ignores: nbds+unix:// always requires TLS, so drop 'tls=off'"));
    CHECK(contains(check_uri("nbd+unix:///?socket=/run/a.sock&tls-certificates=/etc/pki"),
                   "has 'tls-certificates=/etc/pki', but nbd+unix:// does not use TLS: use "
                   "nbds+unix:// for TLS"));
    CHECK(check_uri("nbds+unix:///?socket=/run/a.sock&tls-certificates=/etc/pki") == "");
  }
  SUBCASE("export-description") {
    LoadResult r = load("export-description: disk-7 (backup)\npaths:\n  - uri: nbd://a\n");
    INFO(r.error);
    REQUIRE(r);
    CHECK(r.config->export_description == "disk-7 (backup)");
    CHECK(load("paths:\n  - uri: nbd://a\n").config->export_description.empty());
    expect_error("export-description: \"\"\npaths:\n  - uri: nbd://a\n",
                 "t.yaml:1:21: ", "export-description is empty");
    expect_error("export-description: [a]\npaths:\n  - uri: nbd://a\n",
                 "t.yaml:1:21: ", "export-description must be the export description");
  }
}

TEST_CASE("load: config= and the quick form are never combined") {
  mp::config::QuickArgs quick;
  quick.paths.push_back("nbd://a");
  auto both = mp::config::load("/nonexistent/disk.yaml", quick);
  REQUIRE_FALSE(both);
  CHECK(both.error.find("cannot be combined with path=") != std::string::npos);
  auto q = mp::config::load("", quick);
  REQUIRE(q);
  CHECK(q.config->paths.size() == 1);
  auto f = mp::config::load("/nonexistent/disk.yaml", {});
  REQUIRE_FALSE(f);
  CHECK(f.error.find("/nonexistent/disk.yaml") != std::string::npos);
}

TEST_CASE(
    "settings: every effective setting, passwords redacted; changed_settings lists each "
    "difference") {
  LoadResult r = load_string(R"(paths:
  - { name: a, uri: "iscsi://user%hunter2@192.0.2.1/iqn.2026-01.net.example:d/0" }
  - { name: b, uri: "nbd://192.0.2.2/d", weight: 3 }
timeouts: { attempt: 1s }
)",
                             "t.yaml");
  REQUIRE(r);
  Settings s = settings(*r.config);
  auto get = [&](const Settings& st, const std::string& k) {
    for (const auto& [key, v] : st)
      if (key == k) return v;
    return std::string("(missing)");
  };
  CHECK(get(s, "paths.a.uri") == "iscsi://user%***@192.0.2.1/iqn.2026-01.net.example:d/0");
  for (const auto& [k, v] : s) CHECK(v.find("hunter2") == std::string::npos);
  CHECK(get(s, "paths.b.weight") == "3");
  CHECK(get(s, "timeouts.attempt") == "1s");
  CHECK(get(s, "timeouts.request") == "30s");
  CHECK(get(s, "selector") == "latency");
  CHECK(get(s, "stale-writes.max-bytes") == "64MiB");
  CHECK(get(s, "durability.max-dirty-ranges") == "16384");
  CHECK(get(s, "outlier.enabled") == "true");
  CHECK(get(s, "outlier.ratio") == "5");
  CHECK(get(s, "outlier.max-ejection-time") == "5m");

  Config next = *r.config;
  next.timeouts.attempt = Duration{2000};
  next.durability.shared_cache = true;
  next.outlier.min_samples = 50;
  next.paths.pop_back();
  auto c = changed_settings(*r.config, next);
  CHECK(std::find(c.begin(), c.end(), "outlier.min-samples: 20 -> 50") != c.end());
  CHECK(std::find(c.begin(), c.end(), "timeouts.attempt: 1s -> 2s") != c.end());
  CHECK(std::find(c.begin(), c.end(), "durability.shared-cache: false -> true") != c.end());
  CHECK(std::find(c.begin(), c.end(), "paths.b.weight: 3 (gone)") != c.end());
  CHECK(changed_settings(next, next).empty());
}

TEST_CASE("hedge: defaults, every key, and refusals") {
  LoadResult d = load("paths:\n  - uri: nbd://a\n");
  REQUIRE(d);
  CHECK(d.config->hedge.enabled);
  CHECK(d.config->hedge.percentile == 95);
  CHECK(d.config->hedge.min_delay == Duration{1});
  CHECK(d.config->hedge.max_share == 5);
  LoadResult r = load(
      "paths:\n  - uri: nbd://a\nhedge:\n  enabled: false\n  percentile: 99.5\n"
      "  min-delay: 3ms\n  max-share: 2\n");
  REQUIRE(r);
  CHECK_FALSE(r.config->hedge.enabled);
  CHECK(r.config->hedge.percentile == 99.5);
  CHECK(r.config->hedge.min_delay == Duration{3});
  CHECK(r.config->hedge.max_share == 2);
  Settings s = settings(*r.config);
  CHECK(std::find(s.begin(), s.end(),
                  std::pair<std::string, std::string>{"hedge.max-share", "2%"}) != s.end());
  SUBCASE("percentile out of range") {
    expect_error("paths:\n  - uri: nbd://a\nhedge:\n  percentile: 30\n",
                 "t.yaml:4:15: ", "hedge.percentile must be between 50 and 99.9, not '30'");
  }
  SUBCASE("max-share out of range") {
    expect_error("paths:\n  - uri: nbd://a\nhedge:\n  max-share: 101\n",
                 "t.yaml:4:14: ", "hedge.max-share must be from 0 to 100, not '101'");
  }
  SUBCASE("unknown key, with a suggestion") {
    expect_error("paths:\n  - uri: nbd://a\nhedge:\n  min_delay: 1ms\n",
                 "t.yaml:4:3: ", "unknown key 'min_delay' in hedge: (did you mean 'min-delay'?)");
  }
  SUBCASE("the quick form") {
    LoadResult q = from_quick_args({{"nbd://a"}, {{"hedge", "false"}}});
    REQUIRE(q);
    CHECK_FALSE(q.config->hedge.enabled);
    LoadResult bad = from_quick_args({{"nbd://a"}, {{"hedge", "often"}}});
    REQUIRE_FALSE(bad);
    CHECK(bad.error == "command line: hedge must be true or false, not 'often'");
  }
}
