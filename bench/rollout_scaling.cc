// bench_rollout_scaling: a GRPO-shaped rollout workload against one SGLang-compatible endpoint —
// `gyre serve`, `gyre router` in front of several engines, or SGLang itself — for issue 9's
// rollout-scaling figures (bench/scale_device_run.sh runs it against 1, 2, 4 and 8 engines behind
// the router, cache-aware and round-robin).
//
// The workload is what slime's rollout sends: --prompts prompts of --prompt-len random token ids,
// each sampled --samples times as separate /generate calls with the same input_ids (so a
// cache-aware router can keep a group on one engine and its prefix cache serves the group's
// later prompts), temperature 1, exactly --new output tokens each (ignore_eos: every
// configuration decodes the same number of tokens, so their throughputs compare). Requests are
// submitted through HttpRolloutClient (the RL loop's HTTP client: pooled keep-alive connections,
// retries of transport errors), at most --concurrency in flight (0: all at once, as slime
// submits a rollout batch), after --warmup untimed requests.
//
// One JSON line: output tokens/s over the timed wall time, requests and failures, the prefix-cache
// hit share (cached prompt tokens / prompt tokens, from each reply's meta_info.cached_tokens) and
// the per-request latency p50 / p99. Any failed request makes the exit status 1 (its first error on
// stderr); bad flags exit 2.
//
// Usage: bench_rollout_scaling --url http://127.0.0.1:30000 [--prompts 64] [--samples 8]
//          [--prompt-len 512] [--new 256] [--concurrency 0] [--vocab 512] [--seed 1]
//          [--warmup 1] [--timeout-s 3600] [--label NAME]
// --vocab bounds the random prompt ids (ids are drawn from [0, vocab)): the model's vocabulary
// size or less (the default fits every model, including the 512-token test fixtures).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/core/flags.h"
#include "gyre/core/philox.h"
#include "gyre/serve/http_rollout_client.h"

namespace {

struct Options {
  std::string url, label;
  int64_t prompts = 64, samples = 8, prompt_len = 512, new_tokens = 256, concurrency = 0;
  int64_t vocab = 512, warmup = 1, seed = 1, timeout_s = 3600;
};

// The flags through core/flags.h (strict values, --help); nullopt: --help was printed.
std::optional<Options> parse(int argc, char** argv) {
  Options o;
  gyre::FlagSet f("bench_rollout_scaling", "a GRPO-shaped rollout load (bench/rollout_scaling.cc)");
  f.add<std::string>("url", &o.url, "", "http://host:port of gyre serve, gyre router or SGLang");
  f.add<std::string>("label", &o.label, "", "a name for the JSON line");
  f.add<int64_t>("prompts", &o.prompts, 64, "prompt groups");
  f.add<int64_t>("samples", &o.samples, 8, "samples a prompt (separate /generate calls)");
  f.add<int64_t>("prompt-len", &o.prompt_len, 512, "prompt tokens");
  f.add<int64_t>("new", &o.new_tokens, 256, "output tokens a sample (ignore_eos)");
  f.add<int64_t>("concurrency", &o.concurrency, 0, "requests in flight at most (0: all)");
  f.add<int64_t>("vocab", &o.vocab, 512, "prompt ids are drawn from [0, vocab)");
  f.add<int64_t>("warmup", &o.warmup, 1, "untimed requests first");
  f.add<int64_t>("seed", &o.seed, 1, "Philox seed of the prompts");
  f.add<int64_t>("timeout-s", &o.timeout_s, 3600, "seconds the whole run may take");
  if (!f.parse(argc, argv)) return std::nullopt;
  const struct {
    const char* flag;
    int64_t value, lo, hi;
  } ranges[] = {
      {"--prompts", o.prompts, 1, 1 << 20},         {"--samples", o.samples, 1, 1024},
      {"--prompt-len", o.prompt_len, 1, 1 << 20},   {"--new", o.new_tokens, 1, 1 << 20},
      {"--concurrency", o.concurrency, 0, 1 << 24}, {"--vocab", o.vocab, 1, 1 << 30},
      {"--warmup", o.warmup, 0, 1 << 20},           {"--seed", o.seed, 0, int64_t(1) << 62},
      {"--timeout-s", o.timeout_s, 1, 1 << 24}};
  for (const auto& r : ranges)
    if (r.value < r.lo || r.value > r.hi)
      GYRE_THROW(invalid_argument, "{} {}: expected an integer in [{}, {}]", r.flag, r.value, r.lo,
                 r.hi);
  if (o.url.empty())
    GYRE_THROW(invalid_argument,
               "--url is required (http://host:port of gyre serve, gyre router "
               "or an SGLang server)");
  return o;
}

// A bounded submitter: at most `limit` requests in flight (0: no bound), every result collected.
class Runner {
 public:
  Runner(gyre::infer::RolloutClient& client, int limit) : client_(client), limit_(limit) {}

  void submit(gyre::infer::GenerateRequest req) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return limit_ == 0 || in_flight_ < limit_; });
      ++in_flight_;
    }
    client_.generate(std::move(req), [this](gyre::infer::GenerateResult&& r) {
      std::lock_guard<std::mutex> lk(mu_);
      results_.push_back(std::move(r));
      --in_flight_;
      cv_.notify_all();
    });
  }
  // Waits for every submitted request (false: `timeout_s` passed first).
  bool wait_all(double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    return cv_.wait_for(lk, std::chrono::duration<double>(timeout_s),
                        [&] { return in_flight_ == 0; });
  }
  std::vector<gyre::infer::GenerateResult> take() {
    std::lock_guard<std::mutex> lk(mu_);
    return std::move(results_);
  }

 private:
  gyre::infer::RolloutClient& client_;
  const int limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  std::vector<gyre::infer::GenerateResult> results_;
};

