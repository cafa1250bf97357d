// SGLang /generate request parsing and response rendering (native_api.h).
#include "gyre/serve/native_api.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <set>

#include "gyre/core/logging.h"
#include "gyre/serve/request_json.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::serve {

using infer::FinishType;
using infer::GenerateRequest;
using infer::GenerateResult;
using infer::SamplingParams;

namespace {

// Constrained decoding, multimodal input and other features this engine does not implement: a
// request that relies on them must fail loudly rather than get unconstrained output.
constexpr const char* kUnsupportedSampling[] = {
    "json_schema", "regex", "ebnf", "structural_tag", "logit_bias", "stop_regex", "custom_params"};
// The rest of SGLang's SamplingParams keys: what parse_sampling_params (and `gyre generate`) read.
constexpr const char* kSupportedSampling[] = {"max_new_tokens",
                                              "min_new_tokens",
                                              "temperature",
                                              "top_p",
                                              "top_k",
                                              "min_p",
                                              "frequency_penalty",
                                              "presence_penalty",
                                              "repetition_penalty",
                                              "n",
                                              "sampling_seed",
                                              "stop",
                                              "stop_token_ids",
                                              "ignore_eos",
                                              "no_stop_trim",
                                              "skip_special_tokens",
                                              "spaces_between_special_tokens",
                                              "stream_interval"};
constexpr const char* kUnsupportedTop[] = {
    "input_embeds", "image_data",     "video_data",        "audio_data",
    "lora_path",    "session_params", "token_ids_logprob", "custom_logit_processor"};
// The top-level fields parse_generate reads.
constexpr const char* kGenerateFields[] = {
    "text",           "input_ids",         "sampling_params",  "rid",
    "return_logprob", "logprob_start_len", "top_logprobs_num", "return_text_in_logprobs",
    "stream",         "priority"};
// The other GenerateReqInput fields of reference/sglang-api.md §1.1, accepted without effect:
// routing and PD-disaggregation hints that routers inject, session identity, logging/tracing
// options, and extra outputs this engine does not produce. Any other field is accepted too (as
// SGLang does) but named once in the server log (parse_generate).
// Extra outputs this engine does not produce: accepted when false (clients send the default), a
// 400 when true — the client would otherwise wait for data that never comes.
constexpr const char* kUnproducedOutputs[] = {"return_hidden_states", "return_routed_experts",
                                              "return_entropy", "return_prompt_token_ids"};
constexpr const char* kIgnoredTop[] = {"session_id",
                                       "return_hidden_states",
                                       "return_routed_experts",
                                       "routed_experts_start_len",
                                       "bootstrap_host",
                                       "bootstrap_port",
                                       "bootstrap_room",
                                       "routed_dp_rank",
                                       "data_parallel_rank",
                                       "disagg_prefill_dp_rank",
                                       "extra_key",
                                       "cache_salt",
                                       "routing_key",
                                       "conversation_id",
                                       "require_reasoning",
                                       "return_entropy",
                                       "return_prompt_token_ids",
                                       "log_metrics",
                                       "custom_labels",
                                       "modalities"};

template <size_t N>
bool in_list(const char* const (&list)[N], std::string_view key) {
  return std::find(std::begin(list), std::end(list), key) != std::end(list);
}

template <size_t N>
std::string join(const char* const (&list)[N]) {
  std::string out;
  for (const char* k : list) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

float as_float(double d) { return static_cast<float>(d); }

void warn_unknown_field_once(const std::string& key) {
  static std::mutex mu;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mu);
  if (warned.size() >= 256 || !warned.insert(key).second)
    return;  // bounded: keys come from clients
  log::warn(
      "/generate: ignoring field \"{}\", which is not a /generate field (known: {}; accepted "
      "without effect: {})",
      key, join(kGenerateFields), join(kIgnoredTop));
}

}  // namespace

bool is_sampling_param_key(std::string_view key) {
  return in_list(kSupportedSampling, key) || in_list(kUnsupportedSampling, key);
}

bool is_unsupported_sampling_param_key(std::string_view key) {
  return in_list(kUnsupportedSampling, key);
}

std::string supported_sampling_param_keys() { return join(kSupportedSampling); }

