// Loads and validates nbd-multipath's configuration from YAML or the quick command-line form.
#include "config/config.h"

#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uriparser/Uri.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string_view>
#include <utility>

namespace mp::config {
namespace {

// ---------------------------------------------------------------------------
// Text helpers

// Code points refused in names and escaped when a message quotes user text:
// what cannot be seen, or moves text around, in a log line. Unicode 15's
// categories Cc (controls), Cf (format: soft hyphen, zero-width space and
// joiners, bidirectional overrides and isolates, BOM, tags), Zs (spaces,
// among them no-break space), Zl and Zp (line and paragraph separators); also
// the blank fillers U+034F, U+115F, U+1160, U+17B4, U+17B5, U+3164 and U+FFA0,
// the variation selectors, and the noncharacters.
struct CodeRange {
  char32_t lo, hi;
};
constexpr CodeRange kInvisible[] = {
    {0x0, 0x20},        {0x7F, 0xA0},       {0xAD, 0xAD},       {0x34F, 0x34F},
    {0x600, 0x605},     {0x61C, 0x61C},     {0x6DD, 0x6DD},     {0x70F, 0x70F},
    {0x890, 0x891},     {0x8E2, 0x8E2},     {0x115F, 0x1160},   {0x1680, 0x1680},
    {0x17B4, 0x17B5},   {0x180B, 0x180F},   {0x2000, 0x200F},   {0x2028, 0x202F},
    {0x205F, 0x206F},   {0x3000, 0x3000},   {0x3164, 0x3164},   {0xFDD0, 0xFDEF},
    {0xFE00, 0xFE0F},   {0xFEFF, 0xFEFF},   {0xFFA0, 0xFFA0},   {0xFFF9, 0xFFFB},
    {0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},
    {0x1D173, 0x1D17A}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F}, {0xE0100, 0xE01EF},
};

bool invisible(char32_t c) {
  if ((c & 0xFFFE) == 0xFFFE) return true;  // U+FFFE, U+FFFF, U+1FFFE, ...: noncharacters
  for (const auto& r : kInvisible)
    if (c >= r.lo && c <= r.hi) return true;
  return false;
}

constexpr char32_t kBadUtf8 = 0xFFFFFFFF;

// Decodes the UTF-8 character at s[i] and moves i past it. Returns kBadUtf8
// (and moves one byte) for a byte that does not start a well-formed sequence:
// a stray continuation byte, a truncated sequence, an overlong form, a
// surrogate, or a value above U+10FFFF.
char32_t next_char(std::string_view s, std::size_t& i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  std::size_t len = c < 0x80             ? 1
                    : (c & 0xE0) == 0xC0 ? 2
                    : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 ? 4
                                         : 0;
  if (len == 0 || s.size() - i < len) return ++i, kBadUtf8;
  char32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (std::size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return ++i, kBadUtf8;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return ++i, kBadUtf8;
  i += len;
  return cp;
}

// Quotes user text for a message: 'text', with invalid UTF-8 bytes (\xff)
// and invisible characters (\u202e) escaped, and long text shortened so one
// bad value cannot flood the log. Stops reading after the shown part, so its
// cost does not grow with the text.
std::string quoted(std::string_view s) {
  constexpr std::size_t kMaxChars = 80;
  std::string out = "'";
  std::size_t i = 0, chars = 0;
  while (i < s.size() && chars < kMaxChars) {
    std::size_t start = i;
    char32_t c = next_char(s, i);
    char buf[16];
    if (c == kBadUtf8) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(s[start]));
      out += buf;
    } else if (c != ' ' && invisible(c)) {
      std::snprintf(buf, sizeof buf,
                    c > 0xFFFF ? "\\U%08x"
                    : c > 0xFF ? "\\u%04x"
                               : "\\x%02x",
                    static_cast<unsigned>(c));
      out += buf;
    } else {
      out.append(s.substr(start, i - start));
    }
    ++chars;
  }
  if (i < s.size()) out += "...";
  out += "'";
  return out;
}

// "a, b or c"
std::string join_or(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += (i + 1 == items.size()) ? " or " : ", ";
    out += items[i];
  }
  return out;
}

std::string join_comma(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += items[i];
  }
  return out;
}

