// CausalLM forward and backward orchestration: embedding → decoder layers (decoder_layer.cc) →
// final RMSNorm → lm_head (tied: the embedding matrix), and the reverse pass. Also Batch packing,
// ForwardState and Gradients. Loading/saving lives in checkpoint_io.cc.
#include "gyre/model/causal_lm.h"

#include <algorithm>
#include <cmath>

#include "gyre/backend/decode_stack_ops.h"
#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/decoder_layer.h"
#include "gyre/model/forward_state.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/model/weights.h"

namespace gyre::model {

namespace {
Tensor empty(const Shape& s, Device d) { return Tensor::empty(s, DType::f32, d); }

// The rollout engine's batch-1 decode step with every layer in one launch (ops::decode_stack_,
// issue 7): bitwise what layer_forward's fused path computes layer by layer (decode fusion on:
// rms_norm_linear_group, rope_attend's fused paged attention, linear_add_residual,
// rms_norm_swiglu_mlp_residual), so it is taken only where that path would run — decode fusion on,
// a KV-cache context with one sequence adding one token, no saving, no TP — and only for dense
// layers without q/k norms (MoE layers and Qwen3's q/k RMSNorm are not in the stack). Returns false
// (and leaves x alone) when it does not apply.
bool run_decode_stack(const ModelConfig& c, const ModelTensors& w, const AttnInputs& a, Tensor& x,
                      bool saving) {
  if (saving || a.tp || !a.context || !decode_fusion() || x.size(0) != 1 || c.qk_norm) return false;
  const int64_t L = c.num_hidden_layers;
  for (const LayerTensors& lt : w.layers)
    if (lt.moe) return false;
  ops::PagedDecodeStep step;
  std::vector<Tensor*> kc, vc;
  if (!a.context->paged_decode_step(L, &step, &kc, &vc)) return false;
  if (!ops::decode_stack_fuses(x.device(), kc[0]->dtype(), 1, L, c.hidden_size,
                               c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                               c.intermediate_size))
    return false;
  step.positions = a.positions;
  std::vector<ops::DecodeStackLayer> layers(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const LayerTensors& t = w.layers[size_t(l)];
    ops::DecodeStackLayer& d = layers[size_t(l)];
    d.input_norm = &t.input_norm, d.post_norm = &t.post_norm;
    d.q_w = &t.q_w, d.q_b = &t.q_b, d.k_w = &t.k_w, d.k_b = &t.k_b, d.v_w = &t.v_w, d.v_b = &t.v_b;
    d.o_w = &t.o_w, d.o_b = &t.o_b;
    d.gate_w = &t.gate_w, d.gate_b = &t.gate_b, d.up_w = &t.up_w, d.up_b = &t.up_b;
    d.down_w = &t.down_w, d.down_b = &t.down_b;
    d.k_cache = kc[size_t(l)], d.v_cache = vc[size_t(l)];
  }
  // layer_forward's eps: the config's, as a float (the fused ops widen it to double).
  ops::decode_stack_(x, layers, float(c.rms_norm_eps), a.scale, a.cos, a.sin, step);
  return true;
}

void check_i32_vector(const Tensor& t, const char* field) {
  if (!t.defined())
    GYRE_THROW(invalid_argument, "Batch.{} is undefined; build batches with Batch::pack", field);
  if (t.dtype() != DType::i32 || t.dim() != 1)
    GYRE_THROW(invalid_argument, "Batch.{} must be a 1-D i32 tensor, got {} {}", field,
               dtype_name(t.dtype()), shape_str(t.shape()));
}

// The batch's tensors on `device` (the same tensors when already there: no copy on the CPU path).
Batch batch_on(const Batch& b, Device device) {
  return Batch{b.ids.to(device), b.positions.to(device), b.cu_seqlens.to(device)};
}

// Validates a host-side batch against the model; returns the largest position.
int64_t validate_batch(const Batch& b, const ModelConfig& c) {
  const int64_t T = b.ids.numel(), B = b.cu_seqlens.numel() - 1;
  if (T == 0) GYRE_THROW(invalid_argument, "empty batch: no tokens to run");
  if (b.positions.numel() != T)
    GYRE_THROW(invalid_argument, "Batch.positions has {} entries but Batch.ids has {}",
               b.positions.numel(), T);
  const int32_t* cu = b.cu_seqlens.i32();
  if (B < 1 || cu[0] != 0 || cu[B] != T)
    GYRE_THROW(invalid_argument,
               "Batch.cu_seqlens must start at 0 and end at the token count {} (got {} entries)", T,
               B + 1);
  const int32_t* ids = b.ids.i32();
  const int32_t* pos = b.positions.i32();
  int64_t max_pos = 0;
  for (int64_t s = 0; s < B; ++s) {
    if (cu[s + 1] <= cu[s])
      GYRE_THROW(invalid_argument,
                 "sequence {} of the batch is empty (cu_seqlens[{}] = {}, cu_seqlens[{}] = {}); "
                 "drop empty sequences",
                 s, s, cu[s], s + 1, cu[s + 1]);
    for (int64_t t = cu[s]; t < cu[s + 1]; ++t) {
      if (ids[t] < 0 || ids[t] >= c.vocab_size)
        GYRE_THROW(invalid_argument,
                   "token id {} at position {} of sequence {} is outside the vocabulary [0, {}) "
                   "of this model",
                   ids[t], t - cu[s], s, c.vocab_size);
      if (pos[t] < 0)
        GYRE_THROW(invalid_argument, "position {} of token {} of sequence {} is negative", pos[t],
                   t - cu[s], s);
      max_pos = std::max<int64_t>(max_pos, pos[t]);
    }
  }
  return max_pos;
}
// The longest sequence of a validated host batch (attention kernels size their grid from it).
int64_t longest_sequence(const Batch& b) {
  const int32_t* cu = b.cu_seqlens.i32();
  int64_t longest = 0;
  for (int64_t s = 0; s + 1 < b.cu_seqlens.numel(); ++s)
    longest = std::max<int64_t>(longest, cu[s + 1] - cu[s]);
  return longest;
}
}  // namespace

// ---- Batch
Batch Batch::pack(const std::vector<std::vector<int32_t>>& seqs) {
  if (seqs.empty()) GYRE_THROW(invalid_argument, "Batch::pack: no sequences given");
  std::vector<int32_t> ids, pos, cu{0};
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (seqs[i].empty())
      GYRE_THROW(invalid_argument,
                 "Batch::pack: sequence {} is empty; every sequence needs at least one token", i);
    for (size_t j = 0; j < seqs[i].size(); ++j) {
      ids.push_back(seqs[i][j]);
      pos.push_back(int32_t(j));
    }
    cu.push_back(int32_t(ids.size()));
  }
  const int64_t T = int64_t(ids.size());
  return Batch{Tensor::from_vector(ids, {T}), Tensor::from_vector(pos, {T}),
               Tensor::from_vector(cu, {int64_t(cu.size())})};
}

