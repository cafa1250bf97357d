// Wire-format tests: /generate and OpenAI request parsing (good and bad input; bad-input tests are
// named *Parse* so CI also runs them under ASan/UBSan) and response rendering.
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/serve/native_api.h"
#include "gyre/serve/openai_api.h"
#include "gyre/serve/request_json.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"
#include "unit/serve/tiny_tokenizer.h"

using namespace gyre;
using namespace gyre::serve;
using nlohmann::json;

namespace {

GenerateCall gen(const std::string& body, const tokenizer::Tokenizer* tok = nullptr) {
  return parse_generate(parse_json_object(body), tok);
}

// Runs f and returns the RequestError it throws (fails the test if none).
template <typename F>
RequestError expect_request_error(F f) {
  try {
    f();
  } catch (const RequestError& e) {
    return e;
  }
  ADD_FAILURE() << "no RequestError thrown";
  return RequestError(0, "", "");
}

std::shared_ptr<const tokenizer::Tokenizer> tiny_tok() {
  static auto t = tokenizer::Tokenizer::from_dir(test::write_tiny_tokenizer_dir());
  return t;
}

}  // namespace

TEST(NativeApi, SingleInputIds) {
  auto c = gen(R"({"input_ids":[1,2,3],"sampling_params":{"temperature":0,"max_new_tokens":5,
                 "stop_token_ids":[7],"sampling_seed":9},"return_logprob":true,"rid":"a"})");
  ASSERT_EQ(c.requests.size(), 1u);
  EXPECT_FALSE(c.batch);
  EXPECT_EQ(c.requests[0].input_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(c.requests[0].sampling.temperature, 0.0f);
  EXPECT_EQ(c.requests[0].sampling.max_new_tokens, 5);
  EXPECT_EQ(c.requests[0].sampling.stop_token_ids, std::vector<int32_t>{7});
  EXPECT_EQ(*c.requests[0].sampling.seed, 9u);
  EXPECT_TRUE(c.requests[0].return_logprob);
  EXPECT_EQ(c.requests[0].rid, "a");
}

TEST(NativeApi, BatchAndNMakeArrays) {
  auto c = gen(R"({"input_ids":[[1],[2,3]],"rid":"r","sampling_params":{"n":2},"x_unknown":1})");
  EXPECT_TRUE(c.batch);
  ASSERT_EQ(c.requests.size(), 2u);
  EXPECT_EQ(c.requests[0].rid, "r_0");
  EXPECT_EQ(c.requests[1].rid, "r_1");
  EXPECT_EQ(c.n, 2);
  EXPECT_EQ(c.slots(), 4u);
  auto single_n = gen(R"({"input_ids":[1],"sampling_params":{"n":3}})");
  EXPECT_TRUE(single_n.batch);  // SGLang: n > 1 answers with a list
}

TEST(NativeApi, TextUsesTokenizer) {
  auto c = gen(R"({"text":"hello"})", tiny_tok().get());
  EXPECT_EQ(c.requests[0].input_ids, tiny_tok()->encode("hello", true));
}

