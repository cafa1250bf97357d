// ops::decode_stack_ (decode_stack_ops.h): the checks, the bf16 weight copies from the installed
// cache, then backend/cuda/decode_stack.cu's one launch.
#include "gyre/backend/decode_stack_ops.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "gyre/backend/cuda/decode_stack.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/ops_args.h"
#include "gyre/core/error.h"

namespace gyre::ops {

using namespace detail;

namespace {

std::atomic<uint64_t> g_calls{0};

// The switch: off unless GYRE_DECODE_STACK=1 (the stack is still slower than the per-op decode on
// an H200, docs/cuda.md), set_decode_stack changes it.
std::atomic<bool>& stack_switch() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("GYRE_DECODE_STACK");
    return v && std::strcmp(v, "1") == 0;
  }()};
  return on;
}

bool stack_enabled() { return stack_switch().load(std::memory_order_relaxed); }

}  // namespace

void set_decode_stack(bool on) { stack_switch().store(on, std::memory_order_relaxed); }
bool decode_stack_enabled() { return stack_enabled(); }

uint64_t decode_stack_calls() { return g_calls.load(std::memory_order_relaxed); }

bool decode_stack_fuses(Device device, DType cache_dtype, int64_t T, int64_t layers, int64_t H,
                        int64_t Hq, int64_t Hkv, int64_t D, int64_t I) {
  if constexpr (kCuda)
    return stack_enabled() && device == Device::cuda && cache_dtype == DType::bf16 && T == 1 &&
           bf16_autocast() && bf16_weight_cache() != nullptr &&
           cuda::decode_stack_supported(layers, H, Hq, Hkv, D, I);
  return false;
}