// ---- ForwardState
ForwardState::ForwardState() : impl_(std::make_unique<Impl>()) {}
ForwardState::~ForwardState() = default;
ForwardState::ForwardState(ForwardState&&) noexcept = default;
ForwardState& ForwardState::operator=(ForwardState&&) noexcept = default;
void ForwardState::clear() { *impl_ = Impl{}; }
bool ForwardState::ready() const { return impl_ && impl_->ready; }
size_t ForwardState::saved_bytes() const { return impl_ ? impl_->bytes() : 0; }

size_t ForwardState::Impl::bytes() const {
  size_t n = 0;
  for (const auto& l : layers) n += l.bytes();
  for (const Tensor* t : {&final_x, &final_rstd, &head_in})
    if (t->defined() && !(t == &head_in && head_in.storage() == final_x.storage()))
      n += t->nbytes();
  return n;
}

// ---- Gradients
Tensor& Gradients::at(const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return t.tensor;
  GYRE_THROW(not_found, "no gradient named '{}' (it is not a parameter of this model)", name);
}
const Tensor& Gradients::at(const std::string& name) const {
  return const_cast<Gradients*>(this)->at(name);
}
void Gradients::zero() {
  // Deferred on the GPU (Tensor::zero_deferred): the first dW GEMM of each gradient overwrites it
  // (beta 0) instead of adding to a memset — ~2 GB of memsets and C reads a step at 0.5B.
  for (auto& t : tensors) t.tensor.zero_deferred();
}
double Gradients::sum_squares() const {
  double s = 0.0;
  for (const auto& t : tensors) s += ops::sum_squares(t.tensor);
  return s;
}

