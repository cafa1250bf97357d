// Tensor-level paged KV ops: validate shapes, dtypes and every index (so the kernels never read
// out of bounds), then dispatch to the device kernels: backend/cpu for CPU tensors,
// backend/cuda for CUDA tensors (f32; the indices are validated on a host copy).
#include "gyre/backend/paged_ops.h"

#include <algorithm>
#include <initializer_list>

#include "gyre/backend/cpu/paged_attention.h"
#include "gyre/backend/cuda/kernels.h"  // declarations only; linked when GYRE_HAVE_CUDA
#include "gyre/backend/cuda/paged_bf16.h"
#include "gyre/backend/ops_args.h"  // detail::OpScope (op profiler)
#include "gyre/core/error.h"

namespace gyre::ops {

namespace {

#ifdef GYRE_HAVE_CUDA
constexpr bool kCuda = true;
#else
constexpr bool kCuda = false;  // the `if constexpr (kCuda)` branches below are discarded
#endif

// Bad input to a paged op: Error(invalid_argument) "<op>: <message>". A macro so the message is
// formatted only on failure — the checks run per step over every page of the batch, where eager
// formatting cost more host time than the kernels it guards.
#define GYRE_NEED(ok, op, ...)                                                \
  do {                                                                        \
    if (!(ok)) [[unlikely]]                                                   \
      GYRE_THROW(invalid_argument, "{}: {}", op, ::fmt::format(__VA_ARGS__)); \
  } while (0)

void need_f32(const char* op, const char* name, const Tensor& t, int64_t dims) {
  GYRE_NEED(t.defined(), op, "{} is undefined", name);
  GYRE_NEED(t.dtype() == DType::f32, op, "{} must be f32, got {}", name, dtype_name(t.dtype()));
  GYRE_NEED(t.dim() == dims, op, "{} must have {} dims, got {}", name, dims, shape_str(t.shape()));
  GYRE_NEED(t.device() == Device::cpu || kCuda, op,
            "{} is on {} but this build has no CUDA backend", name, device_name(t.device()));
}

// All tensors of the call on one device (that of the first).
void need_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Device d = (*ts.begin())->device();
  for (const Tensor* t : ts)
    GYRE_NEED(!t->defined() || t->device() == d, op,
              "tensors on {} and {}: move all of them to one device", device_name(d),
              device_name(t->device()));
}

// A KV cache: f32, or bf16 on a CUDA device with the head dims the bf16 kernel is built for.
void need_cache(const char* op, const char* name, const Tensor& t) {
  GYRE_NEED(t.defined(), op, "{} is undefined", name);
  GYRE_NEED(t.dim() == 4, op, "{} must have 4 dims [pages, page_size, kv heads, head_dim], got {}",
            name, shape_str(t.shape()));
  if (t.dtype() == DType::f32) return need_f32(op, name, t, 4);
  GYRE_NEED(t.dtype() == DType::bf16 && t.device() == Device::cuda, op,
            "{} must be f32 (or bf16 on a CUDA device), got {} on {}", name, dtype_name(t.dtype()),
            device_name(t.device()));
  GYRE_NEED(paged_kv_dtype_supported(DType::bf16, Device::cuda, t.size(3)), op,
            "a bf16 {} needs head_dim 64 or 128 (the bf16 paged kernel's), got {}", name,
            t.size(3));
}

Tensor host_view(const Tensor& t) { return t.device() == Device::cpu ? t : t.to(Device::cpu); }

void need_i32(const char* op, const char* name, const Tensor& t, int64_t n) {
  GYRE_NEED(t.defined() && t.dtype() == DType::i32 && t.dim() == 1 && t.numel() == n, op,
            "{} must be i32 [{}], got {} {}", name, n,
            t.defined() ? dtype_name(t.dtype()) : "undefined",
            t.defined() ? shape_str(t.shape()) : "");
}

}  // namespace

void check_paged_kv_write(const char* op, const Tensor& k, const Tensor& v,
                          const Tensor& slot_mapping, const Tensor& k_cache,
                          const Tensor& v_cache) {
  need_f32(op, "k", k, 3);
  need_f32(op, "v", v, 3);
  need_cache(op, "k_cache", k_cache);
  need_cache(op, "v_cache", v_cache);
  GYRE_NEED(v_cache.dtype() == k_cache.dtype(), op, "k_cache and v_cache dtypes differ");
  GYRE_NEED(v.shape() == k.shape(), op, "v {} != k {}", shape_str(v.shape()), shape_str(k.shape()));
  GYRE_NEED(v_cache.shape() == k_cache.shape(), op, "v_cache and k_cache shapes differ");
  const int64_t T = k.size(0), Hkv = k.size(1), D = k.size(2);
  GYRE_NEED(k_cache.size(2) == Hkv && k_cache.size(3) == D, op, "k {} does not fit cache {}",
            shape_str(k.shape()), shape_str(k_cache.shape()));
  need_i32(op, "slot_mapping", slot_mapping, T);
  need_same_device(op, {&k, &v, &slot_mapping, &k_cache, &v_cache});
  const int64_t slots = k_cache.size(0) * k_cache.size(1);
  const auto* known = KnownIndices::find(slot_mapping, KnownIndices::Entry::range);
  if (!known || known->hi > slots) {  // not proven by the caller: check a host copy
    const Tensor s_host = host_view(slot_mapping);
    const int32_t* s = s_host.i32();
    for (int64_t t = 0; t < T; ++t)
      GYRE_NEED(s[t] < slots, op, "slot_mapping[{}] = {} outside the cache's {} slots", t, s[t],
                slots);
  }
}

