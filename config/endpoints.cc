// Values of control: and metrics:: Unix socket paths, permission bits, groups, listen addresses.
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uriparser/Uri.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_internal.h"

namespace mp::config::detail {

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

}  // namespace mp::config::detail
