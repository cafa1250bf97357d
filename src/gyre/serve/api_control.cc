// ApiServer's info, health, control, weight, tokenizer and metrics routes (SGLang names and
// reply shapes, reference/sglang-api.md §1.5-1.7).
#include <chrono>

#include "gyre/core/logging.h"
#include "gyre/serve/api_state.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::serve {

using State = ApiServer::State;

namespace {

json body_or_empty(const HttpRequest& req) {
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  return parse_json_object(req.body);
}

void send_json(Responder& res, int status, const json& j) { res.send(status, dump_json(j)); }

json model_info(State& st) {
  return json{{"model_path", st.cfg.model_path},
              {"tokenizer_path", st.cfg.tokenizer_path},
              {"is_generation", true},
              {"preferred_sampling_params", nullptr},
              {"weight_version", st.label(st.engine->weight_version())},
              {"has_image_understanding", false},
              {"has_audio_understanding", false},
              {"model_type", st.cfg.model_type},
              {"architectures", st.cfg.architectures},
              {"served_model_name", st.cfg.served_model_name}};
}

json load_entry(const infer::EngineStats& s, int64_t context_len) {
  int64_t total_tokens = s.total_pages * s.page_size;
  int64_t used_tokens = (s.total_pages - s.free_pages) * s.page_size;
  double usage = total_tokens > 0 ? double(used_tokens) / double(total_tokens) : 0.0;
  double hit = s.prompt_tokens > 0 ? double(s.cached_tokens) / double(s.prompt_tokens) : 0.0;
  (void)context_len;
  return json{{"dp_rank", 0},
              {"num_running_reqs", s.running},
              {"num_waiting_reqs", s.queued},
              {"num_total_reqs", s.running + s.queued},
              {"num_reqs", s.running + s.queued},
              {"num_used_tokens", used_tokens},
              {"num_total_tokens", total_tokens},
              {"max_total_num_tokens", total_tokens},
              {"token_usage", usage},
              {"gen_throughput", s.gen_tokens_per_s},
              {"cache_hit_rate", hit},
              {"utilization", usage},
              {"num_free_pages", s.free_pages},
              {"num_total_pages", s.total_pages},
              {"paused", s.paused}};
}

// {"success": ok, "message": ...} with 200 / 400: the reply shape of SGLang's weight routes.
void weight_reply(Responder& res, bool ok, const std::string& message) {
  res.send(ok ? 200 : 400, dump_json(json{{"success", ok}, {"message", message}}));
}

std::vector<std::vector<int64_t>> shape_list(const json& b) {
  const json* v = field(b, "shapes");
  if (!v || !v->is_array()) bad_field("shapes", "is required: one [int] list per tensor");
  std::vector<std::vector<int64_t>> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const json& s = (*v)[i];
    const std::string path = "shapes[" + std::to_string(i) + "]";
    if (!s.is_array()) bad_field(path, "must be a list of ints, got " + json_type(s));
    std::vector<int64_t> dims;
    for (size_t k = 0; k < s.size(); ++k)
      dims.push_back(as_int(s[k], path + "[" + std::to_string(k) + "]", 0));
    out.push_back(std::move(dims));
  }
  return out;
}

std::vector<std::string> string_list(const json& b, const char* key) {
  const json* v = field(b, key);
  if (!v || !v->is_array())
    bad_field(key, std::string("is required: a list of strings, one per tensor"));
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string())
      bad_field(std::string(key) + "[" + std::to_string(i) + "]",
                "must be a string, got " + json_type((*v)[i]));
    out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

