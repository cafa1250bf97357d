// RolloutClient: the one interface through which the RL loop (rl/) reaches a rollout engine. Two
// implementations make the loop unable to tell where generation runs:
//   InProcessRolloutClient (here): a colocated engine in this process, direct calls; weight sync
//     is a version bump because trainer and engine share the same parameter tensors;
//   HttpRolloutClient (serve/http_rollout_client.h): `gyre serve`, `gyre router` or any
//     SGLang-compatible server over its /generate API.
#pragma once
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "gyre/infer/types.h"

namespace gyre::infer {

class RolloutClient {
 public:
  virtual ~RolloutClient() = default;
  // Asynchronous generation; `done` runs exactly once (also on abort or a rejected request, with
  // GenerateResult::error set), possibly on another thread.
  virtual void generate(GenerateRequest req, std::function<void(GenerateResult&&)> done) = 0;
  std::future<GenerateResult> generate(GenerateRequest req);
  virtual void abort_all() = 0;
  virtual void pause() = 0;
  virtual void resume() = 0;
  virtual bool flush_cache() = 0;
  virtual int64_t weight_version() = 0;
  // Makes the engine serve the trainer's current weights. Colocated: `apply` runs between engine
  // steps (the optimizer step on the shared tensors) and the version is bumped. Remote: the caller
  // has written `hf_dir` and the engine reloads it (/update_weights_from_disk).
  virtual int64_t sync_weights(const std::function<void()>& apply, const std::string& hf_dir) = 0;
  virtual std::string describe() const = 0;  // "in-process engine", "http://host:port", ...
};

class InProcessRolloutClient final : public RolloutClient {
 public:
  explicit InProcessRolloutClient(std::shared_ptr<EngineApi> engine) : engine_(std::move(engine)) {}
  using RolloutClient::generate;
  void generate(GenerateRequest req, std::function<void(GenerateResult&&)> done) override;
  void abort_all() override { engine_->abort_all(); }
  void pause() override { engine_->pause(); }
  void resume() override { engine_->resume(); }
  bool flush_cache() override { return engine_->flush_cache(); }
  int64_t weight_version() override { return engine_->weight_version(); }
  int64_t sync_weights(const std::function<void()>& apply, const std::string& hf_dir) override;
  std::string describe() const override { return "in-process engine"; }
  EngineApi& engine() { return *engine_; }

 private:
  std::shared_ptr<EngineApi> engine_;
};

}  // namespace gyre::infer
