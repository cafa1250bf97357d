#include "gyre/infer/rollout_client.h"

namespace gyre::infer {

std::future<GenerateResult> RolloutClient::generate(GenerateRequest req) {
  auto promise = std::make_shared<std::promise<GenerateResult>>();
  auto fut = promise->get_future();
  generate(std::move(req), [promise](GenerateResult&& r) { promise->set_value(std::move(r)); });
  return fut;
}

void InProcessRolloutClient::generate(GenerateRequest req,
                                      std::function<void(GenerateResult&&)> done) {
  RequestCallbacks cb;
  cb.on_done = std::move(done);
  engine_->submit(std::move(req), std::move(cb));
}

int64_t InProcessRolloutClient::sync_weights(const std::function<void()>& apply,
                                             const std::string&) {
  // Colocated: the engine's model IS the trainer's model; applying the update between engine
  // steps is the whole sync (DESIGN.md: "weight sync is a version bump, not a copy").
  return engine_->update_weights(apply ? apply : [] {});
}

}  // namespace gyre::infer
