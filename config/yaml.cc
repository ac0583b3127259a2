// The YAML file to a Config, section by section; every error names FILE:LINE:COLUMN.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config_internal.h"

namespace mp::config {

using namespace detail;

namespace {

// ---------------------------------------------------------------------------
// YAML walking

// Thrown inside the loader; load_string turns it into "FILE:LINE:COL: message".
struct Failure {
  YAML::Mark mark;
  std::string message;
};

[[noreturn]] void fail(const YAML::Node& at, std::string message) {
  throw Failure{at.Mark(), std::move(message)};
}

int line_of(const YAML::Mark& m) {
  return m.line >= 0 ? m.line + 1 : 1;
}
int column_of(const YAML::Mark& m) {
  return m.column >= 0 ? m.column + 1 : 1;
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar:
      return quoted(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "empty";
  }
}

// A YAML mapping whose keys were checked against the keys it may hold.
class Mapping {
 public:
  Mapping(const YAML::Node& node, const std::string& what, const std::string& where,
          std::initializer_list<const char*> allowed)
      : node_(node) {
    if (node.IsNull()) return;  // "timeouts:" with nothing under it
    if (!node.IsMap())
      fail(node, what + " must be a mapping of " + join_or({allowed.begin(), allowed.end()}) +
                     ", not " + describe(node));
    std::vector<std::string> names(allowed.begin(), allowed.end());
    for (const auto& kv : node) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar())
        fail(key,
             "a key in " + where + " is " + describe(key) + ": use one of " + join_comma(names));
      const std::string& k = key.Scalar();
      if (std::string err = check_length("a key in " + where, k); !err.empty()) fail(key, err);
      if (std::find(names.begin(), names.end(), k) == names.end())
        fail(key, "unknown key " + quoted(k) + " in " + where + suggestion(k, names) +
                      ": use one of " + join_comma(names));
      for (const auto& e : entries_) {
        if (e.key == k)
          fail(key, "key " + quoted(k) + " appears twice in " + where + " (first on line " +
                        std::to_string(line_of(e.key_node.Mark())) + "): keep only one");
      }
      entries_.push_back({k, key, kv.second});
    }
  }

  const YAML::Node* find(std::string_view key) const {
    for (const auto& e : entries_)
      if (e.key == key) return &e.value;
    return nullptr;
  }
  // The key node of a present key: errors about an empty value point here,
  // since yaml-cpp marks an empty value where the next token starts.
  const YAML::Node& key_node(std::string_view key) const {
    for (const auto& e : entries_)
      if (e.key == key) return e.key_node;
    return node_;
  }
  const YAML::Node& node() const { return node_; }

 private:
  struct Entry {
    std::string key;
    YAML::Node key_node;
    YAML::Node value;
  };
  YAML::Node node_;
  std::vector<Entry> entries_;
};

// Text of a scalar value, or a failure saying what was expected instead.
const std::string& scalar(const YAML::Node& v, const std::string& what,
                          const std::string& expected) {
  if (!v.IsScalar()) fail(v, what + " must be " + expected + ", not " + describe(v));
  if (std::string err = check_length(what, v.Scalar()); !err.empty()) fail(v, err);
  return v.Scalar();
}

// Reads m[key] with `conv` when present. `what` names the value in messages,
// `expected` is used when the value is not a scalar at all.
template <class Conv>
const YAML::Node* read(const Mapping& m, const char* key, const std::string& what,
                       const std::string& expected, Conv conv) {
  const YAML::Node* v = m.find(key);
  if (!v) return nullptr;
  if (v->IsNull()) fail(m.key_node(key), what + " has no value: give " + expected);
  std::string err = conv(what, scalar(*v, what, expected));
  if (!err.empty()) fail(*v, err);
  return v;
}

