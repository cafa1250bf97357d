// `gyre reward`: score JSONL cases {"prompt", "response", "label", "metadata"} with a reward
// function (--rm-type, --custom-rm-path, --rm-url) and print one {"reward": ...} line per case
// (plus "error" when that sample's reward failed). Thin: parsing and I/O only; the work is
// gyre::rl::rewards. Exit status: 0 when every case was scored; 1 when any case's reward failed
// (every line is still written; stderr says how many and the first error); 2 for a malformed
// line (naming its line number) or a bad reward setup.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/rl/rewards/reward.h"

namespace {

using gyre::rl::rewards::Reward;
using gyre::rl::rewards::RewardInput;
using nlohmann::json;

RewardInput parse_case(const std::string& line, const std::string& file, size_t lineno) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    GYRE_THROW(invalid_argument,
               "{}:{}: not valid JSON ({}); each line must be one object "
               "{{\"response\": ..., \"label\": ...}}",
               file, lineno, e.what());
  }
  if (!j.is_object())
    GYRE_THROW(invalid_argument, "{}:{}: expected a JSON object, got {}", file, lineno,
               j.type_name());
  RewardInput in;
  for (const char* key : {"prompt", "response"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_string())
      GYRE_THROW(invalid_argument, "{}:{}: field \"{}\" must be a string, got {}", file, lineno,
                 key, j[key].type_name());
  }
  if (!j.contains("response"))
    GYRE_THROW(invalid_argument, "{}:{}: missing field \"response\"", file, lineno);
  in.prompt = j.value("prompt", "");
  in.response = j["response"].get<std::string>();
  in.label = j.contains("label") ? j["label"] : json(nullptr);
  in.metadata = j.contains("metadata") ? j["metadata"] : json::object();
  if (!in.metadata.is_object() && !in.metadata.is_null())
    GYRE_THROW(invalid_argument, "{}:{}: field \"metadata\" must be an object, got {}", file,
               lineno, in.metadata.type_name());
  in.index = int64_t(lineno);
  return in;
}

int run_reward(int argc, char** argv) {
  CLI::App app{"Score JSONL {prompt, response, label, metadata} cases with a reward function"};
  app.footer(
      "Exit status: 0 every case scored; 1 some rewards failed (every output line is still "
      "written; a failed one carries \"error\", and stderr names the first); 2 a malformed input "
      "line or a bad reward setup.");
  gyre::rl::rewards::RewardConfig config;
  std::string input, output, reward_key;
  int group_size = 1;
  app.add_option("--rm-type", config.rm_type,
                 "math | deepscaler | dapo | f1 | gpqa | random | remote_rm (boxed_<type> scores "
                 "the last \\boxed{} only)");
  app.add_option("--custom-rm-path", config.custom_rm_path,
                 "a .so exporting gyre_reward_v1, or a command speaking JSON lines");
  app.add_option("--rm-url", config.rm_url, "remote reward model URL (remote_rm)");
  app.add_option("--reward-key", reward_key, "print this field of dict-valued rewards");
  app.add_flag("--group-rm", config.group_rm, "score each group of --n-samples-per-prompt at once");
  app.add_option("--n-samples-per-prompt", group_size, "group size for --group-rm")
      ->check(CLI::PositiveNumber);
  app.add_option("--custom-rm-timeout", config.custom_rm_timeout_s,
                 "seconds per request to a custom reward process")
      ->check(CLI::PositiveNumber);
  app.add_option("--rm-timeout", config.rm_timeout_s, "seconds per remote_rm attempt")
      ->check(CLI::PositiveNumber);
  app.add_option("--rm-max-retries", config.rm_max_retries, "remote_rm attempts");
  app.add_option("--seed", config.seed, "seed of --rm-type random");
  app.add_option("--input", input, "JSONL cases")->required();
  app.add_option("--output", output, "JSONL output (default: stdout)");
  CLI11_PARSE(app, argc, argv);
  if (!reward_key.empty()) config.reward_key = reward_key;

  std::ifstream in(input, std::ios::binary);
  if (!in) GYRE_THROW(not_found, "--input {}: cannot open", input);
  std::vector<RewardInput> cases;
  std::string line;
  for (size_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    cases.push_back(parse_case(line, input, lineno));
  }
  if (config.group_rm && cases.size() % size_t(group_size) != 0)
    GYRE_THROW(invalid_argument,
               "--group-rm: {} cases is not a multiple of --n-samples-per-prompt {}", cases.size(),
               group_size);

  auto fn = gyre::rl::rewards::make_reward_function(config);
  std::ofstream out_file;
  if (!output.empty()) {
    out_file.open(output, std::ios::binary);
    if (!out_file) GYRE_THROW(io, "--output {}: cannot open for writing", output);
  }
  std::ostream& out = output.empty() ? std::cout : out_file;
  const size_t step = config.group_rm ? size_t(group_size) : std::max<size_t>(1, cases.size());
  size_t failed = 0;
  std::string first_error;
  for (size_t b = 0; b < cases.size(); b += step) {
    std::vector<RewardInput> batch(cases.begin() + long(b),
                                   cases.begin() + long(std::min(cases.size(), b + step)));
    std::vector<Reward> rewards = fn->score(batch);
    for (size_t i = 0; i < rewards.size(); ++i) {
      json o;
      if (!rewards[i].ok()) {
        o = {{"reward", nullptr}, {"error", rewards[i].error}};
        if (failed++ == 0)
          first_error = fmt::format("{}:{}: {}", input, batch[i].index, rewards[i].error);
      } else if (config.reward_key) {
        o = {{"reward", gyre::rl::rewards::reward_value(rewards[i].value, config.reward_key,
                                                        batch[i].index)}};
      } else {
        o = {{"reward", rewards[i].value}};
      }
      out << o.dump() << "\n";
    }
  }
  out.flush();
  if (!out) GYRE_THROW(io, "writing {} failed", output.empty() ? "stdout" : output);
  // Failed rewards are data (written above), but a script must not read exit 0 as "all scored".
  if (failed > 0) {
    std::fprintf(stderr,
                 "gyre reward: %zu of %zu cases failed (their output lines carry \"error\"); "
                 "first: %s\n",
                 failed, cases.size(), first_error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

GYRE_COMMAND(reward, "score JSONL responses with a reward function (rule-based, remote, custom)",
             run_reward);
