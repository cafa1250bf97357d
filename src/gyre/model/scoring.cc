// Scoring (per-token log-probs and entropies) and the fixture policy-gradient loss over CausalLM.
// Sequences are packed into micro-batches bounded by a token budget and by the size of the logits
// they materialise; gradients accumulate across micro-batches, so the result does not depend on the
// split.
#include "gyre/model/scoring.h"

#include <algorithm>
#include <atomic>
#include <cmath>

#include "gyre/backend/ops.h"
#include "gyre/model/forward_state.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::model {

namespace {

// Logits are [T, V] f32: bound T·V so one micro-batch's logits stay around 1 GiB.
constexpr int64_t kMaxLogitElements = int64_t(1) << 28;

std::atomic<int64_t> g_vocab_chunk{0};  // set_logprob_vocab_chunk

// Vocabulary chunk width of the fused path for this model, or 0 for the unfused [T, V] path. Under
// tensor parallelism the chunks stream this rank's vocabulary shard.
int64_t fused_chunk(const CausalLM& model) {
  const int64_t chunk = g_vocab_chunk.load(std::memory_order_relaxed);
  if (chunk < 0) return 0;
  const TpLayout* tp = model.tensor_parallel();
  const int64_t V = tp ? tp->vocab_end - tp->vocab_begin : model.config().vocab_size;
  return chunk > 0 ? std::min(chunk, V) : ops::default_logprob_chunk(V);
}

// The fused log-probs of the lm_head input h: ops::linear_token_logprobs, or under tensor
// parallelism its vocab-parallel form over this rank's lm_head shard (tensor_parallel.h).
void fused_logprobs(const CausalLM& model, const Tensor& h, const Tensor& targets, float temp,
                    int64_t chunk, Tensor& logp, Tensor& entropy, Tensor& lse) {
  if (const TpLayout* tp = model.tensor_parallel())
    tp_linear_token_logprobs(*tp, h, model.lm_head_weight(), targets, temp, chunk, logp, entropy,
                             lse);
  else
    ops::linear_token_logprobs(h, model.lm_head_weight(), targets, temp, chunk, logp, entropy, lse);
}

// The forward's autocast setting (CausalLM::forward: bf16 precision on a CUDA model).
bool autocast_of(const CausalLM& model) {
  return model.precision() == Precision::bf16 && model.device() == Device::cuda;
}

// Records that targets lie in [-1, V) (built from the validated ids) so the log-prob ops skip their
// device-to-host check.
void known_targets(ops::KnownIndices& known, const Tensor& targets, int64_t V) {
  known.add_range(targets, -1, V);
}

void check_temperature(float temperature) {
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    GYRE_THROW(invalid_argument, "temperature must be a positive finite number, got {}",
               temperature);
}

// Splits [0, seqs.size()) into consecutive groups whose token count fits the budget. `width` is the
// number of f32 logit columns a micro-batch materialises per token: the vocabulary, or the chunk
// width on the fused path.
std::vector<std::pair<size_t, size_t>> plan_batches(const std::vector<std::vector<int32_t>>& seqs,
                                                    int64_t max_tokens, int64_t width) {
  const int64_t cap = std::max<int64_t>(1, std::min(max_tokens, kMaxLogitElements / width));
  std::vector<std::pair<size_t, size_t>> out;
  size_t begin = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].empty())
      GYRE_THROW(invalid_argument, "sequence {} is empty; every sequence needs at least one token",
                 i);
    const int64_t n = int64_t(seqs[i].size());
    if (i > begin && tokens + n > cap) {
      out.push_back({begin, i});
      begin = i;
      tokens = 0;
    }
    tokens += n;
  }
  if (begin < seqs.size()) out.push_back({begin, seqs.size()});
  return out;
}

// targets[t] = next token of the same sequence, -1 on each sequence's last token. Built on the host
// from the host batch; callers copy it to the model's device.
Tensor next_token_targets(const Batch& b) {
  const int64_t T = b.num_tokens(), B = b.num_seqs();
  Tensor targets = Tensor::empty({T}, DType::i32);
  const int32_t* ids = b.ids.i32();
  const int32_t* cu = b.cu_seqlens.i32();
  int32_t* tg = targets.i32();
  for (int64_t s = 0; s < B; ++s)
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t) tg[t] = t + 1 < cu[s + 1] ? ids[t + 1] : -1;
  return targets;
}