template <class T>
const YAML::Node* read_int(const Mapping& m, const char* key, const std::string& what, long long lo,
                           long long hi, T& out) {
  return read(m, key, what, "an integer", [&](const std::string& w, const std::string& t) {
    return conv_int_as(w, t, lo, hi, out);
  });
}

const YAML::Node* read_duration(const Mapping& m, const char* key, const std::string& what,
                                Duration min, Duration& out) {
  return read(m, key, what, kDurationExample, [&](const std::string& w, const std::string& t) {
    return conv_duration(w, t, min, out);
  });
}

template <class E>
const YAML::Node* read_enum(const Mapping& m, const char* key, const std::string& what,
                            Choices<E> choices, E& out) {
  return read(
      m, key, what, join_or(choice_names(choices)),
      [&](const std::string& w, const std::string& t) { return conv_enum(w, t, choices, out); });
}

const YAML::Node* read_name(const Mapping& m, const char* key, const std::string& what,
                            std::string& out) {
  return read(m, key, what, "a name", [&](const std::string& w, const std::string& t) {
    std::string err = check_name(w, t);
    if (err.empty()) out = t;
    return err;
  });
}

const std::initializer_list<const char*> kTopKeys = {
    "paths",   "groups",   "selector",           "timeouts",     "failover",
    "no-path", "checker",  "durability",         "stale-writes", "control",
    "metrics", "identity", "export-description", "outlier",      "hedge"};
const std::initializer_list<const char*> kPathKeys = {
    "name", "uri", "group", "weight", "max-inflight", "throughput", "chap"};
const std::initializer_list<const char*> kGroupKeys = {"name", "priority"};

// outlier: every key optional; ratios and durations checked against each other.
void load_outlier(const YAML::Node& n, Outlier& o) {
  Mapping m(n, "outlier", "outlier:",
            {"enabled", "window", "min-samples", "ratio", "min-difference", "readmit-ratio",
             "probe-interval", "base-ejection-time", "max-ejection-time", "max-share"});
  read(m, "enabled", "outlier.enabled", "true or false",
       [&](const std::string& w, const std::string& t) { return conv_bool(w, t, o.enabled); });
  read_duration(m, "window", "outlier.window", Duration{100}, o.window);
  read_int(m, "min-samples", "outlier.min-samples", 1, 100000, o.min_samples);
  const YAML::Node* ratio =
      read(m, "ratio", "outlier.ratio", "a number such as 5", [&](const auto& w, const auto& t) {
        std::string err = conv_positive_number(w, t, o.ratio);
        if (err.empty() && !(o.ratio > 1)) err = w + " must be greater than 1, not " + quoted(t);
        return err;
      });
  read_duration(m, "min-difference", "outlier.min-difference", Duration{0}, o.min_difference);
  const YAML::Node* readmit = read(m, "readmit-ratio", "outlier.readmit-ratio",
                                   "a number such as 2", [&](const auto& w, const auto& t) {
                                     std::string err = conv_positive_number(w, t, o.readmit_ratio);
                                     if (err.empty() && o.readmit_ratio < 1)
                                       err = w + " must be at least 1, not " + quoted(t);
                                     return err;
                                   });
  if (o.readmit_ratio > o.ratio)
    fail(readmit ? *readmit
         : ratio ? *ratio
                 : n,
         "outlier.readmit-ratio is greater than outlier.ratio: a path would be re-admitted "
         "while still an outlier; make readmit-ratio at most ratio");
  read_duration(m, "probe-interval", "outlier.probe-interval", Duration{10}, o.probe_interval);
  const YAML::Node* base = read_duration(m, "base-ejection-time", "outlier.base-ejection-time",
                                         Duration{1}, o.base_ejection);
  const YAML::Node* max = read_duration(m, "max-ejection-time", "outlier.max-ejection-time",
                                        Duration{1}, o.max_ejection);
  if (o.max_ejection < o.base_ejection)
    fail(max    ? *max
         : base ? *base
                : n,
         "outlier.max-ejection-time is shorter than outlier.base-ejection-time: make it at "
         "least as long");
  read_int(m, "max-share", "outlier.max-share", 0, 100, o.max_share);
}

