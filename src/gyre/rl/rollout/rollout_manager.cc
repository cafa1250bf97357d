#include "gyre/rl/rollout/rollout_manager.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"

namespace gyre::rl {

namespace {

// splitmix64 finaliser: decorrelates seeds of neighbouring sample indices.
uint64_t sample_seed(uint64_t base, uint64_t index) {
  uint64_t z = base * 0x9E3779B97F4A7C15ull + index + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double unbiased_std(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return std::sqrt(ss / double(v.size() - 1));
}

}  // namespace

DynamicFilter load_dynamic_filter(const std::string& spec, const std::string& reward_key) {
  if (spec.empty()) return nullptr;
  if (spec == "check_reward_nonzero_std" || spec == "check_reward_nonzero_std_with_fallback") {
    const bool fallback = spec == "check_reward_nonzero_std_with_fallback";
    return [fallback, reward_key](const SampleGroup& g, int64_t remaining, int64_t target) {
      std::vector<double> r;
      for (auto& s : g) r.push_back(s.reward_value(reward_key));
      DynamicFilterOutput o;
      o.keep = unbiased_std(r) > 1e-6;
      if (!o.keep) {
        o.reason = fmt::format("zero_std_{:.1f}", r.empty() ? 0.0 : r[0]);
        if (fallback && remaining <= target) o.keep = true;  // avoid a refill wave
      }
      return o;
    };
  }
  std::string path = spec, symbol = "gyre_dynamic_filter";
  if (auto c = spec.rfind(':'); c != std::string::npos && c > 0) {
    path = spec.substr(0, c);
    symbol = spec.substr(c + 1);
  }
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h)
    GYRE_THROW(not_found,
               "--dynamic-sampling-filter-path '{}' is neither a built-in "
               "(check_reward_nonzero_std, check_reward_nonzero_std_with_fallback) nor a loadable "
               "library: {}",
               spec, dlerror());
  using Fn = bool (*)(const SampleGroup*, int64_t, int64_t, std::string*);
  auto fn = reinterpret_cast<Fn>(dlsym(h, symbol.c_str()));
  if (!fn)
    GYRE_THROW(not_found, "--dynamic-sampling-filter-path: '{}' has no symbol '{}'", path, symbol);
  return [fn](const SampleGroup& g, int64_t remaining, int64_t target) {
    DynamicFilterOutput o;
    o.keep = fn(&g, remaining, target, &o.reason);
    return o;
  };
}

std::map<std::string, double> rollout_metrics(const std::vector<Sample>& samples,
                                              const std::string& reward_key) {
  std::map<std::string, double> m;
  if (samples.empty()) return m;
  double rsum = 0, lsum = 0, lmax = 0, lmin = 1e300, trunc = 0, cached = 0, prompt = 0;
  for (auto& s : samples) {
    rsum += s.reward_value(reward_key);
    double len = double(s.response_length);
    lsum += len, lmax = std::max(lmax, len), lmin = std::min(lmin, len);
    trunc += s.status == SampleStatus::truncated ? 1 : 0;
    if (s.metadata.contains("prefix_cache_info")) {
      cached += s.metadata["prefix_cache_info"].value("cached_tokens", 0.0);
      prompt += s.metadata["prefix_cache_info"].value("total_prompt_tokens", 0.0);
    }
  }
  const double n = double(samples.size());
  m["rollout/raw_reward"] = rsum / n;
  m["rollout/response_len/mean"] = lsum / n;
  m["rollout/response_len/max"] = lmax;
  m["rollout/response_len/min"] = lmin;
  m["rollout/truncated_ratio"] = trunc / n;
  if (prompt > 0) m["rollout/prefix_cache_hit_rate"] = cached / prompt;
  return m;
}

RolloutManager::RolloutManager(RolloutOptions options, GenerateContext context,
                               GenerateFunction generate, RewardHook reward, DynamicFilter filter)
    : opt_(std::move(options)),
      ctx_(std::move(context)),
      generate_(std::move(generate)),
      reward_(std::move(reward)),
      filter_(std::move(filter)) {
  if (opt_.rollout_batch_size < 1)
    GYRE_THROW(invalid_argument, "--rollout-batch-size must be >= 1, got {}",
               opt_.rollout_batch_size);
  if (opt_.over_sampling_batch_size == 0) opt_.over_sampling_batch_size = opt_.rollout_batch_size;
  if (opt_.over_sampling_batch_size < opt_.rollout_batch_size)
    GYRE_THROW(invalid_argument,
               "--over-sampling-batch-size ({}) must be >= --rollout-batch-size ({})",
               opt_.over_sampling_batch_size, opt_.rollout_batch_size);
  if (opt_.concurrency < 1) opt_.concurrency = 1;
}

RolloutOutput RolloutManager::generate(int64_t rollout_id, DataSource& data) {
  Timer timer;
  std::atomic<bool> aborting{false};
  GenerateContext ctx = ctx_;
  ctx.rollout_id = rollout_id;
  ctx.aborting = &aborting;

  // Shared state of the in-flight groups.
  struct GroupState {
    SampleGroup samples;
    std::vector<std::vector<Sample>> outputs;  // per input sample
    int64_t pending = 0;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
  std::deque<std::shared_ptr<GroupState>> finished;
  int64_t running_tasks = 0;
  bool stop_workers = false;

  std::vector<std::thread> workers;
  auto worker = [&] {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop_workers || !tasks.empty(); });
        if (tasks.empty()) return;
        task = std::move(tasks.front());
        tasks.pop_front();
      }
      task();
    }
  };
  for (int64_t i = 0; i < opt_.concurrency; ++i) workers.emplace_back(worker);

  auto submit_group = [&](SampleGroup group) {
    auto gs = std::make_shared<GroupState>();
    gs->samples = std::move(group);
    gs->outputs.resize(gs->samples.size());
    gs->pending = int64_t(gs->samples.size());
    std::lock_guard<std::mutex> lk(mu);
    for (size_t i = 0; i < gs->samples.size(); ++i) {
      ++running_tasks;
      tasks.push_back([&, gs, i] {
        Sample in = gs->samples[i];
        if (!in.metadata.contains("sampling_seed")) {
          in.metadata["sampling_seed"] =
              opt_.deterministic ? opt_.rollout_seed + uint64_t(i)  // per-group seeds (slime)
                                 : sample_seed(opt_.base_seed, uint64_t(in.index.value_or(0)));
        }
        GenerateContext local = ctx;
        if (in.metadata.contains("sampling_seed"))
          local.sampling.seed = in.metadata["sampling_seed"].get<uint64_t>();
        std::vector<Sample> out;
        try {
          out = generate_(std::move(in), local);
        } catch (const std::exception& e) {
          Sample failed = gs->samples[i];
          failed.status = SampleStatus::failed;
          failed.metadata["error"] = e.what();
          out = {std::move(failed)};
        }
        bool group_done;
        {
          std::lock_guard<std::mutex> lk2(mu);
          gs->outputs[i] = std::move(out);
          group_done = --gs->pending == 0;
        }
        if (group_done && !aborting.load()) {
          // Flatten fan-out outputs; siblings of one input share its rollout id.
          SampleGroup flat;
          for (size_t k = 0; k < gs->outputs.size(); ++k)
            for (auto& s : gs->outputs[k]) {
              if (!s.rollout_id) s.rollout_id = gs->samples[k].index;
              flat.push_back(std::move(s));
            }
          gs->samples = std::move(flat);
          try {
            bool any_failed = false;
            for (auto& s : gs->samples) any_failed |= s.status == SampleStatus::failed;
            if (!any_failed && reward_) reward_(gs->samples);
          } catch (const std::exception& e) {
            for (auto& s : gs->samples) {
              s.status = SampleStatus::failed;
              s.metadata["error"] = std::string("reward: ") + e.what();
            }
          }
        } else if (group_done) {
          SampleGroup flat;
          for (auto& v : gs->outputs)
            for (auto& s : v) flat.push_back(std::move(s));
          gs->samples = std::move(flat);
        }
        std::lock_guard<std::mutex> lk2(mu);
        --running_tasks;
        if (group_done) finished.push_back(gs);
        cv.notify_all();
      });
    }
    cv.notify_all();
  };

  RolloutOutput out;
  std::vector<SampleGroup> kept;
  int64_t remaining = 0;  // groups kept + in flight that may still be kept
  int64_t failed_groups = 0;
  std::map<std::string, double> drops;
  const int64_t target = opt_.rollout_batch_size;
  try {
    while (int64_t(kept.size()) < target) {
      while (remaining < target) {
        auto groups = data.get_samples(opt_.over_sampling_batch_size);
        if (groups.empty())
          GYRE_THROW(invalid_argument, "the data source returned no prompts (empty dataset?)");
        for (auto& g : groups) {
          submit_group(std::move(g));
          ++remaining;
        }
      }
      std::shared_ptr<GroupState> gs;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return !finished.empty(); });
        gs = finished.front();
        finished.pop_front();
      }
      bool failed = false;
      for (auto& s : gs->samples) failed |= s.status == SampleStatus::failed;
      if (failed) {
        ++failed_groups;
        --remaining;
        std::string why = gs->samples.empty() ? "" : gs->samples[0].metadata.value("error", "");
        for (auto& s : gs->samples)
          if (s.status == SampleStatus::failed) why = s.metadata.value("error", why);
        log::warn("rollout {}: dropping a failed group: {}", rollout_id, why);
        if (failed_groups > 4 * target)
          GYRE_THROW(internal, "rollout {}: {} groups failed (last error: {})", rollout_id,
                     failed_groups, why);
        continue;
      }
      if (filter_) {
        DynamicFilterOutput f = filter_(gs->samples, remaining, target);
        if (!f.keep) {
          --remaining;
          drops["rollout/dynamic_filter/drop_" + f.reason] += 1;
          continue;
        }
      }
      kept.push_back(std::move(gs->samples));
    }
  } catch (...) {
    aborting = true;
    ctx.client->abort_all();
    {
      std::unique_lock<std::mutex> lk(mu);
      stop_workers = true;
      tasks.clear();
    }
    cv.notify_all();
    for (auto& w : workers) w.join();
    throw;
  }

  // Stop the surplus: abort in-flight requests until every task has returned (slime aborts every
  // worker until idle), then return partial groups to the buffer.
  aborting = true;
  for (;;) {
    ctx.client->abort_all();
    std::unique_lock<std::mutex> lk(mu);
    if (running_tasks == 0) break;
    cv.wait_for(lk, std::chrono::milliseconds(5));
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    stop_workers = true;
  }
  cv.notify_all();
  for (auto& w : workers) w.join();
  int64_t returned = 0;
  std::vector<SampleGroup> back;
  for (auto& gs : finished) {
    if (opt_.partial_rollout) {
      for (auto& s : gs->samples) {
        if (s.status == SampleStatus::aborted) s.status = SampleStatus::pending;
        if (!s.metadata.contains("start_rollout_id")) s.metadata["start_rollout_id"] = rollout_id;
      }
      back.push_back(std::move(gs->samples));
      ++returned;
    }
  }
  if (!back.empty()) data.add_samples(std::move(back));

  std::sort(kept.begin(), kept.end(), [](const SampleGroup& a, const SampleGroup& b) {
    return a.front().index.value_or(0) < b.front().index.value_or(0);
  });
  for (auto& g : kept)
    for (auto& s : g) out.samples.push_back(std::move(s));
  out.metrics = rollout_metrics(out.samples, opt_.reward_key);
  for (auto& [k, v] : drops) out.metrics[k] = v;
  out.metrics["rollout/partial_groups_returned"] = double(returned);
  out.metrics["rollout/failed_groups"] = double(failed_groups);
  out.metrics["perf/rollout_generate_time"] = timer.elapsed();  // the loop times the whole phase
  return out;
}

}  // namespace gyre::rl
