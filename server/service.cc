// One running disk: loop, engine and endpoints, started and stopped in order
// (see service.h).
#include "server/service.h"

#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>

#include "server/path_factory.h"
#include "server/reply_lease.h"
#include "server/wake_fd.h"

namespace mp {

Service::Service(const config::Config& cfg, const PathCaps& disk, EventLoop::Logger log)
    : cfg_(cfg), disk_(disk), log_(log), loop_(std::make_unique<EventLoop>(std::move(log))) {}

std::unique_ptr<Service> Service::start(const config::Config& cfg, const PathCaps& disk,
                                        Engine::Options opts, EventLoop::Logger log,
                                        std::string* err) {
  std::unique_ptr<Service> s(new Service(cfg, disk, log));
  EventLoop& loop = *s->loop_;
  s->reader_ = std::make_unique<ConfigReader>(loop);
  opts.read_config = [r = s->reader_.get()](const std::string& file,
                                            std::function<void(config::LoadResult)> done) {
    r->read(file, std::move(done));
  };
  s->engine_ = std::make_unique<Engine>(
      cfg, loop,
      [&loop, &cfg](const config::Path& p, PathListener& l) {
        return make_path(loop.io(), p, l, cfg.timeouts.attempt);
      },
      disk, opts);
  Engine* e = s->engine_.get();
  // The endpoints are created before the loop runs, and run on it afterwards.
  auto endpoint_log = [log](bool error, const std::string& line) {
    log(error ? LogLevel::Error : LogLevel::Debug, line);
  };
  if (!cfg.control.socket.empty()) {
    s->control_ = std::make_unique<ControlServer>(loop.io(), *e, cfg.control, endpoint_log);
    if (*err = s->control_->start(); !err->empty()) return nullptr;
  }
  if (!cfg.metrics.socket.empty() || !cfg.metrics.listen.empty()) {
    s->metrics_ = std::make_unique<MetricsServer>(loop.io(), *e, cfg.metrics, endpoint_log);
    if (*err = s->metrics_->start(); !err->empty()) return nullptr;
  }
  loop.on_wake([e] { e->run_timers(); });
  loop.post([e] { e->start(); });
  loop.start();
  s->started_ = true;
  return s;
}

Service::~Service() {
  stop();
}

int Service::io(Op op, std::byte* buf, std::uint32_t count, std::uint64_t offset,
                std::uint32_t flags) {
  // iSCSI paths take whole logical blocks only (nbdkit does not enforce the
  // advertised minimum block size).
  const std::uint32_t bs = disk_.min_block;
  if (bs > 1 && op != Op::Flush && (offset % bs || count % bs)) {
    log_(LogLevel::Error,
         std::string(to_string(op)) + " at offset " + std::to_string(offset) + ", length " +
             std::to_string(count) + " is not aligned to the disk's " + std::to_string(bs) +
             "-byte logical block: use a client that honours the NBD block size (or put "
             "nbdkit's blocksize filter in front)");
    return EINVAL;
  }
  // The disk always advertises fast zero (see plugin/multipath.cc); when its
  // paths cannot do it, the answer is ENOTSUP, at once.
  if (op == Op::Zero && (flags & kFastZero) && !disk_.can_fast_zero) return ENOTSUP;
  Request r;
  r.op = op;
  r.offset = offset;
  r.count = count;
  r.flags = flags;
  if (op == Op::Write) {
    try {
      r.data = std::make_shared_for_overwrite<std::byte[]>(count);
    } catch (const std::bad_alloc&) {
      return ENOMEM;
    }
    std::memcpy(r.data.get(), buf, count);
  }
  // While the loop thread is idle (blocked in the reactor), this thread
  // submits the request itself: the upstream send happens here and the loop
  // is not woken for it. Otherwise the loop does it, as soon as it is free.
  // (README.md, "Threads and the loop lock".)
  // It then also reads the reply itself when it could (server/reply_lease.h).
  Engine* e = engine_.get();
  if (std::unique_lock<std::mutex> lock(loop_->mutex(), std::try_to_lock); lock.owns_lock()) {
    std::shared_ptr<ReplyLease> lease;
    {
      std::optional<ReplyLease::Offer> offer;  // none without a wake descriptor
      if (thread_wake_fd() >= 0) offer.emplace();
      e->submit(r);
      if (offer) lease = offer->take();
    }
    if (lease)
      r.wait_reading(std::move(lease), lock);
    else
      lock.unlock();
  } else {
    loop_->post([e, &r] { e->submit(r); });
  }
  r.wait();
  if (!r.err && op == Op::Read) std::memcpy(buf, r.data.get(), count);
  return r.err;
}

void Service::shutdown() {
  Engine* e = engine_.get();
  loop_->post([e] { e->shutdown(); });
}

void Service::reload() {
  Engine* e = engine_.get();
  loop_->post([e, log = log_] {
    e->reload(false, [log](const std::string& err, const std::string&) {
      if (!err.empty()) log(LogLevel::Error, "reload on SIGHUP: " + err);
    });
  });
}

std::string Service::stop() {
  if (!engine_) return "";
  if (!started_) {
    // start() failed before the loop thread ran: nothing is connected, and
    // this thread may take everything down itself.
    control_.reset();
    metrics_.reset();
    engine_.reset();
    return "";
  }
  // No reload answer may reach the engine from here on.
  reader_->stop();
  std::string summary;
  Engine* e = engine_.get();
  loop_->run_sync([this, e, &summary] {
    if (control_) control_->stop();
    if (metrics_) metrics_->stop();
    control_.reset();
    metrics_.reset();
    e->shutdown();
    summary = e->summary();
  });
  // Paths close on the loop thread. The wake-up call goes first: a timer that
  // already fired may still be queued, and must find nothing to call.
  loop_->run_sync([this] {
    loop_->on_wake(nullptr);
    engine_.reset();
  });
  loop_->stop();
  return summary;
}

}  // namespace mp
