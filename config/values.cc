// Scalar values of the file and the quick form: durations, integers, bytes, booleans, enums.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "config/config_internal.h"

namespace mp::config {
namespace detail {

// Longest accepted duration: one year. Callers add durations to clock time
// points; this keeps every sum far from overflow.
constexpr Duration kMaxDuration{365ll * 24 * 3600 * 1000};

DurationError parse_duration_detail(std::string_view text, Duration& out) {
  bool negative = !text.empty() && text.front() == '-';
  if (negative) text.remove_prefix(1);
  auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0;
  while (i < text.size() && is_digit(text[i])) ++i;
  std::string_view int_part = text.substr(0, i), frac_part;
  if (i < text.size() && text[i] == '.') {
    std::size_t start = ++i;
    while (i < text.size() && is_digit(text[i])) ++i;
    frac_part = text.substr(start, i - start);
    if (frac_part.empty()) return DurationError::Syntax;
  }
  if (int_part.empty()) return DurationError::Syntax;
  std::string_view unit = text.substr(i);
  // "-1" is negative before it lacks a unit: adding one would not help.
  auto nonzero = [](char c) { return c >= '1' && c <= '9'; };
  if (negative && (std::any_of(int_part.begin(), int_part.end(), nonzero) ||
                   std::any_of(frac_part.begin(), frac_part.end(), nonzero)))
    return DurationError::Negative;
  unsigned __int128 unit_ms;
  if (unit == "ms")
    unit_ms = 1;
  else if (unit == "s")
    unit_ms = 1000;
  else if (unit == "m")
    unit_ms = 60000;
  else if (unit.empty())
    return DurationError::NoUnit;
  else
    return DurationError::Syntax;

  // Leading zeros of the integer part and trailing zeros of the fraction
  // change nothing.
  while (int_part.size() > 1 && int_part.front() == '0') int_part.remove_prefix(1);
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.remove_suffix(1);
  if (negative) {  // zero: "-0s" is 0
    out = Duration{0};
    return DurationError::None;
  }
  const auto max = static_cast<unsigned __int128>(kMaxDuration.count());
  if (int_part.size() > 15) return DurationError::TooLong;  // > 10^15 ms whatever the unit
  unsigned __int128 whole = 0;
  for (char c : int_part) whole = whole * 10 + static_cast<unsigned>(c - '0');
  if (whole * unit_ms > max) return DurationError::TooLong;
  // A nonzero digit six or more places after the point is never a whole
  // number of milliseconds, whatever the unit (60000 = 2^5 * 3 * 5^4).
  if (frac_part.size() > 6) return DurationError::SubMillisecond;
  unsigned __int128 scale = 1, number = whole;
  for (char c : frac_part) {
    number = number * 10 + static_cast<unsigned>(c - '0');
    scale *= 10;
  }
  unsigned __int128 total = number * unit_ms;
  if (total / scale > max) return DurationError::TooLong;
  if (total % scale != 0) return DurationError::SubMillisecond;
  out = Duration{static_cast<Duration::rep>(total / scale)};
  return DurationError::None;
}

std::string conv_duration(const std::string& what, const std::string& text, Duration min,
                          Duration& out) {
  Duration d{0};
  switch (parse_duration_detail(text, d)) {
    case DurationError::None:
      break;
    case DurationError::Syntax:
      return what + " must be " + kDurationExample + ", not " + quoted(text);
    case DurationError::NoUnit:
      if (text.size() > 20)
        return what + " " + quoted(text) + " has no unit: units are required, add ms, s or m";
      return what + " " + quoted(text) + " has no unit: units are required, write it as " + text +
             "s or " + text + "ms";
    case DurationError::Negative:
      return what + " " + quoted(text) +
             " is negative: durations must be positive, such as 250ms, 5s or 2m";
    case DurationError::TooLong:
      return what + " " + quoted(text) + " is too long: the longest accepted duration is " +
             format_duration(kMaxDuration) + " (one year)";
    case DurationError::SubMillisecond:
      return what + " " + quoted(text) +
             " is not a whole number of milliseconds: round it to whole milliseconds";
  }
  if (d < min) return what + " must be at least " + format_duration(min) + ", not " + quoted(text);
  out = d;
  return "";
}

// Strict decimal integer: optional '-', digits, nothing else.
bool parse_integer(std::string_view text, long long& out, bool& overflow) {
  overflow = false;
  if (text.empty()) return false;
  std::size_t start = text.front() == '-' ? 1 : 0;
  if (start == text.size()) return false;
  for (std::size_t i = start; i < text.size(); ++i)
    if (text[i] < '0' || text[i] > '9') return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (ec == std::errc::result_out_of_range) {
    overflow = true;
    return true;
  }
  return ec == std::errc() && ptr == text.data() + text.size();
}

std::string conv_integer(const std::string& what, const std::string& text, long long lo,
                         long long hi, long long& out) {
  long long v = 0;
  bool overflow = false;
  if (!parse_integer(text, v, overflow)) return what + " must be an integer, not " + quoted(text);
  if (overflow || v < lo || v > hi)
    return what + " must be from " + std::to_string(lo) + " to " + std::to_string(hi) + ", not " +
           quoted(text);
  out = v;
  return "";
}

std::string conv_positive_number(const std::string& what, const std::string& text, double& out) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  // from_chars also reads "inf" and "nan"; neither is a throughput.
  if (text.empty() || ec != std::errc() || ptr != end || !std::isfinite(v))
    return what + " must be a number, not " + quoted(text);
  if (!(v > 0)) return what + " must be greater than 0, not " + quoted(text);
  out = v;
  return "";
}

std::string conv_bytes(const std::string& what, const std::string& text, std::uint64_t min,
                       std::uint64_t& out) {
  static const std::pair<std::string_view, unsigned> kSuffixes[] = {
      {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"K", 10}, {"M", 20}, {"G", 30}};
  std::string_view digits = text;
  unsigned shift = 0;
  for (const auto& [suffix, s] : kSuffixes) {
    if (digits.size() > suffix.size() && digits.ends_with(suffix)) {
      digits.remove_suffix(suffix.size());
      shift = s;
      break;
    }
  }
  const std::string bad =
      what + " must be a byte count such as 67108864, 64MiB or 1GiB, not " + quoted(text);
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return bad;
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec == std::errc::result_out_of_range || (shift && v > (~0ull >> shift)))
    return what + " " + quoted(text) + " is too large: it must fit in 64 bits";
  if (ec != std::errc() || ptr != digits.data() + digits.size()) return bad;
  v <<= shift;
  if (v < min)
    return what + " must be at least " + format_bytes(min) + " (" + std::to_string(min) +
           " bytes), not " + quoted(text);
  out = v;
  return "";
}

