// The English text of an errno value, for server/'s messages (connections, sockets, files).
#pragma once

#include <string>
#include <system_error>

namespace mp {

// Unlike strerror it takes no locale lock (glibc's strerror goes through
// gettext, which deadlocked nbdkit's exit under AddressSanitizer), and it is
// thread-safe: strerrordesc_np. "unknown error" for a value it does not know.
const char* errno_text(int err);

// An error code's text: errno_text for the system's and Asio's system
// category (Asio's is not std::system_category()), its message otherwise.
std::string error_text(const std::error_code& ec);

}  // namespace mp