// hedge: every key optional.
void load_hedge(const YAML::Node& n, Hedge& h) {
  Mapping m(n, "hedge", "hedge:", {"enabled", "percentile", "min-delay", "max-share"});
  read(m, "enabled", "hedge.enabled", "true or false",
       [&](const std::string& w, const std::string& t) { return conv_bool(w, t, h.enabled); });
  read(m, "percentile", "hedge.percentile", "a number such as 95",
       [&](const auto& w, const auto& t) {
         std::string err = conv_positive_number(w, t, h.percentile);
         if (err.empty() && !(h.percentile >= 50 && h.percentile <= 99.9))
           err = w + " must be between 50 and 99.9, not " + quoted(t) +
                 ": a lower one hedges reads that are not slow";
         return err;
       });
  read_duration(m, "min-delay", "hedge.min-delay", Duration{0}, h.min_delay);
  read_int(m, "max-share", "hedge.max-share", 0, 100, h.max_share);
}

struct Declared {
  Group group;
  YAML::Node node;  // the name's value node, for messages
  bool used = false;
};

void load_groups(const Mapping& top, std::vector<Declared>& declared) {
  const YAML::Node* groups = top.find("groups");
  if (!groups || groups->IsNull()) return;
  if (!groups->IsSequence())
    fail(*groups,
         "groups must be a sequence of mappings with name and priority, not " + describe(*groups));
  // Every group needs a path, so there are never more groups than paths.
  if (groups->size() > kMaxPaths)
    fail(*groups, "groups: has " + std::to_string(groups->size()) + " entries, more than the " +
                      std::to_string(kMaxPaths) + " a disk may have: remove some");
  for (const auto& entry : *groups) {
    if (!entry.IsMap())
      fail(entry, "each group must be a mapping with name and priority, not " + describe(entry));
    Mapping g(entry, "a group", "a group", kGroupKeys);
    Declared d;
    const YAML::Node* name = read_name(g, "name", "group name", d.group.name);
    if (!name) fail(entry, "this group has no name: add 'name: NAME'");
    read_int(g, "priority", "priority", -1000000, 1000000, d.group.priority);
    for (const auto& other : declared) {
      if (other.group.name == d.group.name)
        fail(*name, "group name " + quoted(d.group.name) + " is used on lines " +
                        std::to_string(line_of(other.node.Mark())) + " and " +
                        std::to_string(line_of(name->Mark())) + ": give each group a unique name");
    }
    d.node = *name;
    declared.push_back(std::move(d));
  }
}

// chap: {user: NAME, secret-file: /path}: the secret stays out of the YAML.
void load_chap(const YAML::Node& n, const YAML::Node& key, Path& p) {
  Mapping m(n, "chap", "chap:", {"user", "secret-file"});
  if (!is_iscsi(p))
    fail(key, "chap: is for iscsi:// paths, but path " + quoted(p.name) +
                  " is not one: remove chap: from it");
  const YAML::Node* user =
      read(m, "user", "chap.user", "a user name", [&](const std::string&, const std::string& t) {
        p.chap_user = t;
        return t.empty() ? std::string("chap.user is empty: give the CHAP user name") : "";
      });
  const YAML::Node* file =
      read(m, "secret-file", "chap.secret-file", "a file name",
           [&](const std::string& w, const std::string& t) -> std::string {
             std::ifstream in(t);
             if (!in)
               return "cannot read " + w + " " + quoted(t) + ": " + detail::errno_text(errno) +
                      ": give a readable file that holds the CHAP secret";
             std::getline(in, p.chap_secret);
             while (!p.chap_secret.empty() &&
                    (p.chap_secret.back() == '\r' || p.chap_secret.back() == ' '))
               p.chap_secret.pop_back();
             if (p.chap_secret.empty())
               return w + " " + quoted(t) + " is empty: put the CHAP secret on its first line";
             return "";
           });
  if (!user || !file) fail(n.IsNull() ? key : n, "chap: needs both user: and secret-file:");
}

