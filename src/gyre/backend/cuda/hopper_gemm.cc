// Host side of the own Hopper GEMM (hopper_gemm.h): shape checks, TMA tensor maps, launch.
#include "gyre/backend/cuda/hopper_gemm.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "gyre/backend/cuda/hopper_gemm_launch.h"
#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/error.h"

namespace gyre::cuda {

namespace {

using hopper::kBK;
using hopper::kBM;
using hopper::kBN;

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    GYRE_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                     cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || !f)
      GYRE_THROW(internal,
                 "hopper GEMM: the driver has no cuTensorMapEncodeTiled (needs CUDA 12+)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A row-major bf16 matrix [rows, K] as a TMA tensor map with 64-column boxes of box_rows rows in
// the 128-byte swizzle. Loads past the matrix (rows or K) fill zeros and stores past it are
// dropped: partial tiles need no other handling.
CUtensorMap tensor_map(const uint16_t* ptr, int64_t rows, int64_t K, int box_rows = kBN / 2) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(K), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(K) * 2};
  const cuuint32_t box[2] = {cuuint32_t(kBK), cuuint32_t(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = encode_fn()(
      &m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<uint16_t*>(ptr), dims, strides, box,
      elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    GYRE_THROW(internal,
               "hopper GEMM: cuTensorMapEncodeTiled failed ({}) for a [{}, {}] bf16 matrix", int(r),
               rows, K);
  return m;
}

// The first n_required pointers must be non-null; every non-null one 16-byte aligned (the TMA's
// global-address rule).
void check_operands(const char* what, int64_t M, int64_t N, int64_t K, const void* const* ptrs,
                    int n_ptrs, int n_required) {
  if (!hopper_gemm_supported(M, N, K))
    GYRE_THROW(invalid_argument,
               "{}: M={} N={} K={} is not supported (needs an sm_90 device, M, N, K in (0, 2^31), "
               "N and K multiples of 8); check hopper_gemm_supported first",
               what, M, N, K);
  for (int i = 0; i < n_ptrs; ++i) {
    if (!ptrs[i] && i < n_required)
      GYRE_THROW(invalid_argument, "{}: operand {} is a null pointer", what, i);
    if (ptrs[i] && reinterpret_cast<uintptr_t>(ptrs[i]) % 16 != 0)
      GYRE_THROW(invalid_argument, "{}: operand {} is not 16-byte aligned", what, i);
  }
}

}  // namespace

bool hopper_gemm_supported(int64_t M, int64_t N, int64_t K) {
  static const bool sm90 = [] {
    if (!available()) return false;
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      return false;
    return major == 9 && minor == 0;  // the kernel is sm_90a SASS only
  }();
  const int64_t lim = int64_t(1) << 31;
  return sm90 && M > 0 && N > 0 && K > 0 && M < lim && N < lim && K < lim && N % 8 == 0 &&
         K % 8 == 0;
}

void hopper_gemm_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, int64_t M, int64_t N,
                      int64_t K) {
  const void* ptrs[3] = {x, w, y};
  check_operands("hopper_gemm_bf16", M, N, K, ptrs, 3, 3);
  hopper::Params p;
  p.M = int(M), p.N = int(N), p.K = int(K);
  p.tiles_m = int((M + kBM - 1) / kBM);
  p.tiles_n = int((N + kBN - 1) / kBN);
  hopper::TensorMaps m;
  m.a = tensor_map(x, M, K);
  m.b0 = m.b1 = tensor_map(w, N, K);
  m.out = m.gate = m.up = tensor_map(y, M, N, 64);
  hopper::launch(false, m, p, sm_count());
}

void hopper_swiglu_bf16(const uint16_t* x, const uint16_t* wg, const uint16_t* wu, uint16_t* act,
                        uint16_t* gate, uint16_t* up, int64_t M, int64_t I, int64_t K) {
  const void* ptrs[6] = {x, wg, wu, act, gate, up};
  check_operands("hopper_swiglu_bf16", M, I, K, ptrs, 6, 4);
  hopper::Params p;
  p.M = int(M), p.N = int(I), p.K = int(K);
  p.tiles_m = int((M + kBM - 1) / kBM);
  p.tiles_n = int((I + kBN / 2 - 1) / (kBN / 2));
  if ((gate == nullptr) != (up == nullptr))
    GYRE_THROW(invalid_argument, "hopper_swiglu_bf16: gate and up are both written or neither");
  p.store_gate_up = gate != nullptr;
  hopper::TensorMaps m;
  m.a = tensor_map(x, M, K);
  m.b0 = tensor_map(wg, I, K);
  m.b1 = tensor_map(wu, I, K);
  m.out = tensor_map(act, M, I, 64);
  m.gate = gate ? tensor_map(gate, M, I, 64) : m.out;
  m.up = up ? tensor_map(up, M, I, 64) : m.out;
  hopper::launch(true, m, p, sm_count());
}

}  // namespace gyre::cuda
