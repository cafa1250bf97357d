// CUDA-graph decode steps for the rollout engine on the GPU (SGLang's CUDA graph runner). A pure
// decode step (every running request adds one token and samples it) is a fixed sequence of a few
// hundred small kernels, so the step is host-bound; replaying a captured graph launches all of them
// at once. One graph per batch-size bucket (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224,
// 256, ...); a step of B requests pads to its bucket (padding rows: token 0 at position 0 over one
// page, their KV writes skipped), so graphs are captured once and reused as requests come and go.
//
// Invariants: the graph reads the step from static device buffers the runner refreshes before each
// replay; the step's index data is validated on the host every time (ids in the vocabulary,
// positions in the context, the page table against the cache); the paged attention kernel sizes its
// KV splits for the engine's context length, not the step's, so every later step fits the capture;
// a graph bakes in the addresses of the parameters and of their bf16 copies, so it survives a
// weight change that keeps both (new values in place, copies re-cast in place) and is dropped when
// either moves — Engine::update_weights decides. run() itself drops every graph when what they
// baked in changed behind the engine's back: the bf16 weight cache installed for the step (another
// one, or cleared since: Bf16WeightCache::generation), the decode-fusion switch or the decode-stack
// switch (ops::set_decode_stack).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "gyre/backend/ops.h"
#include "gyre/core/tensor.h"
#include "gyre/infer/kv_pool.h"
#include "gyre/infer/step_batch.h"

namespace gyre::model {
class CausalLM;
}

namespace gyre::infer {

class DecodeGraphs {
 public:
  // max_batch: the largest bucket (larger steps run eagerly).
  DecodeGraphs(model::CausalLM& model, KvStorage& kv, int32_t page_size, int64_t context_len,
               int64_t max_batch);
  ~DecodeGraphs();
  // Whether `b` is a pure decode step this runner takes.
  bool eligible(const StepBatch& b) const;
  enum class Mode {
    automatic,        // replay the bucket's graph, capturing it first when it is missing or stale
    capture,          // capture the bucket's graph now (a stale or existing one is dropped)
    replay_or_eager,  // replay it when usable, else run the same padded forward eagerly
  };
  // The step's forward through its bucket's graph: logits [B, V] on the device, valid until the
  // next run(). `validated(capturing)` is called once the step passed the host checks and before
  // the first collective (the tp leader sends its plan there). Returns an undefined tensor when
  // the capture failed (failure() says why; under TP every rank agrees); throws on bad input or
  // a failed forward.
  //
  // `device_ids` (i32 [B] on the device, optional): the step's token ids come from there instead
  // of b.ids (copied on the device after the upload, stream-ordered): the engine's decode
  // look-ahead launches step n + 1 with the tokens step n sampled before the host has seen them.
  // b.ids then holds placeholders that only pass the host check. Only a replay takes them (the
  // bucket's graph must be captured and current: replayable()).
  Tensor run(const StepBatch& b, Mode mode = Mode::automatic,
             const std::function<void(bool capturing)>& validated = {},
             const Tensor* device_ids = nullptr);
  // Whether a step of `batch` sequences would replay a captured, current graph (no capture).
  bool replayable(int64_t batch) const;
  const std::string& failure() const { return failure_; }
  // Drops every graph (weights changed).
  void clear();
  int64_t num_graphs() const { return int64_t(graphs_.size()); }
  size_t memory_bytes() const;
  static int64_t bucket_for(int64_t batch);

 private:
  struct Graph;
  model::CausalLM& model_;
  KvStorage& kv_;
  int32_t page_size_;
  int64_t context_len_, max_batch_, pages_per_seq_;
  std::map<int64_t, std::unique_ptr<Graph>> graphs_;
  std::string failure_;
  // What the graphs in graphs_ were captured under.
  const ops::Bf16WeightCache* cache_ = nullptr;
  uint64_t cache_generation_ = 0;
  bool fusion_ = false;
  bool stack_ = false;  // ops::decode_stack_enabled()
};

}  // namespace gyre::infer
