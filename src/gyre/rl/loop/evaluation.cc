#include "gyre/rl/loop/evaluation.h"

#include <future>

#include "gyre/core/error.h"

namespace gyre::rl {

std::map<std::string, double> evaluate(const EvalSet& set, infer::RolloutClient& client,
                                       const tokenizer::Tokenizer& tokenizer,
                                       const infer::SamplingParams& sampling, int64_t n_samples,
                                       const RewardHook& reward, const std::string& reward_key) {
  std::vector<SampleGroup> groups;
  std::vector<std::vector<std::future<infer::GenerateResult>>> futures;
  for (size_t p = 0; p < set.data->size(); ++p) {
    const Sample& prompt = (*set.data)[p];
    if (!prompt.prompt.is_string())
      GYRE_THROW(invalid_argument, "eval set '{}' row {}: prompt is not a string after templating",
                 set.name, p);
    std::vector<int32_t> ids = tokenizer.encode(prompt.prompt.get<std::string>(), false);
    SampleGroup g;
    std::vector<std::future<infer::GenerateResult>> fs;
    for (int64_t k = 0; k < n_samples; ++k) {
      Sample s = prompt;
      s.tokens = ids;
      s.index = int64_t(p) * n_samples + k;
      infer::GenerateRequest req;
      req.input_ids = ids;
      req.sampling = sampling;
      req.sampling.seed = uint64_t(1000003 * p + k);  // eval is reproducible across runs
      req.return_logprob = true;
      fs.push_back(client.generate(std::move(req)));
      g.push_back(std::move(s));
    }
    groups.push_back(std::move(g));
    futures.push_back(std::move(fs));
  }
  double rsum = 0, lsum = 0, n = 0, failed = 0;
  for (size_t p = 0; p < groups.size(); ++p) {
    for (size_t k = 0; k < groups[p].size(); ++k) {
      infer::GenerateResult r = futures[p][k].get();
      Sample& s = groups[p][k];
      if (!r.error.empty()) {
        s.status = SampleStatus::failed;
        continue;
      }
      s.append_response(r.output_ids, r.output_logprobs, true, "assistant", r.text);
      s.response = r.text;
      s.apply_finish_reason(infer::finish_type_name(r.finish.type));
    }
    bool ok = true;
    for (auto& s : groups[p]) ok &= s.status != SampleStatus::failed;
    if (!ok) {
      failed += double(groups[p].size());
      continue;
    }
    reward(groups[p]);
    for (auto& s : groups[p]) {
      rsum += s.reward_value(reward_key);
      lsum += double(s.response_length);
      n += 1;
    }
  }
  std::map<std::string, double> m;
  m["eval/" + set.name] = n ? rsum / n : 0.0;
  m["eval/" + set.name + "/response_len"] = n ? lsum / n : 0.0;
  if (failed) m["eval/" + set.name + "/failed"] = failed;
  return m;
}

}  // namespace gyre::rl
