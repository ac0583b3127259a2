// A load-time check of the nbdkit that loaded the plugin.
#pragma once

namespace mp::plugin {

// Logs one error line when this nbdkit is one that aborts on a client hanging
// up mid-flight; the disk starts anyway.
void check_nbdkit() noexcept;

}  // namespace mp::plugin
