// ChatTemplate: the Qwen3 fixture conversations must render byte-exactly what transformers'
// apply_chat_template produced; the Llama 3 fixture template, the Llama 3.2 (tools) and Qwen2.5
// templates render conversations to the text derived by hand from the template; template lookup
// (chat_template.jinja, named templates, tool_use) and input validation.
#include "gyre/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gyre/core/error.h"
#include "test_util.h"

namespace gyre::tokenizer {
namespace {

using OJ = nlohmann::ordered_json;

OJ fixture_cases() {
  return OJ::parse(test::read_file(test::source_path("tests/fixtures/tokenizer_cases.json")));
}

TEST(ChatTemplateGolden, Qwen3FixtureCasesRenderExactly) {
  ChatTemplate ct = ChatTemplate::from_dir(test::source_path("tests/fixtures/tokenizers/qwen3"));
  OJ cases = fixture_cases()["chat_qwen3"];
  ASSERT_EQ(cases.size(), 7u);
  for (size_t k = 0; k < cases.size(); ++k) {
    const OJ& c = cases[k];
    std::string text =
        ct.render(c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    EXPECT_EQ(text, c["text"].get<std::string>()) << "chat_qwen3[" << k << "]";
  }
}

TEST(ChatTemplateGolden, Qwen3ThinkingSplitAndToolCallHistory) {
  ChatTemplate ct = ChatTemplate::from_dir(test::source_path("tests/fixtures/tokenizers/qwen3"));
  // reasoning_content given separately; the earlier assistant turn (before the last user query)
  // drops its thinking, the last one keeps it (the template's last_query_index logic).
  OJ msgs = OJ::parse(R"([
    {"role": "system", "content": "S"},
    {"role": "user", "content": "q1"},
    {"role": "assistant", "content": "a1", "reasoning_content": "r1"},
    {"role": "user", "content": "q2"},
    {"role": "assistant", "content": "a2", "reasoning_content": "r2",
     "tool_calls": [{"function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
    {"role": "tool", "content": "t1"}, {"role": "tool", "content": "t2"}])");
  EXPECT_EQ(ct.render(msgs, nullptr, false, nullptr),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq1<|im_end|>\n"
            "<|im_start|>assistant\na1<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nr2\n</think>\n\na2\n<tool_call>\n"
            "{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n"
            "<|im_start|>user\n<tool_response>\nt1\n</tool_response>\n<tool_response>\nt2\n"
            "</tool_response><|im_end|>\n");
}

TEST(ChatTemplateGolden, Llama3FixtureTemplate) {
  ChatTemplate ct = ChatTemplate::from_dir(test::source_path("tests/fixtures/tokenizers/llama3"));
  // {% set content = header + message['content'] | trim + '<|eot_id|>' %}, bos before the first
  // message, and the assistant header always appended (this template ignores
  // add_generation_prompt).
  OJ msgs = OJ::parse(R"([{"role": "system", "content": "You are X."},
                          {"role": "user", "content": "  Hi there \n"},
                          {"role": "assistant", "content": "Hello!"}])");
  const std::string expect =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are X.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(ct.render(msgs, nullptr, true, nullptr), expect);
  EXPECT_EQ(ct.render(msgs, nullptr, false, nullptr), expect);
  EXPECT_EQ(ct.special_tokens()["bos_token"], "<|begin_of_text|>");
}

// meta-llama/Llama-3.2-1B-Instruct's chat template (model metadata, used as test input).
const char* kLlama32 = R"TPL({{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
)TPL";

TEST(ChatTemplateGolden, Llama32ToolsInFirstUserMessage) {
  ChatTemplate ct = ChatTemplate::from_string(kLlama32, OJ{{"bos_token", "<|begin_of_text|>"}});
  OJ msgs = OJ::parse(R"([{"role": "system", "content": "You are helpful. "},
                          {"role": "user", "content": "Weather in Paris?"}])");
  OJ tools = OJ::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  std::string text = ct.render(msgs, tools, true, OJ{{"date_string", "01 Jan 2025"}});
  EXPECT_EQ(
      text,
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
      "Environment: ipython\nCutting Knowledge Date: December 2023\n"
      "Today Date: 01 Jan 2025\n\nYou are helpful.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\n"
      "Given the following functions, please respond with a JSON for a function call with "
      "its proper arguments that best answers the given prompt.\n\n"
      "Respond in the format {\"name\": function name, \"parameters\": dictionary of "
      "argument name and its value}.Do not use variables.\n\n"
      "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n"
      "        \"parameters\": {\n            \"type\": \"object\",\n"
      "            \"properties\": {\n                \"city\": {\n"
      "                    \"type\": \"string\"\n                }\n            }\n"
      "        }\n    }\n}\n\n"
      "Weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateGolden, Llama32ToolCallAndResult) {
  ChatTemplate ct = ChatTemplate::from_string(kLlama32, OJ{{"bos_token", "<|begin_of_text|>"}});
  OJ msgs = OJ::parse(R"([{"role": "user", "content": "Weather?"},
      {"role": "assistant", "tool_calls": [{"type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "content": "20C"}])");
  // No tools: no "Environment" line. A string tool result is `iterable`, so it goes through
  // tojson and appears quoted -- that is what the template does in Python too.
  EXPECT_EQ(ct.render(msgs, nullptr, true, OJ{{"date_string", "01 Jan 2025"}}),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}<|eot_id|>"
            "<|start_header_id|>ipython<|end_header_id|>\n\n\"20C\"<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  OJ two = OJ::parse(R"([{"role": "user", "content": "x"}, {"role": "assistant",
      "tool_calls": [{"function": {"name": "a", "arguments": {}}},
                     {"function": {"name": "b", "arguments": {}}}]}])");
  try {
    ct.render(two, nullptr, false, nullptr);
    FAIL() << "expected raise_exception";
  } catch (const gyre::Error& e) {
    EXPECT_NE(std::string(e.what()).find("This model only supports single tool-calls at once!"),
              std::string::npos)
        << e.what();
  }
}

// Qwen/Qwen2.5-0.5B-Instruct's chat template (model metadata, used as test input).
const char* kQwen25 = R"TPL({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)TPL";

TEST(ChatTemplateGolden, Qwen25DefaultSystemAndToolCalls) {
  ChatTemplate ct = ChatTemplate::from_string(kQwen25);
  OJ msgs = OJ::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(ct.render(msgs, nullptr, true, nullptr),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  OJ tools = OJ::parse(R"([{"type": "function", "function": {"name": "f", "description": "é"}}])");
  OJ conv = OJ::parse(R"([{"role": "user", "content": "go"},
      {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"a": [1, "ü"]}}}]},
      {"role": "tool", "content": "ok"}])");
  EXPECT_EQ(ct.render(conv, tools, false, nullptr),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
            "query.\n\nYou are provided with function signatures within <tools></tools> XML "
            "tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", "
            "\"description\": \"é\"}}\n</tools>\n\nFor each function call, return a json object "
            "with function name and arguments within <tool_call></tool_call> XML tags:\n"
            "<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n"
            "</tool_call><|im_end|>\n<|im_start|>user\ngo<|im_end|>\n<|im_start|>assistant\n"
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, \"ü\"]}}\n</tool_call>"
            "<|im_end|>\n<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n");
}

TEST(ChatTemplate, LookupOrderAndNamedTemplates) {
  std::string dir = test::temp_dir("chat_template");
  test::write_file(dir + "/tokenizer_config.json", R"({
    "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": null,
    "chat_template": [{"name": "default", "template": "D{{ bos_token }}{{ eos_token }}{{ pad_token is defined }}"},
                      {"name": "tool_use", "template": "T{{ tools | length }}"},
                      {"name": "rag", "template": "R"}]})");
  ChatTemplate ct = ChatTemplate::from_dir(dir);
  OJ msgs = OJ::parse(R"([{"role": "user", "content": "x"}])");
  EXPECT_EQ(ct.render(msgs, nullptr, false, nullptr), "D<s></s>False");
  EXPECT_EQ(ct.render(msgs, OJ::parse("[1, 2]"), false, nullptr), "T2");  // transformers' rule
  EXPECT_EQ(ChatTemplate::from_dir(dir, "rag").render(msgs, nullptr, false, nullptr), "R");
  EXPECT_EQ(ct.render(msgs, nullptr, false, OJ{{"eos_token", "E"}}), "D<s>EFalse");  // kwargs win
  EXPECT_EQ(ct.names(), (std::vector<std::string>{"default", "rag", "tool_use"}));
  test::write_file(dir + "/chat_template.jinja", "J{{ messages[0].content }}\n");
  EXPECT_EQ(ChatTemplate::from_dir(dir).render(msgs, nullptr, false, nullptr), "Jx");
}

TEST(ChatTemplateParse, BadInputIsReported) {
  std::string dir = test::temp_dir("chat_template_bad");
  auto msg = [](auto fn) -> std::string {
    try {
      fn();
    } catch (const gyre::Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_NE(msg([&] { ChatTemplate::from_dir(dir); }).find("no chat template"), std::string::npos);
  test::write_file(dir + "/tokenizer_config.json", "{\"chat_template\": 5}");
  EXPECT_NE(msg([&] { ChatTemplate::from_dir(dir); }).find("must be a string"), std::string::npos);
  test::write_file(dir + "/tokenizer_config.json", "{\"chat_template\": \"a\\n{% if %}\"}");
  std::string e = msg([&] { ChatTemplate::from_dir(dir); });
  EXPECT_NE(e.find("tokenizer_config.json:chat_template:2:7"), std::string::npos) << e;
  test::write_file(dir + "/tokenizer_config.json", "{not json");
  EXPECT_NE(msg([&] { ChatTemplate::from_dir(dir); }).find("invalid JSON"), std::string::npos);
  test::write_file(dir + "/tokenizer_config.json", "{\"chat_template\": \"x\"}");
  EXPECT_NE(msg([&] { ChatTemplate::from_dir(dir, "nope"); }).find("no chat template named 'nope'"),
            std::string::npos);
  ChatTemplate ct = ChatTemplate::from_dir(dir);
  EXPECT_NE(
      msg([&] { ct.render(OJ::object(), nullptr, false, nullptr); }).find("must be a JSON array"),
      std::string::npos);
  EXPECT_NE(msg([&] { ct.render(OJ::parse("[1]"), nullptr, false, nullptr); }).find("messages[0]"),
            std::string::npos);
  EXPECT_NE(msg([&] { ct.render(OJ::array(), OJ::object(), false, nullptr); }).find("'tools'"),
            std::string::npos);
}

}  // namespace
}  // namespace gyre::tokenizer