// Log-probs / entropy from the model's logits: the full-vocabulary op, or under tensor parallelism
// the vocab-parallel one over the local shard (never gathers the vocabulary).
void logprobs_of(const CausalLM& model, const Tensor& logits, const Tensor& targets, float temp,
                 Tensor& logp, Tensor& entropy) {
  if (const TpLayout* tp = model.tensor_parallel())
    tp_token_logprobs(*tp, logits, targets, temp, logp, entropy);
  else
    ops::token_logprobs(logits, targets, temp, logp, entropy);
}

}  // namespace

void set_logprob_vocab_chunk(int64_t chunk) {
  g_vocab_chunk.store(chunk, std::memory_order_relaxed);
}
int64_t logprob_vocab_chunk() { return g_vocab_chunk.load(std::memory_order_relaxed); }

std::vector<SequenceScores> score(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                                  float temperature, bool with_entropy,
                                  int64_t max_tokens_per_batch) {
  check_temperature(temperature);
  std::vector<SequenceScores> out(seqs.size());
  const int64_t V = model.config().vocab_size;
  const int64_t chunk = fused_chunk(model);
  for (auto [begin, end] : plan_batches(seqs, max_tokens_per_batch, chunk > 0 ? chunk : V)) {
    std::vector<std::vector<int32_t>> group(seqs.begin() + long(begin), seqs.begin() + long(end));
    Batch batch = Batch::pack(group);
    ForwardOptions o;
    o.hidden_only = chunk > 0;
    Tensor fwd = model.forward(batch, o);  // logits [T, V], or the lm_head input [T, H] if fused
    const int64_t T = batch.num_tokens();
    const Device dev = model.device();
    Tensor targets = next_token_targets(batch).to(dev);
    Tensor logp = Tensor::empty({T}, DType::f32, dev), entropy;
    if (with_entropy) entropy = Tensor::empty({T}, DType::f32, dev);
    if (chunk > 0) {
      ops::Bf16Autocast autocast(autocast_of(model));
      ops::KnownIndices known;
      known_targets(known, targets, V);
      Tensor lse;
      fused_logprobs(model, fwd, targets, temperature, chunk, logp, entropy, lse);
    } else {
      logprobs_of(model, fwd, targets, temperature, logp, entropy);
    }
    fwd = Tensor();               // free the logits / hidden states before the next micro-batch
    logp = logp.to(Device::cpu);  // the results are host vectors (no copy on the CPU)
    if (with_entropy) entropy = entropy.to(Device::cpu);
    const int32_t* cu = batch.cu_seqlens.i32();
    const float* lp = logp.f32();
    for (size_t i = 0; i < group.size(); ++i) {
      SequenceScores& s = out[begin + i];
      s.token_logprobs.assign(lp + cu[i], lp + cu[i + 1] - 1);
      if (with_entropy) s.entropy.assign(entropy.f32() + cu[i], entropy.f32() + cu[i + 1]);
    }
  }
  return out;
}

ScoredBatch score_for_training(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                               float temperature, bool with_entropy) {
  check_temperature(temperature);
  ScoredBatch sb;
  sb.batch = Batch::pack(seqs);
  sb.temperature = temperature;
  const int64_t chunk = fused_chunk(model);
  ForwardOptions o;
  o.save_for_backward = true;
  o.hidden_only = chunk > 0;
  Tensor out = model.forward(sb.batch, o, &sb.state);
  const int64_t T = sb.batch.num_tokens();
  const Device dev = model.device();
  sb.targets = next_token_targets(sb.batch).to(dev);
  sb.logp = Tensor::empty({T}, DType::f32, dev);
  if (chunk == 0) {
    sb.logits = out;
    if (with_entropy) sb.entropy = Tensor::empty({T}, DType::f32, dev);
    logprobs_of(model, sb.logits, sb.targets, temperature, sb.logp, sb.entropy);
    return sb;
  }
  // Fused: the entropy is always kept (the backward needs it whenever a dentropy is given).
  sb.hidden = out;
  sb.vocab_chunk = chunk;
  sb.row_entropy = Tensor::empty({T}, DType::f32, dev);
  ops::Bf16Autocast autocast(autocast_of(model));
  ops::KnownIndices known;
  known_targets(known, sb.targets, model.config().vocab_size);
  fused_logprobs(model, sb.hidden, sb.targets, temperature, chunk, sb.logp, sb.row_entropy, sb.lse);
  if (with_entropy) sb.entropy = sb.row_entropy;
  return sb;
}

