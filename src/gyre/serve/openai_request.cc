// OpenAI request parsing: chat messages -> chat template -> token ids, sampling fields (OpenAI
// names plus SGLang's extra_body extensions) -> SamplingParams (openai_api.h). Unlike /generate,
// unknown top-level fields are ignored: OpenAI clients send many (user, store, metadata, ...) and
// SGLang's pydantic request models ignore extras too.
#include <algorithm>

#include "gyre/serve/native_api.h"
#include "gyre/serve/openai_api.h"
#include "gyre/serve/request_json.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::serve {

using ojson = nlohmann::ordered_json;
using infer::GenerateRequest;
using infer::SamplingParams;

void check_parser_names(const std::string& tool, const std::string& reasoning) {
  static const char* kTools[] = {"", "hermes", "qwen25", "qwen3"};
  static const char* kReasoning[] = {
      "", "qwen3", "qwen3-thinking", "deepseek-r1", "deepseek-v3", "glm45", "kimi"};
  if (std::find(std::begin(kTools), std::end(kTools), tool) == std::end(kTools))
    GYRE_THROW(invalid_argument,
               "--tool-call-parser '{}' is not supported; supported: hermes, qwen25, qwen3 "
               "(<tool_call>{{json}}</tool_call>)",
               tool);
  if (std::find(std::begin(kReasoning), std::end(kReasoning), reasoning) == std::end(kReasoning))
    GYRE_THROW(invalid_argument,
               "--reasoning-parser '{}' is not supported; supported: qwen3, qwen3-thinking, "
               "deepseek-r1, deepseek-v3, glm45, kimi (all <think>...</think>)",
               reasoning);
}

