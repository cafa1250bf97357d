// The thread-local state behind ops.h's Bf16Autocast scope and the op profiler
// (GYRE_OP_PROFILE=1): detail::OpScope brackets the outermost op of a nest with CUDA events on the
// calling thread's stream; op_profile_report() sums them per op name.
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops.h"
#include "gyre/backend/ops_args.h"

namespace gyre::ops {

using namespace detail;

// ---- bf16 autocast

namespace {
thread_local bool t_bf16_autocast = false;
}  // namespace

Bf16Autocast::Bf16Autocast(bool on) : previous_(t_bf16_autocast) { t_bf16_autocast = on; }
Bf16Autocast::~Bf16Autocast() { t_bf16_autocast = previous_; }
bool bf16_autocast() { return t_bf16_autocast; }

// ---- bf16 weight cache scope

namespace {
thread_local Bf16WeightCache* t_weight_cache = nullptr;
}  // namespace

UseBf16WeightCache::UseBf16WeightCache(Bf16WeightCache* cache) : previous_(t_weight_cache) {
  t_weight_cache = cache;
}
UseBf16WeightCache::~UseBf16WeightCache() { t_weight_cache = previous_; }
Bf16WeightCache* bf16_weight_cache() { return t_weight_cache; }

// ---- op profiler (GYRE_OP_PROFILE=1; see ops.h)

namespace {
struct OpProfile {
  const bool enabled = std::getenv("GYRE_OP_PROFILE") != nullptr;
  struct Rec {
    const char* op;
    void* start;
    void* stop;
  };
  std::mutex mu;
  std::vector<Rec> recs;
};
OpProfile& op_profile() {
  static OpProfile p;
  return p;
}
thread_local int t_op_depth = 0;  // only the outermost op of a nest is timed (add_ calls add)

}  // namespace

detail::OpScope::OpScope(const char* op) : op_(op) {
  if constexpr (kCuda) {
    if (t_op_depth++ == 0 && op_profile().enabled && cuda::device_available())
      start_ = cuda::profile_event_record();
  }
}

detail::OpScope::~OpScope() {
  if constexpr (kCuda) {
    --t_op_depth;
    if (!start_) return;
    void* stop = cuda::profile_event_record();
    std::lock_guard<std::mutex> lock(op_profile().mu);
    op_profile().recs.push_back({op_, start_, stop});
  }
}

bool op_profile_enabled() { return op_profile().enabled; }

std::string op_profile_report() {
  OpProfile& p = op_profile();
  std::lock_guard<std::mutex> lock(p.mu);
  std::map<std::string, std::pair<int64_t, double>> by_op;  // calls, ms
  double total = 0;
  if constexpr (kCuda)
    for (const auto& r : p.recs) {
      const double ms = cuda::profile_elapsed_ms(r.start, r.stop);
      auto& e = by_op[r.op];
      ++e.first;
      e.second += ms;
      total += ms;
      cuda::profile_event_release(r.start);
      cuda::profile_event_release(r.stop);
    }
  p.recs.clear();
  std::vector<std::pair<std::string, std::pair<int64_t, double>>> rows(by_op.begin(), by_op.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.second > b.second.second; });
  std::string out = fmt::format("{:<28} {:>8} {:>11} {:>7}\n", "op", "calls", "GPU ms", "share");
  for (const auto& [name, e] : rows)
    out += fmt::format("{:<28} {:>8} {:>11.3f} {:>6.1f}%\n", name, e.first, e.second,
                       total > 0 ? 100.0 * e.second / total : 0.0);
  out += fmt::format("{:<28} {:>8} {:>11.3f}\n", "total (inside ops)", "", total);
  return out;
}
}  // namespace gyre::ops
