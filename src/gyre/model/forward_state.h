// Model internals: what a forward saves for backward (per layer) and the per-forward attention
// inputs shared by all layers. Only model/*.cc include this.
//
// Invariant: a LayerSaved holds exactly the tensors its layer's backward reads; in recompute mode
// only `x` (the layer input) is kept and the rest is rebuilt by re-running that layer's forward.
#pragma once
#include <vector>

#include "gyre/model/causal_lm.h"

namespace gyre::model {

struct MoeSaved {
  Tensor probs;    // f32 [T, E] router softmax
  Tensor indices;  // i32 [T, k] chosen experts
  Tensor weights;  // f32 [T, k] their (renormalised) weights
  // Sorted dispatch (moe_block.cc; backend/moe_ops.h): the T·k assignments in expert order.
  Tensor perm, pos, rows;        // i32 [T·k] slot of each position, [T, k] its inverse, token rows
  std::vector<int64_t> offsets;  // host copy of the E+1 segment offsets (backward needs no copy)
  Tensor gate, up;               // f32 [T·k, I] expert MLP pre-activations, permuted order
  Tensor y;                      // f32 [T·k, H] expert outputs before weighting, permuted order
  // The former per-expert path (moe_forward_per_expert, kept for tests and A/B runs) saves this
  // instead of the sorted tensors above.
  struct Expert {
    int64_t expert = 0;
    Tensor rows;      // i32 [n] token rows routed to this expert
    Tensor slots;     // i32 [n] flat index t*k + j of each assignment in indices/weights
    Tensor scale;     // f32 [n] routing weight of each assignment
    Tensor gate, up;  // f32 [n, I] expert MLP pre-activations
    Tensor y;         // f32 [n, H] expert output before weighting
  };
  std::vector<Expert> experts;  // only experts with at least one token
  size_t bytes() const;         // device bytes of every saved tensor (moe_block.cc)
};

struct LayerSaved {
  Tensor x;               // layer input [T, H]
  Tensor xn1, rstd1;      // input_layernorm output (bf16 GEMM operand or f32) and 1/rms
  Tensor q_raw, k_raw;    // q/k before q_norm/k_norm (qk_norm archs)
  Tensor rstd_q, rstd_k;  // [T*Hq], [T*Hkv]
  Tensor q, k, v;         // after norm + RoPE: [T, H*, D] (bf16: the attention's operands, or f32)
  Tensor attn, lse;       // attention output [T, Hq, D] (bf16 or f32), log-sum-exp [T, Hq] f32
  Tensor h;               // residual after attention [T, H]
  Tensor xn2, rstd2;      // post_attention_layernorm output (as xn1) and 1/rms
  Tensor gate, up;  // dense MLP pre-activations [T, I]: bf16 under bf16 autocast on CUDA, else f32
  // down_proj's bf16 operand silu(gate)·up [T, I] where the fused MLP kept it (CUDA, autocast,
  // past 8 rows); undefined elsewhere: the backward recomputes it from gate/up.
  Tensor act;
  MoeSaved moe;
  size_t bytes() const;
  void clear() { *this = LayerSaved{}; }
};

// Inputs every layer's attention needs for one forward.
struct AttnInputs {
  Tensor positions;   // i32 [T]
  Tensor cu_seqlens;  // i32 [B+1]
  Tensor cos, sin;    // RoPE tables
  AttentionContext* context = nullptr;
  float scale = 1.0f;
  TpComm* tp = nullptr;  // tensor-parallel group (model/tensor_parallel.h), null without TP
};

struct ForwardState::Impl {
  bool ready = false;
  bool recompute = false;
  bool bf16_autocast = false;   // the forward ran under ops::Bf16Autocast (backward must too)
  const void* owner = nullptr;  // the CausalLM that produced it
  Device device = Device::cpu;  // where every saved tensor lives (the model's device then)
  Batch batch;                  // on `device`
  Tensor host_ids;              // batch.ids on the CPU (the embedding backward groups by them)
  AttnInputs attn;
  Tensor logits_rows;       // i32 [R] on `device`, or undefined
  int64_t max_seq_len = 0;  // longest sequence of `batch` (what forward's validation proved)
  std::vector<LayerSaved> layers;
  Tensor final_x, final_rstd;  // input of model.norm and its 1/rms
  Tensor head_in;              // input of lm_head ([T, H] or the gathered [R, H])
  size_t bytes() const;
};

}  // namespace gyre::model