void decode_stack_(Tensor& x, const std::vector<DecodeStackLayer>& layers, float eps, float scale,
                   const Tensor& cos, const Tensor& sin, const PagedDecodeStep& step) {
  OpScope op_scope_("decode_stack_");
  const char* op = "decode_stack_";
  check_defined(op, "x", x);
  GYRE_CHECK(x.dim() == 2 && x.size(0) == 1,
             "ops::{}: x must be one row [1, H], got shape {}; the stack runs batch-1 decode only",
             op, shape_str(x.shape()));
  GYRE_CHECK(!layers.empty() && layers[0].q_w && layers[0].k_cache,
             "ops::{}: no layers (or a layer without tensors)", op);
  const int64_t H = x.size(1);
  const Tensor& kc0 = *layers[0].k_cache;
  GYRE_CHECK(kc0.dim() == 4, "ops::{}: k_cache must be [pages, page_size, Hkv, D], got {}", op,
             shape_str(kc0.shape()));
  const int64_t Hkv = kc0.size(2), D = kc0.size(3), page_size = kc0.size(1);
  const int64_t Hq = layers[0].q_w->size(0) / D, I = layers[0].gate_w->size(0);
  GYRE_CHECK(
      decode_stack_fuses(x.device(), kc0.dtype(), 1, int64_t(layers.size()), H, Hq, Hkv, D, I),
      "ops::{}: not available for {} layers, hidden {}, heads {}/{}, head dim {}, "
      "intermediate {} in this setting (check decode_stack_fuses first)",
      op, layers.size(), H, Hq, Hkv, D, I);
  require_cuda_f32(op, x.dtype());
  for (const Tensor* t : {&step.positions, &step.slot_mapping, &step.cu_seqlens_q, &step.kv_lens,
                          &step.page_indptr, &step.page_indices}) {
    check_i32(op, "step index array", *t);
    GYRE_CHECK(t->device() == Device::cuda, "ops::{}: the step's index arrays must be on CUDA", op);
  }
  GYRE_CHECK(step.positions.numel() == 1 && step.slot_mapping.numel() == 1 &&
                 step.kv_lens.numel() == 1 && step.cu_seqlens_q.numel() == 2 &&
                 step.page_indptr.numel() == 2,
             "ops::{}: the step must be one sequence with one new token", op);
  GYRE_CHECK(step.max_kv_len >= 1, "ops::{}: max_kv_len must be >= 1, got {}", op, step.max_kv_len);
  GYRE_CHECK(cos.defined() && sin.defined() && cos.device() == Device::cuda &&
                 cos.dtype() == DType::f32 && sin.dtype() == DType::f32 && cos.dim() == 2 &&
                 cos.size(1) == D / 2 && sin.shape() == cos.shape(),
             "ops::{}: cos / sin must be f32 CUDA tables [P, {}]", op, D / 2);
  Bf16WeightCache* cache = bf16_weight_cache();
  std::vector<cuda::DecodeStackLayer> ls(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    const DecodeStackLayer& s = layers[l];
    auto weight = [&](const Tensor* w, const char* name, int64_t rows, int64_t cols) {
      GYRE_CHECK(w && w->defined() && w->device() == Device::cuda && w->dtype() == DType::f32 &&
                     w->shape() == Shape({rows, cols}),
                 "ops::{}: layer {}'s {} must be an f32 CUDA tensor [{}, {}]", op, l, name, rows,
                 cols);
      return cache->bf16(*w);
    };
    auto vec = [&](const Tensor* b, const char* name, int64_t n, bool required) -> const float* {
      if (!b || !b->defined()) {
        GYRE_CHECK(!required, "ops::{}: layer {}'s {} is undefined", op, l, name);
        return nullptr;
      }
      GYRE_CHECK(b->device() == Device::cuda && b->dtype() == DType::f32 && b->numel() == n,
                 "ops::{}: layer {}'s {} must be an f32 CUDA vector of {}", op, l, name, n);
      return b->f32();
    };
    auto cache_of = [&](Tensor* c, const char* name) {
      GYRE_CHECK(c && c->defined() && c->shape() == kc0.shape() && c->dtype() == DType::bf16 &&
                     c->device() == Device::cuda,
                 "ops::{}: layer {}'s {} must be a bf16 CUDA cache shaped like layer 0's {}", op, l,
                 name, shape_str(kc0.shape()));
      return c->data<uint16_t>();
    };
    cuda::DecodeStackLayer& d = ls[l];
    d.input_norm = vec(s.input_norm, "input norm", H, true);
    d.wq = weight(s.q_w, "q_proj", Hq * D, H);
    d.wk = weight(s.k_w, "k_proj", Hkv * D, H);
    d.wv = weight(s.v_w, "v_proj", Hkv * D, H);
    d.bq = vec(s.q_b, "q_proj bias", Hq * D, false);
    d.bk = vec(s.k_b, "k_proj bias", Hkv * D, false);
    d.bv = vec(s.v_b, "v_proj bias", Hkv * D, false);
    d.wo = weight(s.o_w, "o_proj", H, Hq * D);
    d.bo = vec(s.o_b, "o_proj bias", H, false);
    d.post_norm = vec(s.post_norm, "post-attention norm", H, true);
    d.wg = weight(s.gate_w, "gate_proj", I, H);
    d.wu = weight(s.up_w, "up_proj", I, H);
    d.bg = vec(s.gate_b, "gate_proj bias", I, false);
    d.bu = vec(s.up_b, "up_proj bias", I, false);
    d.wd = weight(s.down_w, "down_proj", H, I);
    d.bd = vec(s.down_b, "down_proj bias", H, false);
    d.k_cache = cache_of(s.k_cache, "k_cache");
    d.v_cache = cache_of(s.v_cache, "v_cache");
  }
  if constexpr (kCuda) {
    cuda::DecodeStackArgs a;
    a.layers = int64_t(ls.size()), a.H = H, a.Hq = Hq, a.Hkv = Hkv, a.D = D, a.I = I;
    a.eps = double(eps);  // as the fused ops' RmsPrologue::eps
    a.scale = scale;
    a.layer = ls.data();
    a.x = x.f32();
    a.positions = step.positions.i32(), a.slot_mapping = step.slot_mapping.i32();
    a.cu_seqlens_q = step.cu_seqlens_q.i32(), a.kv_lens = step.kv_lens.i32();
    a.page_indptr = step.page_indptr.i32(), a.page_indices = step.page_indices.i32();
    a.cos = cos.f32(), a.sin = sin.f32();
    a.page_size = page_size, a.max_kv_len = step.max_kv_len;
    cuda::decode_stack_bf16(a);
    g_calls.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace gyre::ops