namespace {

// Sampling fields shared by chat and completions (OpenAI names + SGLang extensions).
SamplingParams parse_openai_sampling(const json& b) {
  SamplingParams s;
  for (const char* k : {"regex", "ebnf", "json_schema", "structural_tag", "stop_regex"})
    if (field(b, k)) bad_field(k, "constrained decoding is not supported by this server");
  if (const json* lb = field(b, "logit_bias"); lb && !(lb->is_object() && lb->empty()))
    bad_field("logit_bias", "is not supported by this server; remove it");
  if (const json* rf = field(b, "response_format")) {
    if (!rf->is_object()) bad_field("response_format", "must be an object");
    auto t = opt_string(*rf, "type", "response_format.type");
    if (t && *t != "text")
      bad_field("response_format.type",
                fmt::format("'{}' needs constrained decoding, which this server does not "
                            "support; use \"text\"",
                            *t));
  }
  if (auto v = opt_number(b, "temperature", "temperature")) s.temperature = float(*v);
  if (auto v = opt_number(b, "top_p", "top_p")) s.top_p = float(*v);
  if (auto v = opt_int(b, "top_k", "top_k", INT32_MIN, INT32_MAX)) s.top_k = int32_t(*v);
  if (auto v = opt_number(b, "min_p", "min_p")) s.min_p = float(*v);
  if (auto v = opt_number(b, "frequency_penalty", "frequency_penalty"))
    s.frequency_penalty = float(*v);
  if (auto v = opt_number(b, "presence_penalty", "presence_penalty"))
    s.presence_penalty = float(*v);
  if (auto v = opt_number(b, "repetition_penalty", "repetition_penalty"))
    s.repetition_penalty = float(*v);
  if (auto v = opt_int(b, "min_tokens", "min_tokens", 0, INT32_MAX)) s.min_new_tokens = int32_t(*v);
  if (auto v = opt_int(b, "n", "n", 1, 128)) s.n = int32_t(*v);
  if (auto v = opt_int(b, "seed", "seed")) s.seed = uint64_t(*v);  // SGLang: -> sampling_seed
  if (auto v = opt_string_or_list(b, "stop", "stop")) {
    for (auto& x : *v)
      if (!x.empty()) s.stop.push_back(std::move(x));
  }
  if (const json* v = field(b, "stop_token_ids"))
    s.stop_token_ids = int_list(*v, "stop_token_ids", 0, INT32_MAX);
  if (auto v = opt_bool(b, "ignore_eos", "ignore_eos")) s.ignore_eos = *v;
  if (auto v = opt_bool(b, "no_stop_trim", "no_stop_trim")) s.no_stop_trim = *v;
  if (auto v = opt_bool(b, "skip_special_tokens", "skip_special_tokens"))
    s.skip_special_tokens = *v;
  return s;
}

void parse_stream_options(const json& b, OpenAiCall& c) {
  c.stream = opt_bool(b, "stream", "stream").value_or(false);
  if (const json* so = field(b, "stream_options")) {
    if (!so->is_object()) bad_field("stream_options", "must be an object");
    c.include_usage =
        opt_bool(*so, "include_usage", "stream_options.include_usage").value_or(false);
    c.continuous_usage =
        opt_bool(*so, "continuous_usage_stats", "stream_options.continuous_usage_stats")
            .value_or(false);
  }
  c.return_token_ids = opt_bool(b, "return_token_ids", "return_token_ids").value_or(false);
}

// max_tokens defaults: completions 16 (OpenAI), chat "until the context is full" (SGLang).
int32_t resolve_max_tokens(std::optional<int64_t> asked, size_t prompt_len, int64_t context_len,
                           bool chat) {
  int64_t room = context_len - int64_t(prompt_len);
  if (room <= 0 || (asked && int64_t(prompt_len) + *asked > context_len)) {
    bad_field(chat ? "messages" : "prompt",
              fmt::format("the prompt is {} tokens{}, which exceeds the model's context length "
                          "of {} tokens: shorten the prompt{}",
                          prompt_len,
                          asked ? fmt::format(" and max_tokens is {}", *asked) : std::string(),
                          context_len, asked ? " or lower max_tokens" : ""));
  }
  if (asked) return int32_t(*asked);
  return int32_t(chat ? room : std::min<int64_t>(16, room));
}

ojson normalize_content(const ojson& content, const std::string& path) {
  if (content.is_null() || content.is_string()) return content;
  if (!content.is_array()) bad_field(path, "must be a string, null or a list of content parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const ojson& part = content[i];
    std::string pp = fmt::format("{}[{}]", path, i);
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      bad_field(pp, "must be an object with a string \"type\"");
    std::string type = part["type"].get<std::string>();
    if (type != "text")
      bad_field(pp + ".type",
                fmt::format("'{}' parts are not supported (text-only model); send text", type));
    if (!part.contains("text") || !part["text"].is_string())
      bad_field(pp + ".text", "must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

ojson normalize_messages(const ojson& msgs) {
  if (!msgs.is_array() || msgs.empty())
    bad_field("messages", "must be a non-empty list of {\"role\", \"content\"} objects");
  static const char* kRoles[] = {"system", "developer", "user", "assistant", "tool", "function"};
  ojson out = ojson::array();
  for (size_t i = 0; i < msgs.size(); ++i) {
    std::string path = fmt::format("messages[{}]", i);
    const ojson& m = msgs[i];
    if (!m.is_object()) bad_field(path, "must be an object");
    if (!m.contains("role") || !m["role"].is_string())
      bad_field(path + ".role", "is required and must be a string");
    std::string role = m["role"].get<std::string>();
    std::transform(role.begin(), role.end(), role.begin(),
                   [](unsigned char ch) { return char(std::tolower(ch)); });
    if (std::find(std::begin(kRoles), std::end(kRoles), role) == std::end(kRoles))
      bad_field(path + ".role",
                fmt::format("'{}' is not one of system, developer, user, assistant, tool", role));
    ojson nm = ojson::object();
    nm["role"] = role;
    nm["content"] =
        m.contains("content") ? normalize_content(m["content"], path + ".content") : ojson(nullptr);
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (it.key() == "role" || it.key() == "content") continue;
      if (it.key() == "tool_calls" && it->is_array()) {
        // SGLang turns the arguments JSON string back into an object before templating, so
        // templates that `tojson` the arguments print an object, not a quoted string.
        ojson calls = ojson::array();
        for (const auto& tc : *it) {
          ojson c = tc;
          if (c.is_object() && c.contains("function") && c["function"].is_object() &&
              c["function"].contains("arguments") && c["function"]["arguments"].is_string()) {
            auto parsed =
                ojson::parse(c["function"]["arguments"].get<std::string>(), nullptr, false);
            if (!parsed.is_discarded()) c["function"]["arguments"] = parsed;
          }
          calls.push_back(std::move(c));
        }
        nm["tool_calls"] = std::move(calls);
      } else {
        nm[it.key()] = *it;
      }
    }
    out.push_back(std::move(nm));
  }
  return out;
}

std::string rstrip(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

}  // namespace

OpenAiCall parse_chat_request(std::string_view body, const OpenAiContext& ctx) {
  json b = parse_json_object(body);
  ojson ob = ojson::parse(body.begin(), body.end());  // same text; key order kept
  OpenAiCall c;
  c.chat = true;
  c.model = opt_string(b, "model", "model").value_or(ctx.served_model_name);
  SamplingParams sp = parse_openai_sampling(b);
  parse_stream_options(b, c);
  c.logprobs = opt_bool(b, "logprobs", "logprobs").value_or(false);
  c.top_logprobs = int32_t(opt_int(b, "top_logprobs", "top_logprobs", 0, 20).value_or(0));
  if (c.top_logprobs > 0 && !c.logprobs) bad_field("top_logprobs", "needs \"logprobs\": true");
  std::optional<int64_t> max_tokens =
      opt_int(b, "max_completion_tokens", "max_completion_tokens", 0, INT32_MAX);
  if (!max_tokens) max_tokens = opt_int(b, "max_tokens", "max_tokens", 0, INT32_MAX);

  const json* msgs = field(b, "messages");
  if (!msgs) bad_field("messages", "is required");
  ojson messages = normalize_messages(ob["messages"]);

  ojson tools = nullptr;
  if (const json* t = field(b, "tools")) {
    if (!t->is_array()) bad_field("tools", "must be a list of {\"type\": \"function\", ...}");
    tools = ojson::array();
    for (size_t i = 0; i < t->size(); ++i) {
      const ojson& item = ob["tools"][i];
      std::string path = fmt::format("tools[{}]", i);
      if (!item.is_object() || !item.contains("function") || !item["function"].is_object())
        bad_field(path + ".function", "is required and must be an object");
      if (!item["function"].contains("name") || !item["function"]["name"].is_string())
        bad_field(path + ".function.name", "is required and must be a string");
      tools.push_back(item["function"]);  // SGLang renders the function objects
    }
    if (tools.empty()) tools = nullptr;
  }
  std::string tool_choice = tools.is_null() ? "none" : "auto";
  if (const json* tc = field(b, "tool_choice")) {
    if (tc->is_string()) {
      tool_choice = tc->get<std::string>();
      if (tool_choice != "none" && tool_choice != "auto" && tool_choice != "required")
        bad_field("tool_choice", "must be \"none\", \"auto\", \"required\" or a function object");
    } else if (tc->is_object()) {
      tool_choice = "named";
    } else {
      bad_field("tool_choice",
                fmt::format("must be a string or an object, got {}", json_type(*tc)));
    }
  }
  if (tool_choice == "required" || tool_choice == "named")
    bad_field("tool_choice",
              "forcing a tool call needs constrained decoding, which this server does not "
              "support; use \"auto\"");
  if (tool_choice == "none") tools = nullptr;
  c.tools = !tools.is_null() && !ctx.tool_call_parser.empty();

  ojson kwargs = ojson::object();
  if (ob.contains("chat_template_kwargs") && !ob["chat_template_kwargs"].is_null()) {
    if (!ob["chat_template_kwargs"].is_object())
      bad_field("chat_template_kwargs", "must be an object");
    kwargs = ob["chat_template_kwargs"];
  }
  c.separate_reasoning = !ctx.reasoning_parser.empty() &&
                         opt_bool(b, "separate_reasoning", "separate_reasoning").value_or(true);
  bool continue_final =
      opt_bool(b, "continue_final_message", "continue_final_message").value_or(false);

  GenerateRequest r;
  if (const json* ids = field(b, "input_ids")) {
    r.input_ids = int_list(*ids, "input_ids", 0, INT32_MAX);
    if (r.input_ids.empty()) bad_field("input_ids", "is empty");
    c.prompt_texts.push_back(ctx.tok ? ctx.tok->decode(r.input_ids) : std::string());
  } else {
    if (!ctx.tok || !ctx.chat_template)
      bad_request(
          "chat completions need a tokenizer and a chat template, and this server has none "
          "(start it with --tokenizer DIR holding tokenizer.json and a chat template, or use "
          "/v1/completions or /generate with token ids)");
    std::string prompt;
    try {
      prompt = ctx.chat_template->render(messages, tools, !continue_final, kwargs);
    } catch (const Error& e) {
      bad_field("messages", fmt::format("the chat template failed to render them: {}", e.what()));
    }
    if (continue_final) {
      // Continue the last assistant message: drop what the template closes it with.
      std::string last;
      if (!messages.back()["content"].is_null())
        last = messages.back()["content"].get<std::string>();
      size_t pos = last.empty() ? std::string::npos : prompt.rfind(last);
      if (pos != std::string::npos) prompt.resize(pos + last.size());
    }
    c.starts_in_reasoning = c.separate_reasoning && rstrip(prompt).ends_with("<think>");
    r.input_ids = ctx.tok->encode(prompt, false);  // the template holds the special tokens
    if (r.input_ids.empty()) bad_field("messages", "render to an empty prompt");
    c.prompt_texts.push_back(std::move(prompt));
  }
  sp.max_new_tokens = resolve_max_tokens(max_tokens, r.input_ids.size(), ctx.context_len, true);
  if (sp.min_new_tokens > sp.max_new_tokens) sp.min_new_tokens = sp.max_new_tokens;
  c.n = sp.n;
  r.sampling = std::move(sp);
  r.rid = opt_string(b, "rid", "rid").value_or("");
  r.return_logprob = c.logprobs;
  r.top_logprobs_num = c.top_logprobs;
  r.stream = c.stream;
  r.priority = int32_t(opt_int(b, "priority", "priority", INT32_MIN, INT32_MAX).value_or(0));
  c.requests.push_back(std::move(r));
  return c;
}

OpenAiCall parse_completion_request(std::string_view body, const OpenAiContext& ctx) {
  json b = parse_json_object(body);
  OpenAiCall c;
  c.chat = false;
  c.model = opt_string(b, "model", "model").value_or(ctx.served_model_name);
  SamplingParams sp = parse_openai_sampling(b);
  parse_stream_options(b, c);
  if (auto lp = opt_int(b, "logprobs", "logprobs", 0, 20)) {
    c.logprobs = true;
    c.top_logprobs = int32_t(*lp);
  }
  c.echo = opt_bool(b, "echo", "echo").value_or(false);
  if (field(b, "suffix")) bad_field("suffix", "is not supported (no fill-in-the-middle)");
  if (auto bo = opt_int(b, "best_of", "best_of", 1, 128); bo && *bo != sp.n)
    bad_field("best_of", "must equal n (no server-side best-of selection)");
  std::optional<int64_t> max_tokens = opt_int(b, "max_tokens", "max_tokens", 0, INT32_MAX);

  const json* p = field(b, "prompt");
  if (!p) bad_field("prompt", "is required");
  std::vector<std::vector<int32_t>> prompts;
  auto need_tok = [&] {
    if (!ctx.tok)
      bad_field("prompt",
                "text prompts need a tokenizer and this server has none: send token "
                "ids (a list of ints)");
  };
  if (p->is_string()) {
    need_tok();
    prompts.push_back(ctx.tok->encode(p->get<std::string>(), true));
    c.prompt_texts.push_back(p->get<std::string>());
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    prompts.push_back(int_list(*p, "prompt", 0, INT32_MAX));
  } else if (p->is_array() && !p->empty()) {
    for (size_t i = 0; i < p->size(); ++i) {
      const json& e = (*p)[i];
      std::string path = fmt::format("prompt[{}]", i);
      if (e.is_string()) {
        need_tok();
        prompts.push_back(ctx.tok->encode(e.get<std::string>(), true));
        c.prompt_texts.push_back(e.get<std::string>());
      } else if (e.is_array()) {
        prompts.push_back(int_list(e, path, 0, INT32_MAX));
      } else {
        bad_field(path,
                  fmt::format("must be a string or a list of token ids, got {}", json_type(e)));
      }
    }
  } else {
    bad_field("prompt",
              "must be a string, a list of strings, a list of token ids or a list of "
              "lists of token ids (non-empty)");
  }
  if (c.prompt_texts.size() != prompts.size()) {
    c.prompt_texts.clear();
    for (const auto& ids : prompts)
      c.prompt_texts.push_back(ctx.tok ? ctx.tok->decode(ids) : std::string());
  }
  c.n = sp.n;
  std::string rid = opt_string(b, "rid", "rid").value_or("");
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty())
      bad_field(prompts.size() > 1 ? fmt::format("prompt[{}]", i) : "prompt",
                "is empty: a prompt needs at least one token");
    GenerateRequest r;
    r.sampling = sp;
    r.sampling.max_new_tokens =
        resolve_max_tokens(max_tokens, prompts[i].size(), ctx.context_len, false);
    if (r.sampling.min_new_tokens > r.sampling.max_new_tokens)
      r.sampling.min_new_tokens = r.sampling.max_new_tokens;
    r.input_ids = std::move(prompts[i]);
    r.rid = rid.empty() ? rid : (prompts.size() > 1 ? fmt::format("{}_{}", rid, i) : rid);
    r.return_logprob = c.logprobs;
    r.top_logprobs_num = c.top_logprobs;
    r.stream = c.stream;
    c.requests.push_back(std::move(r));
  }
  return c;
}

}  // namespace gyre::serve
