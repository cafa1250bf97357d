// The former Qwen3-MoE block (moe_block.h: moe_forward_per_expert / moe_backward_per_expert): the
// routing is grouped per expert on the host (one [T, k] index copy per layer) and every expert with
// tokens uploads its row/slot lists and runs gather -> gate/up/down -> scatter-add on its own.
// Kept unchanged as the reference that tests/unit/model/moe_dispatch_test.cc compares the sorted
// dispatch (moe_block.cc) with and as the "old" side of bench_moe_gpu; the model never calls it.
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/model/moe_block.h"

namespace gyre::model {

namespace {
// Activations follow the device of the layer's input (the model's device).
Tensor empty(const Shape& s, Device d) { return Tensor::empty(s, DType::f32, d); }

// Per-expert lists of (token row, flat assignment slot), from the i32 [T, k] routing indices (a
// host tensor: the grouping, like the per-expert loop it drives, runs on the host).
struct Assignment {
  std::vector<int32_t> rows, slots;
};
std::vector<Assignment> group_by_expert(const Tensor& indices, int64_t num_experts) {
  const int64_t T = indices.size(0), k = indices.size(1);
  const int32_t* idx = indices.i32();
  std::vector<Assignment> out(static_cast<size_t>(num_experts));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t e = idx[t * k + j];
      GYRE_CHECK(e >= 0 && e < num_experts, "router chose expert {} of {}", e, num_experts);
      out[size_t(e)].rows.push_back(int32_t(t));
      out[size_t(e)].slots.push_back(int32_t(t * k + j));
    }
  return out;
}
}  // namespace

Tensor moe_forward_per_expert(const ModelConfig& c, const LayerTensors& w, const Tensor& xn,
                              MoeSaved* save) {
  const int64_t T = xn.size(0), H = c.hidden_size, E = c.num_experts;
  const int64_t K = c.num_experts_per_tok, I = c.moe_intermediate_size;
  const Device dev = xn.device();
  Tensor logits = empty({T, E}, dev);
  ops::linear(xn, w.router_w, Tensor(), logits);
  Tensor probs = empty({T, E}, dev), indices = Tensor::empty({T, K}, DType::i32, dev),
         weights = empty({T, K}, dev);
  ops::moe_route(logits, K, c.norm_topk_prob, probs, indices, weights);
  Tensor weights_flat = weights.reshape({T * K, 1});
  Tensor out = Tensor::zeros({T, H}, DType::f32, dev);
  // Routing decides the per-expert row lists on the host (one small copy of [T, k] indices on a
  // device); the row/slot index tensors then go back to the device for the gathers and scatters.
  auto groups = group_by_expert(indices.to(Device::cpu), E);
  for (int64_t e = 0; e < E; ++e) {
    const Assignment& a = groups[size_t(e)];
    const int64_t n = int64_t(a.rows.size());
    if (n == 0) continue;
    Tensor rows = Tensor::from_vector(a.rows, {n}).to(dev);
    Tensor slots = Tensor::from_vector(a.slots, {n}).to(dev);
    Tensor scale = empty({n, 1}, dev);
    ops::gather_rows(weights_flat, slots, scale);
    scale = scale.reshape({n});
    Tensor xe = empty({n, H}, dev);
    ops::gather_rows(xn, rows, xe);
    Tensor gate = empty({n, I}, dev), up = empty({n, I}, dev), act = empty({n, I}, dev),
           y = empty({n, H}, dev);
    ops::linear(xe, w.expert_gate[size_t(e)], Tensor(), gate);
    ops::linear(xe, w.expert_up[size_t(e)], Tensor(), up);
    ops::silu_mul(gate, up, act);
    ops::linear(act, w.expert_down[size_t(e)], Tensor(), y);
    ops::scatter_add_rows(y, rows, scale, out);
    if (save) save->experts.push_back({e, rows, slots, scale, gate, up, y});
  }
  if (save) {
    save->probs = probs;
    save->indices = indices;
    save->weights = weights;
  }
  return out;
}

Tensor moe_backward_per_expert(const ModelConfig& c, const LayerTensors& w, LayerTensors& g,
                               const Tensor& xn, const MoeSaved& s, const Tensor& dout) {
  const int64_t T = xn.size(0), H = c.hidden_size, E = c.num_experts;
  const int64_t K = c.num_experts_per_tok, I = c.moe_intermediate_size;
  const Device dev = xn.device();
  Tensor none;
  Tensor dxn = Tensor::zeros({T, H}, DType::f32, dev);
  Tensor dweights = Tensor::zeros({T * K, 1}, DType::f32, dev);
  for (const MoeSaved::Expert& x : s.experts) {
    const int64_t n = x.rows.numel();
    const size_t e = size_t(x.expert);
    // out[t] += w · y  ⇒  ∂L/∂w = <dout[t], y>,  ∂L/∂y = w · dout[t].
    Tensor dy_raw = empty({n, H}, dev);
    ops::gather_rows(dout, x.rows, dy_raw);
    Tensor dw = empty({n}, dev);
    ops::row_dot(dy_raw, x.y, dw);
    ops::scatter_add_rows(dw.reshape({n, 1}), x.slots, none, dweights);
    std::vector<int32_t> iota(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) iota[size_t(i)] = int32_t(i);
    Tensor dy = Tensor::zeros({n, H}, DType::f32, dev);
    ops::scatter_add_rows(dy_raw, Tensor::from_vector(iota, {n}).to(dev), x.scale, dy);  // scaling
    dy_raw = Tensor();
    Tensor act = empty({n, I}, dev), dact = empty({n, I}, dev);
    ops::silu_mul(x.gate, x.up, act);
    ops::linear_backward(dy, act, w.expert_down[e], dact, g.expert_down[e], none);
    Tensor dgate = empty({n, I}, dev), dup = empty({n, I}, dev);
    ops::silu_mul_backward(dact, x.gate, x.up, dgate, dup);
    Tensor xe = empty({n, H}, dev), dxe = empty({n, H}, dev);
    ops::gather_rows(xn, x.rows, xe);
    ops::linear_backward(dgate, xe, w.expert_gate[e], dxe, g.expert_gate[e], none);
    ops::linear_backward(dup, xe, w.expert_up[e], dxe, g.expert_up[e], none, true);
    ops::scatter_add_rows(dxe, x.rows, none, dxn);
  }
  Tensor dlogits = empty({T, E}, dev);
  ops::moe_route_backward(dweights.reshape({T, K}), s.probs, s.indices, c.norm_topk_prob, dlogits);
  ops::linear_backward(dlogits, xn, w.router_w, dxn, g.router_w, none, /*accumulate_dx=*/true);
  return dxn;
}

}  // namespace gyre::model