// ---- CausalLM
CausalLM::CausalLM(const ModelConfig& config) : config_(config), w_(std::make_unique<Weights>()) {
  w_->specs = param_specs(config_, &w_->slots);
  w_->rope = std::make_unique<RopeCache>(config_);
  // The block order GradReadyHook reports in (backward_below_head): embedding, each layer's
  // tensors from its input norm on, final norm, then an untied lm_head.
  const ModelSlots& s = w_->slots;
  int next = 1;
  for (const LayerSlots& l : s.layers) {
    GYRE_CHECK(l.input_norm == next, "parameter layout: layer block starts at {}, expected {}",
               l.input_norm, next);
    next = l.input_norm + 1;
    for (int i : {l.post_norm, l.q_w, l.q_b, l.k_w, l.k_b, l.v_w, l.v_b, l.o_w, l.o_b, l.q_norm,
                  l.k_norm, l.gate_w, l.gate_b, l.up_w, l.up_b, l.down_w, l.down_b, l.router_w})
      next = std::max(next, i + 1);
    for (const auto* v : {&l.expert_gate, &l.expert_up, &l.expert_down})
      for (int i : *v) next = std::max(next, i + 1);
  }
  GYRE_CHECK(s.embed == 0 && s.final_norm == next &&
                 (s.lm_head == s.embed || s.lm_head == s.final_norm + 1) &&
                 size_t(std::max(s.final_norm, s.lm_head) + 1) == w_->specs.size(),
             "parameter layout: embedding {}, final norm {}, lm_head {} of {} parameters", s.embed,
             s.final_norm, s.lm_head, w_->specs.size());
}
CausalLM::~CausalLM() = default;

void CausalLM::to(Device device) {
  if (device == device_) return;
  // params lists a tied embedding once, so moving the list keeps lm_head == embed after rebinding.
  std::vector<NamedTensor> moved;
  moved.reserve(w_->params.size());
  for (const auto& p : w_->params) moved.push_back({p.name, p.tensor.to(device)});
  w_->params = std::move(moved);  // only after every copy succeeded: a failure leaves the model
  w_->t = bind_tensors(w_->slots, w_->params);
  device_ = device;
  mark_weights_changed();
}

std::vector<NamedTensor> CausalLM::parameters() { return w_->params; }
std::vector<NamedTensor> CausalLM::parameters() const { return w_->params; }

int64_t CausalLM::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : w_->params) n += p.tensor.numel();
  return n;
}

const char* precision_name(Precision p) { return p == Precision::bf16 ? "bf16" : "f32"; }

Precision parse_precision(const std::string& s) {
  if (s == "f32") return Precision::f32;
  if (s == "bf16") return Precision::bf16;
  GYRE_THROW(invalid_argument, "precision '{}' is not supported; use f32 or bf16", s);
}

Gradients CausalLM::zeros_like_parameters() const {
  Gradients g;
  g.tensors.reserve(w_->params.size());
  for (const auto& p : w_->params) {
    Tensor t = Tensor::empty(p.tensor.shape(), DType::f32, device_);
    t.zero_deferred();  // as Gradients::zero
    g.tensors.push_back({p.name, std::move(t)});
  }
  return g;
}

void CausalLM::prepare_rope(int64_t n) {
  Tensor cos, sin;
  w_->rope->get(n, &cos, &sin, device_);
}

