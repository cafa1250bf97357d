// One decoder layer forward/backward over gyre::ops (see decoder_layer.h for the formula). The
// backward is the chain rule through the same ops in reverse; every parameter gradient accumulates.
#include "gyre/model/decoder_layer.h"

#include <atomic>

#include "gyre/backend/fused_linear_ops.h"
#include "gyre/backend/fused_norm_ops.h"
#include "gyre/backend/linear_group_ops.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/rope_attention_ops.h"
#include "gyre/backend/swiglu_backward_ops.h"
#include "gyre/core/env.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/moe_block.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::model {

namespace {
std::atomic<bool> g_decode_fusion{true};  // set_decode_fusion

// Activations follow the device of the layer's input (the model's device).
Tensor empty(const Shape& s, Device d) { return Tensor::empty(s, DType::f32, d); }

// y = x·wᵀ + b. Under tensor parallelism w is row-parallel (this rank's input columns): the
// partial products are summed over the ranks (Megatron's "g": all-reduce forward, identity
// backward). The replicated bias is added once, by tp rank 0 into its partial product (the same
// sum as Megatron's bias after the reduce, in another order; its gradient Σ_rows dy is the same on
// every rank either way).
void row_parallel_linear(TpComm* tp, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  if (!tp) return ops::linear(x, w, b, y);
  ops::linear(x, w, tp->rank() == 0 ? b : Tensor(), y);
  tp_all_reduce(tp, y);
}

// GYRE_QKV_PACKED_BACKWARD=0 keeps the attention backward's f32 dq/dk/dv path where the packed one
// would run (the A/B switch of the step's figures). Read by every saving forward too, so a bad
// value is an error before any gradient has been written.
bool qkv_packed_backward() {
  static const bool on = env_choice("GYRE_QKV_PACKED_BACKWARD", {"0", "1"}, "1") == "1";
  return on;
}

// GYRE_SWIGLU_PACKED_BACKWARD=0 keeps the MLP backward's silu_mul_backward + two gate/up
// linear_backward calls where ops::swiglu_gate_up_backward (dgate | dup packed, one dX GEMM)
// would run: the A/B switch of the step's figures. Validated by every saving forward, as above.
bool swiglu_packed_backward() {
  static const bool on = env_choice("GYRE_SWIGLU_PACKED_BACKWARD", {"0", "1"}, "1") == "1";
  return on;
}
}  // namespace

void set_decode_fusion(bool on) { g_decode_fusion.store(on, std::memory_order_relaxed); }
bool decode_fusion() { return g_decode_fusion.load(std::memory_order_relaxed); }

size_t LayerSaved::bytes() const {
  size_t n = 0;
  for (const Tensor* t : {&x, &xn1, &rstd1, &q_raw, &k_raw, &rstd_q, &rstd_k, &q, &k, &v, &attn,
                          &lse, &h, &xn2, &rstd2, &gate, &up, &act})
    if (t->defined()) n += t->nbytes();
  return n + moe.bytes();
}

