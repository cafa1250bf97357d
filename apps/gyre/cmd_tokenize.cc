// `gyre tokenize`: encode JSONL {"text": ...} lines to {"ids": [...]} (or, with --decode, ids back
// to text) with a Hugging Face tokenizer directory. Thin: parsing and I/O only; the work is
// gyre::tokenizer. A malformed line is an error naming its line number (exit 2), and so is an id
// outside [0, vocabulary size) with --decode.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/tokenizer/tokenizer.h"

namespace {

using nlohmann::json;

int run_tokenize(int argc, char** argv) {
  CLI::App app{"Tokenize JSONL text with a Hugging Face tokenizer (or decode ids with --decode)"};
  std::string dir, input, output;
  bool add_special = false, decode = false, skip_special = false;
  app.add_option("--tokenizer", dir, "model or tokenizer directory (tokenizer.json)")->required();
  app.add_option("--input", input,
                 "JSONL input: {\"text\": ...} lines ({\"ids\": [...]} with "
                 "--decode)")
      ->required();
  app.add_option("--output", output, "JSONL output (default: stdout)");
  app.add_flag("--add-special-tokens", add_special, "apply the post-processor (e.g. BOS)");
  app.add_flag("--decode", decode, "decode {\"ids\": [...]} lines to {\"text\": ...}");
  app.add_flag("--skip-special-tokens", skip_special, "with --decode: drop special tokens");
  CLI11_PARSE(app, argc, argv);

  auto tok = gyre::tokenizer::Tokenizer::from_dir(dir);
  std::ifstream in(input, std::ios::binary);
  if (!in) GYRE_THROW(not_found, "--input {}: cannot open", input);
  std::ofstream out_file;
  if (!output.empty()) {
    out_file.open(output, std::ios::binary);
    if (!out_file) GYRE_THROW(io, "--output {}: cannot open for writing", output);
  }
  std::ostream& out = output.empty() ? std::cout : out_file;

  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      GYRE_THROW(invalid_argument, "{}:{}: line {} is not valid JSON: {}", input, line_no, line_no,
                 e.what());
    }
    if (decode) {
      auto it = j.is_object() ? j.find("ids") : j.end();
      if (!j.is_object() || it == j.end() || !it->is_array())
        GYRE_THROW(invalid_argument, "{}:{}: line {} needs {{\"ids\": [int, ...]}}", input, line_no,
                   line_no);
      std::vector<int32_t> ids;
      const int64_t vocab = tok->vocab_size();
      for (size_t k = 0; k < it->size(); ++k) {
        const json& v = (*it)[k];
        if (!v.is_number_integer())
          GYRE_THROW(invalid_argument, "{}:{}: line {}: ids must be integers, got {}", input,
                     line_no, line_no, v.dump());
        // An id outside the tokenizer used to wrap into int32 (2^32 + 1 decoded as id 1) or be
        // dropped by decode; that hides a wrong tokenizer or corrupt ids, so refuse it. (The
        // library's decode still skips ids that name no token, as HF does.)
        const bool in_range = v.is_number_unsigned()
                                  ? v.get<uint64_t>() < uint64_t(vocab)
                                  : v.get<int64_t>() >= 0 && v.get<int64_t>() < vocab;
        if (!in_range)
          GYRE_THROW(invalid_argument,
                     "{}:{}: ids[{}] = {} is out of range: this tokenizer's ids are in [0, {}) "
                     "(its vocabulary size); check that --tokenizer is the one that made the ids",
                     input, line_no, k, v.dump(), vocab);
        ids.push_back(int32_t(v.get<int64_t>()));
      }
      out << json{{"text", tok->decode(ids, skip_special)}}.dump() << '\n';
    } else {
      auto it = j.is_object() ? j.find("text") : j.end();
      if (!j.is_object() || it == j.end() || !it->is_string())
        GYRE_THROW(invalid_argument, "{}:{}: line {} needs {{\"text\": \"...\"}}", input, line_no,
                   line_no);
      out << json{{"ids", tok->encode(it->get<std::string>(), add_special)}}.dump() << '\n';
    }
  }
  out.flush();
  if (!out) GYRE_THROW(io, "writing {} failed", output.empty() ? "stdout" : output);
  return 0;
}

}  // namespace

GYRE_COMMAND(tokenize, "encode JSONL text to token ids (or decode ids) with a HF tokenizer",
             run_tokenize);