void load_paths(const Mapping& top, std::vector<Declared>& declared, Config& cfg) {
  const YAML::Node* paths = top.find("paths");
  if (!paths)
    fail(top.node(), "paths: is missing: add a paths: sequence with at least one path with a uri");
  if (paths->IsNull() || (paths->IsSequence() && paths->size() == 0))
    fail(paths->IsNull() ? top.key_node("paths") : *paths,
         "paths: is empty: add at least one path with a uri");
  if (!paths->IsSequence())
    fail(*paths, "paths must be a sequence of mappings, each with a uri, not " + describe(*paths));
  if (paths->size() > kMaxPaths)
    fail(*paths, "paths: has " + std::to_string(paths->size()) + " entries, more than the " +
                     std::to_string(kMaxPaths) + " a disk may have: remove some");

  std::vector<YAML::Node> name_nodes;  // where each path's name came from
  bool default_declared = std::any_of(declared.begin(), declared.end(),
                                      [](const Declared& d) { return d.group.name == "default"; });
  bool default_used = false;
  std::size_t index = 0;
  for (const auto& entry : *paths) {
    ++index;
    if (entry.IsScalar())
      fail(entry, "each path must be a mapping with a uri, not " + describe(entry) +
                      ": write '- uri: " +
                      (entry.Scalar().size() <= kMaxShown ? entry.Scalar() : "URI") + "'");
    if (!entry.IsMap())
      fail(entry, "each path must be a mapping with a uri, not " + describe(entry));
    Mapping m(entry, "a path", "a path", kPathKeys);
    Path p;
    p.line = line_of(entry.Mark());
    p.name = "path" + std::to_string(index);
    const YAML::Node* name = read_name(m, "name", "path name", p.name);
    const YAML::Node* uri =
        read(m, "uri", "uri", "a URI", [&](const std::string&, const std::string& t) {
          p.uri = t;
          return check_uri(t);
        });
    if (!uri)
      fail(name ? *name : entry, "path " + quoted(p.name) + " has no uri: add 'uri: " +
                                     "nbd://HOST[:PORT][/EXPORT]' or another supported URI");
    const YAML::Node* group = read_name(m, "group", "group", p.group);
    read_int(m, "weight", "weight", 1, 1000, p.weight);
    read_int(m, "max-inflight", "max-inflight", 1, 4096, p.max_inflight);
    read(m, "throughput", "throughput", "a number",
         [&](const std::string& w, const std::string& t) {
           return conv_positive_number(w, t, p.throughput);
         });

    if (const YAML::Node* chap = m.find("chap")) load_chap(*chap, m.key_node("chap"), p);

    const YAML::Node& name_at = name ? *name : entry;
    for (std::size_t i = 0; i < cfg.paths.size(); ++i) {
      if (cfg.paths[i].name == p.name)
        fail(name_at, "path name " + quoted(p.name) + " is used on lines " +
                          std::to_string(line_of(name_nodes[i].Mark())) + " and " +
                          std::to_string(line_of(name_at.Mark())) +
                          ": give each path a unique name");
    }

    auto it = std::find_if(declared.begin(), declared.end(),
                           [&](const Declared& d) { return d.group.name == p.group; });
    if (it != declared.end()) {
      it->used = true;
    } else if (p.group == "default" && !default_declared) {
      default_used = true;
    } else {
      std::vector<std::string> known;
      for (const auto& d : declared) known.push_back(d.group.name);
      if (!default_declared) known.emplace_back("default");
      fail(group ? *group : entry, "unknown group " + quoted(p.group) + suggestion(p.group, known) +
                                       ": declare it under groups: or use one of " +
                                       join_comma(known));
    }
    name_nodes.push_back(name_at);
    cfg.paths.push_back(std::move(p));
  }

  for (const auto& d : declared) {
    if (!d.used)
      fail(d.node,
           "group " + quoted(d.group.name) + " has no paths: remove it or put a path in it");
    cfg.groups.push_back(d.group);
  }
  if (default_used) cfg.groups.push_back(Group{"default", 0});
}

