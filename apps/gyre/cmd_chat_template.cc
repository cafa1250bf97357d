// `gyre chat-template --tokenizer DIR --input IN.jsonl [--output OUT.jsonl] [--name NAME]`:
// renders each input line {"messages": [...], "tools": [...]|null, "add_generation_prompt": bool,
// "kwargs": {...}} with the folder's chat template, as transformers' apply_chat_template does, and
// writes {"text": ..., "ids": [...]} per line (ids = the text encoded without adding special
// tokens, so the template's own special tokens are the only ones). Blank lines are skipped.
// Exit codes: 0 ok, 2 bad input (the message names the file and line).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace {

using OJ = nlohmann::ordered_json;

OJ render_line(const gyre::tokenizer::ChatTemplate& ct, const gyre::tokenizer::Tokenizer& tok,
               const std::string& line) {
  OJ in = OJ::parse(line);  // parse_error is turned into a located Error by the caller
  if (!in.is_object())
    GYRE_THROW(invalid_argument, "expected a JSON object with \"messages\", got {}",
               in.type_name());
  for (auto it = in.begin(); it != in.end(); ++it)
    if (it.key() != "messages" && it.key() != "tools" && it.key() != "add_generation_prompt" &&
        it.key() != "kwargs")
      GYRE_THROW(invalid_argument,
                 "unknown field \"{}\" (allowed: messages, tools, add_generation_prompt, kwargs)",
                 it.key());
  if (!in.contains("messages")) GYRE_THROW(invalid_argument, "missing field \"messages\"");
  bool agp = false;
  if (in.contains("add_generation_prompt")) {
    if (!in["add_generation_prompt"].is_boolean())
      GYRE_THROW(invalid_argument, "\"add_generation_prompt\" must be true or false");
    agp = in["add_generation_prompt"].get<bool>();
  }
  OJ tools = in.value("tools", OJ());
  OJ kwargs = in.value("kwargs", OJ());
  std::string text = ct.render(in["messages"], tools, agp, kwargs);
  OJ out = OJ::object();
  out["text"] = text;
  out["ids"] = tok.encode(text, /*add_special_tokens=*/false);
  return out;
}

int run_chat_template(int argc, char** argv) {
  CLI::App app{"Render chat templates (as transformers' apply_chat_template) and tokenize them"};
  std::string dir, input, output, name;
  app.add_option("--tokenizer", dir,
                 "model or tokenizer folder (tokenizer.json, "
                 "tokenizer_config.json / chat_template.jinja)")
      ->required();
  app.add_option("--input", input,
                 "JSONL: {messages, tools, add_generation_prompt, kwargs} per line")
      ->required();
  app.add_option("--output", output, "JSONL output {text, ids} per line (default: stdout)");
  app.add_option("--name", name, "named chat template to use (default: transformers' choice)");
  CLI11_PARSE(app, argc, argv);

  auto ct = gyre::tokenizer::ChatTemplate::from_dir(dir, name);
  auto tok = gyre::tokenizer::Tokenizer::from_dir(dir);
  std::ifstream in(input);
  if (!in) GYRE_THROW(io, "cannot open --input {}; check the path", input);
  std::ofstream file;
  if (!output.empty()) {
    file.open(output);
    if (!file) GYRE_THROW(io, "cannot write --output {}; check the folder exists", output);
  }
  std::ostream& out = output.empty() ? std::cout : file;
  std::string line;
  size_t lineno = 0, n = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    OJ result;
    try {
      result = render_line(ct, *tok, line);
    } catch (const nlohmann::json::exception& e) {
      GYRE_THROW(invalid_argument, "{}:{}: invalid JSON: {}", input, lineno, e.what());
    } catch (const gyre::Error& e) {
      GYRE_THROW(invalid_argument, "{}:{}: {}", input, lineno, e.what());
    }
    out << result.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    ++n;
  }
  out.flush();
  if (!out) GYRE_THROW(io, "failed writing {}", output.empty() ? "stdout" : output);
  std::fprintf(stderr, "rendered %zu conversation(s)\n", n);
  return 0;
}

}  // namespace

// The command name has a dash, which GYRE_COMMAND cannot paste into an identifier.
static ::gyre::cli::Registrar gyre_cmd_chat_template(
    "chat-template", "render chat templates to text and token ids (JSONL in/out)",
    run_chat_template);
