// nbdkit-multipath-plugin: the nbdkit C ABI. Thin noexcept callbacks that
// parse keys, hand requests to the engine and turn its result into an errno.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "config/config.h"
#include "plugin/help.h"
#include "plugin/log.h"
#include "plugin/nbdkit_check.h"
#include "plugin/notify.h"
#include "plugin/signals.h"
#include "server/alloc_tuning.h"
#include "server/disk.h"
#include "server/fd_limits.h"
#include "server/service.h"
#include "server/versions.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

// Debug flags: -D multipath.verbose=1 logs every path event and abandoned
// write. Only for tests, to show what goes wrong without the mechanism:
// -D multipath.unsafe_retry=1 turns stale-write tracking off (a plain
// retry-elsewhere design), -D multipath.unsafe_no_affinity=1 dirty-range
// affinity (requests over a range dirty in one path's cache go anywhere).
extern "C" {
NBDKIT_DLL_PUBLIC int multipath_debug_verbose = 0;
NBDKIT_DLL_PUBLIC int multipath_debug_unsafe_retry = 0;
NBDKIT_DLL_PUBLIC int multipath_debug_unsafe_no_affinity = 0;
}

namespace {

using mp::Op;

struct State {
  std::string config_file;
  mp::config::QuickArgs quick;
  mp::config::Config cfg;
  mp::PathCaps disk;
  std::unique_ptr<mp::Service> service;  // from .after_fork to .cleanup
  mp::plugin::SignalWatch signals;       // SIGHUP: reload; stop signals: Service::shutdown
};
State* g;  // created in .load, freed in .unload

void log_line(mp::LogLevel level, const std::string& line) {
  mp::plugin::log_line(level, line, multipath_debug_verbose);
}

void mp_load() noexcept {
  mp::raise_fd_limit(nbdkit_debug);  // soft RLIMIT_NOFILE up to the hard limit
  mp::tune_allocator();              // request buffers stay in the heap
  g = new (std::nothrow) State;
  mp::plugin::check_nbdkit();
}

void mp_unload() noexcept {
  delete g;
  g = nullptr;
}

int mp_config(const char* key, const char* value) noexcept try {
  std::string k = key;
  if (k == "config") {
    if (!g->config_file.empty()) {
      nbdkit_error("config= given twice: give one YAML file");
      return -1;
    }
    g->config_file = value;
  } else if (k == "path") {
    g->quick.paths.emplace_back(value);
  } else {
    g->quick.options.emplace_back(k, value);
  }
  return 0;
} catch (...) {
  nbdkit_error("out of memory");
  return -1;
}

int mp_config_complete() noexcept try {
  mp::config::LoadResult r = mp::config::load(g->config_file, g->quick);
  if (!r) {
    nbdkit_error("%s", r.error.c_str());
    return -1;
  }
  g->cfg = std::move(*r.config);
  return 0;
} catch (const std::exception& e) {
  nbdkit_error("%s", e.what());
  return -1;
}

// Before the fork: connect to every path once, so that errors reach the user
// and the disk's size and capabilities are known (server/disk.h: what every
// reachable path can do, and they must all reach the same disk).
int mp_get_ready() noexcept try {
  std::string err = mp::probe_disk(
      g->cfg, [](const std::string& line) { nbdkit_error("%s", line.c_str()); }, &g->disk);
  if (!err.empty()) {
    nbdkit_error("%s", err.c_str());
    return -1;
  }
  return 0;
} catch (const std::exception& e) {
  nbdkit_error("%s", e.what());
  return -1;
}

// After the fork: the loop thread, the engine, the endpoints, and the
// shutdown watcher.
int mp_after_fork() noexcept try {
  mp::Engine::Options opts;
  opts.track_stale_writes = !multipath_debug_unsafe_retry;
  opts.dirty_range_affinity = !multipath_debug_unsafe_no_affinity;
  mp::plugin::init_log();
  std::string err;
  g->service = mp::Service::start(g->cfg, g->disk, opts, log_line, &err);
  if (!g->service) {
    nbdkit_error("%s", err.c_str());
    return -1;
  }
  // When nbdkit is told to stop, queued and in-flight requests fail at once,
  // so the worker threads let go (plugin/signals.cc: not nbdkit_nanosleep,
  // whose wake-up on shutdown is an error line).
  mp::Service* s = g->service.get();
  err = g->signals.start([s] { s->reload(); }, [s] { s->shutdown(); });
  if (!err.empty()) {
    nbdkit_error("%s", err.c_str());
    return -1;
  }
  // nbdkit binds before .after_fork: under systemd Type=notify the disk is
  // ready now; requests wait for a path from here.
  if (!mp::plugin::sd_notify_state("READY=1\nSTATUS=serving; paths connecting"))
    nbdkit_error("cannot tell systemd the disk is ready: sending to $NOTIFY_SOCKET failed");
  return 0;
} catch (const std::exception& e) {
  nbdkit_error("cannot start the event loop: %s", e.what());
  return -1;
}

void mp_cleanup() noexcept {
  if (!g->service) return;
  g->signals.stop();
  std::string sum = g->service->stop();
  g->service.reset();
  if (!multipath_debug_verbose) return;
  for (std::size_t b = 0, n; b < sum.size(); b = n + 1) {
    n = sum.find('\n', b);
    if (n == std::string::npos) n = sum.size();
    nbdkit_debug("%s", sum.substr(b, n - b).c_str());
  }
}

// Like nbdkit's nbd plugin (libnbd_version=): what this build runs on.
void mp_dump_plugin() noexcept try {
  for (const auto& [k, v] : mp::library_versions()) std::printf("%s=%s\n", k.c_str(), v.c_str());
  std::printf("multipath_man_page=nbdkit-multipath-plugin(1)\n");
} catch (...) {
}

void* mp_open(int /*readonly*/) noexcept {
  return g;
}
int64_t mp_get_size(void*) noexcept {
  return static_cast<int64_t>(g->disk.size);
}
int mp_can_write(void*) noexcept {
  return !g->disk.read_only;
}
int mp_can_flush(void*) noexcept {
  return g->disk.can_flush;
}
int mp_is_rotational(void*) noexcept {
  return g->disk.is_rotational;
}
int mp_can_trim(void*) noexcept {
  return g->disk.can_trim;
}
// false: nbdkit emulates zero with writes, and still advertises it.
int mp_can_zero(void*) noexcept {
  return g->disk.can_zero;
}
// Always advertised: nbdkit (1.32 to at least 1.42) asserts when a client
// sends FAST_ZERO to a plugin that did not advertise it. When the paths cannot
// zero fast, Service::io fails such requests at once with ENOTSUP, as the protocol
// allows; without can_zero nbdkit fails them itself.
int mp_can_fast_zero(void*) noexcept {
  return 1;
}
int mp_can_fua(void*) noexcept {
  return g->disk.can_fua     ? NBDKIT_FUA_NATIVE
         : g->disk.can_flush ? NBDKIT_FUA_EMULATE
                             : NBDKIT_FUA_NONE;
}
int mp_can_cache(void*) noexcept {
  return g->disk.can_cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
}
// Every client connection shares the same paths, and a flush covers writes
// from all of them (the engine tracks dirty paths globally).
int mp_can_multi_conn(void*) noexcept {
  return 1;
}

int mp_block_size(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) noexcept {
  *minimum = g->disk.min_block;
  *preferred = std::max(g->disk.pref_block, g->disk.min_block);
  *maximum = 0xffffffff;  // larger requests are split per path
  return 0;
}

// One client request to the engine, its errno to nbdkit.
int run(Op op, void* buf, uint32_t count, uint64_t offset, uint32_t flags) noexcept try {
  uint32_t f = 0;
  if (flags & NBDKIT_FLAG_FUA) f |= mp::kFua;
  if (flags & NBDKIT_FLAG_MAY_TRIM) f |= mp::kMayTrim;
  if (flags & NBDKIT_FLAG_FAST_ZERO) f |= mp::kFastZero;
  if (int err = g->service->io(op, static_cast<std::byte*>(buf), count, offset, f)) {
    nbdkit_set_error(err);
    return -1;
  }
  return 0;
} catch (...) {
  nbdkit_set_error(ENOMEM);
  return -1;
}

int mp_pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  return run(Op::Read, buf, count, offset, flags);
}
int mp_pwrite(void*, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  return run(Op::Write, const_cast<void*>(buf), count, offset, flags);
}
int mp_flush(void*, uint32_t flags) noexcept {
  return run(Op::Flush, nullptr, 0, 0, flags);
}
int mp_trim(void*, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  return run(Op::Trim, nullptr, count, offset, flags);
}
int mp_zero(void*, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  return run(Op::Zero, nullptr, count, offset, flags);
}
int mp_cache(void*, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  return run(Op::Cache, nullptr, count, offset, flags);
}

}  // namespace