TEST(NativeApiParse, BadInputsNameTheField) {
  EXPECT_EQ(expect_request_error([] { parse_json_object("{\"input_ids\": [1,"); }).status(), 400);
  EXPECT_NE(std::string(expect_request_error([] { parse_json_object("[1]"); }).what())
                .find("JSON object"),
            std::string::npos);
  auto e = expect_request_error([] { gen(R"({"input_ids":"abc"})"); });
  EXPECT_EQ(e.param(), "input_ids");
  e = expect_request_error([] { gen(R"({"input_ids":[1,"x"]})"); });
  EXPECT_EQ(e.param(), "input_ids[1]");
  e = expect_request_error([] { gen(R"({"input_ids":[]})"); });
  EXPECT_NE(std::string(e.what()).find("empty"), std::string::npos);
  e = expect_request_error([] { gen(R"({"input_ids":[[1],[]]})"); });
  EXPECT_EQ(e.param(), "input_ids[1]");
  e = expect_request_error(
      [] { gen(R"({"input_ids":[1],"sampling_params":{"temperature":"hot"}})"); });
  EXPECT_EQ(e.param(), "sampling_params.temperature");
  e = expect_request_error(
      [] { gen(R"({"input_ids":[1],"sampling_params":{"max_new_tokens":1.5}})"); });
  EXPECT_EQ(e.param(), "sampling_params.max_new_tokens");
  e = expect_request_error(
      [] { gen(R"({"input_ids":[1],"sampling_params":{"max_new_tokens":-1}})"); });
  EXPECT_EQ(e.param(), "sampling_params.max_new_tokens");
  e = expect_request_error([] { gen(R"({"input_ids":[1],"stream":"yes"})"); });
  EXPECT_EQ(e.param(), "stream");
  e = expect_request_error([] { gen(R"({"text":"a","input_ids":[1]})"); });
  EXPECT_NE(std::string(e.what()).find("exactly one"), std::string::npos);
  e = expect_request_error([] { gen(R"({})"); });
  EXPECT_NE(std::string(e.what()).find("missing prompt"), std::string::npos);
  e = expect_request_error([] { gen(R"({"text":"hi"})"); });  // no tokenizer
  EXPECT_NE(std::string(e.what()).find("input_ids"), std::string::npos);
  e = expect_request_error(
      [] { gen(R"({"input_ids":[1],"sampling_params":{"json_schema":"{}"}})"); });
  EXPECT_EQ(e.param(), "sampling_params.json_schema");
  e = expect_request_error([] { gen(R"({"input_ids":[1],"image_data":"x"})"); });
  EXPECT_EQ(e.param(), "image_data");
  e = expect_request_error(
      [] { gen(R"({"input_ids":[1,2],"return_logprob":true,"logprob_start_len":2})"); });
  EXPECT_EQ(e.param(), "logprob_start_len");
  e = expect_request_error([] { gen(R"({"input_ids":[[1],[2]],"rid":["a"]})"); });
  EXPECT_EQ(e.param(), "rid");
  e = expect_request_error([] { gen(R"({"input_ids":[[1],[2]],"sampling_params":[{}]})"); });
  EXPECT_EQ(e.param(), "sampling_params");
  e = expect_request_error([] { gen(R"({"input_ids":[1],"sampling_params":{"stop":[1]}})"); });
  EXPECT_EQ(e.param(), "sampling_params.stop[0]");
  e = expect_request_error([] { gen(R"({"input_ids":[99999999999]})"); });
  EXPECT_EQ(e.param(), "input_ids[0]");
}

// SGLang's SamplingParams(**dict) raises on an unknown key; /generate used to drop unknown keys
// without a word, so a misspelt "max_tokens" sampled 128 tokens.
TEST(NativeApiParse, UnknownSamplingKeysAreRefusedListingTheKnownOnes) {
  auto e =
      expect_request_error([] { gen(R"({"input_ids":[1],"sampling_params":{"max_tokens":4}})"); });
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(e.param(), "sampling_params.max_tokens");
  EXPECT_NE(std::string(e.what()).find("is not a sampling parameter"), std::string::npos);
  EXPECT_NE(std::string(e.what()).find("known: max_new_tokens, min_new_tokens, temperature"),
            std::string::npos)
      << e.what();
  e = expect_request_error(  // per-prompt sampling_params too, and a null value is no excuse
      [] { gen(R"({"input_ids":[[1],[2]],"sampling_params":[{},{"tempreature":null}]})"); });
  EXPECT_EQ(e.param(), "sampling_params[1].tempreature");
  // An unknown top-level field passes, as in SGLang (routers and newer clients send fields this
  // server does not know; the server log names it once), and so do SGLang's fields without effect
  // here (routing, PD and tracing hints, extra outputs) and every implemented sampling key.
  EXPECT_EQ(gen(R"({"input_ids":[1],"return_logprobs":true})").requests.size(), 1u);
  auto c = gen(R"({"input_ids":[1],"bootstrap_room":7,"routed_dp_rank":0,"extra_key":"k",
                 "log_metrics":false,"return_hidden_states":false,"session_id":"s",
                 "sampling_params":{"max_new_tokens":1,"min_new_tokens":0,"temperature":0.5,
                 "top_p":0.9,"top_k":5,"min_p":0.1,"frequency_penalty":0.1,"presence_penalty":0.1,
                 "repetition_penalty":1.1,"n":1,"sampling_seed":3,"stop":"x","stop_token_ids":[2],
                 "ignore_eos":false,"no_stop_trim":true,"skip_special_tokens":true,
                 "spaces_between_special_tokens":false,"stream_interval":1}})");
  EXPECT_EQ(c.requests[0].sampling.top_k, 5);
  for (const char* k : {"max_new_tokens", "sampling_seed", "stream_interval", "json_schema"})
    EXPECT_TRUE(is_sampling_param_key(k)) << k;
  EXPECT_TRUE(is_unsupported_sampling_param_key("json_schema"));
  EXPECT_FALSE(is_sampling_param_key("max_tokens"));
  EXPECT_FALSE(is_sampling_param_key("seed"));  // OpenAI's name; SGLang's is sampling_seed
}