// The longest value of any key, in bytes: a URI, a path name (PATH_MAX), an
// NBD export description (the protocol's 4096-byte limit on strings). Longer
// values are refused before anything else looks at them.
constexpr std::size_t kMaxValue = 4096;
// The longest value a message repeats whole.
constexpr std::size_t kMaxShown = 80;

std::string check_length(const std::string& what, std::string_view value) {
  if (value.size() <= kMaxValue) return "";
  return what + " is " + std::to_string(value.size()) + " bytes long, more than the " +
         std::to_string(kMaxValue) + " any value may have: shorten it";
}

// Optimal string alignment distance (Levenshtein plus adjacent transposition),
// so "wieght" is one edit from "weight".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The candidate closest to `word` if it is within two edits, else "". The
// distance table is word.size() by c.size(): a word more than two letters
// longer or shorter than a candidate is never within two edits of it, and is
// not compared, so a huge value costs nothing here.
std::string closest(std::string_view word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = 3;
  for (const auto& c : candidates) {
    if (word.size() > c.size() + 2 || c.size() > word.size() + 2) continue;
    std::size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string suggestion(std::string_view word, const std::vector<std::string>& candidates) {
  std::string c = closest(word, candidates);
  return c.empty() ? std::string() : " (did you mean '" + c + "'?)";
}

// Prints a duration in the largest unit that divides it exactly: 90000 -> "90s".
std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string format_bytes(std::uint64_t b) {
  if (b != 0 && b % (1ull << 30) == 0) return std::to_string(b >> 30) + "GiB";
  if (b != 0 && b % (1ull << 20) == 0) return std::to_string(b >> 20) + "MiB";
  if (b != 0 && b % (1ull << 10) == 0) return std::to_string(b >> 10) + "KiB";
  return std::to_string(b);
}

// ---------------------------------------------------------------------------
// Scalar parsers shared by the YAML file and the quick form. Each converter
// returns "" on success or one sentence naming `what` and the fix.

constexpr const char* kDurationExample = "a duration such as 250ms, 5s, 1.5s or 2m";
// Longest accepted duration: one year. Callers add durations to clock time
// points; this keeps every sum far from overflow.
constexpr Duration kMaxDuration{365ll * 24 * 3600 * 1000};

enum class DurationError { None, Syntax, NoUnit, Negative, TooLong, SubMillisecond };

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

template <class T>
std::string conv_int_as(const std::string& what, const std::string& text, long long lo,
                        long long hi, T& out) {
  long long v = 0;
  std::string err = conv_integer(what, text, lo, hi, v);
  if (err.empty()) out = static_cast<T>(v);
  return err;
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

const Choices<SelectorKind> kSelectors = {{"round-robin", SelectorKind::RoundRobin},
                                          {"queue-length", SelectorKind::QueueLength},
                                          {"service-time", SelectorKind::ServiceTime}};
const Choices<NoPathPolicy> kNoPathPolicies = {{"queue", NoPathPolicy::Queue},
                                               {"fail", NoPathPolicy::Fail}};
const Choices<EioPolicy> kEioPolicies = {{"failover", EioPolicy::Failover},
                                         {"return", EioPolicy::Return}};

// Names of paths and groups end up in logs, metrics and commands typed by
// operators: 1 to 64 characters (code points, not bytes) of valid UTF-8, none
// of them blank, control or invisible (see kInvisible). Reads at most 65
// characters, whatever the length of `name`.
std::string check_name(const std::string& what, const std::string& name) {
  constexpr std::size_t kMaxChars = 64;
  if (name.empty()) return what + " is empty: give it a name such as 'a'";
  std::size_t i = 0, chars = 0;
  while (i < name.size()) {
    std::size_t at = i;
    char32_t c = next_char(name, i);
    if (c == kBadUtf8)
      return what + " " + quoted(name) + " is not valid UTF-8 (byte " + std::to_string(at + 1) +
             "): write the file in UTF-8";
    if (invisible(c)) {
      char code[16];
      std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
      return what + " " + quoted(name) + " contains a blank, control or invisible character (" +
             code + "): use letters, digits, '-', '_' or '.'";
    }
    if (++chars > kMaxChars)
      return what + " " + quoted(name) + " is longer than 64 characters: shorten it";
  }
  return "";
}

// Cross-field rules shared by the file and the quick form.
std::string request_shorter_message(const Timeouts& t, const std::string& request_name,
                                    const std::string& attempt_name) {
  return request_name + " (" + format_duration(t.request) + ") is shorter than " + attempt_name +
         " (" + format_duration(t.attempt) + "): make " + request_name + " at least as long as " +
         attempt_name;
}

// ---------------------------------------------------------------------------
// URI checks (liburiparser does the parsing)

struct UriView {
  const std::string* text;
  std::string scheme;
  bool has_host = false;  // an authority with a non-empty host
  std::string host;
  bool has_port = false;  // ":" after the host, even if empty
  std::string port;
  bool has_userinfo = false;
  bool has_fragment = false;
  std::string query;
  bool has_query = false;
  std::vector<std::string> path;  // the path's segments, percent-decoded
};

struct SchemeRule;
using SchemeCheck = std::string (*)(const UriView&, const SchemeRule&);

// One row per accepted scheme. Adding a transport means adding a row (and a
// check function if none of the existing ones fits).
struct SchemeRule {
  const char* scheme;
  const char* form;  // shown in messages
  SchemeCheck check;
};

std::string range(const UriTextRangeA& r) {
  if (r.first == nullptr || r.afterLast == nullptr) return {};
  return std::string(r.first, r.afterLast);
}

bool present(const UriTextRangeA& r) {
  return r.first != nullptr;
}

// The query's key=value pairs, percent-decoded by liburiparser.
bool dissect_query(const std::string& query,
                   std::vector<std::pair<std::string, std::optional<std::string>>>& out) {
  // (Decoded values are C strings: check_uri refuses a %00 first.)
  UriQueryListA* list = nullptr;
  int count = 0;
  if (uriDissectQueryMallocA(&list, &count, query.data(), query.data() + query.size()) !=
      URI_SUCCESS)
    return false;
  for (UriQueryListA* q = list; q != nullptr; q = q->next)
    out.emplace_back(q->key ? q->key : "",
                     q->value ? std::optional<std::string>(q->value) : std::nullopt);
  uriFreeQueryListA(list);
  return true;
}

std::string check_port(const UriView& u, const SchemeRule& rule) {
  if (!u.has_port) return "";
  long long port = 0;
  bool overflow = false;
  if (u.port.empty() || !parse_integer(u.port, port, overflow) || overflow || port < 1 ||
      port > 65535)
    return "port " + quoted(u.port) + " in " + quoted(*u.text) +
           " is not a port number: use a port from 1 to 65535, as in " + rule.form;
  return "";
}

// libnbd (1.14) takes TLS from the scheme alone: nbds schemes require it, the
// others never use it. It ignores a tls= parameter, and the tls-* parameters
// do nothing without TLS, so either one on a plain scheme asks for TLS the
// connection will not have.
using QueryItems = std::vector<std::pair<std::string, std::optional<std::string>>>;
std::string check_tls_params(const UriView& u, const SchemeRule& rule, const QueryItems& items) {
  const std::string scheme = rule.scheme;
  const bool tls = scheme.starts_with("nbds");
  const std::string with_tls = tls ? scheme : "nbds" + scheme.substr(3);
  for (const auto& [key, value] : items) {
    const std::string param = quoted(value ? key + "=" + *value : key);
    if (key == "tls")
      return quoted(*u.text) + " has " + param + ", which libnbd ignores: " +
             (tls ? scheme + ":// always requires TLS, so drop " + param
                  : scheme + ":// never uses TLS, so use " + with_tls + ":// for TLS, or drop " +
                        param);
    if (!tls && key.starts_with("tls-"))
      return quoted(*u.text) + " has " + param + ", but " + scheme + ":// does not use TLS: use " +
             with_tls + ":// for TLS, or drop " + param;
  }
  return "";
}

// Where a URI holds a control character (bytes 0x00 to 0x1F and 0x7F), raw
// or, when `decode`, percent-encoded: libnbd decodes socket=/a.sock%00x to a
// C string that ends at the NUL. Returns how it is written ("%00", "\x0a"),
// or "" when there is none.
std::string control_in_uri(std::string_view text, bool decode) {
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      return buf;
    }
    if (decode && c == '%' && i + 2 < text.size() && hex(text[i + 1]) >= 0 &&
        hex(text[i + 2]) >= 0) {
      int v = hex(text[i + 1]) * 16 + hex(text[i + 2]);
      if (v < 0x20 || v == 0x7f) return std::string(text.substr(i, 3));
    }
  }
  return "";
}

std::string check_tcp(const UriView& u, const SchemeRule& rule) {
  if (!u.has_host) return quoted(*u.text) + " has no host: use " + rule.form;
  if (auto err = check_port(u, rule); !err.empty()) return err;
  if (u.has_query) {
    QueryItems items;
    if (!dissect_query(u.query, items))
      return "the query of " + quoted(*u.text) + " cannot be parsed: use " + rule.form;
    for (const auto& [key, value] : items) {
      if (key == "socket")
        return quoted(*u.text) + " has socket= but " + rule.scheme +
               ":// connects over TCP: for a Unix socket use " + rule.scheme +
               "+unix:///[EXPORT]?socket=PATH";
    }
    return check_tls_params(u, rule, items);
  }
  return "";
}

// iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN, libiscsi's form.
std::string check_iscsi(const UriView& u, const SchemeRule& rule) {
  if (!u.has_host) return quoted(*u.text) + " has no host: use " + rule.form;
  if (auto err = check_port(u, rule); !err.empty()) return err;
  if (u.has_query)
    return quoted(*u.text) + " has a query (" + quoted("?" + u.query) +
           "), which iscsi:// URIs do not take: use " + rule.form;
  const auto& segs = u.path;
  if (segs.size() != 2 || segs[0].empty() || segs[1].empty())
    return quoted(*u.text) + " must name a target and a LUN after the host, as in " + rule.form +
           " (for example iscsi://192.0.2.1/iqn.2026-11.com.example:disk/1)";
  if (segs[0].rfind("iqn.", 0) != 0 && segs[0].rfind("eui.", 0) != 0 &&
      segs[0].rfind("naa.", 0) != 0)
    return "target " + quoted(segs[0]) + " in " + quoted(*u.text) +
           " is not an iSCSI name: it starts with iqn., eui. or naa., as in " + rule.form;
  long long lun = 0;
  bool overflow = false;
  if (!parse_integer(segs[1], lun, overflow) || overflow || lun < 0 || lun > 16383)
    return "LUN " + quoted(segs[1]) + " in " + quoted(*u.text) +
           " is not a LUN number: use 0 to 16383, as in " + rule.form;
  return "";
}

std::string check_unix(const UriView& u, const SchemeRule& rule) {
  if (u.has_host || u.has_port || u.has_userinfo)
    return quoted(*u.text) + " names a host or port, but " + rule.scheme + " URIs take none: use " +
           rule.form;
  QueryItems items;
  if (u.has_query && !dissect_query(u.query, items))
    return "the query of " + quoted(*u.text) + " cannot be parsed: use " + rule.form;
  std::optional<std::string> socket;
  for (const auto& [key, value] : items) {
    if (key != "socket") continue;
    if (socket)
      return quoted(*u.text) + " has socket= twice: give one socket=PATH, as in " + rule.form;
    socket = value.value_or("");
  }
  if (!socket) return quoted(*u.text) + " has no socket= in its query: add one, as in " + rule.form;
  if (socket->empty() || socket->front() != '/')
    return "socket path " + quoted(*socket) + " in " + quoted(*u.text) +
           " is not absolute: use socket=/absolute/path, as in " + rule.form;
  return check_tls_params(u, rule, items);
}

constexpr SchemeRule kSchemes[] = {
    {"nbd", "nbd://HOST[:PORT][/EXPORT]", check_tcp},
    {"nbds", "nbds://HOST[:PORT][/EXPORT]", check_tcp},
    {"nbd+unix", "nbd+unix:///[EXPORT]?socket=PATH", check_unix},
    {"nbds+unix", "nbds+unix:///[EXPORT]?socket=PATH", check_unix},
    {"iscsi", "iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN", check_iscsi},
};

std::string uri_forms() {
  std::vector<std::string> forms;
  for (const auto& r : kSchemes) forms.emplace_back(r.form);
  return join_or(forms);
}

// ---------------------------------------------------------------------------
// Sockets, permission bits, groups and listen addresses (control: and metrics:)

constexpr const char* kControlSocketExample = "/run/nbd-multipath/ctl.sock";
constexpr const char* kMetricsSocketExample = "/run/nbd-multipath/metrics.sock";
constexpr const char* kListenExamples = "127.0.0.1:9100 or [::1]:9100";

// A Unix socket path: absolute, and short enough for sockaddr_un.
std::string conv_socket_path(const std::string& what, const std::string& text, const char* example,
                             std::string& out) {
  constexpr std::size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (text.find('\0') != std::string::npos)
    return what + " contains a NUL byte: use a path such as " + example;
  if (text.empty() || text.front() != '/')
    return what + " " + quoted(text) + " is not an absolute path: use a path that starts with /, " +
           "such as " + example;
  if (text.back() == '/')
    return what + " " + quoted(text) + " ends with / and so names a directory: add a file name, " +
           "as in " + example;
  if (text.size() > kMax)
    return what + " is " + std::to_string(text.size()) +
           " bytes long, but a Unix socket path can be at most " + std::to_string(kMax) +
           " bytes: use a shorter path";
  out = text;
  return "";
}

// Permission bits in octal with a leading 0 ("0660", or YAML 1.2's "0o660"),
// whether the YAML scalar is quoted or not: a plain 660 would be decimal to
// YAML and to every other reader, so it is refused rather than guessed at.
std::string conv_mode(const std::string& what, const std::string& text, unsigned& out) {
  std::string_view digits = text;
  if (digits.starts_with("0o") || digits.starts_with("0O"))
    digits.remove_prefix(2);
  else if (digits.size() > 1 && digits.front() == '0')
    digits.remove_prefix(1);
  const std::string form = "octal permission bits with a leading 0, such as 0660 or \"0600\"";
  if (text.empty() || text.front() != '0' || digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return what + " must be " + form + ", not " + quoted(text);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c <= '7'; }))
    return what + " " + quoted(text) + " is not octal: use only the digits 0 to 7, as in 0660";
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, 8);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || v > 0777)
    return what + " must be from 0 to 0777, not " + quoted(text) +
           ": set-id and sticky bits mean nothing on a socket";
  out = v;
  return "";
}

