// OpenAI response rendering: non-stream objects, usage, logprobs, and the per-choice streaming
// state (reasoning split and tool-call extraction on text increments) (openai_api.h).
#include <cmath>

#include "gyre/serve/openai_api.h"
#include "gyre/serve/request_json.h"
#include "gyre/tokenizer/reasoning_parser.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::serve {

using infer::FinishType;
using infer::GenerateResult;
using infer::TopLogprob;

namespace {

constexpr std::string_view kThinkStart = "<think>";
constexpr std::string_view kThinkEnd = "</think>";

std::string token_str(const OpenAiContext& ctx, int32_t id) {
  if (!ctx.tok) return fmt::format("token_id:{}", id);
  return ctx.tok->decode({id}, false);
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char ch : s) b.push_back(int(ch));
  return b;
}

json lp_num(float x) { return std::isfinite(x) ? json(x) : json(-9999.0); }  // OpenAI: no nulls

// Length of the longest suffix of `s` that is a proper prefix of `tag` (a tag may be arriving).
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t k = std::min(s.size(), tag.size() - 1); k > 0; --k)
    if (s.substr(s.size() - k) == tag.substr(0, k)) return k;
  return 0;
}

}  // namespace

std::string openai_finish_reason(const infer::FinishReason& f, bool has_tool_calls) {
  if (has_tool_calls && f.type != FinishType::abort) return "tool_calls";
  switch (f.type) {
    case FinishType::length: return "length";
    case FinishType::abort: return "abort";
    default: return "stop";
  }
}

json matched_stop_json(const infer::FinishReason& f) {
  if (f.type != FinishType::stop) return nullptr;
  if (f.matched_str) return *f.matched_str;
  if (f.matched_token) return *f.matched_token;
  return nullptr;
}

json chat_logprobs(const OpenAiContext& ctx, const std::vector<int32_t>& ids,
                   const std::vector<float>& lps, const std::vector<std::vector<TopLogprob>>& top,
                   int32_t top_n) {
  json content = json::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string t = token_str(ctx, ids[i]);
    json e{
        {"token", t}, {"bytes", bytes_of(t)}, {"logprob", lp_num(i < lps.size() ? lps[i] : NAN)}};
    json tl = json::array();
    if (top_n > 0 && i < top.size())
      for (const auto& x : top[i]) {
        std::string tt = token_str(ctx, x.token_id);
        tl.push_back({{"token", tt}, {"bytes", bytes_of(tt)}, {"logprob", lp_num(x.logprob)}});
      }
    e["top_logprobs"] = std::move(tl);
    content.push_back(std::move(e));
  }
  return json{{"content", std::move(content)}};
}

json completion_logprobs(const OpenAiContext& ctx, const std::vector<int32_t>& ids,
                         const std::vector<float>& lps,
                         const std::vector<std::vector<TopLogprob>>& top, int32_t top_n,
                         size_t text_offset) {
  json tokens = json::array(), token_lps = json::array(), tops = json::array(),
       offsets = json::array();
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string t = token_str(ctx, ids[i]);
    tokens.push_back(t);
    token_lps.push_back(lp_num(i < lps.size() ? lps[i] : NAN));
    offsets.push_back(text_offset);
    text_offset += t.size();
    if (top_n > 0) {
      json m = json::object();
      if (i < top.size())
        for (const auto& x : top[i]) m[token_str(ctx, x.token_id)] = lp_num(x.logprob);
      tops.push_back(std::move(m));
    } else {
      tops.push_back(nullptr);
    }
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_lps)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

json openai_usage(const OpenAiCall& call, const OpenAiContext& ctx,
                  const std::vector<GenerateResult>& results) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    completion += results[i].completion_tokens;
    if (i % size_t(call.n) == 0) {  // the prompt counts once per prompt, not per sample
      prompt += results[i].prompt_tokens;
      cached += results[i].cached_tokens;
    }
  }
  json u{{"prompt_tokens", prompt},
         {"completion_tokens", completion},
         {"total_tokens", prompt + completion}};
  u["prompt_tokens_details"] =
      ctx.enable_cache_report ? json{{"cached_tokens", cached}} : json(nullptr);
  return u;
}

