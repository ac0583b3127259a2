// The text `nbdkit multipath --help` prints after nbdkit's own: the
// configuration file, and the quick form's keys with their defaults.
// MP_DOCDIR comes from the build (CMakeLists.txt).
#pragma once

namespace mp::plugin {

inline constexpr char kHelp[] =
    "config=FILE.yaml            The disk's configuration (man nbdkit-multipath-plugin;\n"
    "                            its schema: " MP_DOCDIR
    "/CONFIGURATION.md).\n"
    "Or the quick form, without a file:\n"
    "[path=]URI                  A path (repeat for each): nbd://HOST[:PORT][/EXPORT],\n"
    "                            nbds://..., nbd+unix:///[EXPORT]?socket=SOCK, nbds+unix://...,\n"
    "                            iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN\n"
    "selector=round-robin|queue-length|service-time|latency   Path selector (default "
    "latency).\n"
    "timeout=DURATION            Per-attempt timer, e.g. 500ms, 2s (default 2s).\n"
    "request-timeout=DURATION    Overall deadline of a request (default 30s).\n"
    "connect-timeout=DURATION    Connect + handshake + probe of a path (default 5s).\n"
    "no-path=queue|fail          With no usable path: queue (default) or fail with EIO.\n"
    "retries=N                   Further attempts after the first (default 8).\n"
    "shared-cache=true|false     Paths share one cache (one file on one host): a flush on\n"
    "                            any live path covers a dead path's writes (default false).\n"
    "outlier=true|false          Latency outlier detection: a much slower path becomes\n"
    "                            marginal (default true).\n"
    "hedge=true|false            Hedged reads: a slow read is also sent to another path,\n"
    "                            at most 5% of reads (default true).";

}  // namespace mp::plugin
