// Qwen3-MoE sparse block forward/backward (see moe_block.h). Routing follows HF
// Qwen3MoeSparseMoeBlock / Qwen3MoeTopKRouter: softmax over experts in f32, torch.topk (ties to the
// lower index), optional renormalisation of the top-k weights. The backward differentiates through
// the weights (router gradient) and through each expert's MLP.
//
// Dispatch (the standard MoE permute / grouped GEMM / unpermute): ops::moe_permute sorts the T·k
// assignments by expert on the device (stable in (token, slot) order, the order the former host
// grouping listed them); xn's rows are gathered once into a [T·k, H] buffer in that order; expert e
// runs its gate/up/down linears on rows [offsets[e], offsets[e+1]) of the permuted buffers
// (Tensor::narrow views, no copies); silu_mul runs once over all rows; ops::moe_unpermute sums
// w[t, j] · y[pos(t, j)] back to token t in ascending j. Invariants:
// - the E+1 offsets are the layer's only device-to-host copy (the expert loop needs its row ranges
//   on the host to size the GEMMs); the forward saves that host copy so the backward has none;
// - the index tensors come from moe_route / moe_permute, whose values are in range by
//   construction; a KnownIndices scope records that so the ops skip their host-side checks;
// - the per-token sum runs in top-k order (j) rather than the former per-expert scatter order, so
//   results differ from moe_forward_per_expert by float rounding only.
#include "gyre/model/moe_block.h"

#include <vector>

#include "gyre/backend/moe_ops.h"
#include "gyre/backend/ops.h"

