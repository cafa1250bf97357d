// ApiServer: routing, shared request bookkeeping, and the SGLang-native /generate route. Info,
// control and weight routes are in api_control.cc, the OpenAI routes in api_openai.cc.
#include "gyre/serve/api_server.h"

#include <chrono>
#include <random>
#include <thread>
#include <unordered_map>

#include "gyre/core/logging.h"
#include "gyre/serve/api_state.h"
#include "gyre/serve/native_api.h"

namespace gyre::serve {

using infer::FinishType;
using infer::GenerateRequest;
using infer::GenerateResult;

void handle_control(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                    const std::shared_ptr<Responder>& res, bool& handled);

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void send_error(Responder& res, const std::exception& e) {
  if (auto* re = dynamic_cast<const RequestError*>(&e)) {
    res.send(re->status(), json_error_body(re->status(), re->what(), re->param()));
    return;
  }
  if (auto* ge = dynamic_cast<const Error*>(&e)) {
    int status = ge->kind() == ErrorKind::internal || ge->kind() == ErrorKind::io ? 500
                 : ge->kind() == ErrorKind::not_found                             ? 404
                                                                                  : 400;
    res.send(status, json_error_body(status, ge->what()));
    return;
  }
  res.send(500, json_error_body(500, std::string("internal error: ") + e.what()));
}

std::string ApiServer::State::new_rid() {
  // uuid4().hex-shaped ids, as SGLang assigns; unique per process with overwhelming probability.
  thread_local std::mt19937_64 rng{
      std::random_device{}() ^ uint64_t(std::hash<std::thread::id>{}(std::this_thread::get_id()))};
  return fmt::format("{:016x}{:016x}", rng(), rng());
}

std::string ApiServer::State::label(int64_t version) {
  std::lock_guard<std::mutex> lk(mu);
  auto it = version_label.find(version);
  return it != version_label.end() ? it->second : std::to_string(version);
}

void ApiServer::State::finished(const GenerateResult& r) {
  in_flight--;
  metrics.requests_total++;
  if (!r.error.empty()) {
    metrics.rejected++;
    return;
  }
  metrics.prompt_tokens += r.prompt_tokens;
  metrics.cached_tokens += r.cached_tokens;
  metrics.generation_tokens += r.completion_tokens;
  switch (r.finish.type) {
    case FinishType::stop: metrics.finished_stop++; break;
    case FinishType::length: metrics.finished_length++; break;
    default: metrics.finished_abort++; break;
  }
  metrics.e2e.observe(r.e2e_latency);
}

void ApiServer::State::prepare(std::vector<GenerateRequest>& reqs) {
  infer::RequestLimits lim = limits;
  infer::EngineStats s = engine->stats();
  if (s.total_pages > 0) lim.kv_capacity_tokens = s.total_pages * s.page_size;
  for (auto& r : reqs) {
    if (r.rid.empty()) r.rid = new_rid();
    std::string err = infer::validate_request(r, lim);
    if (!err.empty()) throw RequestError(400, "", err);
  }
}

// ---- /generate ----------------------------------------------------------------------------------

namespace {

struct NativeJob {
  std::mutex mu;
  GenerateCall call;
  std::vector<ResultFormat> fmt;  // per prompt
  std::vector<GenerateResult> results, acc;
  std::unordered_map<std::string, size_t> slot_of;  // engine rid -> slot
  size_t remaining = 0;
  std::shared_ptr<Responder> res;
  std::vector<double> last_chunk;  // per slot, for the TTFT / ITL metrics
  double start = 0;
};

}  // namespace

void handle_generate(const std::shared_ptr<ApiServer::State>& st, HttpRequest& req,
                     const std::shared_ptr<Responder>& res) {
  json body = parse_json_object(req.body);
  auto job = std::make_shared<NativeJob>();
  job->call = parse_generate(body, st->tok.get());
  st->prepare(job->call.requests);
  GenerateCall& call = job->call;
  const size_t n = size_t(call.n);
  job->results.resize(call.slots());
  job->acc.resize(call.slots());
  job->last_chunk.assign(call.slots(), 0.0);
  job->remaining = call.slots();
  job->res = res;
  job->start = steady_now_s();
  std::string version = st->label(st->engine->weight_version());
  for (size_t p = 0; p < call.requests.size(); ++p) {
    const GenerateRequest& r = call.requests[p];
    ResultFormat f;
    f.return_logprob = call.return_logprob;
    f.text_in_logprobs = call.return_text_in_logprobs;
    f.top_logprobs_num = r.top_logprobs_num;
    f.logprob_start_len = r.logprob_start_len;
    f.input_ids = &r.input_ids;
    f.tok = st->tok.get();
    f.weight_version = version;
    job->fmt.push_back(f);
    for (size_t k = 0; k < n; ++k) {
      std::string rid = n == 1 ? r.rid : fmt::format("{}-{}", r.rid, k);  // the engine's naming
      job->slot_of[rid] = p * n + k;
      job->acc[p * n + k].rid = rid;
      job->acc[p * n + k].prompt_tokens = int32_t(r.input_ids.size());
    }
  }
  if (call.stream) res->begin_stream(200, "text/event-stream");

  std::vector<std::string> base_rids;
  for (const auto& r : call.requests) base_rids.push_back(r.rid);
  res->on_disconnect([st, base_rids] {
    for (const auto& rid : base_rids) st->engine->abort(rid);
    st->metrics.disconnect_aborts++;
  });

  for (size_t p = 0; p < call.requests.size(); ++p) {
    infer::RequestCallbacks cb;
    if (call.stream) {
      cb.on_chunk = [st, job, p](const infer::TokenChunk& c) {
        std::lock_guard<std::mutex> lk(job->mu);
        auto it = job->slot_of.find(c.rid);
        if (it == job->slot_of.end()) return;
        size_t slot = it->second;
        st->metrics.observe_chunk(job->start, job->last_chunk[slot], c.output_ids.size(),
                                  steady_now_s());
        accumulate_chunk(job->acc[slot], c);
        json j = generate_result_json(job->acc[slot], job->fmt[p], false);
        if (job->call.batch) j["index"] = slot;
        job->res->write(sse_event(j));
      };
    }
    cb.on_done = [st, job, p](GenerateResult&& r) {
      st->finished(r);
      std::lock_guard<std::mutex> lk(job->mu);
      auto it = job->slot_of.find(r.rid);
      size_t slot =
          it != job->slot_of.end() ? it->second : p * size_t(job->call.n) + size_t(r.index);
      if (slot >= job->results.size() || job->remaining == 0) return;
      job->fmt[p].weight_version = st->label(r.weight_version);
      if (job->call.stream) {
        if (!r.error.empty()) {
          job->res->write(sse_event(json::parse(json_error_body(400, r.error))));
        } else {
          json j = generate_result_json(r, job->fmt[p], true);
          if (job->call.batch) j["index"] = slot;
          job->res->write(sse_event(j));
        }
      }
      job->results[slot] = std::move(r);
      if (--job->remaining > 0) return;
      if (job->call.stream) {
        job->res->write(kSseDone);
        job->res->end_stream();
        return;
      }
      for (const auto& x : job->results)
        if (!x.error.empty()) {
          job->res->send(400, json_error_body(400, x.error));
          return;
        }
      json out;
      if (job->call.batch) {
        out = json::array();
        for (size_t s = 0; s < job->results.size(); ++s)
          out.push_back(
              generate_result_json(job->results[s], job->fmt[s / size_t(job->call.n)], true));
      } else {
        out = generate_result_json(job->results[0], job->fmt[0], true);
      }
      job->res->send(200, dump_json(out));
    };
    st->in_flight += call.n;  // the engine answers each of the n samples with its own on_done
    st->engine->submit(call.requests[p], std::move(cb));
  }
}

// ---- routing ------------------------------------------------------------------------------------

ApiServer::ApiServer(ServeConfig cfg, std::shared_ptr<infer::EngineApi> engine,
                     std::shared_ptr<const tokenizer::Tokenizer> tok,
                     std::shared_ptr<const tokenizer::ChatTemplate> chat_template,
                     WeightLoader loader)
    : st_(std::make_shared<State>()) {
  GYRE_CHECK(engine != nullptr, "ApiServer needs an engine");
  check_parser_names(cfg.tool_call_parser, cfg.reasoning_parser);
  if (cfg.context_len <= 0)
    GYRE_THROW(invalid_argument, "serve: context length must be > 0, got {}", cfg.context_len);
  st_->cfg = std::move(cfg);
  st_->engine = std::move(engine);
  st_->tok = std::move(tok);
  st_->chat_template = std::move(chat_template);
  st_->loader = std::move(loader);
  st_->limits.vocab_size = st_->cfg.vocab_size;
  st_->limits.context_len = st_->cfg.context_len;
  st_->limits.kv_capacity_tokens = INT64_MAX;
  st_->oai.tok = st_->tok.get();
  st_->oai.chat_template = st_->chat_template.get();
  st_->oai.context_len = st_->cfg.context_len;
  st_->oai.served_model_name = st_->cfg.served_model_name;
  st_->oai.tool_call_parser = st_->cfg.tool_call_parser;
  st_->oai.reasoning_parser = st_->cfg.reasoning_parser;
  st_->oai.enable_cache_report = st_->cfg.enable_cache_report;
  if (!st_->cfg.weight_version.empty())
    st_->version_label[st_->engine->weight_version()] = st_->cfg.weight_version;

  std::weak_ptr<State> weak = st_;
  auto handler = [weak](HttpRequest& req, std::shared_ptr<Responder> res) {
    auto st = weak.lock();
    if (!st) return res->send(503, json_error_body(503, "server is shutting down"));
    st->metrics.http_requests++;
    try {
      const std::string& p = req.path;
      bool post = req.method == "POST" || req.method == "PUT";
      if (p == "/generate") {
        if (!post) return res->send(405, json_error_body(405, "/generate needs POST"));
        return handle_generate(st, req, res);
      }
      if (p == "/v1/chat/completions" || p == "/v1/completions") {
        if (req.method != "POST") return res->send(405, json_error_body(405, p + " needs POST"));
        std::string ct = req.header("content-type");
        if (!ct.empty() && ct.find("application/json") == std::string::npos)
          return res->send(400, json_error_body(400,
                                                fmt::format("Content-Type must be "
                                                            "application/json, got '{}'",
                                                            ct),
                                                "Content-Type"));
        return handle_openai(st, req, res, p == "/v1/chat/completions");
      }
      if (p == "/v1/models" || p.starts_with("/v1/models/")) return handle_models(st, req, res);
      bool handled = false;
      handle_control(st, req, res, handled);
      if (!handled)
        res->send(404, json_error_body(404, fmt::format("no route for {} {}", req.method, p)));
    } catch (const std::exception& e) {
      send_error(*res, e);
    }
  };
  http_ = std::make_unique<HttpServer>(st_->cfg.http, handler);
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
  http_->start();
  port_ = http_->port();
}

int ApiServer::port() const { return port_; }  // kept after stop(), for messages and tests

int64_t ApiServer::in_flight() const { return st_->in_flight.load(); }

void ApiServer::stop() {
  if (!http_) return;
  http_->stop();
  st_->control.stop();
  st_->timers.stop();
  if (st_->in_flight.load() > 0) {
    st_->engine->resume();
    st_->engine->abort_all();
    for (int i = 0; i < 500 && st_->in_flight.load() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (st_->in_flight.load() > 0)
      log::warn("serve: {} requests still in the engine at shutdown", st_->in_flight.load());
  }
  http_.reset();
}

}  // namespace gyre::serve