std::string conv_bool(const std::string& what, const std::string& text, bool& out) {
  static const std::pair<std::string_view, bool> kWords[] = {
      {"true", true},   {"yes", true}, {"on", true},   {"1", true},
      {"false", false}, {"no", false}, {"off", false}, {"0", false}};
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const auto& [word, value] : kWords) {
    if (lower == word) {
      out = value;
      return "";
    }
  }
  return what + " must be true or false, not " + quoted(text);
}

const Choices<SelectorKind> kSelectors = {{"round-robin", SelectorKind::RoundRobin},
                                          {"queue-length", SelectorKind::QueueLength},
                                          {"service-time", SelectorKind::ServiceTime},
                                          {"latency", SelectorKind::Latency}};
const Choices<NoPathPolicy> kNoPathPolicies = {{"queue", NoPathPolicy::Queue},
                                               {"fail", NoPathPolicy::Fail}};
const Choices<EioPolicy> kEioPolicies = {{"failover", EioPolicy::Failover},
                                         {"return", EioPolicy::Return}};

// Cross-field rules shared by the file and the quick form.
std::string request_shorter_message(const Timeouts& t, const std::string& request_name,
                                    const std::string& attempt_name) {
  return request_name + " (" + format_duration(t.request) + ") is shorter than " + attempt_name +
         " (" + format_duration(t.attempt) + "): make " + request_name + " at least as long as " +
         attempt_name;
}

}  // namespace detail

using namespace detail;

const char* to_string(SelectorKind k) {
  switch (k) {
    case SelectorKind::RoundRobin:
      return "round-robin";
    case SelectorKind::QueueLength:
      return "queue-length";
    case SelectorKind::ServiceTime:
      return "service-time";
    case SelectorKind::Latency:
      return "latency";
  }
  return "unknown";
}

std::optional<Duration> parse_duration(const std::string& text) {
  Duration d{0};
  if (parse_duration_detail(text, d) != DurationError::None) return std::nullopt;
  return d;
}

}  // namespace mp::config
