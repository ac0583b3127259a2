// Versions for --dump-plugin (see versions.h). libnbd reports its own at run
// time; libiscsi and yaml-cpp have no such call, so the build records the
// versions pkg-config and CMake found.
#include "server/versions.h"

#include <libnbd.h>

namespace mp {

const char* version() {
  return MP_VERSION;
}

const char* nbdkit_build_version() {
  return MP_NBDKIT_VERSION;
}

std::vector<std::pair<std::string, std::string>> library_versions() {
  std::string nbd = "unknown";
  if (nbd_handle* h = nbd_create()) {
    if (const char* v = nbd_get_version(h)) nbd = v;
    nbd_close(h);
  }
  return {{"libnbd_version", nbd},
          {"libiscsi_version", MP_LIBISCSI_VERSION},
          {"yaml_cpp_version", MP_YAML_CPP_VERSION}};
}

}  // namespace mp
