// nbdkit-multipath-plugin: the nbdkit C ABI. Thin noexcept callbacks that
// parse keys, hand requests to the engine and turn its result into an errno.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "config/config.h"
#include "server/control.h"
#include "server/engine.h"
#include "server/fd_limits.h"
#include "server/iscsi_path.h"
#include "server/loop.h"
#include "server/metrics.h"
#include "server/nbd_path.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

// Debug flags: -D multipath.verbose=1 logs every path event and abandoned
// write; -D multipath.unsafe_retry=1 turns stale-write tracking off (a plain
// retry-elsewhere design), only to show in tests what goes wrong without it.
extern "C" {
NBDKIT_DLL_PUBLIC int multipath_debug_verbose = 0;
NBDKIT_DLL_PUBLIC int multipath_debug_unsafe_retry = 0;
}

namespace {

using mp::Op;

struct State {
  std::string config_file;
  mp::config::QuickArgs quick;
  mp::config::Config cfg;
  mp::PathCaps disk;
  std::unique_ptr<mp::EventLoop> loop;
  std::unique_ptr<mp::Engine> engine;
  std::unique_ptr<mp::ControlServer> control;  // when control.socket is set
  std::unique_ptr<mp::MetricsServer> metrics;  // when metrics.socket or .listen is set
  std::thread watcher;                         // turns nbdkit's shutdown into Engine::shutdown
};
State* g;  // created in .load, freed in .unload

void log_line(mp::LogLevel level, const std::string& line) {
  if (level == mp::LogLevel::Error)
    nbdkit_error("%s", line.c_str());
  else if (multipath_debug_verbose)
    nbdkit_debug("%s", line.c_str());
}

void mp_load() noexcept {
  mp::raise_fd_limit(nbdkit_debug);  // soft RLIMIT_NOFILE up to the hard limit
  g = new (std::nothrow) State;
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
  mp::config::LoadResult r;
  if (!g->config_file.empty()) {
    if (!g->quick.paths.empty() || !g->quick.options.empty()) {
      nbdkit_error(
          "config=%s cannot be combined with path= or other parameters: put them in the "
          "YAML file",
          g->config_file.c_str());
      return -1;
    }
    r = mp::config::load_file(g->config_file);
  } else {
    r = mp::config::from_quick_args(g->quick);
  }
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
// and the disk's size and capabilities are known. The capabilities are the
// intersection of the reachable paths'. At least one path must answer, and
// all that answer must reach the same disk.
int mp_get_ready() noexcept try {
  const auto& cfg = g->cfg;
  bool any = false;
  std::string first_name, identity_from, export_from;
  mp::PathCaps& d = g->disk;
  d.identity = cfg.identity;
  if (!d.identity.empty()) identity_from = "the config's identity:";
  for (const auto& p : cfg.paths) {
    mp::PathCaps k;
    std::string err;
    bool ok = mp::config::is_iscsi(p) ? mp::iscsi_probe_caps(p, cfg.timeouts.connect, &k, &err)
                                      : mp::nbd_probe_caps(p.uri, cfg.timeouts.connect, &k, &err);
    if (!ok) {
      nbdkit_error("path %s (%s) is unreachable at start-up: %s", p.name.c_str(),
                   mp::config::redacted_uri(p.uri).c_str(), err.c_str());
      continue;
    }
    if (!k.identity.empty()) {
      if (d.identity.empty()) {
        d.identity = k.identity;
        identity_from = "path " + p.name;
      } else if (k.identity != d.identity) {
        nbdkit_error(
            "path %s reaches LU %s but %s names LU %s: every path must reach the same LU (check "
            "the target and LUN in the URI, or the identity: in the config)",
            p.name.c_str(), k.identity.c_str(), identity_from.c_str(), d.identity.c_str());
        return -1;
      }
    }
    if (k.has_export_name) {
      if (!d.has_export_name) {
        d.has_export_name = true;
        d.export_name = k.export_name;
        export_from = p.name;
      } else if (k.export_name != d.export_name) {
        nbdkit_error(
            "path %s has export name '%s' but path %s has '%s': every NBD path must name the same "
            "export",
            p.name.c_str(), k.export_name.c_str(), export_from.c_str(), d.export_name.c_str());
        return -1;
      }
    }
    if (!any) {
      // The first path's caps, with the identity merged above (maybe the
      // config's); its export name, if any, is already the disk's.
      std::string id = std::move(d.identity);
      d = k;
      d.identity = std::move(id);
      first_name = p.name;
      any = true;
      continue;
    }
    if (k.size != d.size) {
      nbdkit_error(
          "path %s has size %llu but path %s has size %llu: every path must reach the "
          "same disk",
          p.name.c_str(), static_cast<unsigned long long>(k.size), first_name.c_str(),
          static_cast<unsigned long long>(d.size));
      return -1;
    }
    d.read_only |= k.read_only;
    d.can_flush &= k.can_flush;
    d.can_fua &= k.can_fua;
    d.can_trim &= k.can_trim;
    d.can_zero &= k.can_zero;
    d.can_fast_zero &= k.can_fast_zero;
    d.can_cache &= k.can_cache;
    d.can_multi_conn &= k.can_multi_conn;
    d.is_rotational |= k.is_rotational;
    d.min_block = std::max(d.min_block, k.min_block);
    d.pref_block = std::max(d.pref_block, k.pref_block);
    d.max_request = std::min(d.max_request, k.max_request);
  }
  if (!any) {
    nbdkit_error("no path is reachable: start at least one upstream server, or fix the URIs");
    return -1;
  }
  return 0;
} catch (const std::exception& e) {
  nbdkit_error("%s", e.what());
  return -1;
}

// After the fork: the loop thread, the engine, and the shutdown watcher.
int mp_after_fork() noexcept try {
  g->loop = std::make_unique<mp::EventLoop>(log_line);
  mp::EventLoop& loop = *g->loop;
  mp::Engine::Options opts;
  opts.track_stale_writes = !multipath_debug_unsafe_retry;
  g->engine = std::make_unique<mp::Engine>(
      g->cfg, loop,
      [&loop](const mp::config::Path& p, mp::PathListener& l) -> mp::PathPtr {
        if (mp::config::is_iscsi(p))
          return std::make_unique<mp::IscsiPath>(loop.io(), p, l, g->cfg.timeouts.attempt);
        return std::make_unique<mp::NbdPath>(loop.io(), p, l);
      },
      g->disk, opts);
  mp::Engine* e = g->engine.get();
  // The servers are created before the loop runs, and run on it afterwards.
  auto server_log = [](bool error, const std::string& line) {
    log_line(error ? mp::LogLevel::Error : mp::LogLevel::Debug, line);
  };
  if (!g->cfg.control.socket.empty()) {
    g->control = std::make_unique<mp::ControlServer>(loop.io(), *e, g->cfg.control, server_log);
    if (std::string err = g->control->start(); !err.empty()) {
      nbdkit_error("%s", err.c_str());
      return -1;
    }
  }
  if (!g->cfg.metrics.socket.empty() || !g->cfg.metrics.listen.empty()) {
    g->metrics = std::make_unique<mp::MetricsServer>(loop.io(), *e, g->cfg.metrics, server_log);
    if (std::string err = g->metrics->start(); !err.empty()) {
      nbdkit_error("%s", err.c_str());
      return -1;
    }
  }
  loop.on_wake([e] { e->run_timers(); });
  loop.post([e] { e->start(); });
  loop.start();
  // nbdkit_nanosleep returns early only when nbdkit shuts down: then queued
  // and in-flight requests fail at once, so the worker threads let go.
  g->watcher = std::thread([e, &loop] {
    while (nbdkit_nanosleep(3600, 0) == 0) {
    }
    loop.post([e] { e->shutdown(); });
  });
  return 0;
} catch (const std::exception& e) {
  nbdkit_error("cannot start the event loop: %s", e.what());
  return -1;
}

void mp_cleanup() noexcept {
  if (!g->loop) return;
  if (g->watcher.joinable()) g->watcher.join();
  mp::Engine* e = g->engine.get();
  g->loop->run_sync([e] {
    if (g->control) g->control->stop();
    if (g->metrics) g->metrics->stop();
    g->control.reset();
    g->metrics.reset();
    e->shutdown();
    if (!multipath_debug_verbose) return;
    std::string sum = e->summary();
    for (std::size_t b = 0, n; b < sum.size(); b = n + 1) {
      n = sum.find('\n', b);
      if (n == std::string::npos) n = sum.size();
      nbdkit_debug("%s", sum.substr(b, n - b).c_str());
    }
  });
  // Paths close on the loop thread. The wake-up call goes first: a timer that
  // already fired may still be queued, and must find nothing to call.
  g->loop->run_sync([] {
    g->loop->on_wake(nullptr);
    g->engine.reset();
  });
  g->loop->stop();
  g->loop.reset();
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
int mp_can_fast_zero(void*) noexcept {
  return g->disk.can_zero && g->disk.can_fast_zero;
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

// Hands one request to the loop thread and blocks until it completed.
int run(Op op, void* buf, uint32_t count, uint64_t offset, uint32_t flags) noexcept {
  // iSCSI paths take whole logical blocks only (nbdkit 1.32 does not enforce
  // the advertised minimum block size).
  const uint32_t bs = g->disk.min_block;
  if (bs > 1 && op != Op::Flush && (offset % bs || count % bs)) {
    nbdkit_error(
        "%s at offset %llu, length %u is not aligned to the disk's %u-byte logical block: "
        "use a client that honours the NBD block size (or put nbdkit's blocksize filter in "
        "front)",
        mp::to_string(op), static_cast<unsigned long long>(offset), count, bs);
    nbdkit_set_error(EINVAL);
    return -1;
  }
  mp::Request r;
  r.op = op;
  r.offset = offset;
  r.count = count;
  if (flags & NBDKIT_FLAG_FUA) r.flags |= mp::kFua;
  if (flags & NBDKIT_FLAG_MAY_TRIM) r.flags |= mp::kMayTrim;
  if (flags & NBDKIT_FLAG_FAST_ZERO) r.flags |= mp::kFastZero;
  if (op == Op::Write) {
    // The attempts own a copy: nbdkit's buffer is reused once we return,
    // while an abandoned attempt may still be sending from its copy.
    r.data = std::make_shared_for_overwrite<std::byte[]>(count);
    if (!r.data) {
      nbdkit_set_error(ENOMEM);
      return -1;
    }
    std::memcpy(r.data.get(), buf, count);
  }
  mp::Engine* e = g->engine.get();
  g->loop->post([e, &r] { e->submit(r); });
  r.wait();
  if (r.err) {
    nbdkit_set_error(r.err);
    return -1;
  }
  if (op == Op::Read) std::memcpy(buf, r.data.get(), count);
  return 0;
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

const char kHelp[] =
    "config=FILE.yaml            The disk's configuration (see config/README.md).\n"
    "Or the quick form, without a file:\n"
    "[path=]URI                  A path (repeat for each): nbd://HOST[:PORT][/EXPORT],\n"
    "                            nbds://..., nbd+unix:///[EXPORT]?socket=SOCK, nbds+unix://...,\n"
    "                            iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN\n"
    "selector=round-robin|queue-length|service-time   Path selector (default service-time).\n"
    "timeout=DURATION            Per-attempt timer, e.g. 500ms, 2s (default 2s).\n"
    "request-timeout=DURATION    Overall deadline of a request (default 30s).\n"
    "connect-timeout=DURATION    Connect + handshake + probe of a path (default 5s).\n"
    "no-path=queue|fail          With no usable path: queue (default) or fail with EIO.\n"
    "retries=N                   Further attempts after the first (default 8).\n"
    "shared-cache=true|false     Paths share one cache (one file on one host): a flush on\n"
    "                            any live path covers a dead path's writes (default false).";

}  // namespace

// Designated initializers, in the header's field order; the ABI fields are
// filled in by NBDKIT_REGISTER_PLUGIN.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static struct nbdkit_plugin plugin = {
    .name = "multipath",
    .longname = "nbdkit multipath plugin",
    .version = "0.1.0",
    .description =
        "One disk served over several NBD and iSCSI paths, with per-request timers and failover",
    .load = mp_load,
    .unload = mp_unload,
    .config = mp_config,
    .config_complete = mp_config_complete,
    .config_help = kHelp,
    .open = mp_open,
    .get_size = mp_get_size,
    .can_write = mp_can_write,
    .can_flush = mp_can_flush,
    .is_rotational = mp_is_rotational,
    .can_trim = mp_can_trim,
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