SamplingParams parse_sampling_params(const json& sp, const std::string& path, SamplingParams s) {
  if (!sp.is_object()) bad_field(path, fmt::format("must be an object, got {}", json_type(sp)));
  auto p = [&](const char* k) { return path + "." + k; };
  for (auto it = sp.begin(); it != sp.end(); ++it)
    if (!is_sampling_param_key(it.key()))
      bad_field(path + "." + it.key(),
                fmt::format("is not a sampling parameter (SGLang rejects unknown keys too); "
                            "known: {}",
                            supported_sampling_param_keys()));
  for (const char* k : kUnsupportedSampling)
    if (field(sp, k))
      bad_field(p(k),
                "is not supported by this server (no constrained decoding / logit bias / "
                "custom params); remove it");
  if (auto v = opt_number(sp, "temperature", p("temperature"))) s.temperature = as_float(*v);
  if (auto v = opt_number(sp, "top_p", p("top_p"))) s.top_p = as_float(*v);
  if (auto v = opt_int(sp, "top_k", p("top_k"), INT32_MIN, INT32_MAX)) s.top_k = int32_t(*v);
  if (auto v = opt_number(sp, "min_p", p("min_p"))) s.min_p = as_float(*v);
  if (auto v = opt_number(sp, "repetition_penalty", p("repetition_penalty")))
    s.repetition_penalty = as_float(*v);
  if (auto v = opt_number(sp, "presence_penalty", p("presence_penalty")))
    s.presence_penalty = as_float(*v);
  if (auto v = opt_number(sp, "frequency_penalty", p("frequency_penalty")))
    s.frequency_penalty = as_float(*v);
  if (auto v = opt_int(sp, "max_new_tokens", p("max_new_tokens"), 0, INT32_MAX))
    s.max_new_tokens = int32_t(*v);
  if (auto v = opt_int(sp, "min_new_tokens", p("min_new_tokens"), 0, INT32_MAX))
    s.min_new_tokens = int32_t(*v);
  if (auto v = opt_int(sp, "n", p("n"), 1, 1024)) s.n = int32_t(*v);
  // The engine's seeds are 64-bit unsigned (Philox keys; gyre's rollout manager derives them from
  // --seed over the whole range), so a seed above INT64_MAX is valid here.
  if (const json* v = field(sp, "sampling_seed"); v && v->is_number_unsigned())
    s.seed = v->get<uint64_t>();
  else if (auto v = opt_int(sp, "sampling_seed", p("sampling_seed"), 0, INT64_MAX))
    s.seed = uint64_t(*v);
  if (auto v = opt_string_or_list(sp, "stop", p("stop"))) {
    s.stop.clear();
    for (auto& x : *v)
      if (!x.empty()) s.stop.push_back(std::move(x));  // OpenAI clients send "" for "none"
  }
  if (const json* v = field(sp, "stop_token_ids"))
    s.stop_token_ids = int_list(*v, p("stop_token_ids"), 0, INT32_MAX);
  if (auto v = opt_bool(sp, "ignore_eos", p("ignore_eos"))) s.ignore_eos = *v;
  if (auto v = opt_bool(sp, "no_stop_trim", p("no_stop_trim"))) s.no_stop_trim = *v;
  if (auto v = opt_bool(sp, "skip_special_tokens", p("skip_special_tokens")))
    s.skip_special_tokens = *v;
  // Type-checked but without effect here: the detokenizer never inserts spaces between special
  // tokens (slime sends false), and chunks follow the server's --stream-interval.
  opt_bool(sp, "spaces_between_special_tokens", p("spaces_between_special_tokens"));
  opt_int(sp, "stream_interval", p("stream_interval"), 1, INT32_MAX);
  return s;
}