Tensor CausalLM::forward(const Batch& batch, const ForwardOptions& o, ForwardState* state) {
  const ModelConfig& c = config_;
  const Device dev = device_;
  check_i32_vector(batch.ids, "ids");
  check_i32_vector(batch.positions, "positions");
  check_i32_vector(batch.cu_seqlens, "cu_seqlens");
  // Index data is validated on the host (a device batch is copied back once); the ops get copies
  // on the model's device. On the CPU both are the caller's tensors themselves.
  const Batch host = o.host_batch ? *o.host_batch : batch_on(batch, Device::cpu);
  const int64_t max_pos = validate_batch(host, c);
  const Batch db = batch_on(batch, dev);
  const int64_t max_seq_len = longest_sequence(host);
  // What validate_batch proved, recorded so the per-layer ops skip their device-to-host index
  // copies (ops::KnownIndices; db's tensors are only read during this forward).
  ops::KnownIndices known;
  known.add_range(db.ids, 0, c.vocab_size);
  known.add_range(db.positions, 0, max_pos + 1);
  known.add_offsets(db.cu_seqlens, batch.num_tokens(), max_seq_len);
  if (o.save_for_backward && !state)
    GYRE_THROW(invalid_argument, "forward: save_for_backward needs a ForwardState to save into");
  if (o.save_for_backward && o.attention)
    GYRE_THROW(unsupported,
               "forward: save_for_backward with an AttentionContext (KV-cache attention) is not "
               "supported; training runs without a context");
  const int64_t T = batch.num_tokens(), H = c.hidden_size;
  const bool autocast = precision_ == Precision::bf16 && dev == Device::cuda;
  ops::Bf16Autocast autocast_scope(autocast);
  Tensor logits_rows;         // on the model's device
  bool rows_in_order = true;  // logits for every row in order (no logits_rows, or 0..T-1)
  if (o.logits_rows.defined()) {
    check_i32_vector(o.logits_rows, "logits_rows");
    const Tensor host_rows = o.logits_rows.to(Device::cpu);
    const int32_t* r = host_rows.i32();
    rows_in_order = host_rows.numel() == T;
    for (int64_t i = 0; i < host_rows.numel(); ++i) {
      if (r[i] < 0 || r[i] >= T)
        GYRE_THROW(invalid_argument, "logits_rows[{}] = {} is outside the batch's {} tokens", i,
                   r[i], T);
      rows_in_order = rows_in_order && r[i] == i;
    }
    logits_rows = o.logits_rows.to(dev);
    known.add_range(logits_rows, 0, T);
  }

  AttnInputs a;
  a.positions = db.positions;
  a.cu_seqlens = db.cu_seqlens;
  w_->rope->get(max_pos + 1, &a.cos, &a.sin, dev);
  a.context = o.attention;
  a.scale = float(1.0 / std::sqrt(double(c.head_dim)));  // HF: self.scaling = head_dim ** -0.5
  // Under TP the layers run with this rank's head / intermediate / vocab counts.
  const ModelConfig& lc = tp_ ? tp_->local : c;
  a.tp = tp_ ? tp_->comm : nullptr;
  if (o.gather_vocab && o.save_for_backward)
    GYRE_THROW(invalid_argument,
               "forward: gather_vocab is for sampling; training takes the vocab-sharded logits");
  if (o.hidden_only && o.gather_vocab)
    GYRE_THROW(invalid_argument,
               "forward: hidden_only returns the lm_head's input, gather_vocab the full logits; "
               "ask for one of them");

  ForwardState::Impl* st = nullptr;
  if (state) {
    state->clear();
    if (o.save_for_backward) st = &state->impl();
  }
  if (st) st->layers.resize(size_t(c.num_hidden_layers));

  const ModelTensors& w = w_->t;
  Tensor x = empty({T, H}, dev);
  if (tp_) {  // vocab-parallel embedding + Megatron's "g" (all-reduce forward)
    tp_embedding(db.ids, w.embed, tp_->vocab_begin, x);
    tp_all_reduce(a.tp, x);
  } else {
    ops::embedding(db.ids, w.embed, x);
  }
  const bool stacked = !tp_ && run_decode_stack(c, w, a, x, st != nullptr);
  for (int64_t l = 0; l < c.num_hidden_layers && !stacked; ++l) {
    LayerSaved* save = nullptr;
    if (st) {
      if (recompute_)
        st->layers[size_t(l)].x = x;
      else
        save = &st->layers[size_t(l)];
    }
    x = layer_forward(lc, l, w.layers[size_t(l)], a, x, save);
  }
  if (!st && o.attention && decode_fusion() && !o.hidden_only && !tp_ && rows_in_order) {
    // The rollout engine's decode (decode_fusion.h): every row's logits in order, so the lm_head
    // reads the normed rows directly (the gather below would copy them in order). Not folded into
    // one launch like the layers' norms (ops::rms_norm_linear_group): the fold makes each of the
    // lm_head's N/8 blocks — 18,992 for a 151,936-token vocabulary — recompute the row's rstd,
    // 149 us per decode step against 65 us for the GEMV + ~5 us for rms_norm (session 8 ncu,
    // Qwen2.5-0.5B batch 1). Same numbers either way (the fold is bitwise rms_norm + GEMV).
    // Past the GEMV's rows (batch decode) the fold is the norm kernel that writes the lm_head
    // GEMM's bf16 input (rms_norm_fwd_bf16: rms_norm and the cast in one launch, nothing
    // recomputed), bitwise rms_norm then linear too.
    Tensor logits = empty({T, lc.vocab_size}, dev);
    if (T > ops::kFusedGemvMaxRows) {
      const Tensor none;
      const Tensor* ws[] = {&w.lm_head};
      const Tensor* bs[] = {&none};
      Tensor* ys[] = {&logits};
      ops::rms_norm_linear_group(x, w.final_norm, float(c.rms_norm_eps), ws, bs, ys);
      return logits;
    }
    Tensor xn = empty({T, H}, dev), rstd = empty({T}, dev);
    ops::rms_norm(x, w.final_norm, float(c.rms_norm_eps), xn, rstd);
    ops::linear(xn, w.lm_head, Tensor(), logits);
    return logits;
  }
  Tensor xn = empty({T, H}, dev), rstd = empty({T}, dev);
  ops::rms_norm(x, w.final_norm, float(c.rms_norm_eps), xn, rstd);
  Tensor head_in = xn;
  if (logits_rows.defined()) {
    head_in = empty({logits_rows.numel(), H}, dev);
    ops::gather_rows(xn, logits_rows, head_in);
  }
  Tensor logits;
  if (o.hidden_only) {
    logits = head_in;  // the caller applies lm_head (chunked over the vocabulary)
  } else {
    logits = empty({head_in.size(0), lc.vocab_size}, dev);
    ops::linear(head_in, w.lm_head, Tensor(), logits);
    if (tp_ && o.gather_vocab) logits = tp_gather_vocab(*tp_, logits);
  }

  if (st) {
    st->batch = db;
    // A copy: the caller's host batch (o.host_batch) may be reused before the backward.
    st->host_ids = dev == Device::cuda ? host.ids.clone() : Tensor();
    st->attn = a;
    st->logits_rows = logits_rows;
    st->max_seq_len = max_seq_len;
    st->final_x = x;
    st->final_rstd = rstd;
    st->head_in = head_in;
    st->recompute = recompute_;
    st->bf16_autocast = autocast;
    st->owner = this;
    st->device = dev;
    st->ready = true;
  }
  return logits;
}

