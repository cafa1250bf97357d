// Rollout engine vs Hugging Face fixtures: greedy decoding reproduces greedy.tokens of every
// fixture model (steps after a logit margin < 1e-4 are not compared: a near-tie may legitimately
// flip), also when the prompt is served from the prefix cache and after a forced preemption
// (recompute); engine log-probs equal model::score log-probs of the same sequences within 1e-5;
// GRPO-shaped n = 8 requests share the prompt; seeded sampling is batch-independent; bad requests
// are rejected without disturbing the others.
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/scoring.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::infer;

namespace {

const char* kModels[] = {"llama3_tiny", "qwen2_tiny", "qwen3_tiny", "qwen3_tiny_bf16",
                         "qwen3moe_tiny"};

struct Greedy {
  std::vector<int32_t> prompt, tokens;
  std::vector<float> margins;
};

Greedy load_greedy(const std::string& name) {
  auto st = model::SafetensorsReader::open(
      test::source_path("tests/fixtures/models/" + name + "/expected.safetensors"));
  Greedy g;
  auto to_i32 = [](const Tensor& t) {
    std::vector<int32_t> v;
    for (int64_t i = 0; i < t.numel(); ++i) v.push_back(int32_t(t.i64()[i]));
    return v;
  };
  g.prompt = to_i32(st.get("greedy.prompt"));
  g.tokens = to_i32(st.get("greedy.tokens"));
  g.margins = st.get("greedy.margins").to_vector();
  return g;
}

// Compares up to (and including) the first step whose margin is below 1e-4.
void expect_greedy(const Greedy& g, const std::vector<int32_t>& out, const std::string& what) {
  ASSERT_EQ(out.size(), g.tokens.size()) << what;
  for (size_t i = 0; i < g.tokens.size(); ++i) {
    if (g.margins[i] < 1e-4f) break;
    EXPECT_EQ(out[i], g.tokens[i]) << what << " step " << i;
    if (out[i] != g.tokens[i]) break;
  }
}

GenerateRequest greedy_request(const Greedy& g, const std::string& rid = "") {
  GenerateRequest r;
  r.rid = rid;
  r.input_ids = g.prompt;
  r.sampling.temperature = 0;
  r.sampling.max_new_tokens = int32_t(g.tokens.size());
  r.sampling.ignore_eos = true;
  r.return_logprob = true;
  return r;
}

EngineConfig small_config() {
  EngineConfig c;
  c.page_size = 4;  // small pages: prompts span several, so paging and caching are exercised
  c.num_pages = 256;
  c.max_num_batched_tokens = 64;
  return c;
}

}  // namespace

TEST(EngineGolden, GreedyMatchesFixturesFreshAndCached) {
  for (const char* name : kModels) {
    auto model =
        model::CausalLM::load(test::source_path(std::string("tests/fixtures/models/") + name));
    Greedy g = load_greedy(name);
    Engine engine(*model, nullptr, small_config());
    auto first = engine.generate({greedy_request(g, "a")});
    ASSERT_EQ(first.size(), 1u);
    ASSERT_TRUE(first[0].error.empty()) << first[0].error;
    EXPECT_EQ(first[0].cached_tokens, 0);
    expect_greedy(g, first[0].output_ids, std::string(name) + " fresh");
    EXPECT_EQ(first[0].finish.type, FinishType::length);
    // Same prompt again: the prompt's whole pages come from the radix cache.
    auto second = engine.generate({greedy_request(g, "b")});
    EXPECT_EQ(second[0].cached_tokens, int32_t((g.prompt.size() - 1) / 4 * 4)) << name;
    EXPECT_GT(second[0].cached_tokens, 0);
    expect_greedy(g, second[0].output_ids, std::string(name) + " cached");
    // Log-probs equal the trainer's scoring of the same sequence (temperature 1 for greedy).
    std::vector<int32_t> seq = g.prompt;
    seq.insert(seq.end(), first[0].output_ids.begin(), first[0].output_ids.end());
    auto scores = model::score(*model, {seq}, 1.0f, false);
    for (size_t i = 0; i < first[0].output_ids.size(); ++i) {
      float want = scores[0].token_logprobs[g.prompt.size() - 1 + i];
      EXPECT_NEAR(first[0].output_logprobs[i], want, 1e-5) << name << " token " << i;
      EXPECT_NEAR(second[0].output_logprobs[i], want, 1e-5) << name << " cached token " << i;
    }
  }
}

