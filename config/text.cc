// Text: UTF-8 and invisible characters, quoting, suggestions, printed durations, name checks.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_internal.h"

namespace mp::config {
namespace detail {
namespace {

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

}  // namespace

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

std::string check_length(const std::string& what, std::string_view value) {
  if (value.size() <= kMaxValue) return "";
  return what + " is " + std::to_string(value.size()) + " bytes long, more than the " +
         std::to_string(kMaxValue) + " any value may have: shorten it";
}

namespace {

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

}  // namespace

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

const char* errno_text(int err) {
  const char* d = strerrordesc_np(err);
  return d ? d : "unknown error";
}

}  // namespace detail

using namespace detail;

std::string quote(std::string_view text) {
  return quoted(text);
}

}  // namespace mp::config
