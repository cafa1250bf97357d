#include "gyre/bench/workloads.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "gyre/core/error.h"
#include "gyre/model/scoring.h"
#ifdef GYRE_HAVE_CUDA
#include "gyre/backend/cuda/kernels.h"  // device_available(): is a GPU visible
#endif

namespace gyre::bench {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Allocator& allocator_of(Device device) {
  if (device == Device::cpu) return cpu_allocator();
  require_device(device);
  return *device_hooks(device)->allocator;
}

}  // namespace

void require_device(Device device) {
  if (device == Device::cpu) return;
  if (!device_hooks(device))
    GYRE_THROW(unsupported,
               "--device {}: this gyre was built without the CUDA backend; rebuild with a CUDA "
               "toolkit (nvcc) and -DGYRE_CUDA=ON, or use --device cpu",
               device_name(device));
#ifdef GYRE_HAVE_CUDA
  if (!cuda::device_available())
    GYRE_THROW(unsupported,
               "--device {}: no CUDA device is visible to this process (check nvidia-smi and "
               "CUDA_VISIBLE_DEVICES), or use --device cpu",
               device_name(device));
#endif
}

void reset_peak_memory(Device device) { allocator_of(device).reset_peak(); }
size_t peak_memory_bytes(Device device) { return allocator_of(device).peak_bytes(); }
size_t memory_in_use_bytes(Device device) { return allocator_of(device).bytes_in_use(); }

std::vector<std::vector<int32_t>> random_sequences(int64_t n, int64_t len, int64_t vocab,
                                                   uint32_t seed) {
  GYRE_CHECK(n > 0 && len > 0 && vocab > 0, "random_sequences({}, {}, {})", n, len, vocab);
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(n),
                                         std::vector<int32_t>(static_cast<size_t>(len)));
  uint32_t x = seed;
  for (auto& s : seqs)
    for (auto& t : s) {
      x = x * 1664525u + 1013904223u;
      t = int32_t((x >> 8) % uint32_t(vocab));
    }
  return seqs;
}

double train_step_flops(const model::ModelConfig& cfg, int64_t params,
                        const std::vector<int64_t>& seq_lens) {
  double tokens = 0, sum_sq = 0;
  for (int64_t l : seq_lens) {
    tokens += double(l);
    sum_sq += double(l) * double(l);
  }
  const double attn = 3.0 * 4.0 * double(cfg.num_hidden_layers) * double(cfg.num_attention_heads) *
                      double(cfg.head_dim) * sum_sq / 2.0;
  return 6.0 * double(params) * tokens + attn;
}

TrainStep::TrainStep(model::CausalLM& model, std::vector<std::vector<int32_t>> seqs,
                     int64_t micro_batch_tokens, bool optimizer_writes_copies)
    : model_(model),
      seqs_(std::move(seqs)),
      prompt_lens_(seqs_.size(), 1),
      advantages_(seqs_.size(), 1.0f),
      grads_(model.zeros_like_parameters()),
      opt_({.lr = 1e-6, .clip_grad = 1.0}, {}),
      copies_(model) {
  // As rl::ActorTrainer without an engine to feed: AdamW writes the step's bf16 copies in its
  // update and they serve the next step (step_weight_copies.h).
  optimizer_writes_copies_ = optimizer_writes_copies;
  if (optimizer_writes_copies_) opt_.set_bf16_copies(copies_.for_optimizer());
  for (const auto& s : seqs_) tokens_ += int64_t(s.size());
  micro_batch_tokens_ = micro_batch_tokens > 0 ? micro_batch_tokens : tokens_;
  auto ps = model_.parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    params_.emplace_back(ps[i].name, ps[i].tensor);
    grad_list_.emplace_back(grads_.tensors[i].name, grads_.tensors[i].tensor);
  }
}

double TrainStep::run() {
  grads_.zero();
  double loss = 0;
  {
    const ops::UseBf16WeightCache use_copies(copies_.cache());
    // One micro-batch of every token, as the anchor (bench/hf_anchor.py) runs one forward of the
    // whole [seqs, len] batch: the dW GEMMs then accumulate once per step, not once per 8192.
    loss = model::policy_gradient_loss_and_grad(model_, seqs_, prompt_lens_, advantages_, grads_,
                                                micro_batch_tokens_);
  }
  if (!optimizer_writes_copies_) copies_.weights_changed();  // as the data-parallel trainer
  opt_.step(params_, grad_list_);
  if (optimizer_writes_copies_) copies_.after_optimizer_step();  // kept when AdamW wrote them all
  return loss;
}