json openai_response(const OpenAiCall& call, const OpenAiContext& ctx,
                     const std::vector<GenerateResult>& results, const std::string& id,
                     int64_t created, const std::string& weight_version) {
  json choices = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerateResult& r = results[i];
    json ch{{"index", i}};
    bool has_calls = false;
    if (call.chat) {
      json msg{{"role", "assistant"}};
      std::string text = r.text;
      json reasoning = nullptr;
      if (call.separate_reasoning) {
        auto split = tokenizer::split_reasoning(text, call.starts_in_reasoning);
        if (!split.reasoning_content.empty()) reasoning = split.reasoning_content;
        text = split.content;
      }
      json content = text;
      json tool_calls = nullptr;
      if (call.tools) {
        tokenizer::ParsedToolCalls parsed = tokenizer::parse_hermes_tool_calls(text);
        if (!parsed.tool_calls.empty()) {
          has_calls = true;
          content = parsed.content.empty() ? json(nullptr) : json(parsed.content);
          tool_calls = json::array();
          for (size_t k = 0; k < parsed.tool_calls.size(); ++k) {
            const auto& tc = parsed.tool_calls[k];
            tool_calls.push_back({{"id", tc.id},
                                  {"index", k},
                                  {"type", "function"},
                                  {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}});
          }
        }
      }
      msg["content"] = content;
      msg["reasoning_content"] = reasoning;
      if (!tool_calls.is_null()) msg["tool_calls"] = tool_calls;
      ch["message"] = std::move(msg);
      ch["logprobs"] = call.logprobs ? chat_logprobs(ctx, r.output_ids, r.output_logprobs,
                                                     r.output_top_logprobs, call.top_logprobs)
                                     : json(nullptr);
    } else {
      std::string prefix = call.echo ? call.prompt_texts[i / size_t(call.n)] : std::string();
      ch["text"] = prefix + r.text;
      ch["logprobs"] = call.logprobs ? completion_logprobs(ctx, r.output_ids, r.output_logprobs,
                                                           r.output_top_logprobs, call.top_logprobs,
                                                           prefix.size())
                                     : json(nullptr);
    }
    ch["finish_reason"] = openai_finish_reason(r.finish, has_calls);
    ch["matched_stop"] = matched_stop_json(r.finish);
    if (call.return_token_ids) ch["token_ids"] = r.output_ids;
    choices.push_back(std::move(ch));
  }
  json out{{"id", id},
           {"object", call.chat ? "chat.completion" : "text_completion"},
           {"created", created},
           {"model", call.model},
           {"choices", std::move(choices)},
           {"usage", openai_usage(call, ctx, results)}};
  out["metadata"] = {{"weight_version", weight_version}};
  return out;
}

json openai_chunk(const OpenAiCall& call, const std::string& id, int64_t created, json choices,
                  const json& usage) {
  json out{{"id", id},
           {"object", call.chat ? "chat.completion.chunk" : "text_completion"},
           {"created", created},
           {"model", call.model},
           {"choices", std::move(choices)}};
  if (!usage.is_null()) out["usage"] = usage;
  return out;
}

// ---- streaming ----------------------------------------------------------------------------------

ChoiceStream::ChoiceStream(const OpenAiCall& call, const OpenAiContext& ctx, int32_t index)
    : call_(call), ctx_(ctx), index_(index), in_reasoning_(call.starts_in_reasoning) {
  if (call.chat && call.tools) tools_ = std::make_unique<tokenizer::HermesToolCallStream>();
  if (!call.chat && call.echo) text_offset_ = 0;
}

json ChoiceStream::choice(json delta) const {
  json c{{"index", index_}};
  if (call_.chat)
    c["delta"] = std::move(delta);
  else
    c["text"] = std::move(delta);
  c["logprobs"] = nullptr;
  c["finish_reason"] = nullptr;
  return c;
}

