// See nbdkit_check.h.
#define NBDKIT_API_VERSION 2
#include "plugin/nbdkit_check.h"

#include <dlfcn.h>
#include <nbdkit-plugin.h>

namespace mp::plugin {

// nbdkit 1.32.4 to 1.33.9 abort when a client hangs up with requests in
// flight (connections.c raw_send_socket: Assertion 'sock >= 0'), taking every
// client's disk down; fixed in 1.33.10. nbdkit_disconnect is new in 1.34, the
// first stable release with the fix, so its absence marks an nbdkit that
// cannot be trusted with abrupt clients.
void check_nbdkit() noexcept {
  if (dlsym(RTLD_DEFAULT, "nbdkit_disconnect")) return;
  nbdkit_error(
      "this nbdkit is older than 1.34 and aborts when a client disconnects with requests in "
      "flight, taking the disk down for every client: install nbdkit 1.34 or later (on Debian "
      "bookworm, the fixed build from scripts/build-nbdkit.sh)");
}

}  // namespace mp::plugin
