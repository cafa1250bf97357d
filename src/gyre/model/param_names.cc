// Expected Hugging Face tensor names/shapes per architecture (see param_names.h). Shapes follow
// torch.nn.Linear's [out_features, in_features] layout as saved by transformers.
#include "gyre/model/param_names.h"

#include <map>

#include "fmt/format.h"

namespace gyre::model {

std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, Shape>> out;
  const int64_t h = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim,
                kv_dim = c.num_key_value_heads * c.head_dim;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {q_dim, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_dim, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_dim, h}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q_dim}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_dim}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_dim}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {h, q_dim}});
    if (c.has_o_proj_bias()) out.push_back({p + "self_attn.o_proj.bias", {h}});
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({p + "self_attn.k_norm.weight", {c.head_dim}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    if (c.is_moe_layer(i)) {
      // Qwen3MoeSparseMoeBlock: router `gate` (no bias) + per-expert SwiGLU MLPs.
      const int64_t m = c.moe_intermediate_size;
      out.push_back({p + "mlp.gate.weight", {c.num_experts, h}});
      for (int64_t e = 0; e < c.num_experts; ++e) {
        const std::string ep = fmt::format("{}mlp.experts.{}.", p, e);
        out.push_back({ep + "gate_proj.weight", {m, h}});
        out.push_back({ep + "up_proj.weight", {m, h}});
        out.push_back({ep + "down_proj.weight", {h, m}});
      }
    } else {
      const int64_t m = c.intermediate_size;
      out.push_back({p + "mlp.gate_proj.weight", {m, h}});
      out.push_back({p + "mlp.up_proj.weight", {m, h}});
      out.push_back({p + "mlp.down_proj.weight", {h, m}});
      if (c.mlp_bias) {
        out.push_back({p + "mlp.gate_proj.bias", {m}});
        out.push_back({p + "mlp.up_proj.bias", {m}});
        out.push_back({p + "mlp.down_proj.bias", {h}});
      }
    }
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

TensorMismatch compare_tensors(const ModelConfig& cfg,
                               const std::vector<std::pair<std::string, Shape>>& actual) {
  TensorMismatch r;
  std::map<std::string, Shape> have(actual.begin(), actual.end());
  std::map<std::string, bool> expected_names;
  for (auto& [name, shape] : expected_tensors(cfg)) {
    expected_names[name] = true;
    auto it = have.find(name);
    if (it == have.end())
      r.missing.push_back(name);
    else if (it->second != shape)
      r.wrong_shape.push_back({name, {shape, it->second}});
  }
  for (auto& [name, shape] : have) {
    // A tied checkpoint that still carries lm_head.weight (some exporters write both) is harmless:
    // transformers ignores it, so do we.
    if (name == "lm_head.weight" && cfg.tie_word_embeddings) continue;
    // Old Llama exports saved the RoPE buffer; it is recomputed, and transformers skips it too
    // (_keys_to_ignore_on_load_unexpected).
    if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (!expected_names.count(name)) r.unexpected.push_back(name);
  }
  return r;
}

}  // namespace gyre::model