GenerateCall parse_generate(const json& body, const tokenizer::Tokenizer* tok) {
  if (!body.is_object())
    bad_request(fmt::format("request body must be a JSON object, got {}", json_type(body)));
  for (const char* k : kUnsupportedTop)
    if (field(body, k))
      bad_field(k,
                "is not supported by this server (text-only engine without LoRA, sessions or "
                "custom logit processors); remove it");
  for (const char* k : kUnproducedOutputs)
    if (const json* v = field(body, k); v && v->is_boolean() && v->get<bool>())
      bad_field(k,
                "is not supported by this server (it cannot return that output); remove it or "
                "set it to false");
  // A field outside SGLang's GenerateReqInput is accepted, as SGLang's HTTP layer accepts it (its
  // request dataclass ignores extra fields, so routers and clients may send newer ones), but the
  // server log names it once: a misspelt field ("return_logprobs") must not pass unseen.
  for (auto it = body.begin(); it != body.end(); ++it)
    if (!in_list(kGenerateFields, it.key()) && !in_list(kUnsupportedTop, it.key()) &&
        !in_list(kIgnoredTop, it.key()))
      warn_unknown_field_once(it.key());
  const json* text = field(body, "text");
  const json* ids = field(body, "input_ids");
  if (text && ids) bad_request("give exactly one of \"text\" or \"input_ids\", not both");
  if (!text && !ids) bad_request("missing prompt: give \"text\" or \"input_ids\"");

  GenerateCall call;
  std::vector<std::vector<int32_t>> prompts;
  if (ids) {
    if (!ids->is_array()) bad_field("input_ids", "must be a list of token ids or a list of lists");
    if (ids->empty()) bad_field("input_ids", "is empty: a prompt needs at least one token");
    if ((*ids)[0].is_array()) {
      call.batch = true;
      for (size_t i = 0; i < ids->size(); ++i) {
        std::string path = fmt::format("input_ids[{}]", i);
        prompts.push_back(int_list((*ids)[i], path, 0, INT32_MAX));
        if (prompts.back().empty()) bad_field(path, "is empty: a prompt needs at least one token");
      }
    } else {
      prompts.push_back(int_list(*ids, "input_ids", 0, INT32_MAX));
    }
  } else {
    std::vector<std::string> texts;
    if (text->is_string()) {
      texts.push_back(text->get<std::string>());
    } else if (text->is_array()) {
      call.batch = true;
      if (text->empty()) bad_field("text", "is an empty list");
      for (size_t i = 0; i < text->size(); ++i) {
        if (!(*text)[i].is_string())
          bad_field(fmt::format("text[{}]", i),
                    fmt::format("must be a string, got {}", json_type((*text)[i])));
        texts.push_back((*text)[i].get<std::string>());
      }
    } else {
      bad_field("text",
                fmt::format("must be a string or a list of strings, got {}", json_type(*text)));
    }
    if (!tok)
      bad_field("text",
                "this server has no tokenizer (started with --skip-tokenizer-init or a model "
                "folder without tokenizer.json): send \"input_ids\" instead");
    // SGLang's tokenizer manager encodes /generate text with the tokenizer's special tokens.
    for (const auto& t : texts) prompts.push_back(tok->encode(t, true));
    for (size_t i = 0; i < prompts.size(); ++i)
      if (prompts[i].empty())
        bad_field(call.batch ? fmt::format("text[{}]", i) : "text",
                  "encodes to no tokens: a prompt needs at least one token");
  }

  const size_t P = prompts.size();
  std::vector<SamplingParams> sps(P);
  if (const json* sp = field(body, "sampling_params")) {
    if (sp->is_array()) {
      if (sp->size() != P)
        bad_field("sampling_params",
                  fmt::format("has {} entries but there are {} prompts", sp->size(), P));
      for (size_t i = 0; i < P; ++i)
        sps[i] = parse_sampling_params((*sp)[i], fmt::format("sampling_params[{}]", i));
    } else {
      SamplingParams s = parse_sampling_params(*sp, "sampling_params");
      for (auto& x : sps) x = s;
    }
  }
  call.n = sps[0].n;
  for (size_t i = 1; i < P; ++i)
    if (sps[i].n != call.n)
      bad_field(fmt::format("sampling_params[{}].n", i),
                "must be the same for every prompt of a batch");
  if (call.n > 1) call.batch = true;  // SGLang: n > 1 turns the response into a list

  std::vector<std::string> rids(P);
  if (const json* r = field(body, "rid")) {
    if (r->is_string()) {
      // SGLang: a string rid of a batch becomes "{rid}_{i}".
      for (size_t i = 0; i < P; ++i)
        rids[i] = call.batch && P > 1 ? fmt::format("{}_{}", r->get<std::string>(), i)
                                      : r->get<std::string>();
    } else if (r->is_array()) {
      if (r->size() != P)
        bad_field("rid", fmt::format("has {} entries but there are {} prompts", r->size(), P));
      for (size_t i = 0; i < P; ++i) {
        if (!(*r)[i].is_string()) bad_field(fmt::format("rid[{}]", i), "must be a string");
        rids[i] = (*r)[i].get<std::string>();
      }
    } else {
      bad_field("rid", fmt::format("must be a string or a list of strings, got {}", json_type(*r)));
    }
  }

  call.return_logprob = opt_bool(body, "return_logprob", "return_logprob").value_or(false);
  call.stream = opt_bool(body, "stream", "stream").value_or(false);
  call.return_text_in_logprobs =
      opt_bool(body, "return_text_in_logprobs", "return_text_in_logprobs").value_or(false);
  int32_t start =
      int32_t(opt_int(body, "logprob_start_len", "logprob_start_len", -1, INT32_MAX).value_or(-1));
  int32_t top =
      int32_t(opt_int(body, "top_logprobs_num", "top_logprobs_num", 0, INT32_MAX).value_or(0));
  int32_t priority =
      int32_t(opt_int(body, "priority", "priority", INT32_MIN, INT32_MAX).value_or(0));
  if (!call.return_logprob) start = -1, top = 0;  // SGLang only reports them with return_logprob
  for (size_t i = 0; i < P; ++i) {
    if (start >= int32_t(prompts[i].size()))
      bad_field("logprob_start_len",
                fmt::format("= {} must be -1 or less than the prompt length ({} tokens)", start,
                            prompts[i].size()));
    GenerateRequest r;
    r.rid = std::move(rids[i]);
    r.input_ids = std::move(prompts[i]);
    r.sampling = std::move(sps[i]);
    r.return_logprob = call.return_logprob;
    r.logprob_start_len = start;
    r.top_logprobs_num = top;
    r.stream = call.stream;
    r.priority = priority;
    call.requests.push_back(std::move(r));
  }
  return call;
}

