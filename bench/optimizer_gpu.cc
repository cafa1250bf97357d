// bench_optimizer_gpu: one train::AdamW::step over GPU f32 master weights of a real model shape
// (default qwen2.5-0.5b: ~290 tensors, ~494M elements; model::named_shape, random weights), the
// multi-tensor path (ops::sum_squares_many / scale_many / adamw_step_many: one norm transfer, one
// clip launch, one AdamW launch) against the former per-tensor path (ops::sum_squares per tensor,
// one device-to-host sync each, then scale_ and adamw_step per tensor). Gradients: the weights x
// 0.01 (random, norm > clip, so every step clips), restored before each timed step. Prints one
// JSON line: median wall milliseconds per step of each path (each step ends synchronised), the
// speedup, and whether both paths left bitwise-equal weights. Flags: --shape NAME --iters N.
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"optimizer_gpu\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/named_shapes.h"
#include "gyre/train/optimizer.h"

using namespace gyre;

namespace {

void stream_sync() { GYRE_CUDA_CHECK(cudaStreamSynchronize(cuda::stream())); }

// The AdamW::step before the multi-tensor ops (constant lr, same hyper-parameters).
struct PerTensorAdamW {
  train::AdamWConfig cfg;
  int64_t it = 0;
  std::map<std::string, Tensor> m, v;
  void step(train::NamedTensors& params, train::NamedTensors& grads) {
    double sq = 0;
    for (auto& [n, g] : grads) sq += ops::sum_squares(g);  // one sync per tensor
    const double norm = std::sqrt(sq);
    if (!std::isfinite(norm)) std::abort();
    const double coeff = cfg.clip_grad / (norm + 1e-6);
    if (cfg.clip_grad > 0 && coeff < 1.0)
      for (auto& [n, g] : grads) ops::scale_(g, float(coeff));
    ++it;
    ops::AdamWParams p;
    p.lr = float(cfg.lr), p.beta1 = float(cfg.beta1), p.beta2 = float(cfg.beta2);
    p.eps = float(cfg.eps), p.weight_decay = float(cfg.weight_decay), p.step = it;
    for (size_t i = 0; i < params.size(); ++i) {
      auto& [name, w] = params[i];
      if (!m.count(name)) {
        m[name] = Tensor::zeros(w.shape(), DType::f32, w.device());
        v[name] = Tensor::zeros(w.shape(), DType::f32, w.device());
      }
      ops::adamw_step(w, grads[i].second, m[name], v[name], p);
    }
  }
};

train::NamedTensors clone_all(const train::NamedTensors& ts) {
  train::NamedTensors out;
  for (auto& [n, t] : ts) out.emplace_back(n, t.clone());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "qwen2.5-0.5b";
  int iters = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shape")) shape = argv[i + 1];
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  }
  if (!cuda::available()) {
    std::printf("{\"bench\":\"optimizer_gpu\",\"skipped\":\"no CUDA device visible\"}\n");
    return 0;
  }
  auto model = model::CausalLM::random_init(model::named_shape(shape), 1, 0.02f);
  model->to(Device::cuda);
  train::NamedTensors p_multi, grads_src;
  int64_t numel = 0;
  for (auto& t : model->parameters()) {
    p_multi.emplace_back(t.name, t.tensor.clone());
    Tensor g = t.tensor.clone();
    ops::scale_(g, 0.01f);
    grads_src.emplace_back(t.name, g);
    numel += t.tensor.numel();
  }
  model.reset();
  train::NamedTensors p_one = clone_all(p_multi), grads = clone_all(grads_src);
  auto restore = [&] {
    for (size_t i = 0; i < grads.size(); ++i) ops::copy(grads_src[i].second, grads[i].second);
    stream_sync();
  };
  const train::AdamWConfig cfg{.lr = 1e-5, .weight_decay = 0.01, .clip_grad = 1.0};
  train::AdamW multi(cfg, {});
  PerTensorAdamW one;
  one.cfg = cfg;
  std::vector<double> t_multi, t_one;
  double norm = 0;
  const int warm = 2;
  for (int i = 0; i < warm + iters; ++i) {
    restore();
    double t0 = bench::wall_ms();
    one.step(p_one, grads);
    stream_sync();
    if (i >= warm) t_one.push_back(bench::wall_ms() - t0);
    restore();
    t0 = bench::wall_ms();
    norm = multi.step(p_multi, grads).first;
    stream_sync();
    if (i >= warm) t_multi.push_back(bench::wall_ms() - t0);
  }
  bool equal = true;
  for (size_t i = 0; i < p_one.size() && equal; ++i)
    equal = p_one[i].second.to(Device::cpu).to_vector() ==
            p_multi[i].second.to(Device::cpu).to_vector();
  const double ms_one = bench::median(t_one), ms_multi = bench::median(t_multi);
  std::printf(
      "{\"bench\":\"optimizer_gpu\",\"shape\":\"%s\",\"tensors\":%zu,\"elements\":%lld,"
      "\"iters\":%d,\"grad_norm\":%.6g,\"per_tensor_step_ms\":%.3f,\"multi_tensor_step_ms\":%.3f,"
      "\"speedup\":%.2f,\"bitwise_equal\":%s}\n",
      shape.c_str(), p_multi.size(), (long long)numel, iters, norm, ms_one, ms_multi,
      ms_one / ms_multi, equal ? "true" : "false");
  return equal ? 0 : 1;
}
#endif