void load_sections(const Mapping& top, Config& cfg) {
  read_enum(top, "selector", "selector", kSelectors, cfg.selector.kind);

  if (const YAML::Node* n = top.find("timeouts")) {
    Mapping m(*n, "timeouts", "timeouts:", {"attempt", "request", "connect"});
    auto& t = cfg.timeouts;
    const YAML::Node* attempt =
        read_duration(m, "attempt", "timeouts.attempt", Duration{1}, t.attempt);
    const YAML::Node* request =
        read_duration(m, "request", "timeouts.request", Duration{1}, t.request);
    read_duration(m, "connect", "timeouts.connect", Duration{1}, t.connect);
    if (t.request < t.attempt)
      fail(request   ? *request
           : attempt ? *attempt
                     : *n,
           request_shorter_message(t, "timeouts.request", "timeouts.attempt"));
  }

  if (const YAML::Node* n = top.find("failover")) {
    Mapping m(*n, "failover",
              "failover:", {"retries", "eio", "failback", "reconnect-min", "reconnect-max"});
    auto& f = cfg.failover;
    read_int(m, "retries", "failover.retries", 0, 100, f.max_retries);
    read_enum(m, "eio", "failover.eio", kEioPolicies, f.eio);
    read(m, "failback", "failover.failback", "immediate, manual or a duration such as 30s",
         [&](const std::string& w, const std::string& t) -> std::string {
           if (t == "immediate") {
             f.failback = Failback::Immediate;
             f.failback_delay = Duration{0};
             return "";
           }
           if (t == "manual") {
             f.failback = Failback::Manual;
             f.failback_delay = Duration{0};
             return "";
           }
           Duration d{0};
           DurationError e = parse_duration_detail(t, d);
           if (e == DurationError::Syntax)
             return w + " must be immediate, manual or a duration such as 30s, not " + quoted(t) +
                    suggestion(t, {"immediate", "manual"});
           std::string err = conv_duration(w, t, Duration{1}, d);
           if (!err.empty()) return err;
           f.failback = Failback::Delayed;
           f.failback_delay = d;
           return "";
         });
    const YAML::Node* lo =
        read_duration(m, "reconnect-min", "failover.reconnect-min", Duration{1}, f.reconnect_min);
    const YAML::Node* hi =
        read_duration(m, "reconnect-max", "failover.reconnect-max", Duration{1}, f.reconnect_max);
    if (f.reconnect_max < f.reconnect_min)
      fail(hi   ? *hi
           : lo ? *lo
                : *n,
           "failover.reconnect-max (" + format_duration(f.reconnect_max) +
               ") is shorter than failover.reconnect-min (" + format_duration(f.reconnect_min) +
               "): make reconnect-max at least as long as reconnect-min");
  }

  if (const YAML::Node* n = top.find("no-path")) {
    Mapping m(*n, "no-path", "no-path:", {"policy", "max-time", "max-requests"});
    read_enum(m, "policy", "no-path.policy", kNoPathPolicies, cfg.no_path.policy);
    read_duration(m, "max-time", "no-path.max-time", Duration{1}, cfg.no_path.max_time);
    read_int(m, "max-requests", "no-path.max-requests", 1, 1000000, cfg.no_path.max_requests);
  }

  if (const YAML::Node* n = top.find("checker")) {
    Mapping m(*n, "checker", "checker:", {"interval"});
    read_duration(m, "interval", "checker.interval", Duration{10}, cfg.checker.interval);
  }

  read(top, "identity", "identity",
       "an iSCSI LU identifier such as naa.60000000000000000e00000000010001",
       [&](const std::string& w, const std::string& t) -> std::string {
         if (t.empty())
           return w + " is empty: give the LU identifier that sg_inq or iscsi-inq shows";
         cfg.identity = t;
         return "";
       });

  read(top, "export-description", "export-description",
       "the export description the NBD servers report, as nbdinfo shows it",
       [&](const std::string& w, const std::string& t) -> std::string {
         if (t.empty())
           return w + " is empty: give the description the NBD servers report (nbdinfo shows " +
                  "it), or remove the key";
         cfg.export_description = t;
         return "";
       });

  if (const YAML::Node* n = top.find("durability")) {
    Mapping m(*n, "durability", "durability:", {"shared-cache", "max-dirty-ranges"});
    read(m, "shared-cache", "durability.shared-cache", "true or false",
         [&](const std::string& w, const std::string& t) {
           return conv_bool(w, t, cfg.durability.shared_cache);
         });
    read(m, "max-dirty-ranges", "durability.max-dirty-ranges", "a whole number from 1 to 1048576",
         [&](const std::string& w, const std::string& t) {
           return conv_int_as(w, t, 1, 1 << 20, cfg.durability.max_dirty_ranges);
         });
  }

  if (const YAML::Node* n = top.find("outlier")) load_outlier(*n, cfg.outlier);
  if (const YAML::Node* n = top.find("hedge")) load_hedge(*n, cfg.hedge);

  if (const YAML::Node* n = top.find("stale-writes")) {
    Mapping m(*n, "stale-writes", "stale-writes:", {"max-bytes"});
    read(m, "max-bytes", "stale-writes.max-bytes", "a byte count such as 64MiB",
         [&](const std::string& w, const std::string& t) {
           return conv_bytes(w, t, 1ull << 20, cfg.stale_writes.max_bytes);
         });
  }

  if (const YAML::Node* n = top.find("control")) {
    Mapping m(*n, "control", "control:", {"socket", "mode", "group", "events"});
    auto& c = cfg.control;
    const YAML::Node* socket =
        read(m, "socket", "control.socket", "an absolute path",
             [&](const std::string& w, const std::string& t) {
               return conv_socket_path(w, t, kControlSocketExample, c.socket);
             });
    read(m, "mode", "control.mode", "octal permission bits such as 0660",
         [&](const std::string& w, const std::string& t) { return conv_mode(w, t, c.mode); });
    read(m, "group", "control.group", "a group name",
         [&](const std::string& w, const std::string& t) { return conv_group(w, t, c.group); });
    read_int(m, "events", "control.events", 1, 100000, c.events);
    if (!socket && !n->IsNull())
      fail(top.key_node("control"), std::string("control: has no socket: add 'socket: ") +
                                        kControlSocketExample + "', or remove the section");
  }

  if (const YAML::Node* n = top.find("metrics")) {
    Mapping m(*n, "metrics", "metrics:", {"socket", "listen"});
    auto& mt = cfg.metrics;
    if (m.find("socket") && m.find("listen")) {
      const YAML::Node& a = m.key_node("socket");
      const YAML::Node& b = m.key_node("listen");
      fail(a.Mark().pos > b.Mark().pos ? a : b,
           "metrics has both socket and listen: keep one, since the endpoint serves either a "
           "Unix socket or a loopback TCP address");
    }
    const YAML::Node* socket =
        read(m, "socket", "metrics.socket", "an absolute path",
             [&](const std::string& w, const std::string& t) {
               return conv_socket_path(w, t, kMetricsSocketExample, mt.socket);
             });
    read(m, "listen", "metrics.listen", std::string("an address such as ") + kListenExamples,
         [&](const std::string& w, const std::string& t) { return conv_listen(w, t, mt.listen); });
    if (socket && mt.socket == cfg.control.socket)
      fail(*socket, "metrics.socket is the same path as control.socket: give each its own path");
  }
}

