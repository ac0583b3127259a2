// The English text of an errno value (see errno_text.h).
#include "server/errno_text.h"

#include <asio/error.hpp>
#include <cstring>

namespace mp {

const char* errno_text(int err) {
  const char* d = strerrordesc_np(err);
  return d ? d : "unknown error";
}

std::string error_text(const std::error_code& ec) {
  if (ec.category() == std::system_category() || ec.category() == asio::system_category())
    return errno_text(ec.value());
  return ec.message();
}

}  // namespace mp
