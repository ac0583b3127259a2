// Stale-write shadows: the re-apply requests, and the epoch barrier before a shadow is dropped.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "server/engine.h"
#include "server/engine_internal.h"

namespace mp {

void Engine::request_finished(const Request& r) {
  for (auto& [epoch, n] : inflight_by_epoch_)
    if (epoch == r.epoch) {
      n--;
      break;
    }
  bool popped = false;
  while (!inflight_by_epoch_.empty() && inflight_by_epoch_.front().second == 0) {
    inflight_by_epoch_.pop_front();
    popped = true;
  }
  if (popped && !drops_.empty()) drop_shadows();
}

// Reports the write-backs completed before every request still in flight was
// submitted; the tracker drops their shadows unless a write changed them,
// and those are written back again.
void Engine::drop_shadows() {
  std::uint64_t oldest = inflight_by_epoch_.empty() ? epoch_ : inflight_by_epoch_.front().first;
  bool any = false;
  std::erase_if(drops_, [&](auto& d) {
    if (d.second >= oldest) return false;
    tracker_.reapplied(d.first, true);
    any = true;
    return true;
  });
  if (any) start_reapplies();
}

namespace {
struct ReapplyRequest : Request {
  Engine* engine = nullptr;
  StaleWriteTracker::Reapply job;
};
}  // namespace

void Engine::start_reapplies() {
  if (stopping_ || !opts_.track_stale_writes) return;
  for (auto& job : tracker_.take_ready()) {
    auto* rr = new ReapplyRequest;
    rr->op = Op::Write;
    rr->offset = job.offset;
    rr->count = static_cast<std::uint32_t>(job.data.size());
    rr->data = std::make_shared_for_overwrite<std::byte[]>(job.data.size());
    std::memcpy(rr->data.get(), job.data.data(), job.data.size());
    rr->internal = true;
    rr->engine = this;
    rr->job = std::move(job);
    rr->on_done = [](Request& r) { static_cast<ReapplyRequest&>(r).engine->reapply_done(r); };
    log(LogLevel::Debug, "re-applying newest data at " + std::to_string(rr->offset) + "+" +
                             std::to_string(rr->count));
    submit(*rr);
  }
}

void Engine::reapply_done(Request& r) {
  auto* rr = static_cast<ReapplyRequest*>(&r);
  if (r.err == 0) {
    drops_.emplace_back(std::move(rr->job), epoch_++);
    drop_shadows();
  } else {
    tracker_.reapplied(rr->job, false);
  }
  if (r.err)
    log(LogLevel::Error, "re-applying newest data at " + std::to_string(r.offset) +
                             " failed; will retry at the next checker interval");
  delete rr;
}

}  // namespace mp
