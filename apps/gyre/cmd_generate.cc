// `gyre generate --model DIR [--tokenizer DIR] --input prompts.jsonl --output out.jsonl
//  [--max-running-requests N] [--page-size P] [--num-pages N] ...`: offline batch generation with
// the rollout engine (continuous batching, paged KV, radix prefix cache).
// Input lines: {"text": "..."} or {"input_ids": [...]}, plus optional "sampling_params" (SGLang
// keys, the list /generate checks too: serve::is_sampling_param_key; an unknown key is an error, as
// SGLang's SamplingParams(**dict)), "rid", "return_logprob", "logprob_start_len",
// "top_logprobs_num". Output: one line per sample (n > 1: n lines, in order), shaped like SGLang's
// /generate response: {"text", "output_ids", "meta_info": {"id", "finish_reason", "prompt_tokens",
// "completion_tokens", "cached_tokens", "weight_version", "e2e_latency", "output_token_logprobs":
// [[logprob, id, null], ...] when return_logprob}}; a rejected request gives {"error":
// {"message"}, "meta_info": {"id"}} and the others still run.
// Exit status: 0 when every request succeeded; 1 when any failed (every output line is still
// written, and stderr says how many failed and the first error); 2 when a malformed line (not
// JSON, no prompt, wrong types) stops before any generation, naming FILE:LINE. Progress goes to
// stderr, then one throughput line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/core/timer.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"
#include "gyre/serve/native_api.h"
#include "gyre/tokenizer/tokenizer.h"

using nlohmann::json;
using namespace gyre;
using namespace gyre::infer;

