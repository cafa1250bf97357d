// `gyre serve --model-path DIR [--port N] ...`: the rollout engine behind an HTTP server speaking
// SGLang's native API and the OpenAI API (serve/api_server.h). Flag names follow SGLang's
// ServerArgs so slime launch lines translate. Prints "gyre serve: listening on http://HOST:PORT"
// on stdout once ready (with --port 0 the OS picks the port), then serves until SIGINT/SIGTERM.
//
// Tensor parallelism (`mpirun -np N gyre serve ... --tp-size N`, dist/tp_serve.h): every rank loads
// its shard; rank 0 serves HTTP and runs the leading engine, ranks 1..N-1 follow its steps and exit
// 0 once it stops. Weight reloads reach every rank's shard (all or none). With --device cuda each
// rank uses its local GPU and the tp group is NCCL (also under a torchrun-style launch); the
// sharded engine decodes without CUDA graphs, and SGLang's NCCL weight-update groups are off.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tp_serve.h"
#include "gyre/dist/weight_update_group.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/causal_lm.h"
#include "gyre/serve/api_server.h"
#include "gyre/serve/openai_api.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace gyre;

// Blocks SIGINT/SIGTERM in every thread (call before any thread starts) so the main thread can
// wait for them with sigwait and shut down in order.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

std::vector<std::string> read_architectures(const std::string& dir) {
  std::ifstream f(fs::path(dir) / "config.json");
  auto j = nlohmann::json::parse(f, nullptr, false);
  std::vector<std::string> out;
  if (!j.is_discarded() && j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a.is_string()) out.push_back(a.get<std::string>());
  return out;
}

// What every tp rank must agree on before its engine exists (dist::check_same_serve_settings): the
// flags that size the KV cache, the steps, the CUDA graphs and the context, the compute dtype, and
// the model's shapes (a rank given another folder of the same architecture would load).
std::vector<dist::ServeSetting> tp_serve_settings(const infer::EngineConfig& ec, bool bf16,
                                                  const model::ModelConfig& mc) {
  auto n = [](auto v) { return fmt::format("{}", v); };
  return {{"--context-length", n(ec.context_len)},
          {"--page-size", n(ec.page_size)},
          {"--num-pages", n(ec.num_pages)},
          {"--max-running-requests", n(ec.max_running_requests)},
          {"--chunked-prefill-size", n(ec.max_num_batched_tokens)},
          {"--cuda-graph-max-bs", n(ec.cuda_graph_max_bs)},
          {"--kv-cache-dtype", ec.kv_cache_dtype},
          {"--dtype", bf16 ? "bfloat16" : "float32"},
          {"config.json model_type", mc.model_type},
          {"config.json vocab_size", n(mc.vocab_size)},
          {"config.json hidden_size", n(mc.hidden_size)},
          {"config.json intermediate_size", n(mc.intermediate_size)},
          {"config.json num_hidden_layers", n(mc.num_hidden_layers)},
          {"config.json num_attention_heads", n(mc.num_attention_heads)},
          {"config.json num_key_value_heads", n(mc.num_key_value_heads)},
          {"config.json head_dim", n(mc.head_dim)},
          {"config.json max_position_embeddings", n(mc.max_position_embeddings)},
          {"config.json rope_theta", n(mc.rope.theta)},
          {"config.json rms_norm_eps", n(mc.rms_norm_eps)},
          {"config.json tie_word_embeddings", n(mc.tie_word_embeddings)},
          {"config.json attention_bias", n(mc.attention_bias)},
          {"config.json qk_norm", n(mc.qk_norm)},
          {"config.json rope_scaling type", mc.rope.type},
          {"config.json rope_scaling factor", n(mc.rope.factor)}};
}

