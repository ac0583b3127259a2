// Path URIs: the form each scheme takes (liburiparser parses), and the password hidden.
#include <uriparser/Uri.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config_internal.h"

namespace mp::config {
namespace detail {

std::string range(const UriTextRangeA& r) {
  if (r.first == nullptr || r.afterLast == nullptr) return {};
  return std::string(r.first, r.afterLast);
}

bool present(const UriTextRangeA& r) {
  return r.first != nullptr;
}

}  // namespace detail

using namespace detail;

namespace {

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

// Where the USER[%PASSWORD] of an iscsi:// URI ends (its '@'), or npos.
// libiscsi's USER%PASSWORD is not percent-encoding, so it is found by hand.
std::size_t iscsi_userinfo_end(const std::string& uri) {
  if (uri.rfind("iscsi://", 0) != 0) return std::string::npos;
  std::size_t at = uri.find('@', 8), slash = uri.find('/', 8);
  return slash == std::string::npos || at < slash ? at : std::string::npos;
}

}  // namespace

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

}  // namespace mp::config
