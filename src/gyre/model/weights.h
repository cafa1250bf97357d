// Model internals: the parameter layout of a CausalLM (checkpoint names, shapes, init rule, in the
// one canonical order that parameters() and Gradients share) and typed per-layer views over a list
// of tensors in that order — the same binding serves weights and gradients.
//
// Invariant: param_specs(config) is a pure function of the config; slot i of ModelSlots indexes
// entry i of that list; a tied lm_head shares the embedding's slot.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/config.h"
#include "gyre/model/rope.h"

namespace gyre::model {

enum class ParamInit { normal, ones, zeros };

struct ParamSpec {
  std::string name;
  Shape shape;
  ParamInit init = ParamInit::normal;
};

struct LayerSlots {
  int input_norm = -1, post_norm = -1;
  int q_w = -1, q_b = -1, k_w = -1, k_b = -1, v_w = -1, v_b = -1, o_w = -1, o_b = -1;
  int q_norm = -1, k_norm = -1;
  int gate_w = -1, gate_b = -1, up_w = -1, up_b = -1, down_w = -1, down_b = -1;  // dense MLP
  int router_w = -1;                                                             // MoE
  std::vector<int> expert_gate, expert_up, expert_down;
  bool moe = false;
};

struct ModelSlots {
  int embed = -1, final_norm = -1, lm_head = -1;
  std::vector<LayerSlots> layers;
};

// Names/shapes/init of every parameter in canonical order; fills `slots`.
std::vector<ParamSpec> param_specs(const ModelConfig& config, ModelSlots* slots);

// Tensors of one layer (undefined where the architecture has no such tensor).
struct LayerTensors {
  Tensor input_norm, post_norm;
  Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
  Tensor q_norm, k_norm;
  Tensor gate_w, gate_b, up_w, up_b, down_w, down_b;
  Tensor router_w;
  std::vector<Tensor> expert_gate, expert_up, expert_down;
  bool moe = false;
};

struct ModelTensors {
  Tensor embed, final_norm, lm_head;
  std::vector<LayerTensors> layers;
};

ModelTensors bind_tensors(const ModelSlots& slots, const std::vector<NamedTensor>& list);

struct CausalLM::Weights {
  ModelSlots slots;
  std::vector<ParamSpec> specs;
  std::vector<NamedTensor> params;  // canonical order, f32 CPU
  ModelTensors t;                   // typed views of params
  std::unique_ptr<RopeCache> rope;
};

}  // namespace gyre::model