Config load_document(const YAML::Node& doc, const std::string& name) {
  if (doc.IsNull())
    fail(doc, "the file is empty: add a paths: sequence with at least one path with a uri");
  if (!doc.IsMap())
    fail(doc, "the top level must be a mapping with keys such as paths: and selector:, not " +
                  describe(doc));
  Mapping top(doc, "the top level", "the top level", kTopKeys);
  Config cfg;
  cfg.source = name;
  std::vector<Declared> declared;
  load_groups(top, declared);
  load_paths(top, declared, cfg);
  load_sections(top, cfg);
  return cfg;
}

std::string at(const std::string& name, const YAML::Mark& m) {
  return name + ":" + std::to_string(line_of(m)) + ":" + std::to_string(column_of(m)) + ": ";
}

// True if line `line` (0-based) or the one before it is indented with a tab,
// the usual cause of yaml-cpp's less obvious syntax errors.
bool tab_indented_near(const std::string& text, int line) {
  int current = 0;
  std::size_t pos = 0;
  while (pos <= text.size() && current <= line) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (current >= line - 1) {
      for (std::size_t i = pos; i < end && (text[i] == ' ' || text[i] == '\t'); ++i)
        if (text[i] == '\t') return true;
    }
    pos = end + 1;
    ++current;
  }
  return false;
}
// A configuration is a few kilobytes; the limit keeps yaml-cpp's memory (a
// few times the text) and the time to walk it small, whatever the file holds.
constexpr std::size_t kMaxFileBytes = 256 << 10;

