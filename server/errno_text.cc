// The English text of an errno value (see errno_text.h).
#include "server/errno_text.h"

#include <cstring>

namespace mp {

const char* errno_text(int err) {
  const char* d = strerrordesc_np(err);
  return d ? d : "unknown error";
}

}  // namespace mp
