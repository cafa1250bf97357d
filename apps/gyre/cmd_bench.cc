// `gyre bench train|logprob|rollout (--model DIR | --shape NAME) [--device cpu|cuda] ...`: one
// whole-model throughput figure as one JSON line on stdout (gyre/bench/workloads.h runs the
// workload):
//   train    forward + policy-gradient loss + backward + clip + AdamW over --batch-size sequences
//            of --seq-len random tokens: tokens/s, ms per step, MFU on the GPU;
//   logprob  the log-prob forward (--entropy: with the entropy) over the same batch: tokens/s;
//   rollout  the rollout engine generating exactly --new-tokens (ignore_eos, temperature 1) for
//            --batch-size prompts of --prompt-len random tokens: output tokens/s; at batch 1 also
//            ms per decoded token (--decode-fusion off: without the fused decode ops, for A/B).
// --shape runs random weights of a named real shape (model/named_shapes.h). Every figure is the
// mean over --steps timed iterations after --warmup untimed ones; peak_memory_bytes is the
// allocator high-water mark of the device over the timed iterations (weights included).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "gyre/bench/workloads.h"
#include "gyre/core/error.h"
#include "gyre/core/flags.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/named_shapes.h"

namespace {

using gyre::Device;
using Json = nlohmann::ordered_json;

struct BenchFlags {
  std::string model, shape, device, precision, decode_fusion;
  int layers = 0;
  int64_t batch_size = 0, seq_len = 0, prompt_len = 0, new_tokens = 0, seed = 0;
  int64_t micro_batch_tokens = 0;
  int steps = 0, warmup = 0;
  bool entropy = false;
};

void register_flags(gyre::FlagSet& f, BenchFlags& b) {
  const std::string m = "Model", w = "Workload";
  f.add<std::string>("model", &b.model, "", "Hugging Face model folder (or --shape)", m);
  std::string names;
  for (const auto& n : gyre::model::named_shape_names()) names += (names.empty() ? "" : ", ") + n;
  f.add<std::string>("shape", &b.shape, "",
                     "random weights of a named real shape (or --model): " + names, m);
  f.add<int>("layers", &b.layers, 0, "--shape only: keep the first N layers (0: the shape's)", m);
  f.add<std::string>("device", &b.device, "cpu", "where the model runs (cuda: a CUDA build)", m)
      .choices({"cpu", "cuda"});
  f.add<std::string>("precision", &b.precision, "auto",
                     "compute precision; auto: bf16 on cuda, f32 on cpu (bf16 is a GPU mode)", m)
      .choices({"auto", "f32", "bf16"});
  f.add<int64_t>("seed", &b.seed, 1, "seed of the random weights and token ids", m);
  f.add<int64_t>("batch-size", &b.batch_size, 4, "sequences (train, logprob) or prompts (rollout)",
                 w);
  f.add<int64_t>("seq-len", &b.seq_len, 4096, "train, logprob: tokens per sequence", w);
  f.add<int64_t>("micro-batch-tokens", &b.micro_batch_tokens, 0,
                 "train: micro-batches of at most this many tokens (0: one of the whole batch, as "
                 "bench/hf_anchor.py's one forward; lower it if the activations do not fit)",
                 w);
  f.add<int64_t>("prompt-len", &b.prompt_len, 128, "rollout: prompt tokens per request", w);
  f.add<int64_t>("new-tokens", &b.new_tokens, 256, "rollout: tokens generated per request", w);
  f.add<int>("steps", &b.steps, 3, "timed iterations (rollout: generation runs)", w);
  f.add<int>("warmup", &b.warmup, 2,
             "untimed iterations first (two: GEMM autotuning, on unless GYRE_GEMM_AUTOTUNE=0, "
             "tunes a large GEMM on its second launch; rollout on cuda: runs of the batch and "
             "prompt shape with at most 8 new tokens, on cpu: 4 prompts of at most 16 tokens)",
             w);
  f.add<bool>("entropy", &b.entropy, false, "logprob: also compute the entropy of every position",
              w);
  f.add<std::string>("decode-fusion", &b.decode_fusion, "on",
                     "rollout: fused decode ops (model/decode_fusion.h); off for A/B runs", w)
      .choices({"on", "off"});
}

void check_positive(int64_t v, const char* flag) {
  if (v < 1) GYRE_THROW(invalid_argument, "--{} must be >= 1, got {}", flag, v);
}

// The model of --model or --shape on its device, at its precision.
std::unique_ptr<gyre::model::CausalLM> make_model(const BenchFlags& b, Device device,
                                                  gyre::model::Precision precision) {
  if (!b.model.empty()) {
    if (b.layers != 0) GYRE_THROW(invalid_argument, "--layers applies to --shape only");
    return gyre::model::CausalLM::load(b.model, {.device = device, .precision = precision});
  }
  auto cfg = gyre::model::named_shape(b.shape);
  if (b.layers < 0 || b.layers > cfg.num_hidden_layers)
    GYRE_THROW(invalid_argument, "--layers {}: shape {} has {} layers (0 keeps them all)", b.layers,
               b.shape, cfg.num_hidden_layers);
  if (b.layers > 0) cfg.num_hidden_layers = b.layers;
  auto m = gyre::model::CausalLM::random_init(cfg, uint64_t(b.seed));
  m->to(device);
  m->set_precision(precision);
  return m;
}

int run_bench(int argc, char** argv) {
  gyre::FlagSet flags("gyre bench <train|logprob|rollout>",
                      "Whole-model throughput with random token ids, one JSON line on stdout:\n"
                      "  train    forward + backward + clip + AdamW (tokens/s, MFU on the GPU)\n"
                      "  logprob  per-token log-prob forward (--entropy: with entropy)\n"
                      "  rollout  rollout engine generation, ignore_eos (output tokens/s)");
  BenchFlags b;
  register_flags(flags, b);
  flags.allow_positionals(true);
  if (!flags.parse(argc, argv)) return 0;
  const auto& pos = flags.positionals();
  if (pos.empty())
    GYRE_THROW(invalid_argument,
               "missing the workload: gyre bench train|logprob|rollout (see gyre bench --help)");
  if (pos.size() > 1)
    GYRE_THROW(invalid_argument, "one workload at a time (train, logprob or rollout), got: {}",
               fmt::join(pos, " "));
  const std::string workload = pos[0];
  if (workload != "train" && workload != "logprob" && workload != "rollout")
    GYRE_THROW(invalid_argument, "unknown workload '{}': use train, logprob or rollout", workload);
  if (b.model.empty() == b.shape.empty())
    GYRE_THROW(invalid_argument,
               "give exactly one of --model DIR (a Hugging Face folder) or --shape NAME (random "
               "weights of a named shape)");
  check_positive(b.batch_size, "batch-size");
  check_positive(b.steps, "steps");
  if (workload == "rollout") {
    check_positive(b.prompt_len, "prompt-len");
    check_positive(b.new_tokens, "new-tokens");
  } else {
    check_positive(b.seq_len, "seq-len");
  }
  // Every token of a step is indexed with an int32 (the packed batch's cu_seqlens and positions,
  // the KV cache's slot_mapping), so a step holds at most 2^31 - 1 tokens. Larger sizes used to
  // end in "internal: std::bad_alloc" from the token buffers, naming no flag.
  {
    constexpr int64_t kMaxTokens = INT32_MAX;
    const bool rollout = workload == "rollout";
    const char* per_seq_flags = rollout ? "(--prompt-len + --new-tokens)" : "--seq-len";
    const double per_seq =
        rollout ? double(b.prompt_len) + double(b.new_tokens) : double(b.seq_len);
    if (double(b.batch_size) * per_seq > double(kMaxTokens))
      GYRE_THROW(invalid_argument,
                 "--batch-size {} x {} {} = {:.0f} tokens per step exceeds {} (2^31 - 1: token "
                 "offsets are int32); lower --batch-size or {}",
                 b.batch_size, per_seq_flags, per_seq, double(b.batch_size) * per_seq, kMaxTokens,
                 rollout ? "--prompt-len / --new-tokens" : "--seq-len");
  }
  if (b.warmup < 0) GYRE_THROW(invalid_argument, "--warmup must be >= 0, got {}", b.warmup);
  if (b.micro_batch_tokens < 0)
    GYRE_THROW(invalid_argument, "--micro-batch-tokens must be >= 0 (0: the whole batch), got {}",
               b.micro_batch_tokens);
  if (b.seed < 0) GYRE_THROW(invalid_argument, "--seed must be >= 0, got {}", b.seed);
  const Device device = b.device == "cuda" ? Device::cuda : Device::cpu;
  std::string precision = b.precision;
  if (precision == "auto") precision = device == Device::cuda ? "bf16" : "f32";
  if (precision == "bf16" && device == Device::cpu)
    GYRE_THROW(invalid_argument,
               "--precision bf16 is a GPU mode (bf16 tensor-core GEMMs); the CPU runs f32: use "
               "--device cuda or --precision f32");
  gyre::bench::require_device(device);

  auto model = make_model(b, device, gyre::model::parse_precision(precision));
  const auto& cfg = model->config();
  const int64_t params = model->num_parameters();
  const uint32_t seed = uint32_t(b.seed);

  Json j;
  j["bench"] = workload;
  j["shape"] = b.shape.empty() ? Json(nullptr) : Json(b.shape);
  j["model"] = b.model.empty() ? Json(nullptr) : Json(b.model);
  j["device"] = b.device;
  j["precision"] = precision;
  j["layers"] = cfg.num_hidden_layers;
  j["params"] = params;
  j["batch_size"] = b.batch_size;

  if (workload == "rollout") {
    namespace bn = gyre::bench;
    // The engine would reject the timed runs' requests; say so before any warm-up runs.
    if (b.prompt_len + b.new_tokens > cfg.max_position_embeddings)
      GYRE_THROW(invalid_argument,
                 "--prompt-len {} + --new-tokens {} = {} exceeds the context length {} of this "
                 "model: shorten the prompt or lower --new-tokens",
                 b.prompt_len, b.new_tokens, b.prompt_len + b.new_tokens,
                 cfg.max_position_embeddings);
    gyre::model::set_decode_fusion(b.decode_fusion == "on");  // before the engine's first graph
    j["decode_fusion"] = b.decode_fusion == "on";
    const gyre::infer::EngineConfig ecfg =
        bn::rollout_engine_config(b.batch_size, b.prompt_len, b.prompt_len + b.new_tokens);
    // The KV pool holds every request at full length at once; a batch the device (or host) cannot
    // hold fails its allocation here, so say which flags sized it.
    auto kv_too_large = [&](const std::string& why) {
      return gyre::Error(
          gyre::ErrorKind::invalid_argument,
          fmt::format("the KV cache for --batch-size {} x (--prompt-len {} + --new-tokens {}) "
                      "tokens ({} pages of {}) does not fit: {}; lower --batch-size, "
                      "--prompt-len or --new-tokens",
                      b.batch_size, b.prompt_len, b.new_tokens, ecfg.num_pages, ecfg.page_size,
                      why));
    };
    std::unique_ptr<gyre::infer::Engine> engine_owner;
    try {
      engine_owner = std::make_unique<gyre::infer::Engine>(*model, nullptr, ecfg);
    } catch (const std::bad_alloc&) {
      throw kv_too_large("out of host memory");
    } catch (const gyre::OutOfMemory& e) {  // either allocator (core/error.h)
      throw kv_too_large(e.what());
    }
    gyre::infer::Engine& engine = *engine_owner;
    // Warm-up runs. On the GPU at the timed runs' batch and prompt shape with at most 8 new
    // tokens: the prefill chunks' and the batch decode step's GEMMs meet autotuning on their second
    // launch (backend/cuda/gemm_tune.h) and the batch's decode graph is captured outside the
    // timing. The CPU has neither: a small run warms its buffers.
    const bool gpu = device == Device::cuda;
    for (int i = 0; i < b.warmup; ++i)
      bn::drive(engine,
                bn::random_requests(gpu ? b.batch_size : std::min<int64_t>(b.batch_size, 4),
                                    gpu ? b.prompt_len : std::min<int64_t>(b.prompt_len, 16),
                                    std::min<int64_t>(b.new_tokens, 8), cfg.vocab_size,
                                    ~(seed * 1000u + uint32_t(i))));  // not a timed run's
    bn::reset_peak_memory(device);
    bn::RolloutRun total;
    for (int i = 0; i < b.steps; ++i) {
      auto r = bn::drive(engine, bn::random_requests(b.batch_size, b.prompt_len, b.new_tokens,
                                                     cfg.vocab_size, seed * 1000u + uint32_t(i)));
      total.seconds += r.seconds;
      total.first_step_s += r.first_step_s;
      total.tokens += r.tokens;
      total.tokens_after_first += r.tokens_after_first;
    }
    j["prompt_len"] = b.prompt_len;
    j["new_tokens"] = b.new_tokens;
    j["steps"] = b.steps;
    j["warmup"] = b.warmup;
    j["seed"] = b.seed;
    j["output_tokens"] = total.tokens;
    j["ms_per_run"] = total.seconds / b.steps * 1e3;
    j["tokens_per_s"] = double(total.tokens) / total.seconds;
    if (b.batch_size == 1) {
      // Decode steps only (the first step is the prefill plus the first token), and end to end.
      const int64_t decoded = total.tokens - total.tokens_after_first;
      j["ms_per_token"] = decoded > 0
                              ? Json((total.seconds - total.first_step_s) / double(decoded) * 1e3)
                              : Json(nullptr);
      j["ms_per_token_e2e"] = total.seconds / double(total.tokens) * 1e3;
      j["prefill_step_ms"] = total.first_step_s / b.steps * 1e3;
    }
    j["peak_memory_bytes"] = bn::peak_memory_bytes(device);
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }

  const auto seqs =
      gyre::bench::random_sequences(b.batch_size, b.seq_len, cfg.vocab_size, 12345u + seed);
  const double tokens = double(b.batch_size) * double(b.seq_len);
  double flops = gyre::bench::train_step_flops(
      cfg, params, std::vector<int64_t>(size_t(b.batch_size), b.seq_len));
  double loss = 0;
  std::function<void()> step_fn;
  std::unique_ptr<gyre::bench::TrainStep> train;
  if (workload == "train") {
    train = std::make_unique<gyre::bench::TrainStep>(*model, seqs, b.micro_batch_tokens);
    step_fn = [&] { loss = train->run(); };
  } else {
    flops /= 3.0;  // the forward alone
    step_fn = [&] { gyre::bench::logprob_step(*model, seqs, b.entropy); };
  }
  // Warm-up first (a training step's first one also creates the AdamW moments, which then count
  // as resident memory like the weights).
  for (int i = 0; i < b.warmup; ++i) step_fn();
  gyre::bench::reset_peak_memory(device);
  const double seconds = gyre::bench::time_steps(step_fn, b.steps, 0);
  j["seq_len"] = b.seq_len;
  if (workload == "train") j["micro_batch_tokens"] = b.micro_batch_tokens;
  if (workload == "logprob") j["entropy"] = b.entropy;
  j["steps"] = b.steps;
  j["warmup"] = b.warmup;
  j["seed"] = b.seed;
  j["tokens_per_step"] = int64_t(tokens);
  j["ms_per_step"] = seconds * 1e3;
  j["tokens_per_s"] = tokens / seconds;
  j["model_tflops"] = flops / seconds / 1e12;
  // MFU against the H200's dense bf16 peak (the convention), on the GPU only.
  if (device == Device::cuda) j["mfu"] = flops / seconds / gyre::bench::kH200PeakFlops;
  j["peak_memory_bytes"] = gyre::bench::peak_memory_bytes(device);
  if (workload == "train") j["loss"] = loss;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

GYRE_COMMAND(bench, "whole-model throughput: train | logprob | rollout, one JSON line", run_bench);
