// HttpRolloutClient: the RL loop's RolloutClient over HTTP, for `gyre serve`, `gyre router` or any
// SGLang-compatible server (slime's sglang_rollout: POST /generate with input_ids,
// sampling_params and return_logprob). Asynchronous (an Asio client with pooled keep-alive
// connections); each generate() is one /generate call whose reply becomes the GenerateResult the
// in-process client would have produced (n > 1 is expanded into n calls so each sample gets its
// own result with its index, as the engine does).
//
// Mapping: abort_all -> POST /abort_request {"abort_all": true}; pause/resume ->
// /pause_generation {} (SGLang's default mode: running requests end as aborted with their partial
// output, new ones wait) and /continue_generation; flush_cache -> GET /flush_cache (false on 400:
// requests running); weight_version -> GET /get_weight_version; sync_weights(apply, hf_dir) ->
// apply() locally, then POST /update_weights_from_disk {"model_path": hf_dir}.
// Against a router, control calls go to every worker listed by GET /workers.
//
// Invariants: `done` runs exactly once per generate (transport failures, timeouts and non-2xx
// replies become GenerateResult::error, after `max_retries` retries of transport failures and
// 5xx, as slime's post() retries); results carry the fields RL uses (output_ids, text, per-token
// log-probs, finish reason, prompt/completion/cached tokens, weight version, latency).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gyre/infer/rollout_client.h"

namespace gyre::serve {

struct HttpRolloutClientConfig {
  std::string url;  // http://host:port of a server or router
  std::string api_key;
  int io_threads = 2;
  double request_timeout_s = 3600;
  int max_retries = 3;            // per call, for transport errors and 5xx
  double retry_backoff_s = 0.25;  // doubled per retry
};

class HttpRolloutClient final : public infer::RolloutClient {
 public:
  explicit HttpRolloutClient(HttpRolloutClientConfig cfg);
  ~HttpRolloutClient() override;

  using RolloutClient::generate;
  void generate(infer::GenerateRequest req,
                std::function<void(infer::GenerateResult&&)> done) override;
  void abort_all() override;
  void pause() override;
  void resume() override;
  bool flush_cache() override;
  int64_t weight_version() override;
  int64_t sync_weights(const std::function<void()>& apply, const std::string& hf_dir) override;
  std::string describe() const override;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Wire mapping, exposed for tests: the /generate body for one request (n forced to 1), and the
// result parsed from one response object (throws gyre::Error naming the missing/bad field).
std::string rollout_request_body(const infer::GenerateRequest& req);
infer::GenerateResult parse_rollout_response(const std::string& body, const std::string& rid);

}  // namespace gyre::serve
