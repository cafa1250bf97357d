// bench_paged_decode_gpu: the rollout engine's paged attention on the GPU, the bf16-cache kernel
// (backend/cuda/paged_bf16.h: one CTA per kv-head group, 16-byte K/V loads, split-KV for small
// batches) against the f32-cache kernel it replaces (cuda::paged_attention_fwd: one warp per
// (token, head)). One JSON line per case:
//   decode_b256_kv384    batch 256 decode, every sequence at 384 keys (prompt 128 + 256 new);
//   decode_b1_kv4096     batch 1 decode at 4096 keys (split-KV);
//   decode_b1_kv32768    batch 1 decode at 32768 keys (split-KV);
//   prefill_b256_q128    batch 256 prompts of 128 tokens (the first rollout step), for scale;
//   short_b{1,8}_kv{128,1024,8192}[_bound32768]  (mode `short`, issue 7) batch 1 and 8 decode at
//                        short to medium contexts, with max_kv_len the context itself or the
//                        32768-key bound a decode graph sizes its splits for;
// each for Qwen2.5-0.5B heads (14 q / 2 kv / 64) and 1.5B heads (12 / 2 / 128), pages of 16
// scattered over a shuffled pool. Figures: microseconds per call (median of single calls timed with
// CUDA events, the L2 flushed before each, as in a model step whose other layers evict the cache;
// `hot_us` back to back without flushing), and the KV bandwidth (bytes of K + V the call must read
// at least once, over the time). Anchor: the device's copy bandwidth measured first in the same
// run (bytes read + written by a 1 GiB device-to-device copy; ~4.0 TB/s on an H200), printed next
// to each figure with the ratio. The bf16 kernel's output is compared with the f32 kernel's.
#include <cstdio>

#ifndef GYRE_HAVE_CUDA
int main() {
  std::printf("{\"bench\":\"paged_decode_gpu\",\"skipped\":\"built without the CUDA backend\"}\n");
  return 0;
}
#else
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/philox.h"
#include "gyre/core/tensor.h"

using namespace gyre;