void paged_kv_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping, Tensor& k_cache,
                    Tensor& v_cache) {
  detail::OpScope op_scope_("paged_kv_write");
  check_paged_kv_write("paged_kv_write", k, v, slot_mapping, k_cache, v_cache);
  const int64_t T = k.size(0), Hkv = k.size(1), D = k.size(2);
  if constexpr (kCuda)
    if (k.device() == Device::cuda && k_cache.dtype() == DType::bf16)
      return cuda::paged_kv_write_bf16(k.f32(), v.f32(), slot_mapping.i32(), T, Hkv, D,
                                       k_cache.data<uint16_t>(), v_cache.data<uint16_t>());
  if constexpr (kCuda)
    if (k.device() == Device::cuda)
      return cuda::paged_kv_write(k.f32(), v.f32(), slot_mapping.i32(), T, Hkv, D, k_cache.f32(),
                                  v_cache.f32());
  cpu::paged_kv_write(k.f32(), v.f32(), slot_mapping.i32(), T, Hkv, D, k_cache.f32(),
                      v_cache.f32());
}

PagedLayoutStats check_paged_attention(const char* op, const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, const Tensor& cu_seqlens_q,
                                       const Tensor& kv_lens, const Tensor& page_indptr,
                                       const Tensor& page_indices, const Tensor& out) {
  need_f32(op, "q", q, 3);
  need_cache(op, "k_cache", k_cache);
  need_cache(op, "v_cache", v_cache);
  GYRE_NEED(v_cache.dtype() == k_cache.dtype(), op, "k_cache and v_cache dtypes differ");
  need_f32(op, "out", out, 3);
  GYRE_NEED(out.shape() == q.shape(), op, "out must have q's shape");
  GYRE_NEED(v_cache.shape() == k_cache.shape(), op, "v_cache and k_cache shapes differ");
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t P = k_cache.size(0), page_size = k_cache.size(1), Hkv = k_cache.size(2);
  GYRE_NEED(k_cache.size(3) == D, op, "head_dim: q {} vs cache {}", D, k_cache.size(3));
  GYRE_NEED(Hkv > 0 && Hq % Hkv == 0, op, "query heads {} not a multiple of kv heads {}", Hq, Hkv);
  GYRE_NEED(cu_seqlens_q.defined() && cu_seqlens_q.dim() == 1 && cu_seqlens_q.numel() >= 1, op,
            "cu_seqlens_q must be i32 [B+1]");
  const int64_t B = cu_seqlens_q.numel() - 1;
  need_i32(op, "cu_seqlens_q", cu_seqlens_q, B + 1);
  need_i32(op, "kv_lens", kv_lens, B);
  need_i32(op, "page_indptr", page_indptr, B + 1);
  GYRE_NEED(page_indices.defined() && page_indices.dtype() == DType::i32 && page_indices.dim() == 1,
            op, "page_indices must be i32 [num_pages_used]");
  need_same_device(
      op, {&q, &k_cache, &v_cache, &out, &cu_seqlens_q, &kv_lens, &page_indptr, &page_indices});
  GYRE_NEED(D <= cuda::kMaxAttentionHeadDim || q.device() == Device::cpu, op,
            "head_dim {} above the CUDA kernel's {}", D, cuda::kMaxAttentionHeadDim);
  // Proven by the caller once per step (KnownIndices::add_paged_layout) or checked on host copies.
  PagedLayoutStats stats;
  const auto* known = KnownIndices::find(cu_seqlens_q, KnownIndices::Entry::paged);
  if (known && known->companions[0] == kv_lens.address() &&
      known->companions[1] == page_indptr.address() &&
      known->companions[2] == page_indices.address() &&
      known->num_page_indices == page_indices.numel() && known->num_pages == P &&
      known->page_size == page_size) {
    stats.max_q_len = known->total;
    stats.max_kv_len = known->max_len;
    stats.recorded = true;
  } else {
    const Tensor cu_h = host_view(cu_seqlens_q), lens_h = host_view(kv_lens);
    const Tensor ip_h = host_view(page_indptr), pages_h = host_view(page_indices);
    stats = validate_paged_layout(cu_h.i32(), lens_h.i32(), ip_h.i32(), pages_h.i32(), B, T,
                                  page_indices.numel(), P, page_size, op);
  }
  return stats;
}

