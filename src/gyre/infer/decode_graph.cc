// DecodeGraphs (decode_graph.h): padding a decode step to its bucket, static device buffers,
// capture on first use, host-side validation and replay afterwards.
#include "gyre/infer/decode_graph.h"

#include <algorithm>
#include <array>

#include "gyre/backend/decode_stack_ops.h"
#include "gyre/core/error.h"
#include "gyre/infer/paged_attention_context.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/decode_fusion.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

struct DecodeGraphs::Graph {
  int64_t bucket = 0;
  StepBatch host;  // the padded step (page_indices at full capacity)
  // Every index array the graph reads lives in one device i32 buffer (`packed`), each a view
  // starting at a multiple of kAlign elements; the host stages them in the same layout and uploads
  // the whole step with ONE copy. Seven separate uploads cost ~5 us of host time each, on the path
  // between the previous step's results and this replay, where the GPU idles (issue 7's batch-1
  // decode: the step is ~1.6 ms of GPU work and every host microsecond there adds to it).
  static constexpr int64_t kAlign = 16;
  static int64_t aligned(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
  Tensor packed;
  std::vector<int32_t> staging;
  PagedAttentionContext::DeviceIndices dev;
  Tensor ids, positions;  // device, [bucket]
  // The views into `packed`, in layout (and upload) order; index_arrays(h) is the same order.
  std::array<Tensor*, 7> index_views() {
    return {&ids,         &positions,       &dev.slot_mapping, &dev.cu_seqlens_q,
            &dev.kv_lens, &dev.page_indptr, &dev.page_indices};
  }
  static std::array<const std::vector<int32_t>*, 7> index_arrays(const StepBatch& h) {
    return {&h.ids,     &h.positions,   &h.slot_mapping, &h.cu_seqlens_q,
            &h.kv_lens, &h.page_indptr, &h.page_indices};
  }
  Tensor logits;  // [bucket, V]: written by every replay
  ops::DeviceGraph graph;
};

DecodeGraphs::DecodeGraphs(model::CausalLM& model, KvStorage& kv, int32_t page_size,
                           int64_t context_len, int64_t max_batch)
    : model_(model),
      kv_(kv),
      page_size_(page_size),
      context_len_(context_len),
      max_batch_(max_batch),
      pages_per_seq_((context_len + page_size - 1) / page_size) {}

DecodeGraphs::~DecodeGraphs() = default;

int64_t DecodeGraphs::bucket_for(int64_t batch) {
  // SGLang's capture sizes: powers of two up to 16, then steps of 8 to 32, 16 to 64, 32 beyond.
  if (batch <= 1) return 1;
  if (batch <= 16) {
    int64_t b = 2;
    while (b < batch) b *= 2;
    return b;
  }
  const int64_t step = batch <= 32 ? 8 : batch <= 64 ? 16 : 32;
  return (batch + step - 1) / step * step;
}

bool DecodeGraphs::eligible(const StepBatch& b) const {
  const int64_t B = int64_t(b.kv_lens.size());
  if (B < 1 || bucket_for(B) > max_batch_ || b.cu_seqlens_q.back() != B) return false;
  if (int64_t(b.logits_rows.size()) != B || int64_t(b.rows.size()) != B) return false;
  for (int64_t i = 0; i < B; ++i)
    if (b.logits_rows[size_t(i)] != i || !b.rows[size_t(i)].sample) return false;
  return true;
}

void DecodeGraphs::clear() { graphs_.clear(); }

size_t DecodeGraphs::memory_bytes() const {
  size_t n = 0;
  for (const auto& [b, g] : graphs_) n += g->graph.memory_bytes();
  return n;
}

bool DecodeGraphs::replayable(int64_t batch) const {
  if (batch < 1 || bucket_for(batch) > max_batch_) return false;
  const ops::Bf16WeightCache* cache = ops::bf16_weight_cache();
  if (cache != cache_ || (cache ? cache->generation() : 0) != cache_generation_ ||
      model::decode_fusion() != fusion_ || ops::decode_stack_enabled() != stack_)
    return false;
  auto it = graphs_.find(bucket_for(batch));
  return it != graphs_.end() && it->second && it->second->graph.captured();
}

Tensor DecodeGraphs::run(const StepBatch& b, Mode mode,
                         const std::function<void(bool capturing)>& validated,
                         const Tensor* device_ids) {
  const int64_t B = int64_t(b.kv_lens.size()), Bb = bucket_for(B);
  const model::ModelConfig& mc = model_.config();
  // The shape of a pure decode step (a follower's plan is not checked by eligible()).
  bool decode = B >= 1 && int64_t(b.ids.size()) == B && int64_t(b.cu_seqlens_q.size()) == B + 1 &&
                int64_t(b.logits_rows.size()) == B;
  for (int64_t i = 0; decode && i < B; ++i)
    decode = b.cu_seqlens_q[size_t(i + 1)] == i + 1 && b.logits_rows[size_t(i)] == i;
  if (!decode)
    GYRE_THROW(internal,
               "decode graph: the step ({} tokens in {} sequences, {} logits rows) is not a pure "
               "decode step of one token per sequence, every row sampled in order",
               b.ids.size(), B, b.logits_rows.size());
  // Host-side checks of what the graph will read (the captured forward validated only its own
  // step): ids in the vocabulary, positions inside the context the RoPE tables and splits cover.
  for (int64_t i = 0; i < B; ++i) {
    const int32_t id = b.ids[size_t(i)], pos = b.positions[size_t(i)];
    if (id < 0 || id >= mc.vocab_size || pos < 0 || pos >= context_len_ ||
        b.kv_lens[size_t(i)] > context_len_)
      GYRE_THROW(invalid_argument,
                 "decode graph: row {} has token {} at position {} (kv_len {}); the model has {} "
                 "tokens and the engine a context of {}",
                 i, id, pos, b.kv_lens[size_t(i)], mc.vocab_size, context_len_);
  }
  // The graphs baked in the bf16 copies' addresses and the fused-or-not decode ops: a different or
  // cleared weight cache, or a flipped decode-fusion or decode-stack switch, makes all of them
  // stale.
  const ops::Bf16WeightCache* cache = ops::bf16_weight_cache();
  const uint64_t generation = cache ? cache->generation() : 0;
  const bool fusion = model::decode_fusion(), stack = ops::decode_stack_enabled();
  if (cache != cache_ || generation != cache_generation_ || fusion != fusion_ || stack != stack_)
    graphs_.clear();
  cache_ = cache, cache_generation_ = generation, fusion_ = fusion, stack_ = stack;
  auto& slot = graphs_[Bb];
  if (slot && mode == Mode::capture) slot.reset();  // the leader captures: so does this rank
  if (!slot) {
    slot = std::make_unique<Graph>();
    Graph& g = *slot;
    g.bucket = Bb;
    // Sizes in index_views() order: ids, positions, slot_mapping, cu_seqlens_q, kv_lens,
    // page_indptr, page_indices.
    const int64_t sizes[7] = {Bb, Bb, Bb, Bb + 1, Bb, Bb + 1, Bb * pages_per_seq_};
    int64_t total = 0;
    for (int64_t n : sizes) total += Graph::aligned(n);
    g.packed = Tensor::zeros({total}, DType::i32, model_.device());
    g.staging.assign(size_t(total), 0);
    const auto views = g.index_views();
    int64_t off = 0;
    for (size_t i = 0; i < views.size(); ++i) {
      *views[i] = g.packed.narrow(off, sizes[i]);
      off += Graph::aligned(sizes[i]);
    }
  }
  Graph& g = *slot;
  const bool capturing = !g.graph.captured() && mode != Mode::replay_or_eager;
  // The padded host step.
  StepBatch& h = g.host;
  h.ids.assign(b.ids.begin(), b.ids.end());
  h.positions.assign(b.positions.begin(), b.positions.end());
  h.slot_mapping.assign(b.slot_mapping.begin(), b.slot_mapping.end());
  h.kv_lens.assign(b.kv_lens.begin(), b.kv_lens.end());
  h.page_indptr.assign(b.page_indptr.begin(), b.page_indptr.end());
  h.page_indices.assign(b.page_indices.begin(), b.page_indices.end());
  for (int64_t i = B; i < Bb; ++i) {  // padding: token 0 at position 0 over page 0, no KV write
    h.ids.push_back(0);
    h.positions.push_back(0);
    h.slot_mapping.push_back(-1);
    h.kv_lens.push_back(1);
    h.page_indices.push_back(0);
    h.page_indptr.push_back(int32_t(h.page_indices.size()));
  }
  if (int64_t(h.page_indices.size()) > Bb * pages_per_seq_)
    GYRE_THROW(internal, "decode graph: {} pages exceed the bucket's capacity {}",
               h.page_indices.size(), Bb * pages_per_seq_);
  h.page_indices.resize(size_t(Bb * pages_per_seq_), 0);
  h.cu_seqlens_q.resize(size_t(Bb + 1));
  for (int64_t i = 0; i <= Bb; ++i) h.cu_seqlens_q[size_t(i)] = int32_t(i);
  // Refresh the static buffers: staged in the packed layout, then one host-to-device copy,
  // stream-ordered before the replay. Padding between the arrays is never read.
  {
    const auto arrays = Graph::index_arrays(h);
    const auto views = g.index_views();
    int64_t off = 0;
    for (size_t i = 0; i < arrays.size(); ++i) {
      const std::vector<int32_t>& a = *arrays[i];
      if (int64_t(a.size()) != views[i]->numel())
        GYRE_THROW(internal,
                   "decode graph: index array {} of the padded step has {} entries, the "
                   "bucket's layout {}",
                   i, a.size(), views[i]->numel());
      std::copy(a.begin(), a.end(), g.staging.begin() + off);
      off += Graph::aligned(views[i]->numel());
    }
    g.packed.copy_from(borrow_i32(g.staging));
  }
  if (device_ids) {
    if (!g.graph.captured() || mode == Mode::capture)
      GYRE_THROW(internal, "decode graph: device-side ids need a captured graph to replay");
    if (device_ids->device() != model_.device() || device_ids->dtype() != DType::i32 ||
        device_ids->numel() != B)
      GYRE_THROW(internal, "decode graph: device ids must be i32 [{}] on the model's device", B);
    g.ids.narrow(0, B).copy_from(device_ids->reshape({B}));
  }
  // Validates the padded page table against the cache (every step, on the host).
  PagedAttentionContext ctx(kv_, h, g.dev, context_len_);
  if (validated) validated(capturing);
  const model::TpLayout* tp = model_.tensor_parallel();
  const bool group = tp && tp->size > 1;
  if (!g.graph.captured()) {
    model_.prepare_rope(context_len_);  // tables for every position, outside the graph's memory
    model::Batch db, hb;
    db.ids = g.ids;
    db.positions = g.positions;
    db.cu_seqlens = g.dev.cu_seqlens_q;
    hb.ids = borrow_i32(h.ids);
    hb.positions = borrow_i32(h.positions);
    hb.cu_seqlens = borrow_i32(h.cu_seqlens_q);
    model::ForwardOptions opt;
    opt.attention = &ctx;
    opt.host_batch = &hb;
    opt.gather_vocab = true;
    // A tp rank told to replay a graph it does not have (dropped here, e.g. its weight copies
    // were re-made): the same padded forward, eagerly — the collectives of one replay.
    if (!capturing) return model_.forward(db, opt).narrow(0, B);
    int calls = 0;  // 1: the warm-up (eager) ran or failed; 2: the capture itself
    std::string why;
    try {
      g.graph.capture([&] {
        ++calls;
        g.logits = model_.forward(db, opt);
      });
    } catch (const std::exception& e) {
      if (calls < 2) throw;  // the eager warm-up failed: a failed forward, not a capture failure
      why = e.what();
    }
    if (group) {  // every rank's verdict (outside the capture: a blocking all-reduce is allowed)
      float failed = why.empty() ? 0.0f : 1.0f;
      tp->comm->all_reduce_max(&failed, 1);
      if (failed > 0 && why.empty())
        why = "the capture failed on another tensor-parallel rank (its log says why)";
    }
    if (!why.empty()) {
      graphs_.erase(Bb);
      failure_ = why;
      return Tensor();
    }
  }
  g.graph.replay();
  // The replay's collectives ran without the ordered calls' watchdog: bound the replay instead.
  if (group) tp->comm->watch_replay("decode graph replay");
  return g.logits.narrow(0, B);
}

}  // namespace gyre::infer
