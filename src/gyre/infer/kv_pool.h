// Paged KV memory of the rollout engine: a pool of fixed-size pages (page_size tokens each) with a
// free list and page-level reference counts, plus the KV storage itself (per layer K and V tensors
// [num_pages, page_size, Hkv, D]).
//
// Invariants: a page is either free (refcount 0, on the free list exactly once) or allocated
// (refcount >= 1, held by request block tables and/or radix-cache nodes, one count per holder).
// Block tables are flat i32 page-id arrays (vLLM block tables / FlashInfer paged_kv indices) so a
// batch's page table can be copied to a device as is. Pool bookkeeping is pure host C++ (DESIGN.md:
// "scheduler, radix cache and allocator are pure C++"); only KvStorage holds device-shaped tensors.
#pragma once
#include <cstdint>
#include <vector>

#include "gyre/core/tensor.h"

namespace gyre::infer {

class PagePool {
 public:
  // num_pages >= 1, page_size >= 1 (invalid_argument otherwise, naming the value).
  PagePool(int64_t num_pages, int32_t page_size);

  int32_t page_size() const { return page_size_; }
  int64_t num_pages() const { return int64_t(refcount_.size()); }
  int64_t num_free() const { return int64_t(free_.size()); }
  int64_t num_allocated() const { return num_pages() - num_free(); }
  // Pages needed to hold `tokens` tokens.
  int64_t pages_for(int64_t tokens) const { return (tokens + page_size_ - 1) / page_size_; }

  // Appends n fresh pages (refcount 1 each) to `out`; allocates nothing and returns false when
  // fewer than n are free.
  bool allocate(int64_t n, std::vector<int32_t>& out);
  void ref(int32_t page);    // another holder of an allocated page
  void unref(int32_t page);  // a holder lets go; the page is freed when the count reaches 0
  int32_t refcount(int32_t page) const { return refcount_[size_t(page)]; }

  // Full structural check (every page free xor referenced, free list without duplicates); throws
  // Error(internal) describing the first violation. O(num_pages): tests and debug only.
  void check_consistency() const;

 private:
  int32_t page_size_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // LIFO: recently freed pages are reused first (warm in cache)
};

// K and V tensors per layer, [num_pages, page_size, Hkv, D] f32 on the CPU backend. Token at
// position p of a request lives in page block_table[p / page_size], slot p % page_size; the flat
// "slot" index page * page_size + slot is what kernels take (vLLM's slot_mapping).
class KvStorage {
 public:
  // dtype: f32, or bf16 on a CUDA device (the paged ops round new K/V to bf16 when writing).
  KvStorage(int64_t num_layers, int64_t num_pages, int32_t page_size, int64_t num_kv_heads,
            int64_t head_dim, Device device = Device::cpu, DType dtype = DType::f32);
  int64_t num_layers() const { return int64_t(k_.size()); }
  Tensor& k(int64_t layer) { return k_[size_t(layer)]; }
  Tensor& v(int64_t layer) { return v_[size_t(layer)]; }
  DType dtype() const { return k_.front().dtype(); }
  // Bytes of KV memory for the given geometry, to size pools from a memory budget.
  static int64_t bytes_per_page(int64_t num_layers, int32_t page_size, int64_t num_kv_heads,
                                int64_t head_dim, DType dtype = DType::f32);

 private:
  std::vector<Tensor> k_, v_;
};

}  // namespace gyre::infer
