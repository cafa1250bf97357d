// Tensor parallelism (model/tensor_parallel.h) under `mpirun -np 2`: a TP=2 model must compute what
// the single-process model computes — logits, log-probs, entropies, every parameter gradient
// (reassembled from the shards), the clipping norm — and save a full checkpoint that loads in one
// process. Each worker (DISABLED_, launched by the tests through run_mpi_worker) loads the
// reference model in its own process too and compares on every rank.
#include "gyre/model/tensor_parallel.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "dist/mpi_launch.h"
#include "gyre/core/philox.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::model {
namespace {

using test::run_mpi_worker;

// max |a - b| <= tol * max(1, max |b|): relative to the scale of the reference tensor.
::testing::AssertionResult close(const std::vector<float>& a, const std::vector<float>& b,
                                 double tol, const std::string& what) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << what << ": " << a.size() << " vs " << b.size();
  double diff = 0, scale = 0;
  size_t worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (d > diff) diff = d, worst = i;
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  if (diff <= tol * std::max(1e-3, scale)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max diff " << diff << " at " << worst << " ("
                                       << a[worst] << " vs " << b[worst] << "), scale " << scale;
}

std::vector<std::vector<int32_t>> sequences(int64_t vocab) {
  // Ids on both halves of the vocabulary, so both ranks' embedding/lm_head shards matter.
  std::vector<std::vector<int32_t>> seqs;
  PhiloxStream rng(7, 0);
  for (int len : {9, 5, 13}) {
    std::vector<int32_t> s;
    for (int i = 0; i < len; ++i) s.push_back(int32_t(rng.next_u32() % uint32_t(vocab)));
    seqs.push_back(s);
  }
  return seqs;
}

// Checks `m` (sharded over `world`) against `ref`, the same weights in this process.
void compare_models(dist::Comm& world, CausalLM* ref_model, CausalLM* m);

// Checks one fixture model at TP = world size against the same model in this process.
void compare_model(dist::Comm& world, const std::string& name, bool recompute) {
  SCOPED_TRACE(name + (recompute ? " (recompute)" : ""));
  auto tp = dist::make_tp_comm(world);
  const std::string dir = test::source_path("tests/fixtures/models/" + name);
  auto ref = CausalLM::load(dir);
  LoadOptions lo;
  lo.tp = tp.get();
  auto m = CausalLM::load(dir, lo);
  m->set_recompute(recompute);
  compare_models(world, ref.get(), m.get());
}

// Llama with attention_bias and mlp_bias: the row-parallel o_proj / down_proj biases (replicated,
// added once by tp rank 0) and the column-parallel q/k/v/gate/up biases (sharded), all non-zero.
void compare_biased_llama(dist::Comm& world) {
  SCOPED_TRACE("llama3_tiny with attention_bias + mlp_bias");
  auto tp = dist::make_tp_comm(world);
  ModelConfig cfg = load_config(test::source_path("tests/fixtures/models/llama3_tiny"));
  cfg.attention_bias = cfg.mlp_bias = true;
  auto ref = CausalLM::random_init(cfg, 9);
  auto m = CausalLM::random_init(cfg, 9, 0.02f, tp.get());
  int biased = 0;
  for (CausalLM* model : {ref.get(), m.get()}) {
    for (auto& p : model->parameters()) {
      if (p.name.size() < 5 || p.name.compare(p.name.size() - 5, 5, ".bias") != 0) continue;
      const bool replicated = p.name.find("o_proj") != std::string::npos ||
                              p.name.find("down_proj") != std::string::npos;
      // Sharded biases get a constant (any slice of it is the same), replicated ones a pattern.
      std::vector<float> v(size_t(p.tensor.numel()));
      for (size_t i = 0; i < v.size(); ++i)
        v[i] = replicated ? 0.01f * float(int(i % 7) - 3) : 0.05f;
      p.tensor.copy_from(Tensor::from_vector(v, p.tensor.shape()));
      biased += model == ref.get();
    }
  }
  ASSERT_GE(biased, 2 * int(cfg.num_hidden_layers) * 2) << "o_proj + down_proj biases at least";
  compare_models(world, ref.get(), m.get());
}

void compare_models(dist::Comm& world, CausalLM* ref_model, CausalLM* m) {
  CausalLM* ref = ref_model;
  ASSERT_NE(m->tensor_parallel(), nullptr);
  const int64_t V = ref->config().vocab_size;
  EXPECT_EQ(m->tensor_parallel()->local.num_attention_heads,
            ref->config().num_attention_heads / world.size());
  const auto seqs = sequences(V);
  Batch b = Batch::pack(seqs);

  // Forward: the local shard is this rank's columns of the full logits; gathered = full.
  Tensor full = ref->forward(b, ForwardOptions{});
  Tensor local = m->forward(b, ForwardOptions{});
  ASSERT_EQ(local.size(1), V / world.size());
  ForwardOptions go;
  go.gather_vocab = true;
  Tensor gathered = m->forward(b, go);
  EXPECT_TRUE(close(gathered.to_vector(), full.to_vector(), 1e-5, "gathered logits"));
  {
    std::vector<float> cols;
    const int64_t Vl = V / world.size(), c0 = world.rank() * Vl;
    const float* f = full.f32();
    for (int64_t t = 0; t < full.size(0); ++t)
      for (int64_t j = 0; j < Vl; ++j) cols.push_back(f[t * V + c0 + j]);
    EXPECT_TRUE(close(local.to_vector(), cols, 1e-5, "local logits shard"));
  }

  // Log-probs, entropies and gradients on the fused path (the lm_head input, the vocabulary
  // streamed in chunks: tp_linear_token_logprobs over this rank's shard, default and small chunks)
  // and on the unfused one (the local [T, V/n] logits: tp_token_logprobs).
  const int64_t saved_chunk = logprob_vocab_chunk();
  // Restores the process-wide chunk even when an ASSERT leaves the loop early.
  struct RestoreChunk {
    int64_t saved;
    ~RestoreChunk() { set_logprob_vocab_chunk(saved); }
  } restore{saved_chunk};
  for (const int64_t chunk : {int64_t(0), int64_t(48), int64_t(-1)}) {
    SCOPED_TRACE("log-prob vocabulary chunk " + std::to_string(chunk));
    set_logprob_vocab_chunk(chunk);
    // Log-probs and entropy (vocab-parallel, never gathered), at two temperatures.
    for (float temp : {1.0f, 0.7f}) {
      auto s_ref = score(*ref, seqs, temp, true);
      auto s_tp = score(*m, seqs, temp, true);
      for (size_t i = 0; i < seqs.size(); ++i) {
        EXPECT_TRUE(close(s_tp[i].token_logprobs, s_ref[i].token_logprobs, 1e-5, "log-probs"));
        EXPECT_TRUE(close(s_tp[i].entropy, s_ref[i].entropy, 1e-5, "entropy"));
      }
    }

    // Backward through log-probs AND entropy at τ = 0.7 with arbitrary upstream gradients: every
    // parameter gradient, reassembled from the shards, equals the single-process one.
    const int64_t T = b.num_tokens();
    std::vector<float> dlp(static_cast<size_t>(T)), dent(static_cast<size_t>(T));
    PhiloxStream rng(11, 1);
    for (int64_t t = 0; t < T; ++t)
      dlp[size_t(t)] = rng.next_normal(), dent[size_t(t)] = 0.3f * rng.next_normal();
    Gradients g_ref = ref->zeros_like_parameters(), g_tp = m->zeros_like_parameters();
    for (CausalLM* model : {ref, m}) {
      ScoredBatch sb = score_for_training(*model, seqs, 0.7f, true);
      backward_from_logprobs(*model, sb, Tensor::from_vector(dlp, {T}),
                             Tensor::from_vector(dent, {T}), model == ref ? g_ref : g_tp);
    }
    // Policy-gradient loss on top (accumulates): the trainer's path.
    const double l_ref =
        policy_gradient_loss_and_grad(*ref, seqs, {3, 2, 6}, {1.0f, -0.5f, 2.0f}, g_ref);
    const double l_tp =
        policy_gradient_loss_and_grad(*m, seqs, {3, 2, 6}, {1.0f, -0.5f, 2.0f}, g_tp);
    EXPECT_NEAR(l_tp, l_ref, 1e-5 * std::fabs(l_ref));
    const auto full_grads = m->gather_full(g_tp.tensors);
    ASSERT_EQ(full_grads.size(), g_ref.tensors.size());
    for (size_t i = 0; i < full_grads.size(); ++i) {
      ASSERT_EQ(full_grads[i].name, g_ref.tensors[i].name);
      ASSERT_EQ(full_grads[i].tensor.shape(), g_ref.tensors[i].tensor.shape())
          << full_grads[i].name;
      EXPECT_TRUE(close(full_grads[i].tensor.to_vector(), g_ref.tensors[i].tensor.to_vector(), 1e-5,
                        "gradient " + full_grads[i].name));
    }
    // The clipping norm of the sharded gradient is the full gradient's.
    std::vector<Tensor> gl;
    for (auto& g : g_tp.tensors) gl.push_back(g.tensor);
    const double sq_ref = g_ref.sum_squares(), sq_tp = m->grad_sum_squares(gl);
    EXPECT_NEAR(sq_tp, sq_ref, 1e-5 * sq_ref);
  }
  set_logprob_vocab_chunk(saved_chunk);
  // Parameters reassemble to the checkpoint's.
  const auto full_params = m->gather_full(m->parameters());
  const auto ref_params = ref->parameters();
  for (size_t i = 0; i < full_params.size(); ++i)
    EXPECT_EQ(full_params[i].tensor.to_vector(), ref_params[i].tensor.to_vector())
        << full_params[i].name;
}

TEST(TensorParallelWorker, DISABLED_MatchesOneProcess) {
  auto world = dist::init_distributed();
  ASSERT_EQ(world->size(), 2);
  compare_model(*world, "qwen3_tiny", false);  // q/k norms, untied lm_head
  compare_model(*world, "qwen2_tiny", false);  // q/k/v biases, tied embedding
  compare_model(*world, "llama3_tiny", true);  // 6 query heads, recompute mode
  compare_biased_llama(*world);
}

TEST(TensorParallelWorker, DISABLED_SaveLoadsInOneProcessAndRandomInitMatches) {
  auto world = dist::init_distributed();
  auto tp = dist::make_tp_comm(*world);
  const char* out = std::getenv("GYRE_TP_TEST_DIR");
  ASSERT_NE(out, nullptr);
  const ModelConfig cfg = load_config(test::source_path("tests/fixtures/models/qwen3_tiny"));
  auto ref = CausalLM::random_init(cfg, 5);
  auto m = CausalLM::random_init(cfg, 5, 0.02f, tp.get());
  const auto full = m->gather_full(m->parameters());
  const auto rp = ref->parameters();
  for (size_t i = 0; i < rp.size(); ++i)
    EXPECT_EQ(full[i].tensor.to_vector(), rp[i].tensor.to_vector()) << rp[i].name;
  m->save(out, DType::f32);  // collective: rank 0 writes the full model
  world->barrier();
  auto back = CausalLM::load(out);  // one process, no TP
  const auto bp = back->parameters();
  for (size_t i = 0; i < rp.size(); ++i)
    EXPECT_EQ(bp[i].tensor.to_vector(), rp[i].tensor.to_vector()) << rp[i].name;
  // load_weights (weight sync from disk) keeps each rank's shard.
  auto m2 = CausalLM::random_init(cfg, 6, 0.02f, tp.get());
  m2->load_weights(out);
  const auto full2 = m2->gather_full(m2->parameters());
  for (size_t i = 0; i < rp.size(); ++i)
    EXPECT_EQ(full2[i].tensor.to_vector(), rp[i].tensor.to_vector()) << rp[i].name;
  world->barrier();
}

TEST(TensorParallelWorker, DISABLED_BadShapesAreClearErrors) {
  auto world = dist::init_distributed();
  auto tp = dist::make_tp_comm(*world);
  ModelConfig cfg = load_config(test::source_path("tests/fixtures/models/qwen3_tiny"));
  cfg.num_attention_heads = 3;
  try {
    CausalLM::random_init(cfg, 1, 0.02f, tp.get());
    ADD_FAILURE() << "3 heads over 2 ranks must be rejected";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("num_attention_heads = 3 is not divisible by "
                       "--tensor-model-parallel-size 2"),
              std::string::npos)
        << msg;
  }
  try {
    CausalLM::load(test::source_path("tests/fixtures/models/qwen3moe_tiny"),
                   LoadOptions{.tp = tp.get()});
    ADD_FAILURE() << "MoE under TP must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not shard MoE layers"), std::string::npos)
        << e.what();
  }
}

void expect_worker_passes(const std::string& test, const std::vector<std::string>& env = {}) {
  auto r = run_mpi_worker("TensorParallelWorker." + test, 2, env);
  EXPECT_EQ(r.r.exit_code, 0) << r.all();
  // Both ranks ran the worker and it passed on both.
  size_t n = 0, pos = 0;
  while ((pos = r.all().find("PASSED", pos)) != std::string::npos) ++n, ++pos;
  EXPECT_EQ(n, 2u) << r.all();
}

TEST(TensorParallel, TwoRanksMatchOneProcess) {
  expect_worker_passes("DISABLED_MatchesOneProcess");
}

TEST(TensorParallel, CheckpointIsFullAndLoadsInOneProcess) {
  const std::string dir = test::temp_dir("tp_save") + "/model";
  expect_worker_passes("DISABLED_SaveLoadsInOneProcessAndRandomInitMatches",
                       {"GYRE_TP_TEST_DIR=" + dir});
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
}

TEST(TensorParallel, IndivisibleHeadsAndMoeAreRejected) {
  expect_worker_passes("DISABLED_BadShapesAreClearErrors");
}

}  // namespace
}  // namespace gyre::model
