// Rollout engine throughput on the CPU backend with a fixture-sized model (tests/fixtures/models/
// qwen3_tiny: 2 layers, hidden 64, vocab 512): output tokens/s at batch 1, 16 and 64, and the
// prefix-cache share of prompt tokens on a GRPO-shaped workload (16 prompts x 8 samples). Goal for
// the share: >= 7/8 (7 of 8 samples reuse the prompt). The attainable share is 7/8 x (whole pages
// below the last prompt token) / prompt length, since the last prompt token is always recomputed
// for its logits (SGLang and vLLM do the same); both numbers are printed.
#include <cstdio>
#include <string>
#include <vector>

#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"

using namespace gyre;
using namespace gyre::infer;

int main() {
  auto model =
      model::CausalLM::load(std::string(GYRE_SOURCE_DIR) + "/tests/fixtures/models/qwen3_tiny");
  const int kPrompt = 32, kNew = 64;
  for (int batch : {1, 16, 64}) {
    EngineConfig cfg;
    cfg.num_pages = 2048;
    Engine engine(*model, nullptr, cfg);
    std::vector<GenerateRequest> reqs;
    for (int i = 0; i < batch; ++i) {
      GenerateRequest r;
      for (int t = 0; t < kPrompt; ++t) r.input_ids.push_back((i * 97 + t * 13) % 512);
      r.sampling.temperature = 1.0f;
      r.sampling.max_new_tokens = kNew;
      r.sampling.ignore_eos = true;
      r.sampling.seed = uint64_t(i);
      reqs.push_back(r);
    }
    Timer t;
    auto res = engine.generate(reqs);
    double secs = t.elapsed();
    int64_t out = 0;
    for (auto& r : res) out += r.completion_tokens;
    std::printf(
        "{\"bench\": \"rollout_engine\", \"metric\": \"output_tokens_per_s\", \"batch\": %d, "
        "\"value\": %.1f, \"prompt_len\": %d, \"max_new_tokens\": %d, \"model\": \"qwen3_tiny\", "
        "\"device\": \"cpu\", \"goal\": \"grows with batch (continuous batching)\"}\n",
        batch, double(out) / secs, kPrompt, kNew);
  }
  {
    const int kPrompts = 16, kSamples = 8, kLen = 257;  // 16 whole pages + 1 token
    EngineConfig cfg;
    cfg.num_pages = 4096;
    Engine engine(*model, nullptr, cfg);
    std::vector<GenerateRequest> reqs;
    for (int p = 0; p < kPrompts; ++p) {
      GenerateRequest r;
      for (int t = 0; t < kLen; ++t) r.input_ids.push_back((p * 389 + t * 31 + t * t) % 512);
      r.sampling.temperature = 1.0f;
      r.sampling.max_new_tokens = 16;
      r.sampling.ignore_eos = true;
      r.sampling.n = kSamples;
      r.sampling.seed = uint64_t(p) * 100;
      reqs.push_back(r);
    }
    auto res = engine.generate(reqs);
    int64_t prompt = 0, cached = 0;
    for (auto& r : res) prompt += r.prompt_tokens, cached += r.cached_tokens;
    double share = double(cached) / double(prompt);
    double bound = 7.0 / 8.0 * double((kLen - 1) / 16 * 16) / kLen;
    std::printf(
        "{\"bench\": \"rollout_engine\", \"metric\": \"grpo_prefix_cache_share\", \"value\": %.4f, "
        "\"samples_per_prompt\": %d, \"prompt_len\": %d, \"page_size\": 16, \"attainable\": %.4f, "
        "\"of_attainable\": %.4f, \"goal\": 0.875, \"meets_goal\": %s}\n",
        share, kSamples, kLen, bound, share / bound, share >= 0.875 ? "true" : "false");
  }
  return 0;
}
