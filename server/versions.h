// The versions the disk runs on: this project's, and the libraries'
// (nbdkit --dump-plugin prints them, as nbdkit's nbd plugin prints libnbd's).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace mp {

// This project's version (CMake's PROJECT_VERSION).
const char* version();
// The nbdkit this was built against (its headers' version; nbdkit gives a
// plugin no call to ask the running one).
const char* nbdkit_build_version();
// key=value pairs, in a fixed order: libnbd_version (at run time),
// libiscsi_version and yaml_cpp_version (built against).
std::vector<std::pair<std::string, std::string>> library_versions();

}  // namespace mp