// Extra outputs the engine does not produce: false (the default clients send) passes, true is a
// 400 naming the field — the client would otherwise wait for data that never comes.
TEST(NativeApiParse, UnproducedOutputsRequestedAreRefused) {
  for (const char* k : {"return_hidden_states", "return_routed_experts", "return_entropy",
                        "return_prompt_token_ids"}) {
    EXPECT_EQ(gen(json{{"input_ids", {1}}, {k, false}}.dump()).requests.size(), 1u) << k;
    auto e = expect_request_error([&] { gen(json{{"input_ids", {1}}, {k, true}}.dump()); });
    EXPECT_EQ(e.status(), 400) << k;
    EXPECT_EQ(e.param(), k);
  }
}

TEST(NativeApi, NullMeansDefault) {
  auto c = gen(R"({"input_ids":[1],"sampling_params":{"temperature":null,"top_k":null},
                 "rid":null,"stream":null})");
  EXPECT_EQ(c.requests[0].sampling.temperature, 1.0f);
  EXPECT_EQ(c.requests[0].sampling.top_k, -1);
  EXPECT_FALSE(c.stream);
}

TEST(NativeApi, ResultJsonShapes) {
  infer::GenerateResult r;
  r.rid = "x";
  r.text = "ab";
  r.output_ids = {5, 6};
  r.output_logprobs = {-0.5f, -1.0f};
  r.input_logprobs = {NAN, -2.0f};
  r.finish.type = infer::FinishType::stop;
  r.finish.matched_token = 6;
  r.prompt_tokens = 3;
  r.completion_tokens = 2;
  r.cached_tokens = 1;
  std::vector<int32_t> prompt{1, 2, 3};
  ResultFormat f;
  f.return_logprob = true;
  f.logprob_start_len = 1;
  f.input_ids = &prompt;
  f.weight_version = "7";
  json j = generate_result_json(r, f, true);
  EXPECT_EQ(j["text"], "ab");
  EXPECT_EQ(j["output_ids"], json({5, 6}));
  const json& m = j["meta_info"];
  EXPECT_EQ(m["id"], "x");
  EXPECT_EQ(m["finish_reason"], json({{"type", "stop"}, {"matched", 6}}));
  EXPECT_EQ(m["weight_version"], "7");
  EXPECT_EQ(m["cached_tokens"], 1);
  EXPECT_EQ(m["output_token_logprobs"], json::parse("[[-0.5,5,null],[-1.0,6,null]]"));
  EXPECT_EQ(m["input_token_logprobs"], json::parse("[[null,2,null],[-2.0,3,null]]"));
  // Unfinished (stream chunk): finish_reason null.
  EXPECT_TRUE(generate_result_json(r, f, false)["meta_info"]["finish_reason"].is_null());
  r.finish = {infer::FinishType::length, {}, {}, ""};
  EXPECT_EQ(finish_reason_json(r.finish, 2), json({{"type", "length"}, {"length", 2}}));
  r.finish = {infer::FinishType::abort, {}, {}, "bye"};
  EXPECT_EQ(finish_reason_json(r.finish, 2)["type"], "abort");
  EXPECT_EQ(finish_reason_json(r.finish, 2)["message"], "bye");
}