json finish_reason_json(const infer::FinishReason& f, int32_t completion_tokens) {
  switch (f.type) {
    case FinishType::none: return nullptr;
    case FinishType::stop: {
      json j{{"type", "stop"}};
      if (f.matched_str)
        j["matched"] = *f.matched_str;
      else if (f.matched_token)
        j["matched"] = *f.matched_token;
      else
        j["matched"] = nullptr;
      return j;
    }
    case FinishType::length: return json{{"type", "length"}, {"length", completion_tokens}};
    case FinishType::abort:
      return json{{"type", "abort"},
                  {"message", f.message},
                  {"status_code", nullptr},
                  {"err_type", nullptr}};
  }
  return nullptr;
}

namespace {

json token_text(const ResultFormat& f, int32_t id) {
  if (!f.text_in_logprobs || !f.tok) return nullptr;
  return f.tok->decode({id}, false);
}

json lp_value(float lp) { return std::isfinite(lp) ? json(lp) : json(nullptr); }

json top_list(const ResultFormat& f, const std::vector<std::vector<infer::TopLogprob>>& top) {
  json out = json::array();
  for (const auto& pos : top) {
    if (pos.empty()) {
      out.push_back(nullptr);
      continue;
    }
    json p = json::array();
    for (const auto& t : pos)
      p.push_back({lp_value(t.logprob), t.token_id, token_text(f, t.token_id)});
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

json generate_result_json(const GenerateResult& r, const ResultFormat& f, bool finished) {
  json out = json::object();
  out["text"] = r.text;
  out["output_ids"] = r.output_ids;
  json meta = json::object();
  meta["id"] = r.rid;
  int32_t completion = finished ? r.completion_tokens : int32_t(r.output_ids.size());
  meta["finish_reason"] = finished ? finish_reason_json(r.finish, completion) : json(nullptr);
  meta["prompt_tokens"] = r.prompt_tokens;
  meta["completion_tokens"] = completion;
  meta["cached_tokens"] = r.cached_tokens;
  meta["weight_version"] = f.weight_version;
  if (finished) meta["e2e_latency"] = r.e2e_latency;
  if (f.return_logprob) {
    json lp = json::array();
    for (size_t i = 0; i < r.output_ids.size(); ++i) {
      float v = i < r.output_logprobs.size() ? r.output_logprobs[i] : NAN;
      lp.push_back({lp_value(v), r.output_ids[i], token_text(f, r.output_ids[i])});
    }
    meta["output_token_logprobs"] = std::move(lp);
    if (f.top_logprobs_num > 0) meta["output_top_logprobs"] = top_list(f, r.output_top_logprobs);
    if (f.logprob_start_len >= 0 && f.input_ids) {
      json in = json::array();
      for (size_t i = 0; i < r.input_logprobs.size(); ++i) {
        size_t pos = size_t(f.logprob_start_len) + i;
        int32_t id = pos < f.input_ids->size() ? (*f.input_ids)[pos] : -1;
        in.push_back({lp_value(r.input_logprobs[i]), id, token_text(f, id)});
      }
      meta["input_token_logprobs"] = std::move(in);
      if (f.top_logprobs_num > 0) meta["input_top_logprobs"] = top_list(f, r.input_top_logprobs);
    }
  }
  out["meta_info"] = std::move(meta);
  return out;
}

void accumulate_chunk(GenerateResult& acc, const infer::TokenChunk& c) {
  acc.output_ids.insert(acc.output_ids.end(), c.output_ids.begin(), c.output_ids.end());
  acc.output_logprobs.insert(acc.output_logprobs.end(), c.output_logprobs.begin(),
                             c.output_logprobs.end());
  acc.output_top_logprobs.insert(acc.output_top_logprobs.end(), c.output_top_logprobs.begin(),
                                 c.output_top_logprobs.end());
  acc.text += c.text;
  acc.completion_tokens = int32_t(acc.output_ids.size());
}

std::string sse_event(const json& j) {
  std::string s = "data: ";
  s += dump_json(j);
  s += "\n\n";
  return s;
}

}  // namespace gyre::serve
