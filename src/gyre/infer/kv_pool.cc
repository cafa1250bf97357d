// Page pool and KV storage (see kv_pool.h for the invariants).
#include "gyre/infer/kv_pool.h"

#include "gyre/core/error.h"

namespace gyre::infer {

PagePool::PagePool(int64_t num_pages, int32_t page_size) : page_size_(page_size) {
  if (num_pages < 1 || num_pages > (int64_t(1) << 31) - 1)
    GYRE_THROW(invalid_argument,
               "KV page pool: num_pages = {} must be in [1, 2^31); pass a positive "
               "--num-pages",
               num_pages);
  if (page_size < 1)
    GYRE_THROW(invalid_argument, "KV page pool: page_size = {} must be >= 1 (e.g. --page-size 16)",
               page_size);
  refcount_.assign(size_t(num_pages), 0);
  free_.reserve(size_t(num_pages));
  // Hand out low page ids first (pop_back): deterministic layouts make failures reproducible.
  for (int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(int32_t(p));
}

bool PagePool::allocate(int64_t n, std::vector<int32_t>& out) {
  if (n < 0 || n > int64_t(free_.size())) return false;
  for (int64_t i = 0; i < n; ++i) {
    int32_t p = free_.back();
    free_.pop_back();
    refcount_[size_t(p)] = 1;
    out.push_back(p);
  }
  return true;
}

void PagePool::ref(int32_t page) {
  GYRE_CHECK(page >= 0 && page < int32_t(refcount_.size()), "page {} out of range", page);
  GYRE_CHECK(refcount_[size_t(page)] > 0, "ref of free page {}", page);
  ++refcount_[size_t(page)];
}

void PagePool::unref(int32_t page) {
  GYRE_CHECK(page >= 0 && page < int32_t(refcount_.size()), "page {} out of range", page);
  GYRE_CHECK(refcount_[size_t(page)] > 0, "unref of free page {} (double free)", page);
  if (--refcount_[size_t(page)] == 0) free_.push_back(page);
}

void PagePool::check_consistency() const {
  std::vector<char> on_free(refcount_.size(), 0);
  for (int32_t p : free_) {
    GYRE_CHECK(p >= 0 && p < int32_t(refcount_.size()), "free list holds bad page {}", p);
    GYRE_CHECK(!on_free[size_t(p)], "page {} twice on the free list", p);
    on_free[size_t(p)] = 1;
  }
  for (size_t p = 0; p < refcount_.size(); ++p) {
    GYRE_CHECK(refcount_[p] >= 0, "page {} has negative refcount {}", p, refcount_[p]);
    GYRE_CHECK((refcount_[p] == 0) == bool(on_free[p]), "page {}: refcount {} but {} the free list",
               p, refcount_[p], on_free[p] ? "on" : "not on");
  }
}

KvStorage::KvStorage(int64_t num_layers, int64_t num_pages, int32_t page_size, int64_t num_kv_heads,
                     int64_t head_dim, Device device, DType dtype) {
  if (num_layers < 1 || num_kv_heads < 1 || head_dim < 1)
    GYRE_THROW(invalid_argument,
               "KV storage: layers = {}, kv heads = {}, head_dim = {} must all "
               "be >= 1 (check the model config)",
               num_layers, num_kv_heads, head_dim);
  if (dtype != DType::f32 && !(dtype == DType::bf16 && device == Device::cuda))
    GYRE_THROW(invalid_argument,
               "KV storage: a {} cache on {} is not supported; the CPU cache is f32, a CUDA cache "
               "f32 or bf16",
               dtype_name(dtype), device_name(device));
  for (int64_t l = 0; l < num_layers; ++l) {
    // Zero-filled so that reading an unwritten slot can never produce NaN/Inf garbage.
    k_.push_back(Tensor::zeros({num_pages, page_size, num_kv_heads, head_dim}, dtype, device));
    v_.push_back(Tensor::zeros({num_pages, page_size, num_kv_heads, head_dim}, dtype, device));
  }
}

int64_t KvStorage::bytes_per_page(int64_t num_layers, int32_t page_size, int64_t num_kv_heads,
                                  int64_t head_dim, DType dtype) {
  return 2 * num_layers * int64_t(page_size) * num_kv_heads * head_dim * int64_t(dtype_size(dtype));
}

}  // namespace gyre::infer
