// Test helpers for one Qwen3-MoE sparse block in isolation (model/moe_block.h): a random layer,
// zeroed gradients of its shape, and a relative L2 distance. Shared by tests/unit/model and
// tests/gpu/model.
#pragma once
#include <cmath>
#include <random>
#include <vector>

#include "gyre/model/moe_block.h"

namespace gyre::test {

struct MoeLayer {
  model::ModelConfig config;
  model::LayerTensors w;
};

inline Tensor random_f32(const Shape& shape, double sd, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, sd);
  Tensor t = Tensor::empty(shape, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(nd(rng));
  return t;
}

// Router weights scaled so the softmax is far from uniform (distinct top-k, uneven experts).
inline MoeLayer random_moe_layer(int64_t H, int64_t E, int64_t k, int64_t I, bool norm_topk,
                                 uint64_t seed) {
  std::mt19937_64 rng(seed);
  MoeLayer m;
  model::ModelConfig& c = m.config;
  c.arch = model::Arch::qwen3_moe;
  c.model_type = "qwen3_moe";
  c.hidden_size = H;
  c.num_experts = E;
  c.num_experts_per_tok = k;
  c.moe_intermediate_size = I;
  c.norm_topk_prob = norm_topk;
  m.w.moe = true;
  m.w.router_w = random_f32({E, H}, 1.0 / std::sqrt(double(H)) * 3, rng);
  for (int64_t e = 0; e < E; ++e) {
    m.w.expert_gate.push_back(random_f32({I, H}, 1.0 / std::sqrt(double(H)), rng));
    m.w.expert_up.push_back(random_f32({I, H}, 1.0 / std::sqrt(double(H)), rng));
    m.w.expert_down.push_back(random_f32({H, I}, 1.0 / std::sqrt(double(I)), rng));
  }
  return m;
}

inline model::LayerTensors zero_moe_grads(const model::LayerTensors& w) {
  auto z = [](const Tensor& t) { return Tensor::zeros(t.shape(), DType::f32, t.device()); };
  model::LayerTensors g;
  g.moe = true;
  g.router_w = z(w.router_w);
  for (size_t e = 0; e < w.expert_gate.size(); ++e) {
    g.expert_gate.push_back(z(w.expert_gate[e]));
    g.expert_up.push_back(z(w.expert_up[e]));
    g.expert_down.push_back(z(w.expert_down[e]));
  }
  return g;
}

inline model::LayerTensors moe_to(const model::LayerTensors& w, Device d) {
  model::LayerTensors o;
  o.moe = true;
  o.router_w = w.router_w.to(d);
  for (size_t e = 0; e < w.expert_gate.size(); ++e) {
    o.expert_gate.push_back(w.expert_gate[e].to(d));
    o.expert_up.push_back(w.expert_up[e].to(d));
    o.expert_down.push_back(w.expert_down[e].to(d));
  }
  return o;
}

// ||a - b|| / ||b|| over host copies (0 when both are zero).
inline double rel_l2(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  if (x.size() != y.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    den += double(y[i]) * y[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace gyre::test