void CausalLM::check_backward(ForwardState& state, const Gradients& grads) const {
  if (!state.ready())
    GYRE_THROW(invalid_argument,
               "backward: the ForwardState holds no saved forward; call forward with "
               "save_for_backward = true first (each state is consumed by one backward)");
  const ForwardState::Impl& st = state.impl();
  if (st.owner != this)
    GYRE_THROW(invalid_argument, "backward: the ForwardState was produced by another model");
  const Device dev = device_;
  if (st.device != dev)
    GYRE_THROW(invalid_argument,
               "backward: the ForwardState was saved on {} but the model is now on {}; run the "
               "forward again after CausalLM::to()",
               device_name(st.device), device_name(dev));
  if (grads.tensors.size() != w_->params.size())
    GYRE_THROW(invalid_argument,
               "backward: Gradients has {} tensors but the model has {} parameters; create it "
               "with zeros_like_parameters()",
               grads.tensors.size(), w_->params.size());
  for (size_t i = 0; i < grads.tensors.size(); ++i) {
    const Tensor& g = grads.tensors[i].tensor;
    if (!g.defined() || g.dtype() != DType::f32 || g.shape() != w_->params[i].tensor.shape() ||
        g.device() != dev)
      GYRE_THROW(invalid_argument,
                 "backward: gradient '{}' must be f32 {} on {} like its parameter; create "
                 "Gradients with zeros_like_parameters() (after any CausalLM::to())",
                 w_->params[i].name, shape_str(w_->params[i].tensor.shape()), device_name(dev));
  }
}