gyre::infer::GenerateRequest make_request(const std::vector<int32_t>& ids, const Options& o,
                                          uint64_t seed) {
  gyre::infer::GenerateRequest req;
  req.input_ids = ids;
  req.sampling.temperature = 1.0f;
  req.sampling.max_new_tokens = int32_t(o.new_tokens);
  req.sampling.ignore_eos = true;
  req.sampling.seed = seed;
  return req;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5));
  return v[i];
}

int run(int argc, char** argv) {
  const std::optional<Options> parsed = parse(argc, argv);
  if (!parsed) return 0;
  const Options& o = *parsed;
  gyre::serve::HttpRolloutClientConfig cc;
  cc.url = o.url;
  cc.request_timeout_s = o.timeout_s;
  cc.io_threads = 2;
  gyre::serve::HttpRolloutClient client(cc);

  // The prompts: independent random ids per prompt (Philox, --seed): no prefix is shared across
  // groups, only within one.
  gyre::PhiloxStream rng(uint64_t(o.seed), 0);
  std::vector<std::vector<int32_t>> prompts(size_t(o.prompts));
  for (auto& p : prompts) {
    p.resize(size_t(o.prompt_len));
    for (auto& id : p) id = int32_t(rng.next_u32() % uint32_t(o.vocab));
  }

  const auto fail = [](const std::vector<gyre::infer::GenerateResult>& rs) -> const std::string* {
    for (const auto& r : rs)
      if (!r.error.empty()) return &r.error;
    return nullptr;
  };
  // Warm-up: separate prompts (their own ids), so the timed prompts start uncached.
  if (o.warmup > 0) {
    Runner warm(client, 0);
    gyre::PhiloxStream wrng(uint64_t(o.seed) ^ 0x9e3779b97f4a7c15ull, 1);
    for (int i = 0; i < o.warmup; ++i) {
      std::vector<int32_t> ids(size_t(o.prompt_len));
      for (auto& id : ids) id = int32_t(wrng.next_u32() % uint32_t(o.vocab));
      warm.submit(make_request(ids, o, uint64_t(i)));
    }
    if (!warm.wait_all(o.timeout_s))
      GYRE_THROW(io, "warm-up requests to {} did not finish within --timeout-s {}", o.url,
                 o.timeout_s);
    const auto rs = warm.take();
    if (const std::string* e = fail(rs))
      GYRE_THROW(io, "warm-up request to {} failed: {}", o.url, *e);
  }

  Runner runner(client, int(o.concurrency));
  const auto t0 = std::chrono::steady_clock::now();
  // Group by group, as slime submits a rollout batch: prompt p's samples back to back.
  for (int p = 0; p < o.prompts; ++p)
    for (int s = 0; s < o.samples; ++s)
      runner.submit(make_request(prompts[size_t(p)], o, uint64_t(p) * 1024 + uint64_t(s)));
  if (!runner.wait_all(o.timeout_s))
    GYRE_THROW(io, "{} requests to {} did not finish within --timeout-s {}", o.prompts * o.samples,
               o.url, o.timeout_s);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto rs = runner.take();

  int64_t out_tokens = 0, prompt_tokens = 0, cached = 0, failed = 0;
  std::vector<double> lat;
  for (const auto& r : rs) {
    if (!r.error.empty()) {
      ++failed;
      continue;
    }
    out_tokens += int64_t(r.output_ids.size());
    prompt_tokens += r.prompt_tokens;
    cached += r.cached_tokens;
    lat.push_back(r.e2e_latency);
  }
  std::printf(
      "{\"bench\": \"rollout_scaling\", \"label\": \"%s\", \"url\": \"%s\", \"prompts\": %lld, "
      "\"samples\": %lld, \"prompt_len\": %lld, \"new_tokens\": %lld, \"concurrency\": %lld, "
      "\"requests\": %zu, \"failed\": %lld, \"wall_s\": %.3f, \"output_tokens\": %lld, "
      "\"output_tokens_per_s\": %.1f, \"prefix_cache_hit\": %.4f, "
      "\"prefix_cache_hit_max\": %.4f, \"latency_p50_s\": %.3f, \"latency_p99_s\": %.3f}\n",
      o.label.c_str(), o.url.c_str(), (long long)o.prompts, (long long)o.samples,
      (long long)o.prompt_len, (long long)o.new_tokens, (long long)o.concurrency, rs.size(),
      (long long)failed, wall, (long long)out_tokens, double(out_tokens) / wall,
      prompt_tokens > 0 ? double(cached) / double(prompt_tokens) : 0.0,
      // The most a prefix cache can serve: every sample after a group's first (the last prompt
      // token is always recomputed, as the engine does).
      double(o.samples - 1) / double(o.samples) * double(o.prompt_len - 1) / double(o.prompt_len),
      percentile(lat, 0.5), percentile(lat, 0.99));
  std::fflush(stdout);
  if (const std::string* e = fail(rs)) {
    std::fprintf(stderr, "bench_rollout_scaling: %lld of %zu requests failed; first: %s\n",
                 (long long)failed, rs.size(), e->c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.kind() == gyre::ErrorKind::invalid_argument ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