namespace {

struct Ctx {
  std::string path;
  int64_t line;
};

[[noreturn]] void bad(const Ctx& c, const std::string& what) {
  GYRE_THROW(invalid_argument, "{}:{}: {}", c.path, c.line, what);
}

template <typename T>
T get_num(const Ctx& c, const json& v, const std::string& key) {
  if (v.is_null()) bad(c, fmt::format("\"{}\" is null; omit it for the default", key));
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())
      bad(c, fmt::format("\"{}\" must be an integer, got {}", key, v.dump()));
    // In T's range, or it would wrap (4294967299 tokens running as 3).
    bool in_range;
    if (v.is_number_unsigned()) {
      in_range = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
    } else {
      const int64_t x = v.get<int64_t>();
      if constexpr (std::is_signed_v<T>)
        in_range = x >= int64_t(std::numeric_limits<T>::min()) &&
                   x <= int64_t(std::numeric_limits<T>::max());
      else
        in_range = x >= 0;
    }
    if (!in_range)
      bad(c, fmt::format("\"{}\" = {} is outside [{}, {}]", key, v.dump(),
                         std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
  } else {
    if (!v.is_number()) bad(c, fmt::format("\"{}\" must be a number, got {}", key, v.dump()));
  }
  return v.get<T>();
}

SamplingParams parse_sampling(const Ctx& c, const json& j) {
  SamplingParams sp;
  if (!j.is_object()) bad(c, "\"sampling_params\" must be an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    // "seed": gyre generate's own older spelling of sampling_seed, kept for existing input files.
    if (k != "seed" && !serve::is_sampling_param_key(k))
      bad(c, fmt::format("unknown sampling_params key \"{}\" (SGLang rejects unknown keys too); "
                         "known keys: {}",
                         k, serve::supported_sampling_param_keys()));
    if (v.is_null()) continue;  // SGLang: null means default
    if (serve::is_unsupported_sampling_param_key(k))
      bad(c, fmt::format("sampling_params key \"{}\" is not supported by gyre (no constrained "
                         "decoding, logit bias or custom params); remove it",
                         k));
    if (k == "temperature")
      sp.temperature = get_num<float>(c, v, k);
    else if (k == "top_p")
      sp.top_p = get_num<float>(c, v, k);
    else if (k == "top_k")
      sp.top_k = get_num<int32_t>(c, v, k);
    else if (k == "min_p")
      sp.min_p = get_num<float>(c, v, k);
    else if (k == "repetition_penalty")
      sp.repetition_penalty = get_num<float>(c, v, k);
    else if (k == "presence_penalty")
      sp.presence_penalty = get_num<float>(c, v, k);
    else if (k == "frequency_penalty")
      sp.frequency_penalty = get_num<float>(c, v, k);
    else if (k == "max_new_tokens")
      sp.max_new_tokens = get_num<int32_t>(c, v, k);
    else if (k == "min_new_tokens")
      sp.min_new_tokens = get_num<int32_t>(c, v, k);
    else if (k == "n")
      sp.n = get_num<int32_t>(c, v, k);
    else if (k == "sampling_seed" || k == "seed")
      sp.seed = get_num<uint64_t>(c, v, k);
    else if (k == "ignore_eos" || k == "no_stop_trim" || k == "skip_special_tokens") {
      if (!v.is_boolean()) bad(c, fmt::format("\"{}\" must be true or false", k));
      (k == "ignore_eos"     ? sp.ignore_eos
       : k == "no_stop_trim" ? sp.no_stop_trim
                             : sp.skip_special_tokens) = v.get<bool>();
    } else if (k == "stop") {
      if (v.is_string())
        sp.stop = {v.get<std::string>()};
      else if (v.is_array()) {
        for (const auto& s : v) {
          if (!s.is_string()) bad(c, "\"stop\" must be a string or a list of strings");
          sp.stop.push_back(s.get<std::string>());
        }
      } else
        bad(c, "\"stop\" must be a string or a list of strings");
    } else if (k == "stop_token_ids") {
      if (!v.is_array()) bad(c, "\"stop_token_ids\" must be a list of token ids");
      for (const auto& t : v) sp.stop_token_ids.push_back(get_num<int32_t>(c, t, k));
    } else if (k == "spaces_between_special_tokens" || k == "stream_interval") {
      // detokenization / streaming knobs with no effect on offline output
    } else {
      bad(c, fmt::format("sampling_params key \"{}\" is not supported by gyre generate", k));
    }
  }
  return sp;
}

std::vector<GenerateRequest> read_input(const std::string& path, const tokenizer::Tokenizer* tok) {
  std::ifstream f(path);
  if (!f) GYRE_THROW(not_found, "cannot open --input {}", path);
  std::vector<GenerateRequest> reqs;
  std::string line;
  for (int64_t lineno = 1; std::getline(f, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    Ctx c{path, lineno};
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      bad(c, "not a JSON object; expected {\"text\": ...} or {\"input_ids\": [...]}");
    GenerateRequest r;
    if (j.contains("input_ids")) {
      if (!j["input_ids"].is_array()) bad(c, "\"input_ids\" must be a list of token ids");
      const json& ids = j["input_ids"];
      for (size_t k = 0; k < ids.size(); ++k) {
        const json& t = ids[k];
        if (!t.is_number_integer())
          bad(c, fmt::format("input_ids holds {}, not a token id", t.dump()));
        // Beyond int32 no id can be valid, and narrowing would hide the value: stop here. Ids
        // within int32 but outside the vocabulary are the engine's per-request error.
        const bool fits = t.is_number_unsigned()
                              ? t.get<uint64_t>() <= uint64_t(INT32_MAX)
                              : t.get<int64_t>() >= INT32_MIN && t.get<int64_t>() <= INT32_MAX;
        if (!fits)
          bad(c, fmt::format("input_ids[{}] = {} is not a token id (outside the int32 range)", k,
                             t.dump()));
        r.input_ids.push_back(int32_t(t.get<int64_t>()));
      }
    } else if (j.contains("text")) {
      if (!j["text"].is_string()) bad(c, "\"text\" must be a string");
      if (!tok)
        bad(c, "a \"text\" prompt needs a tokenizer: pass --tokenizer DIR (or give input_ids)");
      r.input_ids = tok->encode(j["text"].get<std::string>(), true);
    } else {
      bad(c, "no prompt: give \"text\" or \"input_ids\"");
    }
    if (j.contains("sampling_params")) r.sampling = parse_sampling(c, j["sampling_params"]);
    if (j.contains("rid")) {
      if (!j["rid"].is_string()) bad(c, "\"rid\" must be a string");
      r.rid = j["rid"].get<std::string>();
    } else {
      r.rid = fmt::format("line{}", lineno);
    }
    if (j.contains("return_logprob")) {
      if (!j["return_logprob"].is_boolean()) bad(c, "\"return_logprob\" must be true or false");
      r.return_logprob = j["return_logprob"].get<bool>();
    }
    if (j.contains("logprob_start_len"))
      r.logprob_start_len = get_num<int32_t>(c, j["logprob_start_len"], "logprob_start_len");
    if (j.contains("top_logprobs_num"))
      r.top_logprobs_num = get_num<int32_t>(c, j["top_logprobs_num"], "top_logprobs_num");
    reqs.push_back(std::move(r));
  }
  return reqs;
}

json finish_json(const FinishReason& f, int32_t completion) {
  json j;
  j["type"] = finish_type_name(f.type);
  if (f.matched_token) j["matched"] = *f.matched_token;
  if (f.matched_str) j["matched"] = *f.matched_str;
  if (f.type == FinishType::length) j["length"] = completion;
  if (f.type == FinishType::abort) j["message"] = f.message;
  return j;
}

json result_json(const GenerateResult& r, bool with_logprobs) {
  json out;
  json meta;
  meta["id"] = r.rid;
  if (!r.error.empty()) {
    out["error"] = {{"message", r.error}};
    out["meta_info"] = meta;
    return out;
  }
  out["text"] = r.text;
  out["output_ids"] = r.output_ids;
  meta["finish_reason"] = finish_json(r.finish, r.completion_tokens);
  meta["prompt_tokens"] = r.prompt_tokens;
  meta["completion_tokens"] = r.completion_tokens;
  meta["cached_tokens"] = r.cached_tokens;
  meta["weight_version"] = std::to_string(r.weight_version);
  meta["e2e_latency"] = r.e2e_latency;
  if (with_logprobs) {
    json lp = json::array();
    for (size_t i = 0; i < r.output_ids.size(); ++i)
      lp.push_back({r.output_logprobs[i], r.output_ids[i], nullptr});
    meta["output_token_logprobs"] = lp;
    if (!r.input_logprobs.empty()) {
      json in = json::array();
      for (float x : r.input_logprobs) in.push_back(std::isnan(x) ? json(nullptr) : json(x));
      meta["input_token_logprobs"] = in;
    }
  }
  out["meta_info"] = meta;
  return out;
}

int run_generate(int argc, char** argv) {
  CLI::App app{"Generate completions for a JSONL file of prompts with the rollout engine"};
  app.footer(
      "Exit status: 0 all requests succeeded; 1 some requests failed (every output line is still "
      "written; a failed one carries \"error\", and stderr names the first); 2 a malformed "
      "input line or another error before generation (nothing generated).");
  std::string model_dir, tok_dir, input, output;
  EngineConfig cfg;
  app.add_option("--model", model_dir, "Hugging Face model folder")->required();
  app.add_option("--tokenizer", tok_dir,
                 "tokenizer folder (default: the model folder if it has "
                 "tokenizer.json)");
  app.add_option("--input", input, "prompts JSONL")->required();
  app.add_option("--output", output, "results JSONL")->required();
  app.add_option("--max-running-requests", cfg.max_running_requests, "concurrent requests");
  app.add_option("--page-size", cfg.page_size, "KV page size in tokens");
  app.add_option("--num-pages", cfg.num_pages, "KV pool size in pages");
  app.add_option("--max-num-batched-tokens", cfg.max_num_batched_tokens,
                 "token budget per step (chunked prefill size)");
  app.add_option("--context-length", cfg.context_len, "max prompt + output tokens");
  app.add_option("--random-seed", cfg.random_seed, "seed for requests without sampling_seed");
  bool no_cache = false;
  app.add_flag("--disable-radix-cache", no_cache, "turn off prefix caching");
  CLI11_PARSE(app, argc, argv);
  cfg.enable_prefix_cache = !no_cache;

  std::shared_ptr<const tokenizer::Tokenizer> tok;
  if (!tok_dir.empty()) {
    tok = tokenizer::Tokenizer::from_dir(tok_dir);
  } else if (std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json")) {
    tok = tokenizer::Tokenizer::from_dir(model_dir);
  }
  std::vector<GenerateRequest> reqs = read_input(input, tok.get());
  std::vector<bool> want_lp;
  for (const auto& r : reqs)
    for (int i = 0; i < std::max(1, r.sampling.n); ++i) want_lp.push_back(r.return_logprob);
  std::ofstream out(output);
  if (!out) GYRE_THROW(io, "cannot write --output {}", output);

  auto model = model::CausalLM::load(model_dir);
  Engine engine(*model, tok, cfg);
  int64_t total = int64_t(want_lp.size()), done = 0, gen_tokens = 0, prompt_tokens = 0, cached = 0,
          errors = 0;
  std::vector<std::optional<GenerateResult>> results(want_lp.size());
  std::vector<size_t> first_slot;
  size_t slot = 0;
  for (auto& r : reqs) {
    size_t base = slot;
    slot += size_t(std::max(1, r.sampling.n));
    RequestCallbacks cb;
    cb.on_done = [&, base](GenerateResult&& res) {
      ++done;
      gen_tokens += res.completion_tokens;
      prompt_tokens += res.prompt_tokens;
      cached += res.cached_tokens;
      if (!res.error.empty()) ++errors;
      results[base + size_t(res.index)] = std::move(res);
    };
    engine.submit(std::move(r), std::move(cb));
  }
  Timer timer;
  double last_report = 0;
  while (engine.step()) {
    if (timer.elapsed() - last_report >= 1.0) {
      last_report = timer.elapsed();
      std::fprintf(stderr, "\rgenerate: %lld/%lld done, %lld tokens, %.1f tok/s   ",
                   (long long)done, (long long)total, (long long)gen_tokens,
                   gen_tokens / std::max(1e-9, timer.elapsed()));
    }
  }
  std::string first_error;
  for (size_t i = 0; i < results.size(); ++i) {
    GYRE_CHECK(results[i].has_value(), "result {} missing", i);
    if (first_error.empty() && !results[i]->error.empty())
      first_error = fmt::format("{}: {}", results[i]->rid, results[i]->error);
    out << result_json(*results[i], want_lp[i]).dump() << '\n';
  }
  out.flush();
  if (!out) GYRE_THROW(io, "writing --output {} failed", output);
  double secs = timer.elapsed();
  std::fprintf(stderr,
               "\rgenerate: %lld requests (%lld rejected), %lld prompt tokens (%lld from cache), "
               "%lld output tokens in %.2f s: %.1f output tok/s\n",
               (long long)total, (long long)errors, (long long)prompt_tokens, (long long)cached,
               (long long)gen_tokens, secs, gen_tokens / std::max(1e-9, secs));
  // Failed requests are data, not a crash: all lines are written above, but a script must not
  // read exit 0 as "everything generated".
  if (errors > 0) {
    std::fprintf(stderr,
                 "gyre generate: %lld of %lld requests failed (their output lines carry "
                 "\"error\"); first: %s\n",
                 (long long)errors, (long long)total, first_error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

GYRE_COMMAND(generate, "generate completions for a JSONL file of prompts (rollout engine)",
             run_generate);