void CausalLM::backward(const Tensor& dlogits, ForwardState& state, Gradients& grads,
                        const GradReadyHook& on_ready) {
  const ModelConfig& c = config_;
  check_backward(state, grads);
  ForwardState::Impl& st = state.impl();
  const Device dev = device_;
  const int64_t R = st.head_in.size(0), H = c.hidden_size;
  const ModelConfig& lc = tp_ ? tp_->local : c;  // this rank's sizes under TP
  if (dlogits.dtype() != DType::f32 || dlogits.dim() != 2 || dlogits.size(0) != R ||
      dlogits.size(1) != lc.vocab_size || dlogits.device() != dev)
    GYRE_THROW(invalid_argument,
               "backward: dlogits must be f32 [{}, {}] on {} like the logits, got {} {} on {}", R,
               lc.vocab_size, device_name(dev), dtype_name(dlogits.dtype()),
               shape_str(dlogits.shape()), device_name(dlogits.device()));

  Tensor dhead = empty({R, H}, dev);
  {
    ops::Bf16Autocast autocast_scope(st.bf16_autocast);
    const ModelTensors g = bind_tensors(w_->slots, grads.tensors);
    Tensor none, dw = g.lm_head;
    ops::linear_backward(dlogits, st.head_in, w_->t.lm_head, dhead, dw, none);
  }
  backward_below_head(std::move(dhead), state, grads, on_ready);
}

void CausalLM::backward_from_hidden(const Tensor& dhidden, ForwardState& state, Gradients& grads,
                                    const GradReadyHook& on_ready) {
  check_backward(state, grads);
  const ForwardState::Impl& st = state.impl();
  const int64_t R = st.head_in.size(0), H = config_.hidden_size;
  if (dhidden.dtype() != DType::f32 || dhidden.dim() != 2 || dhidden.size(0) != R ||
      dhidden.size(1) != H || dhidden.device() != device_)
    GYRE_THROW(invalid_argument,
               "backward_from_hidden: dhidden must be f32 [{}, {}] on {} like the hidden states, "
               "got {} {} on {}",
               R, H, device_name(device_), dtype_name(dhidden.dtype()), shape_str(dhidden.shape()),
               device_name(dhidden.device()));
  // Under tensor parallelism dhidden is this rank's partial (its vocabulary shard's part, e.g.
  // tp_linear_token_logprobs_backward's): backward_below_head sums the ranks' partials ("f"), in
  // place — a copy, so the caller's tensor is not modified.
  backward_below_head(tp_ ? dhidden.clone() : dhidden, state, grads, on_ready);
}

const Tensor& CausalLM::lm_head_weight() const { return w_->t.lm_head; }

Tensor CausalLM::lm_head_grad(Gradients& grads) const {
  if (grads.tensors.size() != w_->params.size())
    GYRE_THROW(invalid_argument,
               "lm_head_grad: Gradients has {} tensors but the model has {} parameters; create it "
               "with zeros_like_parameters()",
               grads.tensors.size(), w_->params.size());
  return bind_tensors(w_->slots, grads.tensors).lm_head;
}

