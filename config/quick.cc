// The quick form: nbdkit multipath path=URI [path=URI ...] [key=value ...] to a Config.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "config/config_internal.h"

namespace mp::config {

using namespace detail;

LoadResult from_quick_args(const QuickArgs& args) {
  const std::string prefix = "command line: ";
  try {
    static const std::vector<std::string> kKeys = {"path",
                                                   "config",
                                                   "selector",
                                                   "timeout",
                                                   "request-timeout",
                                                   "connect-timeout",
                                                   "no-path",
                                                   "retries",
                                                   "shared-cache",
                                                   "outlier",
                                                   "hedge"};
    Config cfg;
    cfg.source = "command line";
    std::vector<std::string> uris = args.paths;
    std::vector<std::string> seen;
    for (const auto& [key, value] : args.options) {
      std::string err;
      if (std::find(kKeys.begin(), kKeys.end(), key) == kKeys.end())
        return error_result(prefix + "unknown parameter " + quoted(key) + suggestion(key, kKeys) +
                            ": use one of " + join_comma(kKeys));
      if (key == "path") {
        uris.push_back(value);
        continue;
      }
      if (key == "config")
        return error_result(prefix +
                            "config= cannot be combined with path= or other parameters: put "
                            "every setting in the file");
      if (std::find(seen.begin(), seen.end(), key) != seen.end())
        return error_result(prefix + key + "= is given twice: give it once");
      seen.push_back(key);
      if (err = check_length(key + "=", value); !err.empty()) return error_result(prefix + err);
      if (key == "selector")
        err = conv_enum(key, value, kSelectors, cfg.selector.kind);
      else if (key == "timeout")
        err = conv_duration(key, value, Duration{1}, cfg.timeouts.attempt);
      else if (key == "request-timeout")
        err = conv_duration(key, value, Duration{1}, cfg.timeouts.request);
      else if (key == "connect-timeout")
        err = conv_duration(key, value, Duration{1}, cfg.timeouts.connect);
      else if (key == "no-path")
        err = conv_enum(key, value, kNoPathPolicies, cfg.no_path.policy);
      else if (key == "retries")
        err = conv_int_as(key, value, 0, 100, cfg.failover.max_retries);
      else if (key == "shared-cache")
        err = conv_bool(key, value, cfg.durability.shared_cache);
      else if (key == "outlier")
        err = conv_bool(key, value, cfg.outlier.enabled);
      else if (key == "hedge")
        err = conv_bool(key, value, cfg.hedge.enabled);
      if (!err.empty()) return error_result(prefix + err);
    }
    if (uris.size() > kMaxPaths)
      return error_result(prefix + std::to_string(uris.size()) + " paths given, more than the " +
                          std::to_string(kMaxPaths) + " a disk may have: give fewer");
    if (uris.empty())
      return error_result(prefix +
                          "no paths given: add at least one path=URI, such as "
                          "nbd+unix:///?socket=/run/a.sock");
    for (std::size_t i = 0; i < uris.size(); ++i) {
      if (std::string err = check_uri(uris[i]); !err.empty()) return error_result(prefix + err);
      Path p;
      p.name = "path" + std::to_string(i + 1);
      p.uri = uris[i];
      cfg.paths.push_back(std::move(p));
    }
    cfg.groups.push_back(Group{"default", 0});
    if (cfg.timeouts.request < cfg.timeouts.attempt)
      return error_result(prefix +
                          request_shorter_message(cfg.timeouts, "request-timeout", "timeout"));
    LoadResult r;
    r.config = std::move(cfg);
    return r;
  } catch (const std::exception& e) {
    return error_result(prefix + "cannot load the configuration: " + e.what());
  } catch (...) {
    return error_result(prefix + "cannot load the configuration");
  }
}

}  // namespace mp::config
