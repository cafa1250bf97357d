// Engine as the leader of a tensor-parallel rollout group (engine.h; SGLang's scheduler on tp rank
// 0): attaching, releasing and engaging the followers, and the messages they are sent. The step
// itself sends its plan from run_step (engine_step.cc), after the leader validated it and before
// its own forward.
#include <future>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {

void Engine::attach_followers(StepChannel& followers, bool engaged) {
  const model::TpLayout* tp = model_.tensor_parallel();
  if (!tp)
    GYRE_THROW(invalid_argument,
               "engine: attach_followers() needs a tensor-parallel model (its followers run the "
               "other shards); this model is not sharded");
  if (followers.size() != tp->size || followers.rank() != 0 || tp->rank != 0)
    GYRE_THROW(invalid_argument,
               "engine: the followers' channel is rank {} of {} and the model tp rank {} of {}: "
               "the leader is rank 0 of a channel spanning the model's tp group",
               followers.rank(), followers.size(), tp->rank, tp->size);
  GYRE_CHECK(!started_, "attach_followers() after start(): attach before the engine thread runs");
  if (followers_)
    GYRE_THROW(invalid_argument, "engine: followers are already attached; attach them once");
  // Followers hold no KV of steps they did not see, so a leader whose cache holds KV computed
  // before they were attached would hand them radix hits on pages they never wrote.
  if (pool_->num_allocated() != 0 || sched_->num_running() + sched_->num_queued() != 0)
    GYRE_THROW(invalid_argument,
               "engine: attach_followers() on an engine that already ran requests ({} KV pages in "
               "use); attach before the first request (or after flush_cache())",
               pool_->num_allocated());
  followers_ = &followers;
  follower_state_ = engaged ? Followers::engaged : Followers::released;
  follower_last_send_ = now_seconds();
}

void Engine::send_to_followers(StepOp op, std::string_view text,
                               std::span<const int32_t> logits_rows) {
  StepHeader h;
  h.op = op;
  h.seq = follower_seq_;
  h.weight_version = sched_->weight_version();
  h.num_pages = cfg_.num_pages;
  h.page_size = cfg_.page_size;
  h.tp_size = followers_->size();
  try {
    encode_step_message(h, is_forward(op) ? &batch_ : nullptr, logits_rows, text, follower_wire_);
    followers_->broadcast(follower_wire_);
  } catch (const std::exception& e) {
    // A broadcast that failed (a dead or stalled follower) leaves the group out of lockstep for
    // good: fail every later step at once instead of waiting for the timeout again.
    follower_state_ = Followers::lost;
    followers_error_ = fmt::format("tensor-parallel followers lost: {}", e.what());
    log::error("engine: {}", followers_error_);
    throw;
  }
  ++follower_seq_;
  follower_last_send_ = now_seconds();
}

void Engine::keep_followers_alive() {
  if (follower_state_ != Followers::engaged ||
      now_seconds() - follower_last_send_ < kFollowerKeepaliveSeconds)
    return;
  try {
    send_to_followers(StepOp::idle);
  } catch (const std::exception&) {
    // Marked lost and logged; the next step (or release_followers) reports it.
  }
}

void Engine::stop_followers(const std::string& why) {
  if (follower_state_ != Followers::engaged) return;
  try {
    send_to_followers(StepOp::stop, why);
  } catch (const std::exception&) {
    // Logged by send_to_followers; a follower that is gone needs no stop.
  }
  // Followers that were told to stop never come back: later steps fail rather than broadcast to
  // nobody.
  if (follower_state_ == Followers::engaged) {
    follower_state_ = Followers::lost;
    followers_error_ = "tensor-parallel followers were stopped: " + why;
  }
}

void Engine::run_on_engine_thread(const std::function<void()>& fn) {
  if (!started_) {  // driven inline: the caller is the engine's only thread
    drain_inbox();
    fn();
    return;
  }
  // Queued behind the tasks already posted (the inbox is FIFO) and run between steps; the caller
  // waits for it, so once this returns no step is in flight and fn's effect is in place. What fn
  // throws is rethrown here. `fn` is referenced, not copied: it outlives the wait.
  auto p = std::make_shared<std::promise<void>>();
  auto f = p->get_future();
  post([p, &fn] {
    try {
      fn();
      p->set_value();
    } catch (...) {
      p->set_exception(std::current_exception());
    }
  });
  f.get();
}

void Engine::release_followers() {
  if (!followers_)
    GYRE_THROW(invalid_argument, "engine: release_followers() without attach_followers()");
  // On the engine thread between steps: once this returns the caller owns the tp group's
  // collectives.
  run_on_engine_thread([this] {
    if (follower_state_ == Followers::lost) GYRE_THROW(io, "engine: {}", followers_error_);
    if (follower_state_ != Followers::engaged) return;
    send_to_followers(StepOp::release);
    follower_state_ = Followers::released;
  });
}

void Engine::engage_followers() {
  if (!followers_)
    GYRE_THROW(invalid_argument, "engine: engage_followers() without attach_followers()");
  // Waits for the engine thread like release_followers(): once this returns the followers count as
  // engaged, so a leader that fails right after (its engine destroyed) sends them a stop instead of
  // leaving them in run() until their channel's timeout. Requests submitted after this call run
  // engaged.
  run_on_engine_thread([this] {
    if (follower_state_ != Followers::released) return;  // engaged already, or lost for good
    follower_state_ = Followers::engaged;
    follower_last_send_ = now_seconds();
  });
}

}  // namespace gyre::infer