TEST(NativeApi, AccumulateChunks) {
  infer::GenerateResult acc;
  accumulate_chunk(acc, {"x", {1, 2}, {-1.f, -2.f}, {}, "ab"});
  accumulate_chunk(acc, {"x", {3}, {-3.f}, {}, "c"});
  EXPECT_EQ(acc.output_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(acc.text, "abc");
  EXPECT_EQ(acc.completion_tokens, 3);
  EXPECT_EQ(sse_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
}

// ---- OpenAI ----

namespace {
OpenAiContext oai_ctx() {
  static auto tmpl = std::make_shared<tokenizer::ChatTemplate>(
      tokenizer::ChatTemplate::from_dir(test::write_tiny_tokenizer_dir()));
  OpenAiContext c;
  c.tok = tiny_tok().get();
  c.chat_template = tmpl.get();
  c.context_len = 512;
  c.served_model_name = "tiny";
  c.tool_call_parser = "qwen25";
  c.reasoning_parser = "qwen3";
  return c;
}
}  // namespace

TEST(OpenAiApi, CompletionPromptForms) {
  OpenAiContext ctx = oai_ctx();
  auto c = parse_completion_request(R"({"prompt":[1,2,3],"logprobs":2,"seed":5})", ctx);
  EXPECT_FALSE(c.chat);
  EXPECT_EQ(c.requests[0].input_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(c.requests[0].sampling.max_new_tokens, 16);  // OpenAI's default
  EXPECT_TRUE(c.logprobs);
  EXPECT_EQ(c.top_logprobs, 2);
  EXPECT_EQ(*c.requests[0].sampling.seed, 5u);
  EXPECT_EQ(c.model, "tiny");
  auto b = parse_completion_request(R"({"prompt":["ab","cd"],"n":2,"max_tokens":3})", ctx);
  EXPECT_EQ(b.requests.size(), 2u);
  EXPECT_EQ(b.slots(), 4u);
  EXPECT_EQ(b.requests[1].input_ids, tiny_tok()->encode("cd", true));
}

TEST(OpenAiApi, ChatRendersTemplateAndTools) {
  OpenAiContext ctx = oai_ctx();
  auto c = parse_chat_request(
      R"({"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8,
          "tools":[{"type":"function","function":{"name":"get_time","parameters":{"type":"object"}}}],
          "logprobs":true,"top_logprobs":2,"stream":true,"stream_options":{"include_usage":true}})",
      ctx);
  EXPECT_TRUE(c.chat);
  EXPECT_TRUE(c.tools);
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_EQ(c.top_logprobs, 2);
  EXPECT_NE(c.prompt_texts[0].find("get_time"), std::string::npos);
  EXPECT_NE(c.prompt_texts[0].find("<|im_start|>user\nhi<|im_end|>"), std::string::npos);
  EXPECT_EQ(tiny_tok()->decode(c.requests[0].input_ids), c.prompt_texts[0]);
  // Default max_tokens for chat: the rest of the context.
  auto d = parse_chat_request(R"({"messages":[{"role":"user","content":"hi"}]})", ctx);
  EXPECT_EQ(d.requests[0].sampling.max_new_tokens, 512 - int32_t(d.requests[0].input_ids.size()));
}

// OpenAI clients send fields this server has no use for (user, store, metadata, ...); SGLang's
// pydantic models ignore them, and so do the OpenAI routes here (unlike /generate).
TEST(OpenAiApi, UnknownTopLevelFieldsAreIgnored) {
  OpenAiContext ctx = oai_ctx();
  auto c = parse_completion_request(
      R"({"prompt":[1,2],"max_tokens":2,"user":"u","store":false,"x_vendor":{"a":1}})", ctx);
  EXPECT_EQ(c.requests[0].sampling.max_new_tokens, 2);
  auto d = parse_chat_request(
      R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"user":"u",
          "metadata":{"k":"v"},"parallel_tool_calls":true,"x_vendor":1})",
      ctx);
  EXPECT_EQ(d.requests[0].sampling.max_new_tokens, 3);
}