Tensor logprobs_with_known_gradient(CausalLM& model, const Batch& batch, const Tensor& dlogp,
                                    Gradients& grads) {
  const int64_t T = batch.num_tokens();
  if (dlogp.dtype() != DType::f32 || dlogp.numel() != T)
    GYRE_THROW(invalid_argument, "logprobs_with_known_gradient: dlogp must be f32 [{}], got {} {}",
               T, dtype_name(dlogp.dtype()), shape_str(dlogp.shape()));
  if (model.tensor_parallel())
    GYRE_THROW(invalid_argument,
               "logprobs_with_known_gradient: not under tensor parallelism (use "
               "score_for_training + backward_from_logprobs)");
  ForwardOptions o;
  o.save_for_backward = true;
  o.hidden_only = true;
  ForwardState state;
  Tensor hidden = model.forward(batch, o, &state);
  const Device dev = model.device();
  const Tensor targets = next_token_targets(batch).to(dev);
  Tensor logp, entropy, lse, dh, dw = model.lm_head_grad(grads);
  {
    ops::Bf16Autocast autocast(state.impl().bf16_autocast);
    ops::KnownIndices known;
    known_targets(known, targets, model.config().vocab_size);
    ops::linear_token_logprobs_with_grad(hidden, model.lm_head_weight(), targets, 1.0f,
                                         dlogp.to(dev), Tensor(), logp, entropy, lse, dh, dw);
  }
  hidden = Tensor();
  model.backward_from_hidden(dh, state, grads);
  return logp;
}

void backward_from_logprobs(CausalLM& model, ScoredBatch& sb, const Tensor& dlogp,
                            const Tensor& dentropy, Gradients& grads) {
  const int64_t T = sb.batch.num_tokens();
  if (!sb.logits.defined() && !sb.hidden.defined())
    GYRE_THROW(invalid_argument, "backward_from_logprobs: this ScoredBatch was already consumed");
  if (dlogp.dtype() != DType::f32 || dlogp.numel() != T)
    GYRE_THROW(invalid_argument, "backward_from_logprobs: dlogp must be f32 [{}], got {} {}", T,
               dtype_name(dlogp.dtype()), shape_str(dlogp.shape()));
  if (dentropy.defined() && (dentropy.dtype() != DType::f32 || dentropy.numel() != T))
    GYRE_THROW(invalid_argument, "backward_from_logprobs: dentropy must be f32 [{}], got {} {}", T,
               dtype_name(dentropy.dtype()), shape_str(dentropy.shape()));
  // dlogp/dentropy may be host tensors: they follow the logits to the model's device.
  const Device dev = model.device();
  if (sb.hidden.defined()) {
    // Fused: dh = Σ_chunks dz_c W_c and dW_c += dz_c^T h, chunk by chunk (no [T, V] dlogits).
    if (!sb.state.ready())
      GYRE_THROW(invalid_argument,
                 "backward_from_logprobs: the ScoredBatch's ForwardState holds no saved forward");
    Tensor dh, dw = model.lm_head_grad(grads);
    {
      ops::Bf16Autocast autocast(sb.state.impl().bf16_autocast);
      ops::KnownIndices known;
      known_targets(known, sb.targets, model.config().vocab_size);
      const Tensor dlp = dlogp.to(dev), dent = dentropy.defined() ? dentropy.to(dev) : Tensor();
      if (const TpLayout* tp = model.tensor_parallel())
        // dh is this rank's partial; backward_from_hidden sums the ranks' ("f").
        tp_linear_token_logprobs_backward(*tp, sb.hidden, model.lm_head_weight(), sb.targets,
                                          sb.temperature, sb.vocab_chunk, sb.lse, sb.row_entropy,
                                          dlp, dent, dh, dw);
      else
        ops::linear_token_logprobs_backward(sb.hidden, model.lm_head_weight(), sb.targets,
                                            sb.temperature, sb.vocab_chunk, sb.lse, sb.row_entropy,
                                            dlp, dent, dh, dw);
    }
    sb.hidden = Tensor();
    model.backward_from_hidden(dh, sb.state, grads);
    return;
  }
  Tensor dlogits = Tensor::empty(sb.logits.shape(), DType::f32, dev);
  if (const TpLayout* tp = model.tensor_parallel())
    tp_token_logprobs_backward(*tp, sb.logits, sb.targets, sb.temperature, dlogp.to(dev),
                               dentropy.defined() ? dentropy.to(dev) : Tensor(), dlogits);
  else
    ops::token_logprobs_backward(sb.logits, sb.targets, sb.temperature, dlogp.to(dev),
                                 dentropy.defined() ? dentropy.to(dev) : Tensor(), dlogits);
  sb.logits = Tensor();  // release before the model backward allocates its activations' grads
  model.backward(dlogits, sb.state, grads);
}

