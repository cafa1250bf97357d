// ApiServer: `gyre serve`'s HTTP front of one engine. SGLang-native routes (/generate, health,
// info, loads, flush/abort/pause/continue, memory occupation, weights, tokenize, /metrics) and the
// OpenAI routes (/v1/models, /v1/completions, /v1/chat/completions), all over an EngineApi.
// Only this layer knows HTTP and wire JSON; the engine sees GenerateRequests.
//
// Weight reloading from disk needs more than EngineApi: WeightLoader is the hook (cmd_serve binds
// it to model::CausalLM::load_weights) and runs inside EngineApi::update_weights, i.e. between
// engine steps with no forward in flight. A tensor-parallel server sets ServeConfig::
// weight_updater instead: the whole update then is its job (every tp rank reloads its shard in
// lockstep, dist/tp_serve.h), since a loader would reach only rank 0's shard.
//
// Invariants: every submitted request is tracked until its on_done (in_flight()); a client that
// disconnects before its response completed gets its request aborted in the engine, so no request
// (and no KV page) outlives its connection; blocking engine calls (flush_cache, update_weights)
// never run on an I/O thread.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gyre/infer/types.h"
#include "gyre/serve/http_server.h"

namespace gyre::tokenizer {
class Tokenizer;
class ChatTemplate;
}  // namespace gyre::tokenizer

namespace gyre::serve {

// Reloads the model's weights from an HF folder in place (throws gyre::Error on a bad folder).
using WeightLoader = std::function<void(const std::string& model_path)>;
// Updates the engine's weights from an HF folder by itself and returns the new weight version
// (throws gyre::Error on a bad folder, leaving the weights as they were). Runs on the control
// thread, never on an I/O thread.
using WeightUpdater = std::function<int64_t(const std::string& model_path)>;

// SGLang's NCCL weight-update group (/init_weights_update_group, /update_weights_from_distributed,
// /destroy_weights_update_group; reference/sglang-api.md §1.7). cmd_serve binds them to
// dist::WeightUpdateGroups for a GPU model; unset, the routes answer 400 naming the alternative
// (/update_weights_from_disk). They run on the control thread; receive_and_load runs inside
// EngineApi::update_weights (no forward in flight) and throws, weights unchanged, on a refusal.
struct WeightGroupInit {
  std::string master_address, group_name = "weight_update_group", backend = "nccl";
  int master_port = 0, rank_offset = 0, world_size = 0;
};
struct DistributedWeightUpdate {
  std::vector<std::string> names, dtypes;
  std::vector<std::vector<int64_t>> shapes;
  std::string group_name = "weight_update_group";
  bool flattened_bucket = false;  // load_format "flattened_bucket": one uint8 broadcast
};
struct WeightGroupHooks {
  std::function<void(const WeightGroupInit&)> init;
  std::function<void(const std::string& group)> destroy;
  std::function<void(const DistributedWeightUpdate&)> receive_and_load;
  explicit operator bool() const { return init && destroy && receive_and_load; }
};

struct ServeConfig {
  HttpServerConfig http;
  std::string model_path, tokenizer_path;
  std::string served_model_name = "default";
  std::string model_type;                  // config.json model_type
  std::vector<std::string> architectures;  // config.json architectures
  int64_t context_len = 0;                 // max prompt + output tokens
  int64_t vocab_size = 0;
  std::string tool_call_parser;  // "" | hermes | qwen25 | qwen3
  std::string reasoning_parser;  // "" | qwen3 | deepseek-r1 | ...
  bool enable_cache_report = true;
  std::string weight_version;  // label of the initial weights; "" = the engine's version number
  double health_check_timeout_s = 20;                     // SGLANG_HEALTH_CHECK_TIMEOUT
  nlohmann::json server_args = nlohmann::json::object();  // extra /server_info fields
  // Set: /update_weights_from_disk calls it instead of engine->update_weights(loader).
  WeightUpdater weight_updater;
  WeightGroupHooks weight_groups;  // set: NCCL weight updates (GPU models)
};

class ApiServer {
 public:
  ApiServer(ServeConfig cfg, std::shared_ptr<infer::EngineApi> engine,
            std::shared_ptr<const tokenizer::Tokenizer> tok,
            std::shared_ptr<const tokenizer::ChatTemplate> chat_template, WeightLoader loader);
  ~ApiServer();  // stop()
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  void start();  // listens (throws gyre::Error(io) when the port is taken)
  // Stops accepting, aborts what is running and waits (bounded) for the engine to finish them.
  void stop();
  int port() const;
  int64_t in_flight() const;  // engine requests submitted and not yet done

  struct State;

 private:
  std::shared_ptr<State> st_;
  std::unique_ptr<HttpServer> http_;
  int port_ = 0;
};

}  // namespace gyre::serve