TEST(EngineGolden, GreedySurvivesForcedPreemption) {
  for (const char* name : {"qwen3_tiny", "llama3_tiny"}) {
    auto model =
        model::CausalLM::load(test::source_path(std::string("tests/fixtures/models/") + name));
    Greedy g = load_greedy(name);
    EngineConfig cfg = small_config();
    cfg.enable_prefix_cache = false;  // the re-prefill really recomputes everything
    Engine engine(*model, nullptr, cfg);
    std::vector<GenerateResult> got;
    RequestCallbacks cb;
    cb.on_done = [&](GenerateResult&& r) { got.push_back(std::move(r)); };
    engine.submit(greedy_request(g, "p"), cb);
    int steps = 0, preempted = 0;
    while (engine.step()) {
      if (++steps % 5 == 0 && engine.scheduler().num_running() == 1) {
        engine.scheduler().preempt(engine.scheduler().running()[0]);
        ++preempted;
      }
    }
    EXPECT_GE(preempted, 2);
    ASSERT_EQ(got.size(), 1u);
    expect_greedy(g, got[0].output_ids, std::string(name) + " preempted");
  }
}

TEST(EngineGolden, BatchOfMixedRequestsAndBadOnes) {
  auto model = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"));
  Greedy g = load_greedy("qwen3_tiny");
  Engine engine(*model, nullptr, small_config());
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 5; ++i) {  // greedy copies interleaved with invalid requests
    reqs.push_back(greedy_request(g));
    GenerateRequest bad = greedy_request(g);
    if (i == 0) bad.input_ids[2] = 512;  // out of vocabulary
    if (i == 1) bad.sampling.top_p = 0;
    if (i == 2) bad.sampling.max_new_tokens = 600;  // past the 512-token context
    if (i == 3) bad.input_ids.clear();
    if (i == 4) bad.sampling.temperature = -1;
    reqs.push_back(bad);
  }
  auto res = engine.generate(reqs);
  ASSERT_EQ(res.size(), 10u);
  for (size_t i = 0; i < res.size(); i += 2) {
    EXPECT_TRUE(res[i].error.empty()) << res[i].error;
    expect_greedy(g, res[i].output_ids, "batched copy");
    EXPECT_FALSE(res[i + 1].error.empty());
    EXPECT_EQ(res[i + 1].finish.type, FinishType::abort);
  }
  EXPECT_NE(res[1].error.find("input_ids[2] = 512"), std::string::npos) << res[1].error;
  EXPECT_NE(res[5].error.find("context length 512"), std::string::npos) << res[5].error;
  EXPECT_TRUE(engine.flush_cache());
  EXPECT_EQ(engine.scheduler().pool().num_free(), 256);
}

TEST(EngineGolden, GrpoSamplesShareThePromptAndSeedsAreBatchIndependent) {
  auto model = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen2_tiny"));
  Engine engine(*model, nullptr, small_config());
  GenerateRequest r;
  r.rid = "grpo";
  for (int i = 0; i < 41; ++i) r.input_ids.push_back((i * 37 + 11) % 512);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.95f;
  r.sampling.max_new_tokens = 12;
  r.sampling.ignore_eos = true;
  r.sampling.n = 8;
  r.sampling.seed = 1000;
  auto res = engine.generate({r});
  ASSERT_EQ(res.size(), 8u);
  int64_t cached = 0, prompt = 0;
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(res[size_t(i)].rid, "grpo-" + std::to_string(i));
    EXPECT_EQ(res[size_t(i)].index, i);
    cached += res[size_t(i)].cached_tokens;
    prompt += res[size_t(i)].prompt_tokens;
  }
  EXPECT_EQ(cached, 7 * 40);  // 7 of 8 samples get the prompt's 10 whole pages from the cache
  // Sample 3 alone (same seed 1000 + 3) gives the same tokens as inside the group.
  GenerateRequest alone = r;
  alone.rid = "alone";
  alone.sampling.n = 1;
  alone.sampling.seed = 1003;
  EXPECT_TRUE(engine.flush_cache());
  auto one = engine.generate({alone});
  EXPECT_EQ(one[0].output_ids, res[3].output_ids);
  // Engine log-probs of a sampled (temperature 1) sequence equal the trainer's.
  std::vector<int32_t> seq = r.input_ids;
  seq.insert(seq.end(), res[5].output_ids.begin(), res[5].output_ids.end());
  auto scores = model::score(*model, {seq}, 1.0f, false);
  for (size_t i = 0; i < res[5].output_ids.size(); ++i)
    EXPECT_NEAR(res[5].output_logprobs[i], scores[0].token_logprobs[r.input_ids.size() - 1 + i],
                1e-5);
}