double policy_gradient_loss_and_grad(CausalLM& model, const std::vector<std::vector<int32_t>>& seqs,
                                     const std::vector<int32_t>& prompt_lens,
                                     const std::vector<float>& advantages, Gradients& grads,
                                     int64_t max_tokens_per_batch) {
  if (seqs.empty()) GYRE_THROW(invalid_argument, "policy-gradient loss: no sequences given");
  if (prompt_lens.size() != seqs.size() || advantages.size() != seqs.size())
    GYRE_THROW(invalid_argument,
               "policy-gradient loss: {} sequences but {} prompt lengths and {} advantages",
               seqs.size(), prompt_lens.size(), advantages.size());
  int64_t N = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const int64_t L = int64_t(seqs[i].size());
    if (prompt_lens[i] < 1 || prompt_lens[i] > L)
      GYRE_THROW(invalid_argument,
                 "sequence {}: prompt_len {} must be in [1, {}] (the sequence length; the first "
                 "token has no log-prob)",
                 i, prompt_lens[i], L);
    if (!std::isfinite(advantages[i]))
      GYRE_THROW(invalid_argument, "sequence {}: advantage {} is not finite", i, advantages[i]);
    N += L - prompt_lens[i];
  }
  if (N == 0)
    GYRE_THROW(invalid_argument,
               "policy-gradient loss: no response tokens (every prompt_len equals its sequence "
               "length)");
  double loss = 0.0;
  const int64_t V = model.config().vocab_size, chunk = fused_chunk(model);
  // dL/dlogp = -A_i / N is known before the forward: on the GPU under bf16 autocast the head runs
  // forward and backward in one pass (logprobs_with_known_gradient; the fused chunk path, no TP).
  // Elsewhere — and on the unfused path — the two-pass head (score_for_training, then
  // backward_from_logprobs), whose numbers the CPU reference and the fixtures define.
  const bool one_pass = chunk > 0 && !model.tensor_parallel() && autocast_of(model);
  for (auto [begin, end] : plan_batches(seqs, max_tokens_per_batch, chunk > 0 ? chunk : V)) {
    std::vector<std::vector<int32_t>> group(seqs.begin() + long(begin), seqs.begin() + long(end));
    const Batch batch = Batch::pack(group);
    const int64_t T = batch.num_tokens();
    Tensor dlogp = Tensor::zeros({T}, DType::f32);
    const int32_t* cu = batch.cu_seqlens.i32();
    float* d = dlogp.f32();
    // dL/dlogp is the coefficient alone, so the backward is queued before the log-probs are read:
    // reading them first would synchronise and idle the GPU between forward and backward.
    auto response_rows = [&](size_t i, auto&& f) {
      const double coef = -double(advantages[begin + i]) / double(N);
      // Row r predicts token r+1: tokens t >= P live on rows cu + P - 1 .. cu + L - 2.
      for (int64_t r = cu[i] + prompt_lens[begin + i] - 1; r < cu[i + 1] - 1; ++r) f(r, coef);
    };
    for (size_t i = 0; i < group.size(); ++i)
      response_rows(i, [&](int64_t r, double coef) { d[r] = float(coef); });
    Tensor logp;
    if (one_pass) {
      logp = logprobs_with_known_gradient(model, batch, dlogp, grads);
    } else {
      ScoredBatch sb = score_for_training(model, group, 1.0f, false);
      logp = sb.logp;  // kept: the backward releases the scored batch's state
      backward_from_logprobs(model, sb, dlogp, Tensor(), grads);
    }
    const Tensor host_logp = logp.to(Device::cpu);
    const float* lp = host_logp.f32();
    for (size_t i = 0; i < group.size(); ++i)
      response_rows(i, [&](int64_t r, double coef) { loss += coef * double(lp[r]); });
  }
  return loss;
}

LossAndGrad policy_gradient_loss_and_grad(CausalLM& model,
                                          const std::vector<std::vector<int32_t>>& seqs,
                                          const std::vector<int32_t>& prompt_lens,
                                          const std::vector<float>& advantages) {
  LossAndGrad r;
  r.grads = model.zeros_like_parameters();
  r.loss = policy_gradient_loss_and_grad(model, seqs, prompt_lens, advantages, r.grads);
  return r;
}

}  // namespace gyre::model