void paged_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                     const Tensor& cu_seqlens_q, const Tensor& kv_lens, const Tensor& page_indptr,
                     const Tensor& page_indices, float scale, Tensor& out) {
  detail::OpScope op_scope_("paged_attention");
  const PagedLayoutStats stats =
      check_paged_attention("paged_attention", q, k_cache, v_cache, cu_seqlens_q, kv_lens,
                            page_indptr, page_indices, out);
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2);
  const int64_t page_size = k_cache.size(1), Hkv = k_cache.size(2);
  const int64_t B = cu_seqlens_q.numel() - 1;
  if constexpr (kCuda)
    if (q.device() == Device::cuda && k_cache.dtype() == DType::bf16)
      return cuda::paged_attention_bf16_fwd(
          q.f32(), k_cache.data<uint16_t>(), v_cache.data<uint16_t>(), cu_seqlens_q.i32(),
          kv_lens.i32(), page_indptr.i32(), page_indices.i32(), B, T, Hq, Hkv, D, page_size, scale,
          stats.max_q_len, stats.max_kv_len, out.f32());
  if constexpr (kCuda)
    if (q.device() == Device::cuda)
      return cuda::paged_attention_fwd(q.f32(), k_cache.f32(), v_cache.f32(), cu_seqlens_q.i32(),
                                       kv_lens.i32(), page_indptr.i32(), page_indices.i32(), B, T,
                                       Hq, Hkv, D, page_size, scale, out.f32());
  cpu::paged_attention_fwd(q.f32(), k_cache.f32(), v_cache.f32(), cu_seqlens_q.i32(), kv_lens.i32(),
                           page_indptr.i32(), page_indices.i32(), B, Hq, Hkv, D, page_size, scale,
                           out.f32());
}

bool decode_slots_match_pages(const int32_t* cu, const int32_t* lens, const int32_t* ip,
                              const int32_t* pages, const int32_t* slots, int64_t B,
                              int64_t page_size) {
  if (B < 1) return false;
  for (int64_t b = 0; b < B; ++b) {
    if (cu[b] != b || cu[b + 1] != b + 1 || lens[b] < 1) return false;
    if (slots[b] < 0) continue;  // padding: writes nothing
    const int64_t pos = lens[b] - 1;
    const int64_t slot = int64_t(pages[ip[b] + pos / page_size]) * page_size + pos % page_size;
    if (slots[b] != slot) return false;
  }
  return true;
}

PagedLayoutStats validate_paged_layout(const int32_t* cu, const int32_t* lens, const int32_t* ip,
                                       const int32_t* pages, int64_t B, int64_t T,
                                       int64_t num_page_indices, int64_t num_pages,
                                       int64_t page_size, const char* op) {
  GYRE_NEED(cu[0] == 0 && cu[B] == T, op, "cu_seqlens_q must run from 0 to T = {}, got {}..{}", T,
            cu[0], cu[B]);
  GYRE_NEED(ip[0] == 0 && ip[B] == num_page_indices, op,
            "page_indptr must run from 0 to page_indices.numel()");
  PagedLayoutStats stats;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t nq = cu[b + 1] - cu[b];
    GYRE_NEED(nq >= 0 && lens[b] >= nq, op, "sequence {}: {} new tokens but kv_len {}", b, nq,
              lens[b]);
    GYRE_NEED(ip[b + 1] >= ip[b] && int64_t(ip[b + 1] - ip[b]) * page_size >= lens[b], op,
              "sequence {}: {} pages cannot hold kv_len {}", b, ip[b + 1] - ip[b], lens[b]);
    for (int32_t i = ip[b]; i < ip[b + 1]; ++i)
      GYRE_NEED(pages[i] >= 0 && pages[i] < num_pages, op, "page_indices[{}] = {} outside [0, {})",
                i, pages[i], num_pages);
    stats.max_q_len = std::max<int64_t>(stats.max_q_len, nq);
    stats.max_kv_len = std::max<int64_t>(stats.max_kv_len, lens[b]);
  }
  return stats;
}

bool paged_kv_dtype_supported(DType dtype, Device device, int64_t head_dim) {
  if (dtype == DType::f32) return device == Device::cpu || kCuda;
  if constexpr (kCuda)
    return dtype == DType::bf16 && device == Device::cuda &&
           cuda::paged_attention_bf16_supported(head_dim);
  return false;
}

}  // namespace gyre::ops