TEST(EngineGolden, ThreadedEngineAbortAndWeightUpdate) {
  auto model = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen3_tiny"));
  Greedy g = load_greedy("qwen3_tiny");
  EngineConfig cfg = small_config();
  Engine engine(*model, nullptr, cfg);
  engine.start();
  auto res = engine.generate({greedy_request(g, "t")});
  expect_greedy(g, res[0].output_ids, "threaded");
  EXPECT_EQ(res[0].weight_version, 0);
  // Abort a long request while it runs: it finishes once, as abort, with its partial output.
  std::mutex mu;
  std::condition_variable cv;
  std::optional<GenerateResult> aborted;
  GenerateRequest long_req = greedy_request(g, "long");
  long_req.sampling.max_new_tokens = 400;
  RequestCallbacks cb;
  int chunks = 0;
  cb.on_chunk = [&](const TokenChunk& c) { chunks += int(c.output_ids.size()); };
  cb.on_done = [&](GenerateResult&& r) {
    std::lock_guard<std::mutex> lk(mu);
    aborted = std::move(r);
    cv.notify_all();
  };
  long_req.stream = true;
  engine.submit(long_req, cb);
  while (engine.stats().generated_tokens < 40) std::this_thread::yield();
  engine.abort("long");
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return aborted.has_value(); });
  }
  EXPECT_EQ(aborted->finish.type, FinishType::abort);
  EXPECT_LT(aborted->output_ids.size(), 400u);
  EXPECT_EQ(chunks, int(aborted->output_ids.size()));
  // update_weights bumps the version and invalidates the cache.
  int64_t v = engine.update_weights([] {});
  EXPECT_EQ(v, 1);
  auto after = engine.generate({greedy_request(g, "u")});
  EXPECT_EQ(after[0].weight_version, 1);
  EXPECT_EQ(after[0].cached_tokens, 0);
  engine.stop();
}

TEST(EngineGolden, KvCacheDtypeIsCheckedBeforeAnyWork) {
  auto model = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen2_tiny"));
  for (const char* bad : {"bf16", "fp8_e4m3"}) {
    EngineConfig cfg = small_config();
    cfg.kv_cache_dtype = bad;
    try {
      Engine engine(*model, nullptr, cfg);
      ADD_FAILURE() << "kv_cache_dtype " << bad << " accepted for a CPU model";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("kv_cache_dtype"), std::string::npos) << e.what();
    }
  }
  EngineConfig cfg = small_config();
  cfg.kv_cache_dtype = "auto";  // a CPU model: f32
  EXPECT_NO_THROW(Engine(*model, nullptr, cfg));
  cfg.kv_cache_dtype = "f32";
  EXPECT_NO_THROW(Engine(*model, nullptr, cfg));
}

// cuda_graph_max_bs: negative is rejected before any work; on the CPU any valid value is a no-op
// (graphs are a GPU feature), so the engine decodes the same tokens with or without it.
TEST(EngineGolden, CudaGraphMaxBsIsCheckedAndIgnoredOnTheCpu) {
  auto model = model::CausalLM::load(test::source_path("tests/fixtures/models/qwen2_tiny"));
  EngineConfig cfg = small_config();
  cfg.cuda_graph_max_bs = -1;
  try {
    Engine engine(*model, nullptr, cfg);
    ADD_FAILURE() << "cuda_graph_max_bs -1 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda_graph_max_bs is -1"), std::string::npos) << e.what();
  }
  cfg.cuda_graph_max_bs = 8;
  Engine engine(*model, nullptr, cfg);
  EXPECT_EQ(engine.num_cuda_graphs(), 0);
}
