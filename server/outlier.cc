// Latency outlier detection: the rules of outlier.h, in code.
#include "server/outlier.h"

#include <fmt/format.h>

#include <algorithm>

namespace mp {

namespace {

std::string ms_text(double us) {
  return us < 10000 ? fmt::format("{:.2f} ms", us / 1000) : fmt::format("{:.1f} ms", us / 1000);
}

std::string size_text(std::uint32_t bytes) {
  return bytes >= (1u << 20) ? fmt::format("{} MiB", bytes >> 20)
                             : fmt::format("{} KiB", bytes >> 10);
}

// "of up to 16 KiB", "of over 4 MiB": the requests a comparison was made in.
std::string class_text(unsigned c) {
  using D = OutlierDetector;
  return c + 1 < D::kClasses ? "of up to " + size_text(D::class_bytes(c))
                             : "of over " + size_text(D::class_bytes(c - 1));
}

}  // namespace

unsigned OutlierDetector::size_class(std::uint32_t bytes) {
  unsigned c = 0;
  while (c + 1 < kClasses && bytes > class_bytes(c)) c++;
  return c;
}

void OutlierDetector::record(PathId id, Clock::time_point now, std::chrono::nanoseconds latency,
                             std::uint32_t bytes) {
  PathData& d = data(id);
  // At least 1 µs, so a median is never 0 (0 means "too few samples").
  const double us = std::chrono::duration<double, std::micro>(latency).count();
  d.samples.push_back(Sample{now, std::max(us, 1.0), static_cast<std::uint8_t>(size_class(bytes))});
  if (d.samples.size() > kMaxSamples) d.samples.pop_front();
}

void OutlierDetector::prune(PathData& d, Clock::time_point now) const {
  while (!d.samples.empty() && now - d.samples.front().at > cfg_.window) d.samples.pop_front();
}

OutlierDetector::Counts OutlierDetector::counts(PathData& d, Clock::time_point now,
                                                Clock::time_point since) {
  prune(d, now);
  Counts n{};
  for (const Sample& s : d.samples)
    if (s.at >= since) n[s.cls]++;
  return n;
}

double OutlierDetector::median(PathData& d, Clock::time_point now, unsigned cls,
                               Clock::time_point since) {
  prune(d, now);
  scratch_.clear();
  for (const Sample& s : d.samples)
    if (s.at >= since && s.cls == cls) scratch_.push_back(s.us);
  if (scratch_.empty() || scratch_.size() < cfg_.min_samples) return 0;
  auto mid = scratch_.begin() + static_cast<std::ptrdiff_t>(scratch_.size() / 2);
  std::nth_element(scratch_.begin(), mid, scratch_.end());
  return *mid;
}

double OutlierDetector::peers(PathId self, Clock::time_point now, const std::vector<Member>& group,
                              unsigned cls) {
  std::vector<double> meds;
  for (const Member& m : group) {
    if (m.id == self || !m.active) continue;
    if (m.id >= paths_.size()) continue;
    const double med = median(paths_[m.id], now, cls);
    if (med > 0) meds.push_back(med);
  }
  if (meds.empty()) return 0;
  auto mid = meds.begin() + static_cast<std::ptrdiff_t>(meds.size() / 2);
  std::nth_element(meds.begin(), mid, meds.end());
  return *mid;
}

bool OutlierDetector::compare(PathId self, Clock::time_point now, const std::vector<Member>& group,
                              Clock::time_point since, bool need_ref, Comparison* out) {
  const Counts n = counts(data(self), now, since);
  std::array<unsigned, kClasses> order{};
  for (unsigned c = 0; c < kClasses; c++) order[c] = c;
  std::stable_sort(order.begin(), order.end(), [&](unsigned a, unsigned b) { return n[a] > n[b]; });
  bool found = false;
  for (unsigned c : order) {
    if (n[c] == 0 || n[c] < cfg_.min_samples) break;
    const double ref = peers(self, now, group, c);
    if (ref > 0 || (!need_ref && !found)) {
      *out = Comparison{c, median(data(self), now, c, since), ref, n[c]};
      found = true;
    }
    if (ref > 0) return true;
  }
  return found;
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
      Comparison cmp;
      if (!compare(m.id, now, group, d.marginal_since, false, &cmp))
        continue;  // too few probes yet
      const double mine = cmp.mine, ref = cmp.ref;
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
    Comparison cmp;
    if (!compare(m.id, now, group, {}, true, &cmp)) continue;
    const double mine = cmp.mine, ref = cmp.ref;
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
        fmt::format("latency outlier: median {} over {} replies {} in {:g} s "
                    "vs peers' {} "
                    "({:.1f}x, more than {:g}x); out for at least {:g} s",
                    ms_text(mine), cmp.samples, class_text(cmp.cls),
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

// The class the other active paths carry most of now, among those where at
// least one of them has min-samples replies; kClasses when there is none.
unsigned OutlierDetector::peer_class(PathId self, Clock::time_point now,
                                     const std::vector<Member>& group) {
  Counts total{};
  for (const Member& m : group) {
    if (m.id == self || !m.active || m.id >= paths_.size()) continue;
    const Counts n = counts(paths_[m.id], now);
    for (unsigned c = 0; c < kClasses; c++) total[c] += n[c];
  }
  unsigned best = kClasses;
  for (unsigned c = 0; c < kClasses; c++)
    if (total[c] > 0 && (best == kClasses || total[c] > total[best]) &&
        peers(self, now, group, c) > 0)
      best = c;
  return best;
}

bool OutlierDetector::wants_probe(PathId id, Clock::time_point now,
                                  const std::vector<Member>& group) {
  if (!cfg_.enabled) return false;
  const unsigned c = peer_class(id, now, group);
  return c < kClasses && counts(data(id), now)[c] < cfg_.min_samples;
}

std::uint32_t OutlierDetector::probe_bytes(PathId id, Clock::time_point now,
                                           const std::vector<Member>& group) {
  const unsigned c = peer_class(id, now, group);
  return c < kClasses ? class_bytes(c) : 0;
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
