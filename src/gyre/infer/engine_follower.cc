// Follower of a tensor-parallel rollout engine (see engine_follower.h).
#include "gyre/infer/engine_follower.h"

#include <limits>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/infer/paged_attention_context.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

EngineFollower::EngineFollower(model::CausalLM& model, const EngineConfig& cfg, StepChannel& leader)
    : model_(model), cfg_(cfg), ch_(leader), where_(leader.where()) {
  const model::TpLayout* tp = model_.tensor_parallel();
  if (!tp)
    GYRE_THROW(invalid_argument,
               "{}: an engine follower runs a tensor-parallel shard of the leader's model; this "
               "model is not sharded (load it with LoadOptions::tp)",
               ch_.where());
  if (ch_.size() != tp->size || ch_.rank() != tp->rank || ch_.rank() == 0)
    GYRE_THROW(invalid_argument,
               "{}: the follower's channel is rank {} of {} but its model is tp rank {} of {}: the "
               "channel must span the model's tp group, with the leader (the engine) on rank 0",
               ch_.where(), ch_.rank(), ch_.size(), tp->rank, tp->size);
  // The leader's KV pool, with this rank's kv heads (Engine's constructor does the same).
  kv_ = std::make_unique<KvStorage>(model_.config().num_hidden_layers, cfg_.num_pages,
                                    cfg_.page_size, tp->local.num_key_value_heads,
                                    model_.config().head_dim, model_.device(),
                                    resolve_kv_cache_dtype(cfg_.kv_cache_dtype, model_));
}

EngineFollower::Outcome EngineFollower::run() {
  if (stopped_)
    GYRE_THROW(invalid_argument,
               "{}: the leader already stopped this follower; it has no more steps to follow",
               ch_.where());
  while (true) {
    ch_.broadcast(wire_);  // the leader's next message (bounded by the channel's timeout)
    decode_step_message(wire_, msg_, where_);
    const StepHeader& h = msg_.header;
    if (h.seq != next_seq_)
      GYRE_THROW(internal,
                 "{}: step message {} ({}) arrived where {} was expected: this follower and the "
                 "leader's engine were not created together (one follower per leader, made before "
                 "the leader's first step)",
                 ch_.where(), h.seq, step_op_name(h.op), next_seq_);
    ++next_seq_;
    if (h.tp_size != ch_.size() || h.num_pages != cfg_.num_pages || h.page_size != cfg_.page_size)
      GYRE_THROW(invalid_argument,
                 "{}: the leader runs tp size {} with {} KV pages of {} tokens, this follower tp "
                 "size {} with {} pages of {}: give both the same EngineConfig",
                 ch_.where(), h.tp_size, h.num_pages, h.page_size, ch_.size(), cfg_.num_pages,
                 cfg_.page_size);
    if (h.weight_version != weight_version_) {
      sync_weight_copies();  // bf16 copies of older weights (GPU autocast only)
      weight_version_ = h.weight_version;
    }
    switch (h.op) {
      case StepOp::forward:
      case StepOp::graph_capture:
      case StepOp::graph_replay: forward(h.op); break;
      case StepOp::idle: break;
      case StepOp::release:
        log::debug("{}: released by the leader after {} steps", ch_.where(), steps_);
        return {Exit::released, {}};
      case StepOp::stop:
        stopped_ = true;
        log::debug("{}: the leader stopped: {}", ch_.where(), msg_.text);
        return {Exit::stopped, msg_.text};
    }
  }
}

void EngineFollower::sync_weight_copies() {
  // As Engine::update_weights (same invariant): the shards changed while this follower was
  // released, on this rank's thread (so its stream) — in place when every copy's source is still
  // one of the model's parameters, and then the copies are re-cast at the same addresses (or were
  // written by this rank's AdamW: the fresh mark); replaced shards drop the copies.
  std::vector<Tensor> params;
  for (const auto& p : model_.parameters()) params.push_back(p.tensor);
  std::vector<std::pair<const void*, const void*>> where;
  for (const Tensor& t : params) where.emplace_back(t.storage().get(), t.address());
  if (graphs_ && where != graph_params_) graphs_->clear();  // the leader drops its graphs too
  graph_params_ = std::move(where);
  if (!weight_cache_->sources_within(params)) {
    weight_cache_->clear();
    ++sync_counts_.dropped;
  } else if (weight_cache_->take_fresh()) {
    ++sync_counts_.fresh;
  } else {
    weight_cache_->refresh();
    ++sync_counts_.refreshed;
  }
}

void EngineFollower::forward(StepOp op) {
  const StepBatch& b = msg_.batch;
  if (op != StepOp::forward) {
    try {
      ops::UseBf16WeightCache use_cache(model_.device() == Device::cuda ? weight_cache_.get()
                                                                        : nullptr);
      if (!graphs_) {
        const int64_t context_len = cfg_.context_len > 0
                                        ? cfg_.context_len
                                        : int64_t(model_.config().max_position_embeddings);
        // The bucket is the leader's choice (every step it sends fits its largest bucket).
        graphs_ = std::make_unique<DecodeGraphs>(model_, *kv_, cfg_.page_size, context_len,
                                                 std::numeric_limits<int32_t>::max());
        graph_params_.clear();
        for (const auto& p : model_.parameters())
          graph_params_.emplace_back(p.tensor.storage().get(), p.tensor.address());
      }
      const Tensor logits =
          graphs_->run(b, op == StepOp::graph_capture ? DecodeGraphs::Mode::capture
                                                      : DecodeGraphs::Mode::replay_or_eager);
      if (logits.defined()) {
        ++graph_steps_;
        ++steps_;
        return;
      }
      // Every rank agreed that the capture failed: the leader runs this step eagerly from the
      // same plan and never sends a graph step again; so does this follower (below).
      log::warn("{}: CUDA graph capture failed ({}); following eagerly", ch_.where(),
                graphs_->failure());
      graphs_.reset();
    } catch (const std::exception& e) {
      GYRE_THROW(internal, "{}: step {} (a {} decode step of {} sequences) failed: {}", ch_.where(),
                 msg_.header.seq, step_op_name(op), b.kv_lens.size(), e.what());
    }
  }
  model::Batch mb;
  mb.ids = borrow_i32(b.ids);
  mb.positions = borrow_i32(b.positions);
  mb.cu_seqlens = borrow_i32(b.cu_seqlens_q);
  model::ForwardOptions opt;
  opt.logits_rows = borrow_i32(b.logits_rows);
  opt.gather_vocab = true;  // the leader's forward all-gathers the logits: take part in it
  try {
    ops::UseBf16WeightCache use_cache(model_.device() == Device::cuda ? weight_cache_.get()
                                                                      : nullptr);
    PagedAttentionContext ctx(*kv_, b);  // validates the plan's page table against this cache
    opt.attention = &ctx;
    (void)model_.forward(mb, opt);  // sampling happens on the leader
  } catch (const std::exception& e) {
    // The leader's forward of this plan is waiting in the same collectives (or failed the same
    // way); either way the ranks are no longer in lockstep, so the follower stops here.
    GYRE_THROW(internal, "{}: step {} ({} tokens in {} sequences) failed: {}", ch_.where(),
               msg_.header.seq, b.ids.size(), b.kv_lens.size(), e.what());
  }
  ++steps_;
}

}  // namespace gyre::infer
