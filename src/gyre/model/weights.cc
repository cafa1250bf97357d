// Parameter layout of the supported architectures, as named in Hugging Face checkpoints
// (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM state dicts).
#include "gyre/model/weights.h"

#include <fmt/format.h>

namespace gyre::model {

std::vector<ParamSpec> param_specs(const ModelConfig& c, ModelSlots* slots) {
  std::vector<ParamSpec> specs;
  auto add = [&](std::string name, Shape shape, ParamInit init) {
    specs.push_back({std::move(name), std::move(shape), init});
    return int(specs.size()) - 1;
  };
  const int64_t H = c.hidden_size, D = c.head_dim;
  const int64_t qdim = c.num_attention_heads * D, kvdim = c.num_key_value_heads * D;
  // Qwen2Attention: q/k/v always biased, o_proj never; Llama/Qwen3 attention: all four follow
  // attention_bias.
  const bool qkv_bias = c.attention_bias || c.arch == Arch::qwen2;
  const bool o_bias = c.attention_bias && c.arch != Arch::qwen2;
  *slots = ModelSlots{};
  slots->embed = add("model.embed_tokens.weight", {c.vocab_size, H}, ParamInit::normal);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerSlots l;
    l.input_norm = add(p + "input_layernorm.weight", {H}, ParamInit::ones);
    l.q_w = add(p + "self_attn.q_proj.weight", {qdim, H}, ParamInit::normal);
    if (qkv_bias) l.q_b = add(p + "self_attn.q_proj.bias", {qdim}, ParamInit::zeros);
    l.k_w = add(p + "self_attn.k_proj.weight", {kvdim, H}, ParamInit::normal);
    if (qkv_bias) l.k_b = add(p + "self_attn.k_proj.bias", {kvdim}, ParamInit::zeros);
    l.v_w = add(p + "self_attn.v_proj.weight", {kvdim, H}, ParamInit::normal);
    if (qkv_bias) l.v_b = add(p + "self_attn.v_proj.bias", {kvdim}, ParamInit::zeros);
    l.o_w = add(p + "self_attn.o_proj.weight", {H, qdim}, ParamInit::normal);
    if (o_bias) l.o_b = add(p + "self_attn.o_proj.bias", {H}, ParamInit::zeros);
    if (c.qk_norm) {
      l.q_norm = add(p + "self_attn.q_norm.weight", {D}, ParamInit::ones);
      l.k_norm = add(p + "self_attn.k_norm.weight", {D}, ParamInit::ones);
    }
    l.post_norm = add(p + "post_attention_layernorm.weight", {H}, ParamInit::ones);
    l.moe = c.is_moe_layer(i);
    if (l.moe) {
      const int64_t I = c.moe_intermediate_size;
      l.router_w = add(p + "mlp.gate.weight", {c.num_experts, H}, ParamInit::normal);
      for (int64_t e = 0; e < c.num_experts; ++e) {
        const std::string q = fmt::format("{}mlp.experts.{}.", p, e);
        l.expert_gate.push_back(add(q + "gate_proj.weight", {I, H}, ParamInit::normal));
        l.expert_up.push_back(add(q + "up_proj.weight", {I, H}, ParamInit::normal));
        l.expert_down.push_back(add(q + "down_proj.weight", {H, I}, ParamInit::normal));
      }
    } else {
      const int64_t I = c.intermediate_size;
      l.gate_w = add(p + "mlp.gate_proj.weight", {I, H}, ParamInit::normal);
      if (c.mlp_bias) l.gate_b = add(p + "mlp.gate_proj.bias", {I}, ParamInit::zeros);
      l.up_w = add(p + "mlp.up_proj.weight", {I, H}, ParamInit::normal);
      if (c.mlp_bias) l.up_b = add(p + "mlp.up_proj.bias", {I}, ParamInit::zeros);
      l.down_w = add(p + "mlp.down_proj.weight", {H, I}, ParamInit::normal);
      if (c.mlp_bias) l.down_b = add(p + "mlp.down_proj.bias", {H}, ParamInit::zeros);
    }
    slots->layers.push_back(std::move(l));
  }
  slots->final_norm = add("model.norm.weight", {H}, ParamInit::ones);
  slots->lm_head = c.tie_word_embeddings
                       ? slots->embed
                       : add("lm_head.weight", {c.vocab_size, H}, ParamInit::normal);
  return specs;
}

ModelTensors bind_tensors(const ModelSlots& s, const std::vector<NamedTensor>& list) {
  auto at = [&](int i) { return i < 0 ? Tensor() : list.at(size_t(i)).tensor; };
  ModelTensors t;
  t.embed = at(s.embed);
  t.final_norm = at(s.final_norm);
  t.lm_head = at(s.lm_head);
  for (const LayerSlots& l : s.layers) {
    LayerTensors x;
    x.input_norm = at(l.input_norm);
    x.post_norm = at(l.post_norm);
    x.q_w = at(l.q_w), x.q_b = at(l.q_b), x.k_w = at(l.k_w), x.k_b = at(l.k_b);
    x.v_w = at(l.v_w), x.v_b = at(l.v_b), x.o_w = at(l.o_w), x.o_b = at(l.o_b);
    x.q_norm = at(l.q_norm), x.k_norm = at(l.k_norm);
    x.gate_w = at(l.gate_w), x.gate_b = at(l.gate_b), x.up_w = at(l.up_w), x.up_b = at(l.up_b);
    x.down_w = at(l.down_w), x.down_b = at(l.down_b);
    x.router_w = at(l.router_w);
    for (int i : l.expert_gate) x.expert_gate.push_back(at(i));
    for (int i : l.expert_up) x.expert_up.push_back(at(i));
    for (int i : l.expert_down) x.expert_down.push_back(at(i));
    x.moe = l.moe;
    t.layers.push_back(std::move(x));
  }
  return t;
}

}  // namespace gyre::model