// /init_weights_update_group, /destroy_weights_update_group, /update_weights_from_distributed.
void weight_group_route(const std::shared_ptr<State>& st, const std::string& p,
                        const HttpRequest& req, const std::shared_ptr<Responder>& res) {
  json b = parse_json_object(req.body);
  const std::string group =
      opt_string(b, "group_name", "group_name").value_or("weight_update_group");
  if (!st->cfg.weight_groups)
    bad_request(fmt::format("{}: this server cannot join NCCL weight-update groups ({}); push "
                            "weights with /update_weights_from_disk",
                            p,
                            st->cfg.weight_updater
                                ? "a tensor-parallel server: a trainer's broadcast would reach "
                                  "rank 0's shard only"
                                : "its model is not on a GPU"),
                400);
  if (p == "/destroy_weights_update_group") {
    st->control.post([st, res, group] {
      try {
        st->cfg.weight_groups.destroy(group);
        weight_reply(*res, true, "Succeeded to destroy custom process group.");
      } catch (const std::exception& e) {
        weight_reply(*res, false, e.what());
      }
    });
    return;
  }
  if (p == "/init_weights_update_group") {
    WeightGroupInit w;
    w.group_name = group;
    w.master_address = opt_string(b, "master_address", "master_address").value_or("");
    if (w.master_address.empty()) bad_field("master_address", "is required (the trainer's host)");
    auto port = opt_int(b, "master_port", "master_port", 1, 65535);
    if (!port) bad_field("master_port", "is required (1..65535)");
    auto offset = opt_int(b, "rank_offset", "rank_offset", 1, 1 << 20);
    if (!offset) bad_field("rank_offset", "is required (>= 1; the trainer is rank 0)");
    auto world = opt_int(b, "world_size", "world_size", 2, 1 << 20);
    if (!world) bad_field("world_size", "is required (>= 2: the trainer and this engine)");
    w.master_port = int(*port), w.rank_offset = int(*offset), w.world_size = int(*world);
    w.backend = opt_string(b, "backend", "backend").value_or("nccl");
    // Blocks until the trainer and every engine of the group have arrived (or the timeout).
    st->control.post([st, res, w] {
      try {
        st->cfg.weight_groups.init(w);
        weight_reply(*res, true, "Succeeded to initialize custom process group.");
      } catch (const std::exception& e) {
        weight_reply(*res, false,
                     std::string("Failed to initialize custom process group: ") + e.what());
      }
    });
    return;
  }
  // /update_weights_from_distributed
  DistributedWeightUpdate u;
  u.group_name = group;
  u.names = string_list(b, "names");
  u.dtypes = string_list(b, "dtypes");
  u.shapes = shape_list(b);
  if (u.dtypes.size() != u.names.size() || u.shapes.size() != u.names.size())
    bad_request(fmt::format("update_weights_from_distributed: {} names, {} dtypes, {} shapes: "
                            "one of each per tensor",
                            u.names.size(), u.dtypes.size(), u.shapes.size()),
                400);
  const auto lf = opt_string(b, "load_format", "load_format");
  if (lf && *lf != "flattened_bucket" && *lf != "auto")
    bad_field("load_format", "must be null, \"auto\" or \"flattened_bucket\"");
  u.flattened_bucket = lf && *lf == "flattened_bucket";
  const auto label = opt_string(b, "weight_version", "weight_version");
  const bool abort_all = opt_bool(b, "abort_all_requests", "abort_all_requests").value_or(false);
  opt_bool(b, "flush_cache", "flush_cache");  // the KV of the old weights is dropped regardless
  st->control.post([st, res, u, label, abort_all] {
    if (abort_all) st->engine->abort_all();
    try {
      const int64_t v =
          st->engine->update_weights([&] { st->cfg.weight_groups.receive_and_load(u); });
      std::string l = label ? *label : std::to_string(v);
      {
        std::lock_guard<std::mutex> lk(st->mu);
        st->version_label[v] = l;
      }
      log::info("serve: {} tensors received over NCCL group '{}' (version {})", u.names.size(),
                u.group_name, l);
      weight_reply(*res, true, "Succeeded to update parameter online.");
    } catch (const std::exception& e) {
      weight_reply(*res, false, std::string("Failed to update parameter online: ") + e.what());
    }
  });
}