Tensor layer_forward(const ModelConfig& c, int64_t layer, const LayerTensors& w,
                     const AttnInputs& a, const Tensor& x, LayerSaved* s) {
  const int64_t T = x.size(0), H = c.hidden_size, D = c.head_dim;
  const Device dev = x.device();
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  const float eps = float(c.rms_norm_eps);
  if (s) qkv_packed_backward(), swiglu_packed_backward();  // validate the switches up front
  // Every forward — the rollout engine's (a KV-cache context), the scoring forward (no context:
  // old/ref log-probs), the trainer's saving forward and recompute's two passes — takes the fused
  // linears (decode_fusion.h): q/k/v behind the folded input norm, o_proj with the residual in its
  // epilogue, the SwiGLU MLP as one op. They are bitwise the unfused ops below (their contract,
  // fused_linear_ops.h), and a saving forward gets from them what the backward reads (the
  // linears' bf16 input operands past 8 rows under autocast, rstd, gate/up), so the scoring and
  // the training forward compute the same values bit for bit: the first step's policy ratio stays
  // exactly 1, and recompute's x (and its saved activations) are those of the first pass. The
  // unfused ops run with decode fusion off (set_decode_fusion(false): the tests' reference).
  const bool fuse = decode_fusion();
  // RoPE fused with the KV write and the paged attention: only over a context (never saving).
  const bool fuse_attend = fuse && !s && a.context;
  // Residual epilogues only without TP: row-parallel o/down must reduce before bias and residual.
  const bool fuse_residual = fuse && !a.tp;

  // --- attention block
  // Saved for the backward: rstd1 and xn1, the q/k/v linears' input — bf16 (the GEMMs' operand)
  // on the fused GEMM path, f32 elsewhere; linear_backward takes either.
  Tensor xn1, rstd1;
  Tensor q = empty({T, Hq * D}, dev), k = empty({T, Hkv * D}, dev), v = empty({T, Hkv * D}, dev);
  if (fuse) {
    // Input norm folded into the q/k/v GEMV (or the GEMMs' bf16 input cast past 8 rows): bitwise
    // rms_norm then linear_group.
    const Tensor* ws[] = {&w.q_w, &w.k_w, &w.v_w};
    const Tensor* bs[] = {&w.q_b, &w.k_b, &w.v_b};
    Tensor* ys[] = {&q, &k, &v};
    ops::rms_norm_linear_group(x, w.input_norm, eps, ws, bs, ys, nullptr, s ? &rstd1 : nullptr,
                               s ? &xn1 : nullptr);
  } else {
    xn1 = empty({T, H}, dev), rstd1 = empty({T}, dev);
    ops::rms_norm(x, w.input_norm, eps, xn1, rstd1);
    ops::linear(xn1, w.q_w, w.q_b, q);
    ops::linear(xn1, w.k_w, w.k_b, k);
    ops::linear(xn1, w.v_w, w.v_b, v);
  }
  q = q.reshape({T, Hq, D});
  k = k.reshape({T, Hkv, D});
  v = v.reshape({T, Hkv, D});
  Tensor q_raw, k_raw, rstd_q, rstd_k;
  if (c.qk_norm) {
    // Qwen3: RMSNorm over head_dim on q and k, before RoPE (Qwen3Attention.forward).
    q_raw = q;
    k_raw = k;
    q = empty({T, Hq, D}, dev);
    k = empty({T, Hkv, D}, dev);
    rstd_q = empty({T * Hq}, dev);
    rstd_k = empty({T * Hkv}, dev);
    ops::rms_norm(q_raw, w.q_norm, eps, q, rstd_q);
    ops::rms_norm(k_raw, w.k_norm, eps, k, rstd_k);
  }
  Tensor attn, lse;
  if (fuse_attend) {
    // RoPE fused with the context's KV write (the paged context: one launch for both), bitwise
    // the rope_ calls and attend below; k is not needed afterwards (nothing is saved).
    attn = empty({T, Hq, D}, dev);
    a.context->rope_attend(layer, q, k, v, a.positions, a.cos, a.sin, a.scale, attn);
  } else if (fuse && !a.context) {
    // RoPE fused with the training attention (rope_attention_ops.h), bitwise the rope_ calls and
    // attention_varlen below: under autocast past 8 rows one kernel rotates and rounds q/k/v to the
    // attention's bf16 operands (kept for the backward when saving) and the output stays bf16 —
    // o_proj's GEMM reads it as its operand, the backward as its x and dout's partner.
    attn = Tensor::empty({T, Hq, D}, ops::attention_out_dtype(q), dev);
    lse = empty({T, Hq}, dev);
    ops::RopeAttentionSaved operands;
    ops::rope_attention_varlen(q, k, v, a.positions, a.cos, a.sin, a.cu_seqlens, a.scale, attn, lse,
                               s ? &operands : nullptr);
    q = operands.q, k = operands.k, v = operands.v;  // saved below (undefined when not saving)
  } else {
    attn = empty({T, Hq, D}, dev);
    ops::rope_(q, a.positions, a.cos, a.sin);
    ops::rope_(k, a.positions, a.cos, a.sin);
    if (a.context) {
      a.context->attend(layer, q, k, v, a.scale, attn);
    } else {
      lse = empty({T, Hq}, dev);
      ops::attention_varlen(q, k, v, a.cu_seqlens, a.scale, attn, lse);
    }
  }
  Tensor h = empty({T, H}, dev);
  if (fuse_residual) {
    ops::linear_add_residual(attn.reshape({T, Hq * D}), w.o_w, w.o_b, x, h);
  } else {
    row_parallel_linear(a.tp, attn.reshape({T, Hq * D}), w.o_w, w.o_b, h);
    ops::add(h, x, h);  // residual
  }

  // --- MLP block
  Tensor xn2, rstd2, out, gate, up, act_saved;
  // A saving forward under TP takes the unfused MLP (its fused op, rms_norm_linear_silu_mul, does
  // not hand out gate/up).
  const bool fuse_mlp = fuse && !w.moe && (!s || fuse_residual);
  if (!fuse_mlp) {
    xn2 = empty({T, H}, dev), rstd2 = empty({T}, dev);
    ops::rms_norm(h, w.post_norm, eps, xn2, rstd2);
  }
  if (w.moe) {
    // MoE experts keep f32 gate/up (moe_block.cc allocates them): only the dense MLP below takes
    // the autocast bf16 pre-activations.
    out = moe_forward(c, w, xn2, s ? &s->moe : nullptr);
    ops::add(out, h, out);  // residual
  } else if (fuse_mlp) {
    out = empty({T, H}, dev);
    if (fuse_residual) {
      // The whole MLP with its residual: rms_norm_linear_silu_mul (post-attention norm folded
      // into gate/up), then linear_add_residual for down_proj — bitwise that composition, with
      // the down_proj input cast folded into the SwiGLU kernel past the GEMV's rows. A saving
      // forward gets xn2 (bf16 past 8 rows under autocast), rstd2 and gate/up from it.
      ops::SwigluMlpSaved mlp_saved;
      ops::rms_norm_swiglu_mlp_residual(h, w.post_norm, eps, w.gate_w, w.gate_b, w.up_w, w.up_b,
                                        w.down_w, w.down_b, h, out, s ? &mlp_saved : nullptr);
      xn2 = mlp_saved.xn, rstd2 = mlp_saved.rstd;
      gate = mlp_saved.gate, up = mlp_saved.up, act_saved = mlp_saved.act;
    } else {
      Tensor act = empty({T, c.intermediate_size}, dev);
      // Post-attention norm folded into the gate/up GEMV: bitwise rms_norm then linear_silu_mul.
      ops::rms_norm_linear_silu_mul(h, w.post_norm, eps, w.gate_w, w.gate_b, w.up_w, w.up_b, act);
      row_parallel_linear(a.tp, act, w.down_w, w.down_b, out);
      ops::add(out, h, out);  // residual
    }
  } else {
    const int64_t I = c.intermediate_size;
    // gate/up are bf16 under bf16 autocast on CUDA (PyTorch autocast's linear output), f32
    // otherwise (the CPU reference, the f32 path): ops::linear rounds its f32 result once into a
    // bf16 y and silu_mul reads bf16 in f32 math. The fused ops of the `fuse` branch use the same
    // dtype (ops::swiglu_gate_up_dtype) and the same kernels' arithmetic, so both branches — and
    // recompute's two passes — agree bit for bit. Saved for the backward in this dtype.
    const DType act_dt = ops::swiglu_gate_up_dtype(xn2);
    gate = Tensor::empty({T, I}, act_dt, dev);
    up = Tensor::empty({T, I}, act_dt, dev);
    ops::linear(xn2, w.gate_w, w.gate_b, gate);
    ops::linear(xn2, w.up_w, w.up_b, up);
    Tensor act = empty({T, I}, dev);
    ops::silu_mul(gate, up, act);
    out = empty({T, H}, dev);
    row_parallel_linear(a.tp, act, w.down_w, w.down_b, out);
    ops::add(out, h, out);  // residual
  }

  if (s) {
    s->x = x;
    s->xn1 = xn1, s->rstd1 = rstd1;
    s->q_raw = q_raw, s->k_raw = k_raw, s->rstd_q = rstd_q, s->rstd_k = rstd_k;
    s->q = q, s->k = k, s->v = v, s->attn = attn, s->lse = lse;
    s->h = h, s->xn2 = xn2, s->rstd2 = rstd2;
    s->gate = gate, s->up = up, s->act = act_saved;
  }
  return out;
}