std::vector<json> ChoiceStream::emit_text(const std::string& text, bool final) {
  std::vector<json> out;
  std::string s = hold_ + text;
  hold_.clear();
  if (!call_.chat) {
    if (!s.empty()) out.push_back(choice(s));
    return out;
  }
  if (call_.separate_reasoning) {
    if (!reasoning_checked_start_) {
      size_t ws = 0;
      while (ws < s.size() && std::isspace(static_cast<unsigned char>(s[ws]))) ++ws;
      std::string_view rest = std::string_view(s).substr(ws);
      if (!final && rest.size() < kThinkStart.size() && kThinkStart.starts_with(rest)) {
        hold_ = std::move(s);  // too early to tell whether the output opens with <think>
        return out;
      }
      reasoning_checked_start_ = true;
      if (rest.starts_with(kThinkStart)) {
        in_reasoning_ = true;
        s = std::string(rest.substr(kThinkStart.size()));
      }
    }
    if (in_reasoning_) {
      size_t end = s.find(kThinkEnd);
      std::string reasoning;
      if (end != std::string::npos) {
        reasoning = s.substr(0, end);
        s = s.substr(end + kThinkEnd.size());
        in_reasoning_ = false;
        after_reasoning_ = true;
      } else {
        size_t keep = final ? 0 : partial_tag_suffix(s, kThinkEnd);
        reasoning = s.substr(0, s.size() - keep);
        hold_ = s.substr(s.size() - keep);
        s.clear();
      }
      if (!reasoning.empty()) out.push_back(choice(json{{"reasoning_content", reasoning}}));
      if (in_reasoning_) return out;
    }
    if (after_reasoning_) {
      size_t ws = 0;
      while (ws < s.size() && std::isspace(static_cast<unsigned char>(s[ws]))) ++ws;
      s.erase(0, ws);
      if (s.empty() && !final) return out;
      after_reasoning_ = false;
    }
  }
  if (tools_) {
    tokenizer::HermesToolCallStream::Delta d = tools_->push(s);
    if (final) {
      tokenizer::HermesToolCallStream::Delta f = tools_->finish();
      d.content += f.content;
      for (auto& tc : f.tool_calls) d.tool_calls.push_back(std::move(tc));
    }
    if (!d.content.empty()) out.push_back(choice(json{{"content", d.content}}));
    for (const auto& tc : d.tool_calls) {
      json call{{"index", n_calls_++},
                {"id", tc.id},
                {"type", "function"},
                {"function", {{"name", tc.name}, {"arguments", tc.arguments}}}};
      out.push_back(choice(json{{"tool_calls", json::array({call})}}));
    }
  } else if (!s.empty()) {
    out.push_back(choice(json{{"content", s}}));
  }
  return out;
}

json ChoiceStream::logprobs_json(const std::vector<int32_t>& ids, const std::vector<float>& lps,
                                 const std::vector<std::vector<TopLogprob>>& top) const {
  if (call_.chat) return chat_logprobs(ctx_, ids, lps, top, call_.top_logprobs);
  return completion_logprobs(ctx_, ids, lps, top, call_.top_logprobs, text_offset_);
}

std::vector<json> ChoiceStream::on_chunk(const infer::TokenChunk& c) {
  std::vector<json> out;
  if (call_.chat && !role_sent_) {
    role_sent_ = true;
    out.push_back(choice(json{{"role", "assistant"}, {"content", ""}}));
  }
  if (!call_.chat && call_.echo && !role_sent_) {
    role_sent_ = true;
    std::string p = call_.prompt_texts[size_t(index_) / size_t(call_.n)];
    if (!p.empty()) out.push_back(choice(p));
    text_offset_ = p.size();
  }
  completion_tokens_ += int32_t(c.output_ids.size());
  std::vector<json> texts = emit_text(c.text, false);
  if (call_.logprobs && !c.output_ids.empty()) {
    json lp = logprobs_json(c.output_ids, c.output_logprobs, c.output_top_logprobs);
    if (texts.empty()) texts.push_back(choice(call_.chat ? json{{"content", ""}} : json("")));
    texts.back()["logprobs"] = std::move(lp);
  }
  if (!call_.chat)
    for (const auto& t : c.output_ids) text_offset_ += token_str(ctx_, t).size();
  for (auto& t : texts) out.push_back(std::move(t));
  return out;
}

std::vector<json> ChoiceStream::on_done(const GenerateResult& r) {
  std::vector<json> out;
  if (call_.chat && !role_sent_) {
    role_sent_ = true;
    out.push_back(choice(json{{"role", "assistant"}, {"content", ""}}));
  }
  for (auto& t : emit_text("", true)) out.push_back(std::move(t));
  json last = choice(call_.chat ? json::object() : json(""));
  last["finish_reason"] = openai_finish_reason(r.finish, n_calls_ > 0);
  last["matched_stop"] = matched_stop_json(r.finish);
  if (call_.return_token_ids) last["token_ids"] = r.output_ids;
  out.push_back(std::move(last));
  completion_tokens_ = r.completion_tokens;
  return out;
}

}  // namespace gyre::serve