TEST(OpenAiApiParse, BadRequestsNameTheField) {
  OpenAiContext ctx = oai_ctx();
  auto e = expect_request_error([&] { parse_chat_request(R"({"messages":"hi"})", ctx); });
  EXPECT_EQ(e.param(), "messages");
  e = expect_request_error([&] { parse_chat_request(R"({"messages":[{"content":"x"}]})", ctx); });
  EXPECT_EQ(e.param(), "messages[0].role");
  e = expect_request_error(
      [&] { parse_chat_request(R"({"messages":[{"role":"wizard","content":"x"}]})", ctx); });
  EXPECT_EQ(e.param(), "messages[0].role");
  e = expect_request_error([&] {
    parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":600})", ctx);
  });
  EXPECT_NE(std::string(e.what()).find("context length"), std::string::npos);
  e = expect_request_error([&] {
    parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"temperature":"warm"})", ctx);
  });
  EXPECT_EQ(e.param(), "temperature");
  e = expect_request_error([&] {
    parse_chat_request(
        R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})",
        ctx);
  });
  EXPECT_EQ(e.param(), "response_format.type");
  e = expect_request_error([&] {
    parse_chat_request(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":3})", ctx);
  });
  EXPECT_EQ(e.param(), "top_logprobs");
  e = expect_request_error([&] { parse_completion_request(R"({"prompt":{}})", ctx); });
  EXPECT_EQ(e.param(), "prompt");
  e = expect_request_error([&] { parse_completion_request(R"({"prompt":[1],"n":0})", ctx); });
  EXPECT_EQ(e.param(), "n");
  e = expect_request_error([&] { parse_completion_request("not json", ctx); });
  EXPECT_EQ(e.status(), 400);
  OpenAiContext bare;
  bare.context_len = 64;
  e = expect_request_error(
      [&] { parse_chat_request(R"({"messages":[{"role":"user","content":"x"}]})", bare); });
  EXPECT_NE(std::string(e.what()).find("chat template"), std::string::npos);
  EXPECT_THROW(check_parser_names("llama3", ""), Error);
  EXPECT_THROW(check_parser_names("", "nonsense"), Error);
}

TEST(OpenAiApi, ResponseSplitsReasoningAndToolCalls) {
  OpenAiContext ctx = oai_ctx();
  auto c = parse_chat_request(
      R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":50,"logprobs":true,
          "tools":[{"type":"function","function":{"name":"f"}}]})",
      ctx);
  infer::GenerateResult r;
  r.text =
      "<think>plan</think>\n\nok <tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": "
      "1}}\n</tool_call>";
  r.output_ids = {1, 2};
  r.output_logprobs = {-0.5f, -0.25f};
  r.finish.type = infer::FinishType::stop;
  r.finish.matched_token = 257;
  r.prompt_tokens = 10;
  r.completion_tokens = 2;
  json j = openai_response(c, ctx, {r}, "chatcmpl-1", 5, "0");
  const json& ch = j["choices"][0];
  EXPECT_EQ(ch["finish_reason"], "tool_calls");
  EXPECT_EQ(ch["message"]["reasoning_content"], "plan");
  EXPECT_EQ(ch["message"]["content"], "ok");
  EXPECT_EQ(ch["message"]["tool_calls"][0]["function"]["name"], "f");
  EXPECT_EQ(json::parse(ch["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json({{"x", 1}}));
  EXPECT_EQ(ch["logprobs"]["content"].size(), 2u);
  EXPECT_EQ(ch["matched_stop"], 257);
  EXPECT_EQ(j["usage"]["total_tokens"], 12);
  EXPECT_EQ(j["object"], "chat.completion");

  // The same text streamed in small pieces gives the same reasoning, content and call.
  ChoiceStream s(c, ctx, 0);
  std::string reasoning, content;
  std::vector<json> calls;
  auto take = [&](const std::vector<json>& chunks) {
    for (const auto& ch : chunks) {
      const json& d = ch["delta"];
      if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
      if (d.contains("content")) content += d["content"].get<std::string>();
      if (d.contains("tool_calls")) calls.push_back(d["tool_calls"][0]);
    }
  };
  for (size_t i = 0; i < r.text.size(); i += 3) {
    infer::TokenChunk c1;
    c1.text = r.text.substr(i, 3);
    take(s.on_chunk(c1));
  }
  auto last = s.on_done(r);
  take(last);
  EXPECT_EQ(reasoning, "plan");
  EXPECT_EQ(content, "ok ");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["function"]["name"], "f");
  EXPECT_EQ(last.back()["finish_reason"], "tool_calls");
}