Tensor layer_backward(const ModelConfig& c, const LayerTensors& w, LayerTensors& g,
                      const AttnInputs& a, const LayerSaved& s, const Tensor& dout,
                      const Tensor& dout_bf16, Tensor* dx_bf16) {
  const int64_t T = dout.size(0), H = c.hidden_size, D = c.head_dim;
  const Device dev = dout.device();
  const int64_t Hq = c.num_attention_heads, Hkv = c.num_key_value_heads;
  Tensor none;
  // With the fusion on, each RMSNorm backward also adds its residual gradient in the same pass
  // (rms_norm_backward_add, bitwise rms_norm_backward then add_) and, on CUDA under autocast, hands
  // the bias-free o_proj / down_proj backward their dy already rounded to bf16 — the bits
  // linear_backward would round the f32 sum to.
  const bool fuse = decode_fusion();
  const bool grad16 = fuse && dev == Device::cuda && ops::bf16_autocast();

  // --- MLP block: out = h + mlp(xn2)
  Tensor dxn2;
  if (w.moe) {
    dxn2 = moe_backward(c, w, g, s.xn2, s.moe, dout);
  } else {
    const int64_t I = c.intermediate_size;
    // s.gate / s.up are the forward's (bf16 under autocast on CUDA): silu_mul and its backward read
    // them in f32 math. With bf16 gate/up the backward's GEMM operands are produced in bf16 right
    // away — act (down_proj's x: the fused forward's saved one, else recomputed) and, for
    // bias-free gate/up, dgate and dup (their linears' dy): each is the f32 value rounded once,
    // exactly what linear_backward's autocast path would round the f32 tensor to, so the
    // gradients are the same bits while the f32 write, re-read and conversion pass of each [T, I]
    // tensor disappear. dact (down_proj's dx) is then bf16 too (below).
    const bool mlp16 = s.gate.dtype() == DType::bf16;
    const bool grads16 = mlp16 && !w.gate_b.defined() && !w.up_b.defined();  // db sums f32 dy
    // The forward's bf16 act where the fused MLP kept it (the same kernel and values as this
    // recompute: silu_mul_fwd_bf16 on the same gate/up), else recomputed.
    Tensor act = s.act;
    if (!act.defined()) {
      act = Tensor::empty({T, I}, mlp16 ? DType::bf16 : DType::f32, dev);
      ops::silu_mul(s.gate, s.up, act);
    }
    // With bf16 gate/up gradients, dact (down_proj's dx, read only by silu_mul_backward) comes out
    // of its GEMM rounded to bf16, as PyTorch autocast's linear outputs: half the bytes written
    // and read back. Decided by the saved gate/up's dtype, the same with the fusion on and off.
    const bool dact16 = grads16 && ops::bf16_autocast();  // linear_backward's bf16 dx needs it
    Tensor dact = Tensor::empty({T, I}, dact16 ? DType::bf16 : DType::f32, dev);
    const bool dout16 = dout_bf16.defined() && !w.down_b.defined();  // db sums f32 dy
    ops::linear_backward(dout16 ? dout_bf16 : dout, act, w.down_w, dact, g.down_w, g.down_b);
    act = Tensor();
    dxn2 = empty({T, H}, dev);
    if (grads16 && swiglu_packed_backward()) {
      // Bias-free gate/up with bf16 gradients: ops::swiglu_gate_up_backward writes dgate | dup
      // into one packed bf16 buffer and runs ONE dX GEMM over both (K = 2I, the gate | up bf16
      // copies stacked in place: Bf16WeightCache::bf16_pair) where the composition below runs
      // two, the second re-reading and re-writing the f32 dxn2. dgate / dup and the dW GEMMs'
      // operands are the composition's bits; dxn2 is the same sum of products accumulated in one
      // GEMM (rounding order only: swiglu_backward_ops.h's bound).
      ops::swiglu_gate_up_backward(dact, s.gate, s.up, s.xn2, w.gate_w, w.up_w, dxn2, g.gate_w,
                                   g.up_w);
      dact = Tensor();
    } else {
      const DType dgrad_dt = grads16 ? DType::bf16 : DType::f32;
      Tensor dgate = Tensor::empty({T, I}, dgrad_dt, dev);
      Tensor dup = Tensor::empty({T, I}, dgrad_dt, dev);
      ops::silu_mul_backward(dact, s.gate, s.up, dgate, dup);
      dact = Tensor();
      ops::linear_backward(dgate, s.xn2, w.gate_w, dxn2, g.gate_w, g.gate_b);
      ops::linear_backward(dup, s.xn2, w.up_w, dxn2, g.up_w, g.up_b, /*accumulate_dx=*/true);
    }
    tp_all_reduce(a.tp, dxn2);  // "f" at the column-parallel gate/up input
  }
  Tensor dh = empty({T, H}, dev), dh16;
  const bool want_dh16 = grad16 && !w.o_b.defined();  // o_proj's db would sum the f32 dy
  if (fuse) {
    ops::rms_norm_backward_add(dxn2, s.h, w.post_norm, s.rstd2, dout, dh, g.post_norm,
                               want_dh16 ? &dh16 : nullptr);  // + the residual path
  } else {
    ops::rms_norm_backward(dxn2, s.h, w.post_norm, s.rstd2, dh, g.post_norm);
    ops::add_(dh, dout);  // residual path
  }
  dxn2 = Tensor();

  // --- attention block: h = x + o_proj(attn)
  // Where the attention backward runs the bf16 kernels it reads dattn as a bf16 operand: o_proj's
  // dX GEMM writes it rounded once instead of f32 + a rounding pass. (The composition below widens
  // it — exact — and its autocast path rounds it back to the same bits, so both paths agree.)
  const bool dattn16 = ops::attention_bf16_kernels(dev, D);
  Tensor dattn = Tensor::empty({T, Hq * D}, dattn16 ? DType::bf16 : DType::f32, dev);
  ops::linear_backward(want_dh16 ? dh16 : dh, s.attn.reshape({T, Hq * D}), w.o_w, dattn, g.o_w,
                       g.o_b);
  dh16 = Tensor();
  Tensor dxn1 = empty({T, H}, dev);
  // With the fusion on, where the attention backward runs the bf16 kernels and dq/dk go straight
  // into the q/k/v linears (no q/k norm backward in between), the attention backward writes the
  // q/k/v group's packed bf16 dy itself — with the bias gradients' column sums — and the group's
  // GEMMs read it (rope_attention_varlen_backward_packed, then linear_group_backward_packed): no
  // f32 dq/dk/dv written, no packing pass re-reading them, no column-sum pass over them. Bitwise
  // the branch below: the packed buffer holds the bits linear_group_backward's packing writes from
  // the f32 dq/dk/dv rope_attention_varlen_backward computes (the same inverse rotation, the same
  // rounding, in linear_group_backward's layout: rope_packed_layout), the bias gradients are its
  // column_sums_add's (the same f64 partials per 128-row chunk in the same order), and the GEMMs
  // are its packed path's on the same buffer. Under tensor parallelism the same holds per rank (the
  // column-parallel q/k/v see this rank's heads; dxn1 is reduced after either branch). With the
  // fusion off the branch below runs: the reference the fused-vs-unfused tests compare against.
  if (fuse && dattn16 && !c.qk_norm && qkv_packed_backward()) {
    const ops::RopePackedLayout layout = ops::rope_packed_layout(Hq, Hkv, D);
    Tensor dqkv;  // [T, layout.ld] bf16, allocated by the op
    ops::rope_attention_varlen_backward_packed(dattn.reshape({T, Hq, D}), {s.q, s.k, s.v}, s.attn,
                                               s.lse, a.positions, a.cos, a.sin, a.cu_seqlens,
                                               a.scale, layout, dqkv, &g.q_b, &g.k_b, &g.v_b);
    dattn = Tensor();
    const ops::LinearGroupPackedMember qkv[] = {{&w.q_w, &g.q_w, nullptr, layout.col_q},
                                                {&w.k_w, &g.k_w, nullptr, layout.col_k},
                                                {&w.v_w, &g.v_w, nullptr, layout.col_v}};
    ops::linear_group_backward_packed(dqkv, qkv, s.xn1, dxn1);
  } else {
    Tensor dq = empty({T, Hq, D}, dev), dk = empty({T, Hkv, D}, dev), dv = empty({T, Hkv, D}, dev);
    if (fuse || s.q.dtype() == DType::bf16) {
      // The fused backward (the forward's bf16 operands as they are, dq/dk widened and rotated back
      // in one kernel) is bitwise the composition below, and takes f32 operands too.
      ops::rope_attention_varlen_backward(dattn.reshape({T, Hq, D}), {s.q, s.k, s.v}, s.attn, s.lse,
                                          a.positions, a.cos, a.sin, a.cu_seqlens, a.scale, dq, dk,
                                          dv);
    } else {
      Tensor dattn_f32 = dattn;
      if (dattn16) {
        dattn_f32 = empty({T, Hq * D}, dev);
        ops::copy(dattn, dattn_f32);  // widened exactly
      }
      ops::attention_varlen_backward(dattn_f32.reshape({T, Hq, D}), s.q, s.k, s.v, s.attn, s.lse,
                                     a.cu_seqlens, a.scale, dq, dk, dv);
      // The RoPE rotation is orthogonal: its backward is the inverse rotation.
      ops::rope_(dq, a.positions, a.cos, a.sin, /*inverse=*/true);
      ops::rope_(dk, a.positions, a.cos, a.sin, /*inverse=*/true);
    }
    dattn = Tensor();
    if (c.qk_norm) {
      Tensor dq_raw = empty({T, Hq, D}, dev), dk_raw = empty({T, Hkv, D}, dev);
      if (a.tp) {
        // q/k norm weights are replicated but shared by all heads: this rank's gradient covers
        // only its heads, so the contributions are summed over the tp ranks.
        Tensor gq = Tensor::zeros(g.q_norm.shape(), DType::f32, dev);
        Tensor gk = Tensor::zeros(g.k_norm.shape(), DType::f32, dev);
        ops::rms_norm_backward(dq, s.q_raw, w.q_norm, s.rstd_q, dq_raw, gq);
        ops::rms_norm_backward(dk, s.k_raw, w.k_norm, s.rstd_k, dk_raw, gk);
        tp_all_reduce(a.tp, gq);
        tp_all_reduce(a.tp, gk);
        ops::add_(g.q_norm, gq);
        ops::add_(g.k_norm, gk);
      } else {
        ops::rms_norm_backward(dq, s.q_raw, w.q_norm, s.rstd_q, dq_raw, g.q_norm);
        ops::rms_norm_backward(dk, s.k_raw, w.k_norm, s.rstd_k, dk_raw, g.k_norm);
      }
      dq = dq_raw;
      dk = dk_raw;
    }
    // q/k/v share xn1: one grouped backward (on CUDA under autocast one dX GEMM over the packed
    // bf16 dq|dk|dv instead of three that re-read and re-write the f32 dxn1; elsewhere the three
    // linear_backward calls) — with the fusion off, and with it on where the packed path above
    // does not apply (q/k norm, no bf16 attention kernels).
    const Tensor dq2 = dq.reshape({T, Hq * D}), dk2 = dk.reshape({T, Hkv * D}),
                 dv2 = dv.reshape({T, Hkv * D});
    const ops::LinearGroupMember qkv[] = {{&dq2, &w.q_w, &g.q_w, &g.q_b},
                                          {&dk2, &w.k_w, &g.k_w, &g.k_b},
                                          {&dv2, &w.v_w, &g.v_w, &g.v_b}};
    ops::linear_group_backward(qkv, s.xn1, dxn1);
    dq = dk = dv = Tensor();
  }
  tp_all_reduce(a.tp, dxn1);  // "f" at the column-parallel q/k/v input
  Tensor dx = empty({T, H}, dev);
  if (fuse) {
    ops::rms_norm_backward_add(dxn1, s.x, w.input_norm, s.rstd1, dh, dx, g.input_norm,
                               grad16 ? dx_bf16 : nullptr);  // + the residual path
  } else {
    ops::rms_norm_backward(dxn1, s.x, w.input_norm, s.rstd1, dx, g.input_norm);
    ops::add_(dx, dh);  // residual path
  }
  return dx;
}

}  // namespace gyre::model