namespace {

void emit(const std::string& json) { std::printf("%s\n", json.c_str()), std::fflush(stdout); }

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

using bench::time_call;
using bench::Timing;

// Device-to-device copy bandwidth, bytes read + written per second (GB/s).
double copy_gbps() {
  const int64_t n = int64_t(1) << 27;  // 512 MiB each way
  Tensor a = Tensor::zeros({n}, DType::f32).to(Device::cuda);
  Tensor b = Tensor::empty({n}, DType::f32, Device::cuda);
  const Timing t = time_call(
      [&] {
        GYRE_CUDA_CHECK(cudaMemcpyAsync(b.raw(), a.raw(), size_t(n) * 4, cudaMemcpyDeviceToDevice,
                                        cuda::stream()));
      },
      10);
  return double(n) * 8 / (t.hot_us * 1e-6) / 1e9;
}

// Random device values: a 4 Mi block drawn on the host (Philox normals) tiled over the tensor.
// `bits` fills a bf16 cache, `widen` the f32 cache with the same (bf16-rounded) values.
void fill_cache(int64_t n, uint64_t seed, uint16_t* bits, float* widen) {
  const int64_t block = std::min<int64_t>(n, int64_t(1) << 22);
  std::vector<uint16_t> hb(static_cast<size_t>(block));
  std::vector<float> hf(static_cast<size_t>(block));
  PhiloxStream r(seed, 1);
  for (int64_t i = 0; i < block; ++i) {
    hb[size_t(i)] = f32_to_bf16(r.next_normal());
    hf[size_t(i)] = bf16_to_f32(hb[size_t(i)]);
  }
  for (int64_t i = 0; i < n; i += block) {
    const int64_t m = std::min(block, n - i);
    GYRE_CUDA_CHECK(cudaMemcpy(bits + i, hb.data(), size_t(m) * 2, cudaMemcpyHostToDevice));
    GYRE_CUDA_CHECK(cudaMemcpy(widen + i, hf.data(), size_t(m) * 4, cudaMemcpyHostToDevice));
  }
}

struct Heads {
  const char* model;
  int64_t Hq, Hkv, D;
};

// One batch: B sequences of q_len new tokens each at kv_len keys, pages of 16 from a shuffled pool.
// kv_bound (0: kv_len) is the max_kv_len the bf16 kernel is told, as a decode graph tells it its
// context length. Besides the measured figures, `kv_bound_us` is the time the K + V bytes need at
// 3.3 TB/s (an H200's practical HBM read rate) — the floor a memory-bound kernel approaches.
void bench_case(const std::string& name, const Heads& h, int64_t B, int64_t q_len, int64_t kv_len,
                double anchor_gbps, int reps, int64_t kv_bound = 0) {
  const int64_t max_kv = kv_bound > 0 ? kv_bound : kv_len;
  const int64_t ps = 16, pages_per_seq = (kv_len + ps - 1) / ps, P = B * pages_per_seq + 1;
  const int64_t T = B * q_len;
  std::vector<int32_t> cu(size_t(B + 1)),
      lens(static_cast<size_t>(B), static_cast<int32_t>(kv_len)), indptr(size_t(B + 1));
  for (int64_t b = 0; b <= B; ++b) {
    cu[size_t(b)] = int32_t(b * q_len);
    indptr[size_t(b)] = int32_t(b * pages_per_seq);
  }
  std::vector<int32_t> pages(static_cast<size_t>(P));
  std::iota(pages.begin(), pages.end(), 0);
  PhiloxStream r(7, 2);
  for (size_t i = pages.size(); i > 1; --i) std::swap(pages[i - 1], pages[r.next_u32() % i]);
  pages.resize(size_t(B * pages_per_seq));

  const int64_t cache_n = P * ps * h.Hkv * h.D;
  Tensor kb = Tensor::empty({cache_n}, DType::bf16, Device::cuda);
  Tensor vb = Tensor::empty({cache_n}, DType::bf16, Device::cuda);
  Tensor kf = Tensor::empty({cache_n}, DType::f32, Device::cuda);
  Tensor vf = Tensor::empty({cache_n}, DType::f32, Device::cuda);
  fill_cache(cache_n, 1, kb.data<uint16_t>(), kf.f32());
  fill_cache(cache_n, 2, vb.data<uint16_t>(), vf.f32());
  Tensor q = Tensor::empty({T * h.Hq * h.D}, DType::f32, Device::cuda);
  {
    std::vector<float> hq(size_t(T * h.Hq * h.D));
    PhiloxStream rq(3, 4);
    for (float& x : hq) x = rq.next_normal();
    GYRE_CUDA_CHECK(cudaMemcpy(q.raw(), hq.data(), hq.size() * 4, cudaMemcpyHostToDevice));
  }
  Tensor out = Tensor::empty({T * h.Hq * h.D}, DType::f32, Device::cuda);
  Tensor gcu = Tensor::from_vector(cu, {B + 1}).to(Device::cuda);
  Tensor glen = Tensor::from_vector(lens, {B}).to(Device::cuda);
  Tensor gip = Tensor::from_vector(indptr, {B + 1}).to(Device::cuda);
  Tensor gpg = Tensor::from_vector(pages, {int64_t(pages.size())}).to(Device::cuda);
  Tensor out_f32 = Tensor::empty({T * h.Hq * h.D}, DType::f32, Device::cuda);
  const float scale = 1.0f / std::sqrt(float(h.D));

  const auto run_bf16 = [&] {
    cuda::paged_attention_bf16_fwd(q.f32(), kb.data<uint16_t>(), vb.data<uint16_t>(), gcu.i32(),
                                   glen.i32(), gip.i32(), gpg.i32(), B, T, h.Hq, h.Hkv, h.D, ps,
                                   scale, q_len, max_kv, out.f32());
  };
  const Timing bf = time_call(run_bf16, reps);
  const Timing f32 = time_call(
      [&] {
        cuda::paged_attention_fwd(q.f32(), kf.f32(), vf.f32(), gcu.i32(), glen.i32(), gip.i32(),
                                  gpg.i32(), B, T, h.Hq, h.Hkv, h.D, ps, scale, out_f32.f32());
      },
      std::max(5, reps / 4));
  // Both kernels read the same (bf16-rounded) values: they agree up to f32 summation order.
  const std::vector<float> got = out.to_vector(), ref = out_f32.to_vector();
  double max_diff = 0;
  int64_t nonfinite = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]))
      ++nonfinite;
    else
      max_diff = std::max(max_diff, double(std::fabs(got[i] - ref[i])));
  }
  // K + V bytes each call reads at least once (every key of every sequence, all kv heads).
  const double kv_elems = double(B) * double(kv_len) * double(h.Hkv * h.D) * 2;
  const double bf_gbps = kv_elems * 2 / (bf.cold_us * 1e-6) / 1e9;
  const double f32_gbps = kv_elems * 4 / (f32.cold_us * 1e-6) / 1e9;
  const double kv_bound_us = kv_elems * 2 / 3.3e12 * 1e6;
  emit(std::string("{\"bench\":\"paged_decode_gpu\",\"case\":\"") + name + "\",\"model\":\"" +
       h.model + "\",\"heads\":\"" + std::to_string(h.Hq) + "/" + std::to_string(h.Hkv) + "/" +
       std::to_string(h.D) + "\",\"batch\":" + std::to_string(B) +
       ",\"q_len\":" + std::to_string(q_len) + ",\"kv_len\":" + std::to_string(kv_len) +
       ",\"max_kv_len\":" + std::to_string(max_kv) + ",\"splits_scratch_bytes\":" +
       std::to_string(
           cuda::paged_attention_bf16_workspace_bytes(B, T, h.Hq, h.Hkv, h.D, q_len, max_kv)) +
       ",\"kv_bound_us\":" + num(kv_bound_us) +
       ",\"bf16_over_kv_bound\":" + num(bf.cold_us / kv_bound_us) +
       ",\"bf16_us\":" + num(bf.cold_us) + ",\"bf16_hot_us\":" + num(bf.hot_us) +
       ",\"bf16_kv_gbps\":" + num(bf_gbps) + ",\"f32_us\":" + num(f32.cold_us) +
       ",\"f32_hot_us\":" + num(f32.hot_us) + ",\"f32_kv_gbps\":" + num(f32_gbps) +
       ",\"speedup_vs_f32\":" + num(f32.cold_us / bf.cold_us) +
       ",\"max_abs_diff_vs_f32\":" + num(max_diff) + ",\"nonfinite\":" + std::to_string(nonfinite) +
       ",\"anchor_copy_gbps\":" + num(anchor_gbps) +
       ",\"bf16_kv_gbps_over_anchor\":" + num(bf_gbps / anchor_gbps) + "}");
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::available()) {
    emit("{\"bench\":\"paged_decode_gpu\",\"skipped\":\"no CUDA device visible\"}");
    return 0;
  }
  const std::string only = argc > 1 ? argv[1] : "";
  try {
    const double anchor = copy_gbps();
    emit("{\"bench\":\"paged_decode_gpu\",\"case\":\"copy_anchor\",\"copy_gbps\":" + num(anchor) +
         ",\"h200_reference_gbps\":4000}");
    const Heads small = {"qwen2.5-0.5b", 14, 2, 64}, big = {"qwen2.5-1.5b", 12, 2, 128};
    for (const Heads& h : {small, big}) {
      if (only.empty() || only == "decode") {
        bench_case("decode_b256_kv384", h, 256, 1, 384, anchor, 50);
        bench_case("decode_b1_kv4096", h, 1, 1, 4096, anchor, 50);
        bench_case("decode_b1_kv32768", h, 1, 1, 32768, anchor, 50);
      }
      if (only.empty() || only == "prefill")
        bench_case("prefill_b256_q128", h, 256, 128, 128, anchor, 20);
      if (only.empty() || only == "short")
        for (int64_t B : {1, 8})
          for (int64_t kv : {128, 1024, 8192})
            for (int64_t bound : {int64_t(0), int64_t(32768)}) {
              const std::string name = "short_b" + std::to_string(B) + "_kv" + std::to_string(kv) +
                                       (bound ? "_bound" + std::to_string(bound) : "");
              bench_case(name, h, B, 1, kv, anchor, 50, bound);
            }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
#endif