std::vector<std::string> parse_tags(const json& body) {
  static const std::vector<std::string> kAll = {"weights", "kv_cache", "cuda_graph"};
  const json* t = field(body, "tags");
  if (!t) return kAll;
  if (!t->is_array())
    bad_field("tags", "must be a list of \"weights\", \"kv_cache\", \"cuda_graph\"");
  std::vector<std::string> out;
  for (size_t i = 0; i < t->size(); ++i) {
    if (!(*t)[i].is_string() ||
        std::find(kAll.begin(), kAll.end(), (*t)[i].get<std::string>()) == kAll.end())
      bad_field(fmt::format("tags[{}]", i),
                "must be one of \"weights\", \"kv_cache\", \"cuda_graph\"");
    out.push_back((*t)[i].get<std::string>());
  }
  return out;
}

std::string metrics_text(State& st) {
  infer::EngineStats s = st.engine->stats();
  std::string out;
  out.reserve(8192);
  std::string l = fmt::format("model_name=\"{}\"", st.cfg.served_model_name);
  json ld = load_entry(s, st.cfg.context_len);
  prom_metric(out, "sglang:num_running_reqs", "gauge", "Requests running in the engine", s.running,
              l);
  prom_metric(out, "sglang:num_queue_reqs", "gauge", "Requests waiting in the queue", s.queued, l);
  prom_metric(out, "sglang:gen_throughput", "gauge", "Recent decode throughput (tokens/s)",
              s.gen_tokens_per_s, l);
  prom_metric(out, "sglang:token_usage", "gauge", "Fraction of KV pages in use",
              ld["token_usage"].get<double>(), l);
  prom_metric(out, "sglang:cache_hit_rate", "gauge", "Prompt tokens served from the prefix cache",
              ld["cache_hit_rate"].get<double>(), l);
  prom_metric(out, "sglang:num_used_tokens", "gauge", "KV tokens in use",
              ld["num_used_tokens"].get<double>(), l);
  prom_metric(out, "sglang:max_total_num_tokens", "gauge", "KV pool size in tokens",
              double(s.total_pages * s.page_size), l);
  prom_metric(out, "gyre:kv_free_pages", "gauge", "Free KV pages (not held by requests or cache)",
              double(s.free_pages), l);
  prom_metric(out, "gyre:kv_total_pages", "gauge", "KV pool size in pages", double(s.total_pages),
              l);
  prom_metric(out, "gyre:in_flight_requests", "gauge", "Requests submitted by HTTP and not done",
              double(st.in_flight.load()), l);
  prom_metric(out, "sglang:prompt_tokens_total", "counter", "Prompt tokens of finished requests",
              double(st.metrics.prompt_tokens.load()), l);
  prom_metric(out, "sglang:generation_tokens_total", "counter", "Generated tokens",
              double(st.metrics.generation_tokens.load()), l);
  prom_metric(out, "sglang:cached_tokens_total", "counter", "Prompt tokens from the prefix cache",
              double(st.metrics.cached_tokens.load()), l);
  prom_metric(out, "sglang:num_requests_total", "counter", "Finished engine requests",
              double(st.metrics.requests_total.load()), l);
  out +=
      "# HELP gyre:finished_requests_total Finished requests by finish reason\n"
      "# TYPE gyre:finished_requests_total counter\n";
  out += fmt::format("gyre:finished_requests_total{{{},reason=\"stop\"}} {}\n", l,
                     st.metrics.finished_stop.load());
  out += fmt::format("gyre:finished_requests_total{{{},reason=\"length\"}} {}\n", l,
                     st.metrics.finished_length.load());
  out += fmt::format("gyre:finished_requests_total{{{},reason=\"abort\"}} {}\n", l,
                     st.metrics.finished_abort.load());
  out += fmt::format("gyre:finished_requests_total{{{},reason=\"rejected\"}} {}\n", l,
                     st.metrics.rejected.load());
  prom_metric(out, "gyre:client_disconnect_aborts_total", "counter",
              "Requests aborted because the client went away",
              double(st.metrics.disconnect_aborts.load()), l);
  prom_metric(out, "gyre:http_requests_total", "counter", "HTTP requests received",
              double(st.metrics.http_requests.load()), l);
  st.metrics.e2e.render(out, "sglang:e2e_request_latency_seconds",
                        "End-to-end request latency (submit to finish)", l);
  st.metrics.ttft.render(out, "sglang:time_to_first_token_seconds",
                         "Time to the first streamed token", l);
  st.metrics.itl.render(out, "sglang:inter_token_latency_seconds", "Time between streamed tokens",
                        l);
  return out;
}

