// ops::sample_tokens_filtered (sampling_ops.h): argument checks and dispatch to the CUDA kernels
// of backend/cuda/sampling_filtered.cu (pass 1 per row, then the global-memory path for rows whose
// candidate set did not fit one block).
#include "gyre/backend/sampling_ops.h"

#include <algorithm>
#include <vector>

#include "gyre/backend/ops_args.h"
#ifdef GYRE_HAVE_CUDA
#include "gyre/backend/cuda/sampling_filtered.h"
#endif

namespace gyre::ops {

using namespace detail;

void sample_tokens_filtered(const Tensor& logits, const Tensor& temperature, const Tensor& top_k,
                            const Tensor& top_p, const Tensor& seeds, const Tensor& steps,
                            float min_p, Tensor& tokens) {
  const char* op = "sample_tokens_filtered";
  check_all_defined(op, {{"logits", &logits},
                         {"temperature", &temperature},
                         {"top_k", &top_k},
                         {"top_p", &top_p},
                         {"seeds", &seeds},
                         {"steps", &steps}});
  const Device dev = op_device(op, {{"logits", &logits},
                                    {"temperature", &temperature},
                                    {"top_k", &top_k},
                                    {"top_p", &top_p},
                                    {"seeds", &seeds},
                                    {"steps", &steps},
                                    {"tokens", &tokens}});
  GYRE_CHECK(logits.dim() == 2 && logits.dtype() == DType::f32,
             "ops::sample_tokens_filtered: logits must be f32 [R, V], got {} {}",
             dtype_name(logits.dtype()), shape_str(logits.shape()));
  const int64_t R = logits.size(0), V = logits.size(1);
  GYRE_CHECK(V <= int64_t(1) << 31, "ops::sample_tokens_filtered: vocabulary {} exceeds i32 ids",
             V);
  check_shape(op, "temperature", temperature, {R});
  check_shape(op, "top_k", top_k, {R});
  check_shape(op, "top_p", top_p, {R});
  check_shape(op, "seeds", seeds, {R});
  check_shape(op, "steps", steps, {R});
  GYRE_CHECK(temperature.dtype() == DType::f32 && top_p.dtype() == DType::f32 &&
                 top_k.dtype() == DType::i32 && seeds.dtype() == DType::i64 &&
                 steps.dtype() == DType::i64,
             "ops::sample_tokens_filtered: temperature and top_p f32, top_k i32, seeds and steps "
             "i64; got {}, {}, {}, {}, {}",
             dtype_name(temperature.dtype()), dtype_name(top_p.dtype()), dtype_name(top_k.dtype()),
             dtype_name(seeds.dtype()), dtype_name(steps.dtype()));
  if (dev != Device::cuda)
    GYRE_THROW(unsupported,
               "ops::sample_tokens_filtered runs on CUDA tensors only; the CPU sampler "
               "(infer/sampler.h) samples host logits");
  prepare_out(op, "tokens", tokens, {R}, DType::i32, dev);
#ifdef GYRE_HAVE_CUDA
  if (R == 0) return;
  OpScope op_scope_("sample_tokens_filtered");
  static_assert(sizeof(cuda::FilteredRowInfo) % sizeof(int64_t) == 0);
  constexpr int64_t kInfoWords = int64_t(sizeof(cuda::FilteredRowInfo) / sizeof(int64_t));
  Tensor info = Tensor::empty({R, kInfoWords}, DType::i64, dev);
  auto* dinfo = reinterpret_cast<cuda::FilteredRowInfo*>(info.i64());
  const auto* dseeds = reinterpret_cast<const uint64_t*>(seeds.i64());
  cuda::sample_filtered_rows(logits.f32(), R, V, temperature.f32(), top_k.i32(), top_p.f32(),
                             dseeds, steps.i64(), min_p, tokens.i32(), dinfo);
  // Rows whose candidates did not fit one block (n_cand > 0) finish on the global-memory path,
  // all in one batch (segments of one sort, walked in parallel).
  const Tensor host = info.to(Device::cpu);
  const auto* hinfo = reinterpret_cast<const cuda::FilteredRowInfo*>(host.i64());
  std::vector<int32_t> rows, offsets = {0};
  int64_t total = 0;
  for (int64_t r = 0; r < R; ++r)
    if (hinfo[r].n_cand > 0) {
      rows.push_back(int32_t(r));
      total += hinfo[r].n_cand;
      GYRE_CHECK(total < int64_t(1) << 31,
                 "ops::sample_tokens_filtered: {} candidates in the global path exceed 2^31",
                 total);
      offsets.push_back(int32_t(total));
    }
  if (rows.empty()) return;
  const int64_t L = int64_t(rows.size());
  const Tensor drows = Tensor::from_vector(rows, {L}).to(dev);
  const Tensor doffsets = Tensor::from_vector(offsets, {L + 1}).to(dev);
  const size_t bytes = cuda::sample_filtered_large_workspace_bytes(total, L, doffsets.i32());
  Tensor ws = Tensor::empty({int64_t((bytes + 7) / 8)}, DType::i64, dev);
  cuda::sample_filtered_large_rows(logits.f32(), V, top_k.i32(), top_p.f32(), min_p, dinfo,
                                   drows.i32(), doffsets.i32(), L, total, ws.i64(), bytes,
                                   tokens.i32());
#endif
}

}  // namespace gyre::ops
