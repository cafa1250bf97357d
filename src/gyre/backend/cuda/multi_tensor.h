// Multi-tensor CUDA kernels behind ops::sum_squares_many / scale_many / adamw_step_many /
// f32_to_bf16_many / copy_many (backend/multi_tensor_ops.h): one launch walks many f32 tensors.
// Kernels: multi_tensor.cu.
//
// Invariants: the per-tensor arrays hold `count` entries; a tensor with n[i] == 0 may have null
// pointers. Results are bitwise those of the per-tensor kernels (elementwise.cu) for every tensor:
// both go through elementwise_common.cuh with the same slice boundaries.
#pragma once
#include <cstdint>

namespace gyre::cuda {

// sums[i] = Σ a_i² (f64), bitwise cuda::sum_squares(a[i], n[i]). sums is a host array; one
// device-to-host copy, synchronises.
void sum_squares_each(const float* const* a, const int64_t* n, int64_t count, double* sums);
// a_i *= s for every tensor (one launch).
void scale_many(float* const* a, const int64_t* n, int64_t count, float s);
// cuda::adamw on every (param_i, grad_i, m_i, v_i) of n[i] elements (one launch; grad_scale as
// there). `bf16`: null, or per tensor null or n[i] bf16 values that receive the cast of the
// updated param_i (the value just stored, rounded as cuda::f32_to_bf16).
void adamw_many(float* const* param, const float* const* grad, float* const* m, float* const* v,
                const int64_t* n, int64_t count, double lr, double beta1, double beta2, double eps,
                double weight_decay, int64_t step, uint16_t* const* bf16 = nullptr,
                float grad_scale = 1.0f);
// dst_i = cuda::f32_to_bf16(src_i) bitwise for every tensor (one launch; the Bf16WeightCache's
// in-place refresh).
void f32_to_bf16_many(const float* const* src, uint16_t* const* dst, const int64_t* n,
                      int64_t count);
// dst_i = src_i (n[i] f32 values, not overlapping) for every tensor in one launch; `bf16`: null, or
// per tensor null or n[i] bf16 values that receive cuda::f32_to_bf16(src_i) bitwise in the same
// pass (src read once: the data-parallel optimizer's final unflatten writing the rollout engine's
// bf16 weight copies).
void copy_many(const float* const* src, float* const* dst, const int64_t* n, int64_t count,
               uint16_t* const* bf16 = nullptr);

}  // namespace gyre::cuda
