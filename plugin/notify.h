// systemd's readiness protocol (sd_notify(3)) without libsystemd.
#pragma once

#include <string>

namespace mp::plugin {

// Sends `state` ("READY=1\nSTATUS=...") to $NOTIFY_SOCKET when systemd set
// it (Type=notify); does nothing otherwise. Returns false when the socket
// was set but the message could not be sent.
bool sd_notify_state(const std::string& state);

}  // namespace mp::plugin
