// Step messages of a tensor-parallel engine (see step_message.h for the format).
#include "gyre/infer/step_message.h"

#include <cstring>

#include "gyre/core/error.h"

namespace gyre::infer {

namespace {
constexpr uint32_t kMagic = 0x4D535947;  // "GYSM" in little-endian byte order
constexpr uint32_t kFormat = 1;
constexpr size_t kArrays = 8;
// magic, format, op, text bytes | seq, weight_version, num_pages | page_size, tp_size | counts
constexpr size_t kHeaderBytes = 4 * 4 + 8 * 3 + 4 * 2 + 4 * kArrays;
constexpr const char* kArrayNames[kArrays] = {"ids",          "positions",   "cu_seqlens_q",
                                              "kv_lens",      "page_indptr", "page_indices",
                                              "slot_mapping", "logits_rows"};

template <typename T>
void put(std::vector<uint8_t>& out, size_t& at, const T& v) {
  std::memcpy(out.data() + at, &v, sizeof(T));
  at += sizeof(T);
}
template <typename T>
T get(std::span<const uint8_t> in, size_t& at) {
  T v;
  std::memcpy(&v, in.data() + at, sizeof(T));
  at += sizeof(T);
  return v;
}
}  // namespace

const char* step_op_name(StepOp op) {
  switch (op) {
    case StepOp::forward: return "forward";
    case StepOp::idle: return "idle";
    case StepOp::release: return "release";
    case StepOp::stop: return "stop";
    case StepOp::graph_replay: return "graph_replay";
    case StepOp::graph_capture: return "graph_capture";
  }
  return "unknown";
}

void encode_step_message(const StepHeader& h, const StepBatch* batch,
                         std::span<const int32_t> logits_rows, std::string_view text,
                         std::vector<uint8_t>& out) {
  const bool forward = is_forward(h.op);
  GYRE_CHECK(!forward || batch, "a forward step message needs its batch");
  std::span<const int32_t> arrays[kArrays];
  if (forward) {
    arrays[0] = batch->ids, arrays[1] = batch->positions, arrays[2] = batch->cu_seqlens_q;
    arrays[3] = batch->kv_lens, arrays[4] = batch->page_indptr, arrays[5] = batch->page_indices;
    arrays[6] = batch->slot_mapping, arrays[7] = logits_rows;
  }
  size_t bytes = kHeaderBytes + text.size();
  for (const auto& a : arrays) bytes += a.size() * sizeof(int32_t);
  out.resize(bytes);
  size_t at = 0;
  put(out, at, kMagic);
  put(out, at, kFormat);
  put(out, at, uint32_t(h.op));
  put(out, at, uint32_t(text.size()));
  put(out, at, h.seq);
  put(out, at, h.weight_version);
  put(out, at, h.num_pages);
  put(out, at, h.page_size);
  put(out, at, h.tp_size);
  for (const auto& a : arrays) put(out, at, uint32_t(a.size()));
  for (const auto& a : arrays) {
    if (!a.empty()) std::memcpy(out.data() + at, a.data(), a.size() * sizeof(int32_t));
    at += a.size() * sizeof(int32_t);
  }
  if (!text.empty()) std::memcpy(out.data() + at, text.data(), text.size());
}

void decode_step_message(std::span<const uint8_t> in, StepMessage& out, const std::string& from) {
  auto bad = [&](const std::string& what) {
    GYRE_THROW(invalid_argument,
               "{}: malformed step message from the tensor-parallel leader: {} (leader and "
               "followers must run the same gyre build)",
               from, what);
  };
  if (in.size() < kHeaderBytes)
    bad(fmt::format("{} bytes, shorter than the {}-byte header", in.size(), kHeaderBytes));
  size_t at = 0;
  const uint32_t magic = get<uint32_t>(in, at), format = get<uint32_t>(in, at);
  if (magic != kMagic) bad(fmt::format("magic {:#x}, expected {:#x}", magic, kMagic));
  if (format != kFormat)
    bad(fmt::format("format version {}, this build reads {}", format, kFormat));
  const uint32_t op = get<uint32_t>(in, at), text_bytes = get<uint32_t>(in, at);
  if (op < uint32_t(StepOp::forward) || op > uint32_t(StepOp::graph_capture))
    bad(fmt::format("unknown op {}", op));
  StepHeader& h = out.header;
  h.op = StepOp(op);
  h.seq = get<uint64_t>(in, at);
  h.weight_version = get<int64_t>(in, at);
  h.num_pages = get<int64_t>(in, at);
  h.page_size = get<int32_t>(in, at);
  h.tp_size = get<int32_t>(in, at);
  if (h.num_pages < 1 || h.page_size < 1 || h.tp_size < 1)
    bad(fmt::format("KV geometry {} pages of {} tokens, tp size {} (all must be >= 1)", h.num_pages,
                    h.page_size, h.tp_size));
  uint64_t counts[kArrays], total = kHeaderBytes + uint64_t(text_bytes);
  for (size_t i = 0; i < kArrays; ++i) {
    counts[i] = get<uint32_t>(in, at);
    total += counts[i] * sizeof(int32_t);
  }
  if (total != in.size())
    bad(fmt::format("{} bytes, but its header describes {}", in.size(), total));
  StepBatch& b = out.batch;
  b.clear();
  std::vector<int32_t>* arrays[kArrays] = {&b.ids,          &b.positions,   &b.cu_seqlens_q,
                                           &b.kv_lens,      &b.page_indptr, &b.page_indices,
                                           &b.slot_mapping, &b.logits_rows};
  for (size_t i = 0; i < kArrays; ++i) {
    if (!is_forward(h.op) && counts[i] != 0)
      bad(fmt::format("{} message carries {} {}", step_op_name(h.op), counts[i], kArrayNames[i]));
    arrays[i]->resize(counts[i]);
    if (counts[i]) std::memcpy(arrays[i]->data(), in.data() + at, counts[i] * sizeof(int32_t));
    at += counts[i] * sizeof(int32_t);
  }
  out.text.assign(reinterpret_cast<const char*>(in.data() + at), text_bytes);
  if (!is_forward(h.op)) return;
  // The structure the model and the paged attention context rely on; the page table's contents
  // are checked against the KV cache by PagedAttentionContext, the ids by the model.
  const size_t T = b.ids.size(), B = b.kv_lens.size();
  if (T == 0 || B == 0) bad(fmt::format("a forward step of {} tokens in {} sequences", T, B));
  if (b.positions.size() != T || b.slot_mapping.size() != T)
    bad(fmt::format("{} ids but {} positions and {} slot_mapping entries", T, b.positions.size(),
                    b.slot_mapping.size()));
  if (b.cu_seqlens_q.size() != B + 1 || b.page_indptr.size() != B + 1)
    bad(fmt::format("{} sequences need {} cu_seqlens_q and page_indptr entries, got {} and {}", B,
                    B + 1, b.cu_seqlens_q.size(), b.page_indptr.size()));
  if (b.cu_seqlens_q.front() != 0 || size_t(b.cu_seqlens_q.back()) != T)
    bad(fmt::format("cu_seqlens_q runs from {} to {}, expected 0 to {}", b.cu_seqlens_q.front(),
                    b.cu_seqlens_q.back(), T));
  if (b.logits_rows.empty()) bad("a forward step without logits rows (the model needs one)");
  for (size_t i = 0; i < b.logits_rows.size(); ++i)
    if (b.logits_rows[i] < 0 || size_t(b.logits_rows[i]) >= T)
      bad(fmt::format("logits_rows[{}] = {} outside the step's {} tokens", i, b.logits_rows[i], T));
}

}  // namespace gyre::infer
