// bench_moe_gpu: one Qwen3-MoE sparse block (model/moe_block.h), forward + backward, on the GPU at
// a Qwen3-30B-A3B layer shape (default H 2048, E 128, k 8, I 768, T 4096 tokens; random weights
// with a router scaled so tokens spread unevenly over the experts). Times the sorted dispatch
// (device permutation, expert GEMMs over contiguous segments, unpermute: one host copy of the E+1
// offsets per layer) against the former per-expert path (host grouping, per-expert uploads,
// gathers and scatter-adds). Prints one JSON line: median wall milliseconds of the forward alone
// and of forward + backward for each path (each timed call ends synchronised), the speedups and
// the relative L2 difference of the two paths' outputs (summation order only, so tiny).
// Flags: --tokens T --hidden H --experts E --topk k --inter I --precision f32|bf16 --iters N;
// with GYRE_OP_PROFILE=1 it also prints each path's per-op GPU time (stderr).
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"moe_gpu\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/backend/ops.h"
#include "gyre/model/moe_block.h"

using namespace gyre;

namespace {

void stream_sync() { GYRE_CUDA_CHECK(cudaStreamSynchronize(cuda::stream())); }

// Normal(0, sd) values generated on the host in one vector, then uploaded.
Tensor randn_gpu(const Shape& s, double sd, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, float(sd));
  std::vector<float> v(size_t(shape_numel(s)));
  for (float& x : v) x = nd(rng);
  return Tensor::from_vector(v, s).to(Device::cuda);
}

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape(), DType::f32, Device::cuda); }

}  // namespace

int main(int argc, char** argv) {
  int64_t T = 4096, H = 2048, E = 128, k = 8, I = 768;
  int iters = 5;
  std::string precision = "bf16";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--tokens") T = std::atoll(argv[i + 1]);
    if (a == "--hidden") H = std::atoll(argv[i + 1]);
    if (a == "--experts") E = std::atoll(argv[i + 1]);
    if (a == "--topk") k = std::atoll(argv[i + 1]);
    if (a == "--inter") I = std::atoll(argv[i + 1]);
    if (a == "--precision") precision = argv[i + 1];
    if (a == "--iters") iters = std::atoi(argv[i + 1]);
  }
  if (!cuda::available()) {
    std::printf("{\"bench\":\"moe_gpu\",\"skipped\":\"no CUDA device visible\"}\n");
    return 0;
  }
  model::ModelConfig c;
  c.arch = model::Arch::qwen3_moe;
  c.model_type = "qwen3_moe";
  c.hidden_size = H;
  c.num_experts = E;
  c.num_experts_per_tok = k;
  c.moe_intermediate_size = I;
  c.norm_topk_prob = true;
  std::mt19937_64 rng(1);
  model::LayerTensors w, g;
  w.moe = g.moe = true;
  w.router_w = randn_gpu({E, H}, 3.0 / std::sqrt(double(H)), rng);
  g.router_w = zeros_like(w.router_w);
  for (int64_t e = 0; e < E; ++e) {
    w.expert_gate.push_back(randn_gpu({I, H}, 1.0 / std::sqrt(double(H)), rng));
    w.expert_up.push_back(randn_gpu({I, H}, 1.0 / std::sqrt(double(H)), rng));
    w.expert_down.push_back(randn_gpu({H, I}, 1.0 / std::sqrt(double(I)), rng));
    g.expert_gate.push_back(zeros_like(w.expert_gate.back()));
    g.expert_up.push_back(zeros_like(w.expert_up.back()));
    g.expert_down.push_back(zeros_like(w.expert_down.back()));
  }
  const Tensor xn = randn_gpu({T, H}, 1.0, rng), dout = randn_gpu({T, H}, 1.0, rng);
  ops::Bf16Autocast autocast(precision == "bf16");

  // One forward (and backward), synchronised at the end.
  auto run = [&](bool sorted, bool backward) {
    model::MoeSaved s;
    const Tensor y = sorted ? model::moe_forward(c, w, xn, backward ? &s : nullptr)
                            : model::moe_forward_per_expert(c, w, xn, backward ? &s : nullptr);
    if (backward) {
      const Tensor dx = sorted ? model::moe_backward(c, w, g, xn, s, dout)
                               : model::moe_backward_per_expert(c, w, g, xn, s, dout);
    }
    stream_sync();
  };
  auto time = [&](bool sorted, bool backward) {
    auto once = [&] { run(sorted, backward); };
    once();  // warm-up: allocator pool, cuBLASLt heuristics
    std::vector<double> ms;
    for (int i = 0; i < iters; ++i) {
      const double t0 = bench::wall_ms();
      once();
      ms.push_back(bench::wall_ms() - t0);
    }
    return bench::median(ms);
  };
  const double fwd_new = time(true, false), fwd_old = time(false, false);
  const double step_new = time(true, true), step_old = time(false, true);
  // The two paths differ by summation order only: ||y_sorted - y_per_expert|| / ||y_per_expert||.
  double num = 0, den = 0;
  {
    const std::vector<float> a = model::moe_forward(c, w, xn, nullptr).to_vector();
    const std::vector<float> b = model::moe_forward_per_expert(c, w, xn, nullptr).to_vector();
    for (size_t i = 0; i < a.size(); ++i) {
      num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      den += double(b[i]) * b[i];
    }
  }
  std::printf(
      "{\"bench\":\"moe_gpu\",\"tokens\":%lld,\"hidden\":%lld,\"experts\":%lld,\"topk\":%lld,"
      "\"inter\":%lld,\"precision\":\"%s\",\"fwd_ms_sorted\":%.3f,\"fwd_ms_per_expert\":%.3f,"
      "\"fwd_bwd_ms_sorted\":%.3f,\"fwd_bwd_ms_per_expert\":%.3f,\"fwd_speedup\":%.2f,"
      "\"fwd_bwd_speedup\":%.2f,\"out_rel_diff\":%.2e}\n",
      (long long)T, (long long)H, (long long)E, (long long)k, (long long)I, precision.c_str(),
      fwd_new, fwd_old, step_new, step_old, fwd_old / fwd_new, step_old / step_new,
      std::sqrt(num / (den > 0 ? den : 1.0)));
  if (ops::op_profile_enabled()) {  // GYRE_OP_PROFILE=1: where one forward + backward's time goes
    ops::op_profile_report();       // drops the timed runs' records
    for (bool sorted : {true, false}) {
      const double t0 = bench::wall_ms();
      run(sorted, true);
      std::fprintf(stderr, "--- %s, forward + backward, %.1f ms wall\n%s",
                   sorted ? "sorted dispatch" : "per-expert path", bench::wall_ms() - t0,
                   ops::op_profile_report().c_str());
    }
  }
  return 0;
}
#endif
