// Sampler (semantics in sampler.h).
#include "gyre/infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "gyre/core/philox.h"

namespace gyre::infer {

namespace {

float logprob_temperature(float t) { return t < kGreedyTemperature ? 1.0f : t; }

// max and log Σ exp((x - max) / T) of a row (f64 accumulation of the sum).
void row_lse(const float* x, int64_t n, float inv_t, float& max_z, double& log_sum) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i] * inv_t);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(double(x[i] * inv_t - m));
  max_z = m;
  log_sum = std::log(s);
}

}  // namespace

float token_logprob(const float* logits, int64_t vocab, float temperature, int32_t token) {
  float inv_t = 1.0f / logprob_temperature(temperature);
  float m;
  double ls;
  row_lse(logits, vocab, inv_t, m, ls);
  return float(double(logits[token] * inv_t - m) - ls);
}

std::vector<TopLogprob> top_logprobs(const float* logits, int64_t vocab, float temperature,
                                     int32_t k) {
  std::vector<TopLogprob> out;
  if (k <= 0) return out;
  k = int32_t(std::min<int64_t>(k, vocab));
  float inv_t = 1.0f / logprob_temperature(temperature);
  float m;
  double ls;
  row_lse(logits, vocab, inv_t, m, ls);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) idx[size_t(i)] = int32_t(i);
  auto cmp = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), cmp);
  for (int32_t i = 0; i < k; ++i) {
    int32_t id = idx[size_t(i)];
    out.push_back({id, float(double(logits[id] * inv_t - m) - ls)});
  }
  return out;
}

SampleResult Sampler::sample(const SampleInput& in) {
  const SamplingParams& sp = *in.params;
  const int64_t V = in.vocab;
  SampleResult res;

  // 1. Penalised logits.
  w_.assign(in.logits, in.logits + V);
  bool rep = sp.repetition_penalty != 1.0f;
  bool freq = sp.frequency_penalty != 0.0f || sp.presence_penalty != 0.0f;
  if (rep || freq) {
    counts_.assign(size_t(V), 0);
    for (int32_t t : in.output) ++counts_[size_t(t)];
    if (freq)
      for (int32_t t : in.output) {
        int32_t& c = counts_[size_t(t)];
        if (c > 0) {  // once per distinct id
          w_[size_t(t)] -= sp.frequency_penalty * float(c) + sp.presence_penalty;
          c = -c;  // mark done, keep |count| for the repetition pass
        }
      }
    if (rep) {
      auto penalise = [&](int32_t t) {
        float& x = w_[size_t(t)];
        x = x > 0 ? x / sp.repetition_penalty : x * sp.repetition_penalty;
      };
      // Each distinct id once: mark with a sentinel as we go.
      for (int32_t t : in.prompt)
        if (counts_[size_t(t)] != std::numeric_limits<int32_t>::min()) {
          penalise(t);
          counts_[size_t(t)] = std::numeric_limits<int32_t>::min();
        }
      for (int32_t t : in.output)
        if (counts_[size_t(t)] != std::numeric_limits<int32_t>::min()) {
          penalise(t);
          counts_[size_t(t)] = std::numeric_limits<int32_t>::min();
        }
    }
  }
  const float kNegInf = -std::numeric_limits<float>::infinity();
  for (int32_t t : in.masked_ids)
    if (t >= 0 && t < V) w_[size_t(t)] = kNegInf;

  if (sp.temperature < kGreedyTemperature || sp.top_k == 1) {
    // 2a. Greedy.
    int64_t best = 0;
    for (int64_t i = 1; i < V; ++i)
      if (w_[size_t(i)] > w_[size_t(best)]) best = i;
    res.token = int32_t(best);
  } else {
    // 2b. Stochastic: e_i = exp((w_i - max) / T), unnormalised probabilities.
    float inv_t = 1.0f / sp.temperature;
    float m = *std::max_element(w_.begin(), w_.end());
    double total = 0;
    for (int64_t i = 0; i < V; ++i) {
      float e = std::exp((w_[size_t(i)] - m) * inv_t);
      w_[size_t(i)] = e;
      total += e;
    }
    // p_max = 1 / total (the max element has e = 1).
    const float min_e = sp.min_p > 0 ? sp.min_p : 0.0f;
    bool top_k = sp.top_k > 0 && sp.top_k < V;
    bool top_p = sp.top_p < 1.0f;
    uint32_t bits[4];
    Philox4x32::draw(in.seed, 0, uint64_t(in.output.size()), bits);
    double u = double(Philox4x32::uniform(bits[0]));
    if (!top_k && !top_p) {
      // Whole vocabulary in id order, min_p filtered.
      double kept = 0;
      for (int64_t i = 0; i < V; ++i)
        if (w_[size_t(i)] >= min_e) kept += w_[size_t(i)];
      double target = u * kept, acc = 0;
      int64_t last = -1;
      for (int64_t i = 0; i < V; ++i) {
        float e = w_[size_t(i)];
        if (e < min_e || e <= 0) continue;
        last = i;
        acc += e;
        if (acc > target) break;
      }
      res.token = int32_t(last);
    } else {
      // Candidates sorted by probability (desc, ties -> lower id), selected block by block.
      idx_.resize(size_t(V));
      for (int64_t i = 0; i < V; ++i) idx_[size_t(i)] = int32_t(i);
      auto cmp = [&](int32_t a, int32_t b) {
        return w_[size_t(a)] != w_[size_t(b)] ? w_[size_t(a)] > w_[size_t(b)] : a < b;
      };
      int64_t limit = top_k ? sp.top_k : V;
      double mass_limit = double(sp.top_p) * total;
      int64_t sorted = 0, keep = 0, block = top_k ? limit : 64;
      double cum = 0;  // exclusive cumulative mass
      bool done = false;
      while (!done && sorted < limit) {
        int64_t n = std::min(block, limit - sorted);
        auto b = idx_.begin() + sorted, e = b + n;
        if (e != idx_.end()) std::nth_element(b, e, idx_.end(), cmp);
        std::sort(b, e, cmp);
        for (int64_t i = sorted; i < sorted + n; ++i) {
          float p = w_[size_t(idx_[size_t(i)])];
          if ((top_p && cum > mass_limit) || p < min_e || p <= 0) {
            done = true;
            break;
          }
          cum += p;
          keep = i + 1;
        }
        sorted += n;
        block *= 2;
      }
      double target = u * cum, acc = 0;
      res.token = idx_[size_t(keep - 1)];
      for (int64_t i = 0; i < keep; ++i) {
        acc += w_[size_t(idx_[size_t(i)])];
        if (acc > target) {
          res.token = idx_[size_t(i)];
          break;
        }
      }
    }
  }
  if (res.token < 0) {  // everything masked or non-finite: fall back to the raw argmax
    res.token = int32_t(std::max_element(in.logits, in.logits + V) - in.logits);
  }
  // 3. Log-probs from the raw logits.
  res.logprob = token_logprob(in.logits, V, sp.temperature, res.token);
  if (in.top_logprobs_num > 0)
    res.top_logprobs = top_logprobs(in.logits, V, sp.temperature, in.top_logprobs_num);
  return res;
}

}  // namespace gyre::infer