double logprob_step(model::CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                    bool entropy) {
  int64_t tokens = 0;
  for (const auto& s : seqs) tokens += int64_t(s.size());
  auto scores = model::score(model, seqs, 1.0f, entropy, tokens);
  return scores[0].token_logprobs.empty() ? 0.0 : double(scores[0].token_logprobs[0]);
}

double time_steps(const std::function<void()>& step, int steps, int warmup) {
  GYRE_CHECK(steps > 0 && warmup >= 0, "time_steps: steps {} warmup {}", steps, warmup);
  for (int i = 0; i < warmup; ++i) step();
  const double t0 = now_s();
  for (int i = 0; i < steps; ++i) step();
  return (now_s() - t0) / steps;
}

std::vector<infer::GenerateRequest> random_requests(int64_t batch, int64_t prompt,
                                                    int64_t new_tokens, int64_t vocab,
                                                    uint32_t seed) {
  std::vector<infer::GenerateRequest> reqs;
  uint32_t x = seed * 2654435761u + 12345u;
  for (int64_t i = 0; i < batch; ++i) {
    infer::GenerateRequest r;
    r.input_ids.resize(size_t(prompt));
    for (auto& t : r.input_ids) {
      x = x * 1664525u + 1013904223u;
      t = int32_t((x >> 8) % uint32_t(vocab));
    }
    r.sampling.temperature = 1.0f;
    r.sampling.max_new_tokens = int32_t(new_tokens);
    r.sampling.ignore_eos = true;
    r.sampling.seed = uint64_t(seed) * 100000u + uint64_t(i);
    reqs.push_back(std::move(r));
  }
  return reqs;
}

infer::EngineConfig rollout_engine_config(int64_t batch, int64_t prompt, int64_t max_len,
                                          int64_t chunk) {
  infer::EngineConfig ecfg;
  ecfg.page_size = 16;
  const int64_t pages_per_req = (max_len + ecfg.page_size - 1) / ecfg.page_size + 1;
  ecfg.num_pages = batch * pages_per_req + 64;
  ecfg.max_running_requests = int32_t(std::max<int64_t>(batch, 1));
  ecfg.max_num_batched_tokens = std::max<int64_t>(chunk, batch + prompt);
  ecfg.random_seed = 7;
  return ecfg;
}

RolloutRun drive(infer::Engine& engine, std::vector<infer::GenerateRequest> reqs, double budget_s) {
  struct Shared {
    std::string error;
    int64_t pending = 0;
  };
  auto sh = std::make_shared<Shared>();
  sh->pending = int64_t(reqs.size());
  for (auto& r : reqs) {
    infer::RequestCallbacks cb;
    cb.on_done = [sh](infer::GenerateResult&& res) {
      --sh->pending;
      if (!res.error.empty() && sh->error.empty()) sh->error = res.error;
    };
    engine.submit(std::move(r), std::move(cb));
  }
  RolloutRun run;
  const int64_t gen0 = engine.stats().generated_tokens;
  const double t0 = now_s();
  bool first = true;
  while (engine.step()) {
    const double t = now_s();
    if (first) {
      run.first_step_s = t - t0;
      run.tokens_after_first = engine.stats().generated_tokens - gen0;
      first = false;
    }
    if (t - t0 > budget_s && sh->pending > 0) {
      run.complete = false;
      break;
    }
  }
  run.seconds = now_s() - t0;
  run.tokens = engine.stats().generated_tokens - gen0;
  if (!run.complete) {
    engine.abort_all();
    engine.run_until_idle();
  }
  if (!sh->error.empty()) GYRE_THROW(invalid_argument, "request rejected: {}", sh->error);
  GYRE_CHECK(sh->pending == 0, "{} requests unfinished after the engine went idle", sh->pending);
  return run;
}

}  // namespace gyre::bench
