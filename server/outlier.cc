// Latency outlier detection: the rules of outlier.h, in code.
#include "server/outlier.h"

#include <fmt/format.h>

#include <algorithm>

namespace mp {

namespace {

std::string ms_text(double us) {
  return us < 10000 ? fmt::format("{:.2f} ms", us / 1000) : fmt::format("{:.1f} ms", us / 1000);
}

}  // namespace

void OutlierDetector::record(PathId id, Clock::time_point now, std::chrono::nanoseconds latency) {
  PathData& d = data(id);
  // At least 1 µs, so a median is never 0 (0 means "too few samples").
  const double us = std::chrono::duration<double, std::micro>(latency).count();
  d.samples.push_back(Sample{now, std::max(us, 1.0)});
  if (d.samples.size() > kMaxSamples) d.samples.pop_front();
}

void OutlierDetector::prune(PathData& d, Clock::time_point now) const {
  while (!d.samples.empty() && now - d.samples.front().at > cfg_.window) d.samples.pop_front();
}

double OutlierDetector::median(PathData& d, Clock::time_point now, Clock::time_point since) {
  prune(d, now);
  scratch_.clear();
  for (const Sample& s : d.samples)
    if (s.at >= since) scratch_.push_back(s.us);
  if (scratch_.empty() || scratch_.size() < cfg_.min_samples) return 0;
  auto mid = scratch_.begin() + static_cast<std::ptrdiff_t>(scratch_.size() / 2);
  std::nth_element(scratch_.begin(), mid, scratch_.end());
  return *mid;
}

double OutlierDetector::peers(PathId self, Clock::time_point now,
                              const std::vector<Member>& group) {
  std::vector<double> meds;
  for (const Member& m : group) {
    if (m.id == self || !m.active) continue;
    if (m.id >= paths_.size()) continue;
    const double med = median(paths_[m.id], now);
    if (med > 0) meds.push_back(med);
  }
  if (meds.empty()) return 0;
  auto mid = meds.begin() + static_cast<std::ptrdiff_t>(meds.size() / 2);
  std::nth_element(meds.begin(), mid, meds.end());
  return *mid;
}

Clock::duration OutlierDetector::ejection_time(const PathData& d) const {
  const auto t = cfg_.base_ejection * std::max(1u, d.count);
  return std::min<Clock::duration>(t, cfg_.max_ejection);
}

std::vector<OutlierDetector::Decision> OutlierDetector::evaluate(Clock::time_point now,
                                                                 const std::vector<Member>& group) {
  std::vector<Decision> out;
  if (!cfg_.enabled) return out;
  unsigned active = 0, marginal = 0;
  for (const Member& m : group) {
    active += m.active;
    marginal += m.marginal;
  }
  const unsigned members = active + marginal;

  for (const Member& m : group) {
    PathData& d = data(m.id);
    if (m.marginal) {
      if (now - d.marginal_since < ejection_time(d)) continue;
      const double mine = median(d, now, d.marginal_since);
      if (mine == 0) continue;  // not enough probe replies yet
      const double ref = peers(m.id, now, group);
      const double diff_us = std::chrono::duration<double, std::micro>(cfg_.min_difference).count();
      if (ref > 0 && mine > cfg_.readmit_ratio * ref && mine - ref >= diff_us) continue;
      out.push_back(Decision{
          m.id, Verdict::Readmit,
          ref > 0 ? fmt::format("latency back near its peers': probes' median {} vs peers' {} "
                                "(at most {:g}x)",
                                ms_text(mine), ms_text(ref), cfg_.readmit_ratio)
                  : fmt::format("no peer has enough replies to compare with; probes' median {}",
                                ms_text(mine))});
      continue;
    }
    if (!m.active) continue;
    if (d.count > 0 && now - d.active_since >= cfg_.max_ejection) d.count = 0;
    const double mine = median(d, now);
    if (mine == 0) continue;
    const double ref = peers(m.id, now, group);
    if (ref == 0) continue;
    const double diff_us = std::chrono::duration<double, std::micro>(cfg_.min_difference).count();
    if (!(mine > cfg_.ratio * ref && mine - ref >= diff_us)) continue;
    // The last active path is never made marginal, nor more than max-share.
    if (active <= 1) continue;
    if ((marginal + 1) * 100 > cfg_.max_share * members) continue;
    active--;
    marginal++;
    prune(d, now);
    const auto out_for =
        std::min<Clock::duration>(cfg_.base_ejection * (d.count + 1), cfg_.max_ejection);
    out.push_back(Decision{
        m.id, Verdict::MakeMarginal,
        fmt::format("latency outlier: median {} over {} replies in {:g} s vs peers' {} "
                    "({:.1f}x, more than {:g}x); out for at least {:g} s",
                    ms_text(mine), d.samples.size(),
                    std::chrono::duration<double>(cfg_.window).count(), ms_text(ref), mine / ref,
                    cfg_.ratio, std::chrono::duration<double>(out_for).count())});
  }
  return out;
}

void OutlierDetector::made_marginal(PathId id, Clock::time_point now) {
  PathData& d = data(id);
  d.ejections++;
  d.count++;
  d.marginal_since = now;
  d.samples.clear();  // re-admission looks at probe replies only
}

void OutlierDetector::readmitted(PathId id, Clock::time_point now, bool by_operator) {
  PathData& d = data(id);
  d.active_since = now;
  if (by_operator) d.count = 0;
  d.samples.clear();  // judged afresh under load
}

bool OutlierDetector::wants_probe(PathId id, Clock::time_point now,
                                  const std::vector<Member>& group) {
  if (!cfg_.enabled) return false;
  PathData& d = data(id);
  prune(d, now);
  if (d.samples.size() >= cfg_.min_samples) return false;
  return peers(id, now, group) > 0;
}

OutlierDetector::Stats OutlierDetector::stats(PathId id, Clock::time_point now) {
  Stats st;
  if (id >= paths_.size()) return st;
  PathData& d = paths_[id];
  st.ejections = d.ejections;
  st.count = d.count;
  prune(d, now);
  st.samples = d.samples.size();
  scratch_.clear();
  for (const Sample& s : d.samples) scratch_.push_back(s.us);
  if (!scratch_.empty()) {
    auto mid = scratch_.begin() + static_cast<std::ptrdiff_t>(scratch_.size() / 2);
    std::nth_element(scratch_.begin(), mid, scratch_.end());
    st.median_us = *mid;
  }
  return st;
}

}  // namespace mp