// A group that exists in the group database (files, LDAP, ...).
std::string conv_group(const std::string& what, const std::string& text, std::string& out) {
  if (std::string err = check_name(what, text); !err.empty()) return err;
  std::vector<char> buf(1024);
  struct group entry;
  struct group* found = nullptr;
  int rc;
  while ((rc = getgrnam_r(text.c_str(), &entry, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (1u << 20))
    buf.resize(buf.size() * 2);
  if (rc == 0 && found) {
    out = text;
    return "";
  }
  // getgrnam_r(3): these also mean "no such group".
  if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM)
    return "group " + quoted(text) + " does not exist: set " + what +
           " to an existing group ('getent group' lists them) or remove it";
  return "cannot look up group " + quoted(text) + " for " + what + ": " + errno_text(rc);
}

// "HOST:PORT" with a numeric loopback HOST (IPv6 in brackets) and PORT
// 0..65535. liburiparser splits it (as the authority of a URI), getaddrinfo
// checks that both parts are numeric, and `out` gets the canonical form
// ("127.0.0.1:9100", "[::1]:9100").
std::string conv_listen(const std::string& what, const std::string& text, std::string& out) {
  const std::string bad = what + " must be a loopback address and a port, such as " +
                          std::string(kListenExamples) + ", not " + quoted(text);
  // Only an authority: nothing that would start a path, query, fragment or
  // user name, and no percent-encoding.
  if (text.empty() || text.find_first_of(std::string_view("/?#@%\0", 6)) != std::string::npos)
    return bad;
  const std::string uri = "tcp://" + text;
  UriUriA parsed;
  const char* error_pos = nullptr;
  if (uriParseSingleUriA(&parsed, uri.c_str(), &error_pos) != URI_SUCCESS) {
    if (text.front() != '[' && std::count(text.begin(), text.end(), ':') > 1)
      return what + " " + quoted(text) +
             " looks like a bare IPv6 address: put the address in brackets, as in [::1]:9100";
    return bad;
  }
  std::unique_ptr<UriUriA, void (*)(UriUriA*)> guard(&parsed, uriFreeUriMembersA);
  const std::string host = range(parsed.hostText);
  if (host.empty()) return bad;
  if (!present(parsed.portText) || range(parsed.portText).empty())
    return what + " " + quoted(text) + " has no port: add one, as in 127.0.0.1:9100 " +
           "(port 0 picks a free port)";
  const std::string port = range(parsed.portText);
  long long port_number = 0;
  bool overflow = false;
  if (!parse_integer(port, port_number, overflow) || overflow || port_number < 0 ||
      port_number > 65535)
    return "port " + quoted(port) + " in " + what + " is not a port number: use a port from 0 " +
           "to 65535 (0 picks a free port)";

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr)
    return what + " " + quoted(text) + " names " + quoted(host) +
           ", which is not a numeric address: write the address itself, as in " + kListenExamples;
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> res_guard(res, freeaddrinfo);
  bool loopback = false;
  if (res->ai_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(res->ai_addr);
    loopback = (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
  } else if (res->ai_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(res->ai_addr);
    loopback = IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
  }
  if (!loopback)
    return what + " address " + quoted(host) +
           " is not a loopback address: only 127.0.0.0/8 and ::1 are allowed, because the "
           "metrics endpoint has no authentication (to scrape it from another host, put an "
           "authenticating proxy in front of it)";
  char h[NI_MAXHOST], s[NI_MAXSERV];
  if (getnameinfo(res->ai_addr, res->ai_addrlen, h, sizeof h, s, sizeof s,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return bad;
  out = res->ai_family == AF_INET6 ? "[" + std::string(h) + "]:" + s : std::string(h) + ":" + s;
  return "";
}

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
    "paths",   "groups",   "selector",          "timeouts",     "failover",
    "no-path", "checker",  "durability",        "stale-writes", "control",
    "metrics", "identity", "export-description"};
const std::initializer_list<const char*> kPathKeys = {
    "name", "uri", "group", "weight", "max-inflight", "throughput", "chap"};
const std::initializer_list<const char*> kGroupKeys = {"name", "priority"};

// Paths (and so groups) per disk. Names are checked for duplicates pairwise,
// and each path is probed in turn at start-up.
constexpr std::size_t kMaxPaths = 256;

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
               return "cannot read " + w + " " + quoted(t) + ": " + errno_text(errno) +
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
    Mapping m(*n, "durability", "durability:", {"shared-cache"});
    read(m, "shared-cache", "durability.shared-cache", "true or false",
         [&](const std::string& w, const std::string& t) {
           return conv_bool(w, t, cfg.durability.shared_cache);
         });
  }

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

LoadResult error_result(std::string message) {
  LoadResult r;
  r.error = std::move(message);
  return r;
}

// A configuration is a few kilobytes; the limit keeps yaml-cpp's memory (a
// few times the text) and the time to walk it small, whatever the file holds.
constexpr std::size_t kMaxFileBytes = 256 << 10;

std::string too_large(const std::string& name) {
  return name +
         ": the file is larger than 256 KiB, the most a configuration may be: check that it " +
         "is the right file (a configuration is a few kilobytes)";
}

// Where the USER[%PASSWORD] of an iscsi:// URI ends (its '@'), or npos.
// libiscsi's USER%PASSWORD is not percent-encoding, so it is found by hand.
std::size_t iscsi_userinfo_end(const std::string& uri) {
  if (uri.rfind("iscsi://", 0) != 0) return std::string::npos;
  std::size_t at = uri.find('@', 8), slash = uri.find('/', 8);
  return slash == std::string::npos || at < slash ? at : std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------
// Public functions

bool is_iscsi(const Path& p) {
  return p.uri.rfind("iscsi://", 0) == 0;
}

std::string redacted_uri(const std::string& uri) {
  std::size_t at = iscsi_userinfo_end(uri);
  if (at == std::string::npos) return uri;
  std::size_t pct = uri.find('%', 8);
  if (pct == std::string::npos || pct > at) return uri;
  return uri.substr(0, pct + 1) + "***" + uri.substr(at);
}

const char* to_string(SelectorKind k) {
  switch (k) {
    case SelectorKind::RoundRobin:
      return "round-robin";
    case SelectorKind::QueueLength:
      return "queue-length";
    case SelectorKind::ServiceTime:
      return "service-time";
  }
  return "unknown";
}

std::optional<Duration> parse_duration(const std::string& text) {
  Duration d{0};
  if (parse_duration_detail(text, d) != DurationError::None) return std::nullopt;
  return d;
}

std::string check_uri(const std::string& uri) {
  try {
    const std::string forms = uri_forms();
    const std::string shown = redacted_uri(uri);  // messages never carry a password
    if (uri.empty()) return "the URI is empty: use " + forms;
    if (std::string err = check_length("the URI", uri); !err.empty()) return err;
    if (uri.find('\0') != std::string::npos)
      return quoted(shown) + " contains a NUL byte: use " + forms;
    // libiscsi's USER%PASSWORD is not percent-encoding: parse with it masked.
    std::string text = uri;
    if (std::size_t at = iscsi_userinfo_end(uri); at != std::string::npos)
      text.replace(8, at - 8, "user");
    // Raw anywhere (the password too); percent-encoded outside libiscsi's
    // USER%PASSWORD.
    std::string control = control_in_uri(uri, false);
    if (control.empty()) control = control_in_uri(text, true);
    if (!control.empty())
      return quoted(shown) + " contains a control character (" + control +
             "): remove it, since no host, export, socket path or parameter holds one";
    UriUriA parsed;
    const char* error_pos = nullptr;
    if (uriParseSingleUriA(&parsed, text.c_str(), &error_pos) != URI_SUCCESS) {
      std::size_t pos = error_pos ? static_cast<std::size_t>(error_pos - text.c_str()) : 0;
      return quoted(shown) + " is not a valid URI (error at character " + std::to_string(pos + 1) +
             "): use " + forms;
    }
    std::unique_ptr<UriUriA, void (*)(UriUriA*)> guard(&parsed, uriFreeUriMembersA);
    UriView u;
    u.text = &shown;
    u.scheme = range(parsed.scheme);
    if (u.scheme.empty()) return quoted(shown) + " has no scheme: use " + forms;
    u.host = range(parsed.hostText);
    u.has_host =
        !u.host.empty() || parsed.hostData.ip6 != nullptr || present(parsed.hostData.ipFuture);
    u.has_port = present(parsed.portText);
    u.port = range(parsed.portText);
    u.has_userinfo = present(parsed.userInfo);
    u.has_fragment = present(parsed.fragment);
    u.has_query = present(parsed.query);
    u.query = range(parsed.query);
    for (UriPathSegmentA* seg = parsed.pathHead; seg; seg = seg->next) {
      std::string text = range(seg->text);
      text.push_back('\0');
      const char* end = uriUnescapeInPlaceA(text.data());
      u.path.emplace_back(static_cast<const char*>(text.data()), end);
    }
    for (const auto& rule : kSchemes) {
      if (u.scheme != rule.scheme) continue;
      if (u.has_fragment)
        return quoted(shown) + " has a fragment (" + quoted("#" + range(parsed.fragment)) +
               "): remove it, as in " + rule.form;
      return rule.check(u, rule);
    }
    return "unsupported scheme " + quoted(u.scheme) + " in " + quoted(shown) + ": use " + forms;
  } catch (const std::exception& e) {
    return std::string("cannot check the URI: ") + e.what();
  }
}

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

std::string quote(std::string_view text) {
  return quoted(text);
}

const char* errno_text(int err) {
  const char* d = strerrordesc_np(err);
  return d ? d : "unknown error";
}

LoadResult load_file(const std::string& filename) {
  try {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(filename.c_str(), "rb"), std::fclose);
    if (!f) return error_result(filename + ": cannot read: " + errno_text(errno));
    // Read up to a buffer past the limit, whatever the file is (a pipe,
    // /dev/zero): load_string refuses the text when it is longer.
    std::string text;
    char buf[8192];
    std::size_t n;
    while (text.size() <= kMaxFileBytes && (n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
      text.append(buf, n);
    if (std::ferror(f.get())) return error_result(filename + ": cannot read: " + errno_text(errno));
    return load_string(text, filename);
  } catch (const std::exception& e) {
    return error_result(filename + ": cannot read: " + e.what());
  } catch (...) {
    return error_result(filename + ": cannot read");
  }
}

LoadResult from_quick_args(const QuickArgs& args) {
  const std::string prefix = "command line: ";
  try {
    static const std::vector<std::string> kKeys = {"path",    "config",          "selector",
                                                   "timeout", "request-timeout", "connect-timeout",
                                                   "no-path", "retries",         "shared-cache"};
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