void CausalLM::backward_below_head(Tensor dhead, ForwardState& state, Gradients& grads,
                                   const GradReadyHook& on_ready) {
  const ModelConfig& c = config_;
  // GradReadyHook: parameters() holds the embedding, each layer's tensors in a block, the final
  // norm and an untied lm_head (weights.h), so each report is the block of one part.
  const GradReadyHook& ready = on_ready ? on_ready : grad_ready_hook_;
  const ModelSlots& slots = w_->slots;
  const size_t num_params = w_->params.size();
  auto layer_begin = [&](int64_t l) {
    return size_t(l < c.num_hidden_layers ? slots.layers[size_t(l)].input_norm : slots.final_norm);
  };
  ForwardState::Impl& st = state.impl();
  const Device dev = device_;
  const int64_t T = st.batch.num_tokens(), H = c.hidden_size;
  const ModelConfig& lc = tp_ ? tp_->local : c;  // this rank's sizes under TP
  ops::Bf16Autocast autocast_scope(st.bf16_autocast);
  // The forward validated the saved batch on the host; the backward ops need not copy it back.
  // The recorded tensors are held until the scope ends (state.clear() below releases the
  // state's references, and the ready hook still runs inside the scope): a fact must never
  // outlive its tensor, or a new tensor at the same address would inherit it.
  const Batch recorded_batch = st.batch;
  const Tensor recorded_host_ids = st.host_ids, recorded_rows = st.logits_rows;
  ops::KnownIndices known;
  known.add_range(st.batch.ids, 0, c.vocab_size);
  known.add_range(st.batch.positions, 0, st.attn.cos.defined() ? st.attn.cos.size(0) : 0);
  known.add_offsets(st.batch.cu_seqlens, T, st.max_seq_len);
  if (st.logits_rows.defined()) known.add_range(st.logits_rows, 0, T);
  // The host ids the forward validated: the CUDA embedding backward reads them instead of
  // copying the device ids back (a synchronisation that idled the GPU ~1.4 ms per step).
  if (st.host_ids.defined()) known.add_host_values(st.batch.ids, st.host_ids);
  const ModelTensors& w = w_->t;
  ModelTensors g = bind_tensors(w_->slots, grads.tensors);
  Tensor none;
  tp_all_reduce(st.attn.tp, dhead);  // "f" at the vocab-parallel lm_head's input
  st.head_in = Tensor();
  Tensor dxn = dhead;
  if (st.logits_rows.defined()) {
    dxn = Tensor::zeros({T, H}, DType::f32, dev);
    ops::scatter_add_rows(dhead, st.logits_rows, none, dxn);
  }
  dhead = Tensor();
  Tensor dx = empty({T, H}, dev);
  ops::rms_norm_backward(dxn, st.final_x, w.final_norm, st.final_rstd, dx, g.final_norm);
  dxn = Tensor();
  st.final_x = Tensor();
  // The final norm and an untied lm_head (its gradient came before this function); a tied one is
  // the embedding, reported last.
  if (ready) ready(size_t(slots.final_norm), num_params);
  // Each layer hands the next one down its gradient also rounded to bf16 (where the fused norm
  // backward writes it) when that layer's down_proj backward reads it as dy: a dense MLP without
  // a down bias (an MoE block and a bias gradient read the f32 one). Layer 0's goes to the
  // embedding, which wants f32 only.
  Tensor dx16;
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) {
    LayerSaved& saved = st.layers[size_t(l)];
    Tensor next16;
    const bool lower_reads16 = l > 0 && !lc.is_moe_layer(l - 1) && !lc.mlp_bias;
    Tensor* want16 = lower_reads16 ? &next16 : nullptr;
    if (st.recompute) {
      LayerSaved full;
      layer_forward(lc, l, w.layers[size_t(l)], st.attn, saved.x, &full);
      dx = layer_backward(lc, w.layers[size_t(l)], g.layers[size_t(l)], st.attn, full, dx, dx16,
                          want16);
    } else {
      dx = layer_backward(lc, w.layers[size_t(l)], g.layers[size_t(l)], st.attn, saved, dx, dx16,
                          want16);
    }
    dx16 = next16;
    saved.clear();  // free activations as soon as they are consumed
    if (ready) ready(layer_begin(l), layer_begin(l + 1));
  }
  if (tp_)
    tp_embedding_backward(st.batch.ids, dx, tp_->vocab_begin, g.embed);
  else
    ops::embedding_backward(st.batch.ids, dx, g.embed);
  state.clear();
  if (ready) ready(size_t(slots.embed), size_t(slots.embed) + 1);
}

}  // namespace gyre::model
