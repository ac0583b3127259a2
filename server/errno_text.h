// The English text of an errno value, for server/'s messages (connections, sockets, files).
#pragma once

namespace mp {

// Unlike strerror it takes no locale lock (glibc's strerror goes through
// gettext, which deadlocked nbdkit's exit under AddressSanitizer), and it is
// thread-safe: strerrordesc_np. "unknown error" for a value it does not know.
const char* errno_text(int err);

}  // namespace mp
