// ops::KnownIndices (ops.h): a thread-local chain of scopes recording index tensors whose values
// the caller validated on the host, so the ops' per-call range checks need no device-to-host copy.
#include "gyre/backend/ops.h"

namespace gyre::ops {

namespace {
thread_local KnownIndices* t_innermost = nullptr;

KnownIndices::Entry identity(const Tensor& t, KnownIndices::Entry::Kind kind) {
  KnownIndices::Entry e{};
  e.kind = kind;
  e.data = t.address();
  e.numel = t.numel();
  e.device = t.device();
  return e;
}

bool is_i32(const Tensor& t) { return t.defined() && t.dtype() == DType::i32; }
}  // namespace

KnownIndices::KnownIndices() : outer_(t_innermost) { t_innermost = this; }
KnownIndices::~KnownIndices() { t_innermost = outer_; }

void KnownIndices::add_range(const Tensor& t, int64_t lo, int64_t hi) {
  if (!is_i32(t)) return;  // nothing to skip for a tensor the ops would reject anyway
  Entry e = identity(t, Entry::range);
  e.lo = lo;
  e.hi = hi;
  entries_.push_back(e);
}

void KnownIndices::add_offsets(const Tensor& t, int64_t total, int64_t max_len) {
  if (!is_i32(t)) return;
  Entry e = identity(t, Entry::offsets);
  e.total = total;
  e.max_len = max_len;
  entries_.push_back(e);
}

void KnownIndices::add_host_values(const Tensor& t, const Tensor& host) {
  if (!is_i32(t)) return;  // nothing an op would read through it
  GYRE_CHECK(is_i32(host) && host.device() == Device::cpu && host.numel() == t.numel(),
             "KnownIndices::add_host_values: the host copy must be an i32 CPU tensor of {} values "
             "(t's), got {} {} values on {}",
             t.numel(), host.defined() ? dtype_name(host.dtype()) : "undefined",
             host.defined() ? host.numel() : 0,
             host.defined() ? device_name(host.device()) : "no device");
  Entry e = identity(t, Entry::host_values);
  e.host = host.i32();
  entries_.push_back(e);
}

void KnownIndices::add_paged_layout(const Tensor& cu_seqlens_q, const Tensor& kv_lens,
                                    const Tensor& page_indptr, const Tensor& page_indices,
                                    int64_t num_pages, int64_t page_size, int64_t max_q_len,
                                    int64_t max_kv_len) {
  if (!is_i32(cu_seqlens_q) || !is_i32(kv_lens) || !is_i32(page_indptr) || !is_i32(page_indices))
    return;
  Entry e = identity(cu_seqlens_q, Entry::paged);
  e.companions[0] = kv_lens.address();
  e.companions[1] = page_indptr.address();
  e.companions[2] = page_indices.address();
  e.num_pages = num_pages;
  e.page_size = page_size;
  e.num_page_indices = page_indices.numel();
  e.total = max_q_len;
  e.max_len = max_kv_len;
  entries_.push_back(e);
}

const KnownIndices::Entry* KnownIndices::find(const Tensor& t, Entry::Kind kind) {
  if (!is_i32(t)) return nullptr;
  const void* data = t.address();
  for (const KnownIndices* s = t_innermost; s; s = s->outer_)
    for (auto it = s->entries_.rbegin(); it != s->entries_.rend(); ++it)
      if (it->kind == kind && it->data == data && it->numel == t.numel() &&
          it->device == t.device())
        return &*it;
  return nullptr;
}

}  // namespace gyre::ops