int run_serve(int argc, char** argv) {
  CLI::App app{"Serve a model over HTTP (SGLang-native and OpenAI-compatible APIs)"};
  std::string model_dir, tok_dir, chat_template_name;
  serve::ServeConfig sc;
  infer::EngineConfig ec;
  bool no_cache = false, skip_tokenizer = false;
  int64_t chunked_prefill = 0;
  app.add_option("--model-path,--model", model_dir, "Hugging Face model folder")->required();
  app.add_option("--tokenizer-path", tok_dir,
                 "tokenizer folder (default: the model folder when it has tokenizer.json)");
  app.add_flag("--skip-tokenizer-init", skip_tokenizer, "token ids in and out only, no tokenizer");
  app.add_option("--chat-template", chat_template_name, "named chat template of the tokenizer");
  app.add_option("--host", sc.http.host, "address to listen on");
  sc.http.port = 30000;
  app.add_option("--port", sc.http.port, "port (0: pick a free one)")->check(CLI::Range(0, 65535));
  app.add_option("--api-key", sc.http.api_key, "require Authorization: Bearer <key>");
  app.add_option("--served-model-name", sc.served_model_name, "model name in the OpenAI API");
  app.add_option("--io-threads", sc.http.io_threads, "HTTP I/O threads");
  app.add_option("--max-body-bytes", sc.http.max_body_bytes, "larger request bodies get 413");
  app.add_option("--tool-call-parser", sc.tool_call_parser, "hermes | qwen25 | qwen3");
  app.add_option("--reasoning-parser", sc.reasoning_parser, "qwen3 | deepseek-r1 | ...");
  app.add_option("--weight-version", sc.weight_version, "label of the initial weights");
  app.add_option("--context-length", ec.context_len, "max prompt + output tokens");
  app.add_option("--page-size", ec.page_size, "KV page size in tokens");
  std::string device = "cpu", dtype = "auto";
  app.add_option("--device", device, "where the model runs: cpu or cuda (needs a CUDA build)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--dtype", dtype,
                 "compute dtype: auto (bfloat16 on cuda, float32 on cpu), bfloat16/bf16 (GPU mixed "
                 "precision) or float32/f32")
      ->check(CLI::IsMember({"auto", "bfloat16", "bf16", "float32", "f32", "float"}));
  app.add_option("--kv-cache-dtype", ec.kv_cache_dtype,
                 "KV cache dtype: auto (bf16 when the model computes in bf16 on the GPU), bf16 "
                 "(GPU only) or f32");
  bool no_cuda_graph = false;
  app.add_option("--cuda-graph-max-bs", ec.cuda_graph_max_bs,
                 "GPU decode steps of up to this many requests replay CUDA graphs (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--disable-cuda-graph", no_cuda_graph, "decode without CUDA graphs on the GPU");
  bool no_overlap = false;
  app.add_flag("--disable-overlap-schedule", no_overlap,
               "GPU decode: read each step's tokens back before launching the next (no "
               "look-ahead; the outputs are the same either way)");
  app.add_option("--num-pages", ec.num_pages, "KV pool size in pages");
  app.add_option("--max-running-requests", ec.max_running_requests, "concurrent requests");
  app.add_option("--chunked-prefill-size", chunked_prefill, "token budget per engine step");
  app.add_option("--random-seed", ec.random_seed, "seed of requests without sampling_seed");
  app.add_option("--stream-interval", ec.stream_interval, "tokens between stream chunks");
  app.add_flag("--disable-radix-cache", no_cache, "turn off prefix caching");
  double health_timeout = 20;
  app.add_option("--health-check-timeout", health_timeout, "/health_generate timeout (s)");
  // Accepted so SGLang/slime launch lines run unchanged; metrics are always on and there is no
  // warmup request to skip.
  bool ignored = false;
  app.add_flag("--enable-metrics,--skip-server-warmup", ignored, "(always on / nothing to skip)");
  int64_t tp_size = 1;
  app.add_option("--tp-size,--tp", tp_size,
                 "tensor-parallel ranks (SGLang's --tp-size): start with mpirun -np N (or "
                 "torchrun-style on GPUs), one process per rank (and GPU); rank 0 serves HTTP")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  ec.enable_prefix_cache = !no_cache;
  if (no_cuda_graph) ec.cuda_graph_max_bs = 0;
  if (no_overlap) ec.decode_look_ahead = false;
  if (chunked_prefill > 0) ec.max_num_batched_tokens = chunked_prefill;
  sc.health_check_timeout_s = health_timeout;
  serve::check_parser_names(sc.tool_call_parser, sc.reasoning_parser);

  // SGLang's --device / --dtype: bf16 mixed precision is the GPU default (f32 master weights,
  // bf16 GEMMs and attention; the engine then decodes with bf16 weight copies and a bf16 KV cache).
  const Device dev = device == "cuda" ? Device::cuda : Device::cpu;
  const bool bf16 =
      dtype == "bfloat16" || dtype == "bf16" || (dtype == "auto" && dev == Device::cuda);
  if (bf16 && dev == Device::cpu)
    GYRE_THROW(invalid_argument,
               "serve: --dtype {} needs --device cuda (the CPU backend computes in float32)",
               dtype);

  // Tensor parallelism: the launcher, --tp-size and the model must agree before anything loads
  // (every rank checks the same environment and config, so all ranks fail alike).
  const dist::LaunchInfo launch = dist::detect_launch();
  const bool tensor_parallel = tp_size > 1 || launch.size > 1;
  if (tensor_parallel) {
    dist::check_tp_serve_topology(tp_size, launch, model::load_config(model_dir), "--tp-size");
    // GPU decode steps replay CUDA graphs under tensor parallelism too: the NCCL group's
    // collectives in the sharded forward are stream-ordered device work, captured into the graphs
    // (infer/decode_graph.h; the followers capture and replay as the leader tells them).
    // --disable-cuda-graph / --cuda-graph-max-bs 0 turn them off (A/B).
    if (dev == Device::cuda && ec.cuda_graph_max_bs > 0 && launch.rank == 0)
      log::info("serve: CUDA graphs on under tensor parallelism (decode batches up to {})",
                ec.cuda_graph_max_bs);
  }

  sigset_t stop_signals = block_stop_signals();

  // The tp group (world size == --tp-size; NCCL on GPUs). Declared before the model and the
  // engine: both use it to the end (the engine's destructor may still tell the followers to stop).
  dist::TpServeGroup group;
  if (tensor_parallel) group = dist::init_tp_serve_group(dev, launch);
  dist::Comm* tp = tensor_parallel ? &group.tp() : nullptr;
  infer::StepChannel* step_channel = group.step_channel.get();
  const bool leader = !tp || tp->rank() == 0;

  std::shared_ptr<const tokenizer::Tokenizer> tok;
  std::shared_ptr<const tokenizer::ChatTemplate> tmpl;
  std::unique_ptr<model::CausalLM> model;
  // Under tensor parallelism each rank loads alone, then the ranks agree (dist::run_on_every_rank):
  // a rank that cannot read its files stops the whole group now, not at its first request.
  auto load = [&] {
    if (!skip_tokenizer && leader) {  // followers never see text
      if (tok_dir.empty() && fs::exists(fs::path(model_dir) / "tokenizer.json"))
        tok_dir = model_dir;
      if (!tok_dir.empty()) {
        tok = tokenizer::Tokenizer::from_dir(tok_dir);
        try {
          tmpl = std::make_shared<tokenizer::ChatTemplate>(
              tokenizer::ChatTemplate::from_dir(tok_dir, chat_template_name));
        } catch (const Error& e) {
          if (e.kind() != ErrorKind::not_found) throw;
          log::warn("serve: {} has no chat template; /v1/chat/completions is off", tok_dir);
        }
      } else {
        log::warn("serve: no tokenizer (pass --tokenizer-path); text prompts are off");
      }
    }
    model = model::CausalLM::load(
        model_dir, {.device = dev,
                    .precision = bf16 ? model::Precision::bf16 : model::Precision::f32,
                    .tp = group.tp_comm.get()});
  };
  if (tp)
    dist::run_on_every_rank(*tp, "loading the tokenizer and the model", load, "tp");
  else
    load();
  if (tp) dist::check_same_serve_settings(*tp, tp_serve_settings(ec, bf16, model->config()));
  if (!leader) {
    // A tp rank > 0: no HTTP, no scheduler; it runs the leader's steps with its shard (same KV
    // geometry: the same flags give the same EngineConfig, and the first plan checks it).
    std::unique_ptr<infer::EngineFollower> follower;
    dist::run_on_every_rank(
        *tp, "creating the engine",
        [&] { follower = std::make_unique<infer::EngineFollower>(*model, ec, *step_channel); },
        "tp");
    log::info("serve: tp rank {} of {} follows rank 0's engine", tp->rank(), tp->size());
    const std::string why = dist::run_tp_serve_follower(*tp, *follower, *model);
    log::info("serve: tp rank {} done after {} steps ({})", tp->rank(), follower->steps(), why);
    return 0;
  }
  if (tok && tok->vocab_size() > model->config().vocab_size)
    log::warn(
        "serve: the tokenizer has {} tokens but the model only {}; prompts holding the "
        "extra ids will be rejected",
        tok->vocab_size(), model->config().vocab_size);
  std::shared_ptr<infer::Engine> engine;
  auto make_engine = [&] { engine = std::make_shared<infer::Engine>(*model, tok, ec); };
  if (tp)
    dist::run_on_every_rank(*tp, "creating the engine", make_engine, "tp");
  else
    make_engine();
  std::unique_ptr<dist::TpServeLeader> tp_leader;
  if (tensor_parallel) {
    engine->attach_followers(*step_channel, /*engaged=*/true);  // they are in run() already
    tp_leader = std::make_unique<dist::TpServeLeader>(*tp, *engine, *model);
    // A reload must reach every rank's shard: the leader runs it on the whole tp group.
    sc.weight_updater = [l = tp_leader.get()](const std::string& dir) {
      return l->update_weights_from_disk(dir);
    };
    log::info("serve: tensor parallel over {} ranks{} (rank 0 schedules and samples)", tp_size,
              dev == Device::cuda ? " on as many GPUs, NCCL" : "");
    if (dev == Device::cuda)
      log::info(
          "serve: SGLang's NCCL weight-update groups (/init_weights_update_group, "
          "/update_weights_from_distributed) are off under tensor parallelism (a trainer's "
          "broadcast would reach rank 0's shard only); they answer 400, push weights with "
          "/update_weights_from_disk");
  }
  // SGLang's NCCL weight updates (a trainer's /init_weights_update_group + broadcasts): a GPU model
  // in one process. Declared before the server, which calls into it until it stops.
  std::unique_ptr<dist::WeightUpdateGroups> weight_groups;
  if (!tensor_parallel && dev == Device::cuda) {
    weight_groups = std::make_unique<dist::WeightUpdateGroups>(*model, dist::comm_timeout_s());
    dist::WeightUpdateGroups* g = weight_groups.get();
    sc.weight_groups.init = [g](const serve::WeightGroupInit& w) {
      g->init(w.master_address, w.master_port, w.rank_offset, w.world_size, w.group_name,
              w.backend);
    };
    sc.weight_groups.destroy = [g](const std::string& name) { g->destroy(name); };
    sc.weight_groups.receive_and_load = [g](const serve::DistributedWeightUpdate& u) {
      g->receive_and_load(u.group_name, u.names, u.dtypes, u.shapes, u.flattened_bucket);
    };
  }
  engine->start();

  sc.model_path = model_dir;
  sc.tokenizer_path = tok_dir;
  sc.model_type = model->config().model_type;
  sc.architectures = read_architectures(model_dir);
  sc.context_len = engine->config().context_len;
  sc.vocab_size = model->config().vocab_size;
  sc.server_args = {{"tp_size", tp_size},
                    {"dp_size", 1},
                    {"pp_size", 1},
                    {"ep_size", 1},
                    {"moe_dp_size", 1},
                    {"num_gpus", dev == Device::cuda ? tp_size : 0},
                    {"disaggregation_mode", "null"},
                    {"disaggregation_bootstrap_port", 8998},
                    {"encoder_only", false},
                    {"host", sc.http.host},
                    {"port", sc.http.port},
                    {"page_size", ec.page_size},
                    {"kv_cache_dtype", ec.kv_cache_dtype},
                    {"device", device},
                    {"dtype", bf16 ? "bfloat16" : "float32"},
                    {"cuda_graph_max_bs", ec.cuda_graph_max_bs},
                    {"disable_cuda_graph", ec.cuda_graph_max_bs == 0},
                    {"disable_overlap_schedule", !ec.decode_look_ahead},
                    {"max_running_requests", ec.max_running_requests},
                    {"chunked_prefill_size", ec.max_num_batched_tokens},
                    {"random_seed", ec.random_seed},
                    {"stream_interval", ec.stream_interval},
                    {"disable_radix_cache", no_cache},
                    {"enable_metrics", true},
                    {"skip_server_warmup", true},
                    {"skip_tokenizer_init", skip_tokenizer},
                    {"tool_call_parser", sc.tool_call_parser},
                    {"reasoning_parser", sc.reasoning_parser},
                    {"incremental_streaming_output", false}};
  model::CausalLM* m = model.get();
  serve::ApiServer server(sc, engine, tok, tmpl,
                          [m](const std::string& dir) { m->load_weights(dir); });
  server.start();
  std::printf("gyre serve: listening on http://%s:%d\n", sc.http.host.c_str(), server.port());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  log::info("serve: signal {}, shutting down", sig);
  server.stop();  // finishes a weight reload in progress (the control thread) first
  if (tp_leader)
    tp_leader->stop();  // the engine tells the followers to stop: they exit 0
  else
    engine->stop();
  return 0;
}

}  // namespace

GYRE_COMMAND(serve, "serve a model over HTTP (SGLang-native + OpenAI APIs)", run_serve);
