// Abandoned-write tracking and shadow ranges (see stale_writes.h).
#include "server/stale_writes.h"

#include <algorithm>
#include <cstring>

namespace mp {

namespace {

// Copies the overlap of [src_off, src_off+src_len) from src into dst, which
// starts at dst_off and is dst_len long. src nullptr means zeros.
void copy_overlap(std::byte* dst, std::uint64_t dst_off, std::uint64_t dst_len,
                  const std::byte* src, std::uint64_t src_off, std::uint64_t src_len) {
  std::uint64_t lo = std::max(dst_off, src_off);
  std::uint64_t hi = std::min(dst_off + dst_len, src_off + src_len);
  if (lo >= hi) return;
  if (src)
    std::memcpy(dst + (lo - dst_off), src + (lo - src_off), hi - lo);
  else
    std::memset(dst + (lo - dst_off), 0, hi - lo);
}

}  // namespace

std::uint64_t StaleWriteTracker::add(PathId path, std::uint64_t tag, std::uint64_t offset,
                                     std::uint32_t len, const std::byte* data,
                                     Clock::time_point now) {
  Write w{next_id_++, path, tag, offset, len, now, false};
  counters_.abandoned++;
  std::uint64_t end = offset + len;

  // The merged shadow covers this range and every shadow it touches.
  auto first = shadows_.upper_bound(offset);
  if (first != shadows_.begin()) {
    auto prev = std::prev(first);
    if (prev->first + prev->second.data.size() > offset) first = prev;
  }
  auto last = first;
  std::uint64_t lo = offset, hi = end, merged_bytes = 0;
  for (; last != shadows_.end() && last->first < end; ++last) {
    lo = std::min(lo, last->first);
    hi = std::max(hi, last->first + last->second.data.size());
    merged_bytes += last->second.data.size();
  }

  if (shadow_bytes_ - merged_bytes + (hi - lo) <= max_bytes_) {
    // W's data where no shadow was; existing shadows hold newer acknowledged
    // data and keep it.
    Shadow s;
    s.data.resize(hi - lo);
    copy_overlap(s.data.data(), lo, hi - lo, data, offset, len);
    for (auto it = first; it != last; ++it)
      copy_overlap(s.data.data(), lo, hi - lo, it->second.data.data(), it->first,
                   it->second.data.size());
    s.gen = next_gen_++;
    for (auto it = first; it != last; ++it) s.writing_back |= it->second.writing_back;
    shadows_.erase(first, last);
    shadows_.emplace(lo, std::move(s));
    shadow_bytes_ = shadow_bytes_ - merged_bytes + (hi - lo);
    w.shadowed = true;
  } else {
    counters_.unshadowed++;
  }
  writes_.push_back(w);
  return w.id;
}

void StaleWriteTracker::resolve(std::uint64_t id, bool late) {
  auto it =
      std::find_if(writes_.begin(), writes_.end(), [&](const Write& w) { return w.id == id; });
  if (it == writes_.end()) return;
  writes_.erase(it);
  (late ? counters_.resolved_late : counters_.resolved_by_death)++;
}

void StaleWriteTracker::on_acked_write(std::uint64_t offset, std::uint32_t len,
                                       const std::byte* data) {
  if (shadows_.empty()) return;
  std::uint64_t end = offset + len;
  auto it = shadows_.upper_bound(offset);
  if (it != shadows_.begin()) --it;
  for (; it != shadows_.end() && it->first < end; ++it) {
    Shadow& s = it->second;
    if (it->first + s.data.size() <= offset) continue;
    copy_overlap(s.data.data(), it->first, s.data.size(), data, offset, len);
    s.gen = next_gen_++;
  }
}

void StaleWriteTracker::overlay(std::uint64_t offset, std::uint32_t len, std::byte* buf) const {
  if (shadows_.empty()) return;
  std::uint64_t end = offset + len;
  auto it = shadows_.upper_bound(offset);
  if (it != shadows_.begin()) --it;
  for (; it != shadows_.end() && it->first < end; ++it)
    copy_overlap(buf, offset, len, it->second.data.data(), it->first, it->second.data.size());
}

bool StaleWriteTracker::must_hold(std::uint64_t offset, std::uint32_t len,
                                  std::uint64_t tag) const {
  for (const Write& w : writes_)
    if (!w.shadowed && w.tag != tag && w.offset < offset + len && offset < w.offset + w.len)
      return true;
  return false;
}

bool StaleWriteTracker::pending_on(PathId path) const {
  return std::any_of(writes_.begin(), writes_.end(),
                     [&](const Write& w) { return w.path == path; });
}

bool StaleWriteTracker::oldest(Clock::time_point* since) const {
  if (writes_.empty()) return false;
  *since = std::min_element(writes_.begin(), writes_.end(), [](const Write& a, const Write& b) {
             return a.since < b.since;
           })->since;
  return true;
}

bool StaleWriteTracker::overlaps_unresolved(std::uint64_t offset, std::uint64_t end) const {
  return std::any_of(writes_.begin(), writes_.end(),
                     [&](const Write& w) { return w.offset < end && offset < w.offset + w.len; });
}

std::vector<StaleWriteTracker::Reapply> StaleWriteTracker::take_ready() {
  std::vector<Reapply> jobs;
  for (auto& [offset, s] : shadows_) {
    if (s.writing_back || overlaps_unresolved(offset, offset + s.data.size())) continue;
    s.writing_back = true;
    jobs.push_back(Reapply{offset, s.data, s.gen});
  }
  return jobs;
}

// The shadow holding `offset`: the job's own, or the one it was merged into.
std::map<std::uint64_t, StaleWriteTracker::Shadow>::iterator StaleWriteTracker::containing(
    std::uint64_t offset) {
  auto it = shadows_.upper_bound(offset);
  if (it == shadows_.begin()) return shadows_.end();
  --it;
  return it->first + it->second.data.size() > offset ? it : shadows_.end();
}

void StaleWriteTracker::reapplied(const Reapply& job, bool ok) {
  auto it = containing(job.offset);
  if (it == shadows_.end()) return;
  Shadow& s = it->second;
  s.writing_back = false;  // take_ready offers it again unless dropped below
  if (!ok) return;
  counters_.reapplied++;
  // Drop it only if nothing changed since the copy was taken and no abandoned
  // write has appeared over it since.
  if (it->first == job.offset && s.gen == job.gen && s.data.size() == job.data.size() &&
      !overlaps_unresolved(job.offset, job.offset + s.data.size())) {
    shadow_bytes_ -= s.data.size();
    shadows_.erase(it);
  }
}

}  // namespace mp