namespace gyre::model {

namespace {
// Activations follow the device of the layer's input (the model's device).
Tensor empty(const Shape& s, Device d) { return Tensor::empty(s, DType::f32, d); }

// Records the ranges moe_permute guarantees for its index outputs (a permutation of the T·k slots).
void record_permutation_ranges(ops::KnownIndices& known, const MoeSaved& m, int64_t T) {
  const int64_t N = m.indices.numel();
  known.add_range(m.perm, 0, N);
  known.add_range(m.pos, 0, N);
  known.add_range(m.rows, 0, T);
}

// Rows [offsets[e], offsets[e+1]) of a permuted buffer: expert e's segment (a view).
Tensor segment(const Tensor& t, const std::vector<int64_t>& offsets, size_t e) {
  return t.narrow(offsets[e], offsets[e + 1] - offsets[e]);
}
}  // namespace

size_t MoeSaved::bytes() const {
  size_t n = 0;
  for (const Tensor* t : {&probs, &indices, &weights, &perm, &pos, &rows, &gate, &up, &y})
    if (t->defined()) n += t->nbytes();
  for (const Expert& e : experts)
    for (const Tensor* t : {&e.rows, &e.slots, &e.scale, &e.gate, &e.up, &e.y})
      if (t->defined()) n += t->nbytes();
  return n;
}

Tensor moe_forward(const ModelConfig& c, const LayerTensors& w, const Tensor& xn, MoeSaved* save) {
  const int64_t T = xn.size(0), H = c.hidden_size, E = c.num_experts;
  const int64_t K = c.num_experts_per_tok, I = c.moe_intermediate_size, N = T * K;
  const Device dev = xn.device();
  Tensor none;
  MoeSaved m;
  Tensor logits = empty({T, E}, dev);
  ops::linear(xn, w.router_w, none, logits);
  m.probs = empty({T, E}, dev);
  m.indices = Tensor::empty({T, K}, DType::i32, dev);
  m.weights = empty({T, K}, dev);
  ops::moe_route(logits, K, c.norm_topk_prob, m.probs, m.indices, m.weights);
  logits = Tensor();

  ops::KnownIndices known;
  known.add_range(m.indices, 0, E);  // moe_route's top-k are experts in [0, E) by construction
  Tensor offsets;
  ops::moe_permute(m.indices, E, m.perm, m.pos, m.rows, offsets);
  record_permutation_ranges(known, m, T);
  // The layer's one device-to-host copy: E+1 offsets (a sync point; CUDA-graph capture of this
  // forward would need the segment sizes on the device instead).
  {
    const Tensor host = offsets.to(Device::cpu);
    m.offsets.assign(host.i32(), host.i32() + E + 1);
  }

  Tensor xs = empty({N, H}, dev);
  ops::gather_rows(xn, m.rows, xs);
  m.gate = empty({N, I}, dev);
  m.up = empty({N, I}, dev);
  for (size_t e = 0; e < size_t(E); ++e) {
    if (m.offsets[e + 1] == m.offsets[e]) continue;
    const Tensor xe = segment(xs, m.offsets, e);
    Tensor ge = segment(m.gate, m.offsets, e), ue = segment(m.up, m.offsets, e);
    ops::linear(xe, w.expert_gate[e], none, ge);
    ops::linear(xe, w.expert_up[e], none, ue);
  }
  xs = Tensor();
  Tensor act = empty({N, I}, dev);
  ops::silu_mul(m.gate, m.up, act);
  m.y = empty({N, H}, dev);
  for (size_t e = 0; e < size_t(E); ++e) {
    if (m.offsets[e + 1] == m.offsets[e]) continue;
    Tensor ye = segment(m.y, m.offsets, e);
    ops::linear(segment(act, m.offsets, e), w.expert_down[e], none, ye);
  }
  Tensor out = empty({T, H}, dev);
  ops::moe_unpermute(m.y, m.pos, m.weights, out);
  if (save) *save = std::move(m);
  return out;
}

Tensor moe_backward(const ModelConfig& c, const LayerTensors& w, LayerTensors& g, const Tensor& xn,
                    const MoeSaved& s, const Tensor& dout) {
  const int64_t T = xn.size(0), H = c.hidden_size, E = c.num_experts;
  const int64_t K = c.num_experts_per_tok, I = c.moe_intermediate_size, N = T * K;
  const Device dev = xn.device();
  GYRE_CHECK(s.perm.defined() && s.offsets.size() == size_t(E) + 1,
             "moe_backward: the saved state is not from moe_forward (sorted dispatch)");
  Tensor none;
  ops::KnownIndices known;
  known.add_range(s.indices, 0, E);
  record_permutation_ranges(known, s, T);
  // out[t] = Σ_j w[t, j] y[pos(t, j)]  ⇒  ∂L/∂y[p] = w · dout[t],  ∂L/∂w[t, j] = <dout[t], y[p]>.
  Tensor dy = empty({N, H}, dev), dweights = empty({T, K}, dev);
  ops::moe_unpermute_backward(dout, s.y, s.perm, s.weights, dy, dweights);
  Tensor act = empty({N, I}, dev), dact = empty({N, I}, dev);
  ops::silu_mul(s.gate, s.up, act);
  for (size_t e = 0; e < size_t(E); ++e) {
    if (s.offsets[e + 1] == s.offsets[e]) continue;
    Tensor dacte = segment(dact, s.offsets, e);
    ops::linear_backward(segment(dy, s.offsets, e), segment(act, s.offsets, e), w.expert_down[e],
                         dacte, g.expert_down[e], none);
  }
  dy = Tensor();
  act = Tensor();
  Tensor dgate = empty({N, I}, dev), dup = empty({N, I}, dev);
  ops::silu_mul_backward(dact, s.gate, s.up, dgate, dup);
  dact = Tensor();
  Tensor xs = empty({N, H}, dev), dxs = empty({N, H}, dev);
  ops::gather_rows(xn, s.rows, xs);
  for (size_t e = 0; e < size_t(E); ++e) {
    if (s.offsets[e + 1] == s.offsets[e]) continue;
    const Tensor xe = segment(xs, s.offsets, e);
    Tensor dxe = segment(dxs, s.offsets, e);
    ops::linear_backward(segment(dgate, s.offsets, e), xe, w.expert_gate[e], dxe, g.expert_gate[e],
                         none);
    ops::linear_backward(segment(dup, s.offsets, e), xe, w.expert_up[e], dxe, g.expert_up[e], none,
                         /*accumulate_dx=*/true);
  }
  // ∂L/∂xn[t] = Σ_j dxs[pos(t, j)] (ascending j), then the router's contribution.
  Tensor dxn = empty({T, H}, dev);
  ops::moe_unpermute(dxs, s.pos, none, dxn);
  Tensor dlogits = empty({T, E}, dev);
  ops::moe_route_backward(dweights, s.probs, s.indices, c.norm_topk_prob, dlogits);
  ops::linear_backward(dlogits, xn, w.router_w, dxn, g.router_w, none, /*accumulate_dx=*/true);
  return dxn;
}

}  // namespace gyre::model
