// What the files of config/ share (limits, text, scalar values, URI parts); private to config/.
//
// Every converter returns "" on success or one sentence naming `what` and the
// fix; the callers add where (FILE:LINE:COLUMN, or "command line: ").
#pragma once

#include <uriparser/Uri.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace mp::config::detail {

// ---------------------------------------------------------------------------
// Limits

// The longest value of any key, in bytes: a URI, a path name (PATH_MAX), an
// NBD export description (the protocol's 4096-byte limit on strings). Longer
// values are refused before anything else looks at them.
inline constexpr std::size_t kMaxValue = 4096;
// The longest value a message repeats whole.
inline constexpr std::size_t kMaxShown = 80;
// Paths (and so groups) per disk. Names are checked for duplicates pairwise,
// and each path is probed in turn at start-up.
inline constexpr std::size_t kMaxPaths = 256;

// ---------------------------------------------------------------------------
// Text (text.cc)

// Quotes user text for a message: 'text', with invalid UTF-8 bytes (\xff)
// and invisible characters (\u202e) escaped, and long text shortened so one
// bad value cannot flood the log.
std::string quoted(std::string_view s);
// "a, b or c"
std::string join_or(const std::vector<std::string>& items);
// "a, b, c"
std::string join_comma(const std::vector<std::string>& items);
// A value longer than kMaxValue is refused.
std::string check_length(const std::string& what, std::string_view value);
// " (did you mean 'x'?)" for the candidate within two edits of `word`, or "".
std::string suggestion(std::string_view word, const std::vector<std::string>& candidates);
// Prints a duration in the largest unit that divides it exactly: 90000 -> "90s".
std::string format_duration(Duration d);
// Prints a byte count in the largest binary unit that divides it: "64MiB".
std::string format_bytes(std::uint64_t b);
// A path's or a group's name: 1 to 64 visible characters of valid UTF-8.
std::string check_name(const std::string& what, const std::string& name);
// The English text of an errno value, without a locale lock (strerrordesc_np).
const char* errno_text(int err);

// ---------------------------------------------------------------------------
// Scalar values (values.cc)

inline constexpr const char* kDurationExample = "a duration such as 250ms, 5s, 1.5s or 2m";

enum class DurationError { None, Syntax, NoUnit, Negative, TooLong, SubMillisecond };

DurationError parse_duration_detail(std::string_view text, Duration& out);
std::string conv_duration(const std::string& what, const std::string& text, Duration min,
                          Duration& out);
// Strict decimal integer: optional '-', digits, nothing else.
bool parse_integer(std::string_view text, long long& out, bool& overflow);
std::string conv_integer(const std::string& what, const std::string& text, long long lo,
                         long long hi, long long& out);
std::string conv_positive_number(const std::string& what, const std::string& text, double& out);
std::string conv_bytes(const std::string& what, const std::string& text, std::uint64_t min,
                       std::uint64_t& out);
std::string conv_bool(const std::string& what, const std::string& text, bool& out);

template <class T>
std::string conv_int_as(const std::string& what, const std::string& text, long long lo,
                        long long hi, T& out) {
  long long v = 0;
  std::string err = conv_integer(what, text, lo, hi, v);
  if (err.empty()) out = static_cast<T>(v);
  return err;
}

template <class E>
using Choices = std::initializer_list<std::pair<const char*, E>>;

template <class E>
std::vector<std::string> choice_names(Choices<E> choices) {
  std::vector<std::string> names;
  for (const auto& c : choices) names.emplace_back(c.first);
  return names;
}

template <class E>
std::string conv_enum(const std::string& what, const std::string& text, Choices<E> choices,
                      E& out) {
  for (const auto& [name, value] : choices) {
    if (text == name) {
      out = value;
      return "";
    }
  }
  auto names = choice_names(choices);
  return what + " must be " + join_or(names) + ", not " + quoted(text) + suggestion(text, names);
}

extern const Choices<SelectorKind> kSelectors;
extern const Choices<NoPathPolicy> kNoPathPolicies;
extern const Choices<EioPolicy> kEioPolicies;

// Cross-field rules shared by the file and the quick form.
std::string request_shorter_message(const Timeouts& t, const std::string& request_name,
                                    const std::string& attempt_name);

// ---------------------------------------------------------------------------
// URI parts (uri.cc)

// The text of a liburiparser range ("" when absent).
std::string range(const UriTextRangeA& r);
// Whether the part is there at all, even empty.
bool present(const UriTextRangeA& r);

// ---------------------------------------------------------------------------
// Sockets, permission bits, groups and listen addresses of control: and
// metrics: (endpoints.cc)

inline constexpr const char* kControlSocketExample = "/run/nbd-multipath/ctl.sock";
inline constexpr const char* kMetricsSocketExample = "/run/nbd-multipath/metrics.sock";
inline constexpr const char* kListenExamples = "127.0.0.1:9100 or [::1]:9100";

std::string conv_socket_path(const std::string& what, const std::string& text, const char* example,
                             std::string& out);
std::string conv_mode(const std::string& what, const std::string& text, unsigned& out);
std::string conv_group(const std::string& what, const std::string& text, std::string& out);
std::string conv_listen(const std::string& what, const std::string& text, std::string& out);

// ---------------------------------------------------------------------------
// Results (yaml.cc, quick.cc)

inline LoadResult error_result(std::string message) {
  LoadResult r;
  r.error = std::move(message);
  return r;
}

}  // namespace mp::config::detail