std::string too_large(const std::string& name) {
  return name +
         ": the file is larger than 256 KiB, the most a configuration may be: check that it " +
         "is the right file (a configuration is a few kilobytes)";
}

}  // namespace

LoadResult load_string(const std::string& text, const std::string& name) {
  if (text.size() > kMaxFileBytes) return error_result(too_large(name));
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(text);
    if (docs.size() > 1)
      return error_result(at(name, docs[1].Mark()) + "the file holds " +
                          std::to_string(docs.size()) +
                          " YAML documents: keep one (remove the '---' separators)");
    YAML::Node doc = docs.empty() ? YAML::Node() : docs[0];
    LoadResult r;
    r.config = load_document(doc, name);
    return r;
  } catch (const Failure& f) {
    return error_result(at(name, f.mark) + f.message);
  } catch (const YAML::ParserException& e) {
    const char* fix = tab_indented_near(text, e.mark.line)
                          ? "indent with spaces, not tabs"
                          : "check the indentation, colons and quotes here";
    return error_result(at(name, e.mark) + "YAML syntax error (" + e.msg + "): " + fix);
  } catch (const YAML::Exception& e) {
    return error_result(at(name, e.mark) + "cannot read the YAML (" + e.msg + ")");
  } catch (const std::exception& e) {
    return error_result(name + ": cannot load the configuration: " + e.what());
  } catch (...) {
    return error_result(name + ": cannot load the configuration");
  }
}

LoadResult load_file(const std::string& filename) {
  try {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(filename.c_str(), "rb"), std::fclose);
    if (!f) return error_result(filename + ": cannot read: " + detail::errno_text(errno));
    // Read up to a buffer past the limit, whatever the file is (a pipe,
    // /dev/zero): load_string refuses the text when it is longer.
    std::string text;
    char buf[8192];
    std::size_t n;
    while (text.size() <= kMaxFileBytes && (n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
      text.append(buf, n);
    if (std::ferror(f.get()))
      return error_result(filename + ": cannot read: " + detail::errno_text(errno));
    return load_string(text, filename);
  } catch (const std::exception& e) {
    return error_result(filename + ": cannot read: " + e.what());
  } catch (...) {
    return error_result(filename + ": cannot read");
  }
}

}  // namespace mp::config