void health_generate(const std::shared_ptr<State>& st, const std::shared_ptr<Responder>& res) {
  // SGLang: a 1-token greedy request on input_ids [0]; 503 when it does not finish in time.
  infer::GenerateRequest r;
  r.rid = "HEALTH_CHECK_" + st->new_rid();
  r.input_ids = {0};
  r.sampling.max_new_tokens = 1;
  r.sampling.temperature = 0;
  auto answered = std::make_shared<std::atomic<bool>>(false);
  infer::RequestCallbacks cb;
  cb.on_done = [st, res, answered](infer::GenerateResult&& out) {
    st->in_flight--;
    if (answered->exchange(true)) return;
    if (out.error.empty())
      res->send(200, "", "text/plain");
    else
      res->send(503, json_error_body(503, "health check generation failed: " + out.error));
  };
  std::string rid = r.rid;
  st->timers.post_after(st->cfg.health_check_timeout_s, [st, res, answered, rid] {
    if (answered->exchange(true)) return;
    st->engine->abort(rid);
    res->send(503, json_error_body(503, "health check generation timed out"));
  });
  st->in_flight++;
  st->engine->submit(std::move(r), std::move(cb));
}

}  // namespace

void handle_control(const std::shared_ptr<State>& st, HttpRequest& req,
                    const std::shared_ptr<Responder>& res, bool& handled) {
  handled = true;
  const std::string& p = req.path;
  if (p == "/health") return res->send(200, "", "text/plain");
  if (p == "/health_generate") return health_generate(st, res);
  if (p == "/get_model_info" || p == "/model_info") return send_json(*res, 200, model_info(*st));
  if (p == "/get_server_info" || p == "/server_info") {
    json j = st->cfg.server_args;
    infer::EngineStats s = st->engine->stats();
    j["model_path"] = st->cfg.model_path;
    j["tokenizer_path"] = st->cfg.tokenizer_path;
    j["served_model_name"] = st->cfg.served_model_name;
    j["context_length"] = st->cfg.context_len;
    j["max_total_num_tokens"] = s.total_pages * s.page_size;
    j["max_req_input_len"] = st->cfg.context_len - 1;
    j["weight_version"] = st->label(s.weight_version);
    j["internal_states"] = json::array({load_entry(s, st->cfg.context_len)});
    {
      std::lock_guard<std::mutex> lk(st->mu);
      j["memory_released_tags"] = st->released;
    }
    j["in_flight_requests"] = st->in_flight.load();
    j["version"] = "gyre-0.1";
    return send_json(*res, 200, j);
  }
  if (p == "/v1/loads" || p == "/get_load") {
    infer::EngineStats s = st->engine->stats();
    json e = load_entry(s, st->cfg.context_len);
    if (p == "/get_load") return send_json(*res, 200, json::array({e}));
    if (req.query_param("format").value_or("json") == "prometheus")
      return res->send(200, metrics_text(*st), "text/plain; version=0.0.4");
    json agg{{"total_running_reqs", s.running},       {"total_waiting_reqs", s.queued},
             {"total_reqs", s.running + s.queued},    {"total_used_tokens", e["num_used_tokens"]},
             {"total_tokens", e["num_total_tokens"]}, {"avg_token_usage", e["token_usage"]},
             {"avg_throughput", e["gen_throughput"]}, {"avg_utilization", e["utilization"]}};
    auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char ts[32];
    std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return send_json(*res, 200,
                     json{{"timestamp", ts},
                          {"version", "gyre-0.1"},
                          {"dp_rank_count", 1},
                          {"loads", json::array({e})},
                          {"aggregate", agg}});
  }
  if (p == "/metrics") return res->send(200, metrics_text(*st), "text/plain; version=0.0.4");
  if (p == "/get_weight_version" || p == "/weight_version")
    return send_json(*res, 200, json{{"weight_version", st->label(st->engine->weight_version())}});

  if (p == "/flush_cache") {
    st->control.post([st, res] {
      if (st->engine->flush_cache())
        res->send(200, "Cache flushed.\nPlease check backend logs for more details. ",
                  "text/plain");
      else
        res->send(400, json_error_body(400,
                                       "Cache not flushed: requests are running or waiting; "
                                       "abort or wait for them first"));
    });
    return;
  }
  if (p == "/abort_request") {
    json b = body_or_empty(req);
    bool all = opt_bool(b, "abort_all", "abort_all").value_or(false);
    std::string rid = opt_string(b, "rid", "rid").value_or("");
    if (all)
      st->engine->abort_all();
    else if (!rid.empty())
      st->engine->abort(rid);  // matches the rid and its n-sample children
    return res->send(200, "", "application/json");
  }
  if (p == "/pause_generation") {
    json b = body_or_empty(req);
    std::string mode = opt_string(b, "mode", "mode").value_or("abort");
    if (mode != "abort" && mode != "retract" && mode != "in_place")
      bad_field("mode", "must be \"abort\", \"retract\" or \"in_place\"");
    st->engine->pause();  // new requests queue until continue_generation
    // abort: running requests end now with finish_reason abort and their partial output (slime's
    // partial rollout). retract/in_place: they keep their KV and continue after resume.
    if (mode == "abort") st->engine->abort_all();
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->paused = true;
    }
    return send_json(*res, 200,
                     json{{"message", "Generation paused successfully."}, {"status", "ok"}});
  }
  if (p == "/continue_generation") {
    body_or_empty(req);
    bool memory_held;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->paused = false;
      memory_held = st->released.empty();
    }
    if (memory_held) st->engine->resume();
    return send_json(*res, 200,
                     json{{"message", "Generation continued successfully."}, {"status", "ok"}});
  }
  if (p == "/release_memory_occupation" || p == "/resume_memory_occupation") {
    json b = body_or_empty(req);
    std::vector<std::string> tags = parse_tags(b);
    bool release = p == "/release_memory_occupation";
    st->control.post([st, res, tags, release] {
      // The CPU engine's memory is ordinary heap: "releasing" the KV cache means no request may
      // hold pages (engine paused) and the prefix cache is emptied; resuming every tag (and not
      // being paused by the user) lets the engine schedule again.
      bool resume = false;
      if (release) {
        st->engine->pause();
        if (std::find(tags.begin(), tags.end(), "kv_cache") != tags.end() &&
            !st->engine->flush_cache()) {
          res->send(400, json_error_body(400,
                                         "cannot release the KV cache while requests are "
                                         "running; abort them first"));
          return;
        }
      }
      {
        std::lock_guard<std::mutex> lk(st->mu);
        for (const auto& t : tags)
          release ? (void)st->released.insert(t) : (void)st->released.erase(t);
        resume = !release && st->released.empty() && !st->paused;
      }
      if (resume) st->engine->resume();
      res->send(200, dump_json(json{{"success", true}, {"message", "ok"}, {"tags", tags}}));
    });
    return;
  }
  if (p == "/update_weights_from_disk") {
    json b = parse_json_object(req.body);
    auto path = opt_string(b, "model_path", "model_path");
    if (!path) bad_field("model_path", "is required (an HF folder with the new weights)");
    auto label = opt_string(b, "weight_version", "weight_version");
    bool abort_all = opt_bool(b, "abort_all_requests", "abort_all_requests").value_or(false);
    opt_bool(b, "flush_cache", "flush_cache");  // always flushed: the KV is stale after a reload
    if (auto lf = opt_string(b, "load_format", "load_format"); lf && *lf != "auto")
      bad_field("load_format", "only \"auto\" (an HF safetensors folder) is supported");
    if (!st->loader && !st->cfg.weight_updater)
      bad_request("this server cannot reload weights (no weight loader configured)", 400);
    st->control.post([st, res, path = *path, label, abort_all] {
      if (abort_all) st->engine->abort_all();
      try {
        int64_t v = st->cfg.weight_updater ? st->cfg.weight_updater(path)
                                           : st->engine->update_weights([&] { st->loader(path); });
        std::string l = label ? *label : std::to_string(v);
        {
          std::lock_guard<std::mutex> lk(st->mu);
          st->version_label[v] = l;
        }
        log::info("serve: weights reloaded from {} (version {})", path, l);
        res->send(200, dump_json(json{{"success", true},
                                      {"message", "Succeeded to update model weights."},
                                      {"num_paused_requests", 0},
                                      {"weight_version", l}}));
      } catch (const std::exception& e) {
        res->send(400, dump_json(json{
                           {"success", false},
                           {"message", std::string("Failed to update weights: ") + e.what()}}));
      }
    });
    return;
  }
  if (p == "/init_weights_update_group" || p == "/destroy_weights_update_group" ||
      p == "/update_weights_from_distributed")
    return weight_group_route(st, p, req, res);
  if (p == "/update_weight_version") {
    json b = parse_json_object(req.body);
    auto v = opt_string(b, "new_version", "new_version");
    if (!v) bad_field("new_version", "is required");
    if (opt_bool(b, "abort_all_requests", "abort_all_requests").value_or(true))
      st->engine->abort_all();
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->version_label[st->engine->weight_version()] = *v;
    }
    return send_json(*res, 200, json{{"success", true}, {"message", "ok"}, {"new_version", *v}});
  }
  if (p == "/tokenize" || p == "/v1/tokenize") {
    if (!st->tok) bad_request("this server has no tokenizer");
    json b = parse_json_object(req.body);
    bool special = opt_bool(b, "add_special_tokens", "add_special_tokens").value_or(true);
    const json* prompt = field(b, "prompt");
    if (!prompt) prompt = field(b, "text");
    if (!prompt) bad_field("prompt", "is required (a string or a list of strings)");
    json out{{"max_model_len", st->cfg.context_len}};
    if (prompt->is_string()) {
      auto ids = st->tok->encode(prompt->get<std::string>(), special);
      out["tokens"] = ids;
      out["count"] = ids.size();
    } else {
      auto texts = opt_string_or_list(b, field(b, "prompt") ? "prompt" : "text", "prompt");
      json toks = json::array(), counts = json::array();
      for (const auto& t : *texts) {
        auto ids = st->tok->encode(t, special);
        counts.push_back(ids.size());
        toks.push_back(std::move(ids));
      }
      out["tokens"] = toks;
      out["count"] = counts;
    }
    return send_json(*res, 200, out);
  }
  if (p == "/detokenize" || p == "/v1/detokenize") {
    if (!st->tok) bad_request("this server has no tokenizer");
    json b = parse_json_object(req.body);
    const json* t = field(b, "tokens");
    if (!t) bad_field("tokens", "is required (a list of token ids)");
    bool skip = opt_bool(b, "skip_special_tokens", "skip_special_tokens").value_or(false);
    return send_json(*res, 200,
                     json{{"text", st->tok->decode(int_list(*t, "tokens", 0, INT32_MAX), skip)}});
  }
  handled = false;
}

void handle_models(const std::shared_ptr<State>& st, HttpRequest& req,
                   const std::shared_ptr<Responder>& res) {
  json card{{"id", st->cfg.served_model_name}, {"object", "model"},
            {"created", unix_time()},          {"owned_by", "gyre"},
            {"root", st->cfg.model_path},      {"max_model_len", st->cfg.context_len}};
  if (req.path == "/v1/models") {
    send_json(*res, 200, json{{"object", "list"}, {"data", json::array({card})}});
    return;
  }
  std::string name = req.path.substr(std::string("/v1/models/").size());
  if (name != st->cfg.served_model_name) {
    json e{{"error",
            {{"message", fmt::format("The model '{}' does not exist", name)},
             {"type", "invalid_request_error"},
             {"param", "model"},
             {"code", "model_not_found"}}}};
    res->send(404, dump_json(e));
    return;
  }
  send_json(*res, 200, card);
}

}  // namespace gyre::serve