// Designated initializers, in the header's field order; the ABI fields are
// filled in by NBDKIT_REGISTER_PLUGIN.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static struct nbdkit_plugin plugin = {
    .name = "multipath",
    .longname = "nbdkit multipath plugin",
    .version = MP_PLUGIN_VERSION,
    .description =
        "One disk served over several NBD and iSCSI paths, with per-request timers and failover",
    .load = mp_load,
    .unload = mp_unload,
    .config = mp_config,
    .config_complete = mp_config_complete,
    .config_help = mp::plugin::kHelp,
    .open = mp_open,
    .get_size = mp_get_size,
    .can_write = mp_can_write,
    .can_flush = mp_can_flush,
    .is_rotational = mp_is_rotational,
    .can_trim = mp_can_trim,
    .dump_plugin = mp_dump_plugin,
    .can_zero = mp_can_zero,
    .can_fua = mp_can_fua,
    .pread = mp_pread,
    .pwrite = mp_pwrite,
    .flush = mp_flush,
    .trim = mp_trim,
    .zero = mp_zero,
    .magic_config_key = "path",
    .can_multi_conn = mp_can_multi_conn,
    .can_cache = mp_can_cache,
    .cache = mp_cache,
    .can_fast_zero = mp_can_fast_zero,
    .get_ready = mp_get_ready,
    .after_fork = mp_after_fork,
    .cleanup = mp_cleanup,
    .block_size = mp_block_size,
};

NBDKIT_REGISTER_PLUGIN(plugin)
