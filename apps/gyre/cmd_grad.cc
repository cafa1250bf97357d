// `gyre grad --model DIR --input IN.jsonl --output GRADS.safetensors`: the policy-gradient loss at
// ratio 1, L = −(1/N) Σ_i Σ_{t ≥ P_i} A_i · log p(ids_i[t] | ids_i[<t]), N = Σ_i (len_i − P_i), and
// its gradient dL/dθ, written in f32 with the checkpoint's own tensor names and shapes (a tied
// embedding once). Input lines: {"ids": [...], "prompt_len": P, "advantage": A}. Prints
// {"loss": L}. Errors name IN.jsonl:LINE and exit 2. --device cuda (a CUDA build) runs the model on
// the GPU; the gradients are copied back to the host for writing.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/safetensors.h"
#include "gyre/model/scoring.h"

namespace {

struct GradInput {
  std::vector<std::vector<int32_t>> seqs;
  std::vector<int32_t> prompt_lens;
  std::vector<float> advantages;
};

// `max_len`: the model's max_position_embeddings (RoPE past the trained context gives gradients
// without meaning; `gyre score` refuses such a sequence the same way).
GradInput read_grad_input(const std::string& path, int64_t vocab, int64_t max_len) {
  std::ifstream f(path);
  if (!f) GYRE_THROW(not_found, "cannot open --input {}", path);
  GradInput in;
  std::string line;
  for (int64_t lineno = 1; std::getline(f, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded())
      GYRE_THROW(invalid_argument,
                 "{}:{}: not valid JSON; expected {{\"ids\": [...], \"prompt_len\": P, "
                 "\"advantage\": A}}",
                 path, lineno);
    if (!j.is_object()) GYRE_THROW(invalid_argument, "{}:{}: expected a JSON object", path, lineno);
    if (!j.contains("ids") || !j["ids"].is_array())
      GYRE_THROW(invalid_argument, "{}:{}: missing key \"ids\" (an array of token ids)", path,
                 lineno);
    if (!j.contains("prompt_len") || !j["prompt_len"].is_number_integer())
      GYRE_THROW(invalid_argument, "{}:{}: missing key \"prompt_len\" (an integer)", path, lineno);
    if (!j.contains("advantage") || !j["advantage"].is_number())
      GYRE_THROW(invalid_argument, "{}:{}: missing key \"advantage\" (a number)", path, lineno);
    const auto& ids = j["ids"];
    if (max_len > 0 && int64_t(ids.size()) > max_len)
      GYRE_THROW(invalid_argument,
                 "{}:{}: the sequence is {} tokens, longer than the model's context of {} tokens "
                 "(max_position_embeddings in config.json); split it or truncate it to {} tokens",
                 path, lineno, ids.size(), max_len, max_len);
    std::vector<int32_t> seq;
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!ids[k].is_number_integer() || ids[k].get<int64_t>() < 0 ||
          ids[k].get<int64_t>() >= vocab)
        GYRE_THROW(invalid_argument,
                   "{}:{}: ids[{}] = {} is not a token id of this model (vocabulary size {})", path,
                   lineno, k, ids[k].dump(), vocab);
      seq.push_back(int32_t(ids[k].get<int64_t>()));
    }
    const int64_t p = j["prompt_len"].get<int64_t>();
    if (p < 1 || p > int64_t(seq.size()))
      GYRE_THROW(invalid_argument,
                 "{}:{}: prompt_len {} must be between 1 and the sequence length {}", path, lineno,
                 p, seq.size());
    const double a = j["advantage"].get<double>();
    if (!std::isfinite(a))
      GYRE_THROW(invalid_argument, "{}:{}: advantage is not finite", path, lineno);
    in.seqs.push_back(std::move(seq));
    in.prompt_lens.push_back(int32_t(p));
    in.advantages.push_back(float(a));
  }
  if (in.seqs.empty()) GYRE_THROW(invalid_argument, "{}: no input lines", path);
  return in;
}

int run_grad(int argc, char** argv) {
  CLI::App app{"Policy-gradient loss and its parameter gradients (JSONL in, safetensors out)"};
  std::string model_dir, input, output;
  bool recompute = false;
  std::string device = "cpu", precision = "f32";
  app.add_option("--model", model_dir, "Hugging Face model folder")->required();
  app.add_option("--input", input,
                 "JSONL file, one {\"ids\": [...], \"prompt_len\": P, \"advantage\": A} per line")
      ->required();
  app.add_option("--output", output, "gradients (.safetensors, f32, checkpoint names)")->required();
  app.add_flag("--recompute", recompute, "activation recomputation (less memory, same result)");
  app.add_option("--device", device, "where the model runs: cpu or cuda (needs a CUDA build)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision,
                 "GPU compute precision: f32 (exact vs the CPU) or bf16 (mixed precision: bf16 "
                 "GEMMs and attention, f32 accumulate and master weights)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  CLI11_PARSE(app, argc, argv);

  auto model = gyre::model::CausalLM::load(
      model_dir, {.device = device == "cuda" ? gyre::Device::cuda : gyre::Device::cpu,
                  .precision = gyre::model::parse_precision(precision)});
  model->set_recompute(recompute);
  GradInput in =
      read_grad_input(input, model->config().vocab_size, model->config().max_position_embeddings);
  auto r =
      gyre::model::policy_gradient_loss_and_grad(*model, in.seqs, in.prompt_lens, in.advantages);
  std::map<std::string, gyre::Tensor> tensors;
  for (const auto& g : r.grads.tensors) tensors[g.name] = g.tensor.to(gyre::Device::cpu);
  gyre::model::write_safetensors(output, tensors);
  std::printf("{\"loss\": %s}\n", fmt::format("{}", r.loss).c_str());
  return 0;
}

}  // namespace

GYRE_COMMAND(grad, "policy-gradient loss and dL/dθ of token sequences (JSONL -> safetensors)",
             run_grad);
