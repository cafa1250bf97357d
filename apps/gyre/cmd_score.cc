// `gyre score --model DIR --input IN.jsonl [--output OUT.jsonl] [--temperature T] [--device D]`:
// per-token log-probs and entropies of token sequences under a Hugging Face model folder, computed
// on the CPU or (--device cuda, a CUDA build) on the GPU.
// Input lines: {"ids": [...]} (blank lines skipped). Output, one line per input line, in order:
// {"token_logprobs": [L-1 floats], "entropy": [L floats]} (model/scoring.h for the definitions).
// The whole input is validated before any scoring, so a bad line (errors name IN.jsonl:LINE: an
// id outside the vocabulary, a sequence longer than max_position_embeddings) exits 2 without
// partial output. Lines are packed into batches of --batch-tokens for throughput.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace {

// Reads {"ids": [...]} lines; ids must be integers in [0, vocab), and a sequence at most
// `max_len` (the model's max_position_embeddings) tokens: RoPE past the trained context gives
// log-probs without meaning, and nothing else would say so. The rollout engine holds prompt +
// output to the same limit (infer::Engine's default context length).
std::vector<std::vector<int32_t>> read_score_input(const std::string& path, int64_t vocab,
                                                   int64_t max_len) {
  std::ifstream f(path);
  if (!f) GYRE_THROW(not_found, "cannot open --input {}", path);
  std::vector<std::vector<int32_t>> seqs;
  std::string line;
  for (int64_t lineno = 1; std::getline(f, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded())
      GYRE_THROW(invalid_argument, "{}:{}: not valid JSON; expected {{\"ids\": [token ids]}}", path,
                 lineno);
    if (!j.is_object() || !j.contains("ids") || !j["ids"].is_array())
      GYRE_THROW(invalid_argument, "{}:{}: missing key \"ids\" (an array of token ids)", path,
                 lineno);
    const auto& ids = j["ids"];
    if (ids.empty())
      GYRE_THROW(invalid_argument, "{}:{}: \"ids\" is empty; a sequence needs at least one token",
                 path, lineno);
    if (max_len > 0 && int64_t(ids.size()) > max_len)
      GYRE_THROW(invalid_argument,
                 "{}:{}: the sequence is {} tokens, longer than the model's context of {} tokens "
                 "(max_position_embeddings in config.json); split it or truncate it to {} tokens",
                 path, lineno, ids.size(), max_len, max_len);
    std::vector<int32_t> seq;
    seq.reserve(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!ids[k].is_number_integer() || ids[k].get<int64_t>() < 0 ||
          ids[k].get<int64_t>() >= vocab)
        GYRE_THROW(invalid_argument,
                   "{}:{}: ids[{}] = {} is not a token id of this model (vocabulary size {})", path,
                   lineno, k, ids[k].dump(), vocab);
      seq.push_back(int32_t(ids[k].get<int64_t>()));
    }
    seqs.push_back(std::move(seq));
  }
  return seqs;
}

void append_floats(std::string& out, const std::vector<float>& v) {
  out += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ',';
    out += fmt::format("{}", v[i]);  // shortest representation that round-trips the f32
  }
  out += ']';
}

int run_score(int argc, char** argv) {
  CLI::App app{"Per-token log-probs and entropies of token sequences (JSONL in, JSONL out)"};
  std::string model_dir, input, output;
  float temperature = 1.0f;
  int64_t batch_tokens = 8192;
  std::string device = "cpu", precision = "f32";
  app.add_option("--model", model_dir, "Hugging Face model folder")->required();
  app.add_option("--input", input, "JSONL file, one {\"ids\": [...]} per line")->required();
  app.add_option("--output", output, "JSONL output (default: stdout)");
  app.add_option("--temperature", temperature, "logits are divided by this (> 0)");
  app.add_option("--batch-tokens", batch_tokens, "tokens packed per forward pass");
  app.add_option("--device", device, "where the model runs: cpu or cuda (needs a CUDA build)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision,
                 "GPU compute precision: f32 (exact vs the CPU) or bf16 (mixed precision: bf16 "
                 "GEMMs and attention, f32 accumulate and master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  CLI11_PARSE(app, argc, argv);
  if (!(temperature > 0.0f))
    GYRE_THROW(invalid_argument, "--temperature must be > 0, got {}", temperature);
  if (batch_tokens < 1)
    GYRE_THROW(invalid_argument, "--batch-tokens must be >= 1, got {}", batch_tokens);

  auto model = gyre::model::CausalLM::load(
      model_dir, {.device = device == "cuda" ? gyre::Device::cuda : gyre::Device::cpu,
                  .precision = gyre::model::parse_precision(precision)});
  auto seqs =
      read_score_input(input, model->config().vocab_size, model->config().max_position_embeddings);
  std::FILE* out = stdout;
  if (!output.empty()) {
    out = std::fopen(output.c_str(), "wb");
    if (!out) GYRE_THROW(io, "cannot write --output {}", output);
  }
  // Score in chunks so output streams and memory stays bounded on large inputs.
  const size_t kChunk = 256;
  for (size_t begin = 0; begin < seqs.size(); begin += kChunk) {
    const size_t end = std::min(seqs.size(), begin + kChunk);
    std::vector<std::vector<int32_t>> chunk(seqs.begin() + long(begin), seqs.begin() + long(end));
    auto scores = gyre::model::score(*model, chunk, temperature, true, batch_tokens);
    std::string text;
    for (const auto& s : scores) {
      text += "{\"token_logprobs\":";
      append_floats(text, s.token_logprobs);
      text += ",\"entropy\":";
      append_floats(text, s.entropy);
      text += "}\n";
    }
    std::fwrite(text.data(), 1, text.size(), out);
  }
  if (out != stdout && std::fclose(out) != 0) GYRE_THROW(io, "error writing --output {}", output);
  return 0;
}

}  // namespace

GYRE_COMMAND(score, "per-token log-probs and entropies of token sequences (JSONL)", run_score);
