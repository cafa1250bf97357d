// Internal to the API server: the state every route handler shares, and the request bookkeeping
// (rids, in-flight count, metrics, weight-version labels). Split from api_server.cc so that the
// native and OpenAI route files see the same state.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "gyre/infer/validate.h"
#include "gyre/serve/api_server.h"
#include "gyre/serve/openai_api.h"
#include "gyre/serve/prometheus.h"
#include "gyre/serve/request_json.h"
#include "gyre/serve/task_thread.h"

namespace gyre::serve {

struct ServeMetrics {
  std::atomic<int64_t> http_requests{0};
  std::atomic<int64_t> requests_total{0};  // engine requests finished
  std::atomic<int64_t> finished_stop{0}, finished_length{0}, finished_abort{0}, rejected{0};
  std::atomic<int64_t> prompt_tokens{0}, generation_tokens{0}, cached_tokens{0};
  std::atomic<int64_t> disconnect_aborts{0};
  Histogram e2e{latency_buckets()};
  Histogram ttft{latency_buckets()};
  Histogram itl{token_latency_buckets()};  // streamed requests, per token

  // One streamed chunk of `tokens` tokens for a request submitted at `start`; `last` is that
  // request's previous chunk time (0 before the first). The first chunk gives the time to first
  // token, later ones the inter-token latency (a chunk's gap spread over its tokens).
  void observe_chunk(double start, double& last, size_t tokens, double now) {
    if (last == 0)
      ttft.observe(now - start);
    else if (tokens > 0)
      for (size_t i = 0; i < tokens; ++i) itl.observe((now - last) / double(tokens));
    last = now;
  }
};

inline double steady_now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct ApiServer::State {
  ServeConfig cfg;
  std::shared_ptr<infer::EngineApi> engine;
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  std::shared_ptr<const tokenizer::ChatTemplate> chat_template;
  WeightLoader loader;
  OpenAiContext oai;
  infer::RequestLimits limits;
  ServeMetrics metrics;
  std::atomic<int64_t> in_flight{0};
  TaskThread control;  // blocking engine calls
  TaskThread timers;   // deadlines

  std::mutex mu;                                 // guards the fields below
  std::map<int64_t, std::string> version_label;  // engine weight version -> reported label
  std::set<std::string> released;                // memory occupation tags released
  bool paused = false;

  std::string new_rid();
  std::string label(int64_t version);
  // The result was counted into the metrics and the in-flight count.
  void finished(const infer::GenerateResult& r);
  // Assigns rids, checks each request against the model/KV limits (400 on failure).
  void prepare(std::vector<infer::GenerateRequest>& reqs);
};

// Route handlers (api_server.cc: native and control; api_openai.cc: OpenAI).
void handle_generate(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                     const std::shared_ptr<Responder>& res);
void handle_openai(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                   const std::shared_ptr<Responder>& res, bool chat);
void handle_models(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                   const std::shared_ptr<Responder>& res);

// Sends a RequestError / gyre::Error as the proper status with an OpenAI-shaped JSON error.
void send_error(Responder& res, const std::exception& e);
int64_t unix_time();

}  // namespace gyre::serve
