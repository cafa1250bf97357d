// The PPO critic (see header).
#include "gyre/rl/trainer/critic.h"

#include <filesystem>

#include "gyre/core/error.h"
#include "gyre/model/safetensors.h"
#include "gyre/rl/algorithms/policy_loss.h"

namespace gyre::rl {

namespace {

constexpr const char* kHeadFile = "value_head.safetensors";

std::vector<std::vector<int32_t>> seqs_of(const std::vector<Sample>& samples,
                                          const std::vector<int64_t>& mb) {
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t j : mb) seqs.push_back(samples[size_t(j)].tokens);
  return seqs;
}

// First packed row of each sample's response values (the row predicting its first response
// token), as the actor's log-prob layout.
std::vector<int64_t> first_rows(const std::vector<Sample>& samples,
                                const std::vector<int64_t>& mb) {
  std::vector<int64_t> rows;
  int64_t offset = 0;
  for (int64_t j : mb) {
    const Sample& s = samples[size_t(j)];
    rows.push_back(offset + s.prompt_length() - 1);
    offset += int64_t(s.tokens.size());
  }
  return rows;
}

float head_value(const float* logits_row, const float* w, float b, int64_t V) {
  double acc = 0;
  for (int64_t v = 0; v < V; ++v) acc += double(w[v]) * double(logits_row[v]);
  return float(acc + double(b));
}

}  // namespace

Critic::Critic(const std::string& dir, train::AdamWConfig adam, train::LrSchedule schedule)
    : trunk_(model::CausalLM::load(dir)), optimizer_(adam, schedule) {
  const int64_t V = trunk_->config().vocab_size;
  head_w_ = Tensor::zeros({V});
  head_b_ = Tensor::zeros({1});
  const auto head = std::filesystem::path(dir) / kHeadFile;
  if (std::filesystem::exists(head)) load_head(head.string());
}

void Critic::load_head(const std::string& path) {
  auto reader = model::SafetensorsReader::open(path);
  Tensor w = reader.get("value_head.weight").to(DType::f32).clone();
  Tensor b = reader.get("value_head.bias").to(DType::f32).clone();
  if (w.numel() != head_w_.numel() || b.numel() != 1)
    GYRE_THROW(invalid_argument,
               "{}: value_head.weight has {} values and value_head.bias {} but the critic's vocab "
               "is {} (weight) and 1 (bias): the head belongs to another model",
               path, w.numel(), b.numel(), head_w_.numel());
  std::copy(w.f32(), w.f32() + w.numel(), head_w_.f32());
  head_b_.f32()[0] = b.f32()[0];
}

TokenValuesF Critic::values(const std::vector<Sample>& samples,
                            const std::vector<std::vector<int64_t>>& schedule) {
  TokenValuesF out(samples.size());
  const int64_t V = head_w_.numel();
  for (const auto& mb : schedule) {
    // save_for_backward as in train_step, so old values equal the first trained forward bitwise.
    model::ForwardOptions o;
    o.save_for_backward = true;
    model::ForwardState state;
    model::Batch batch = model::Batch::pack(seqs_of(samples, mb));
    Tensor logits = trunk_->forward(batch, o, &state);
    state.clear();
    const auto rows = first_rows(samples, mb);
    for (size_t k = 0; k < mb.size(); ++k) {
      const Sample& s = samples[size_t(mb[k])];
      auto& v = out[size_t(mb[k])];
      v.resize(size_t(s.response_length));
      for (int64_t t = 0; t < s.response_length; ++t)
        v[size_t(t)] =
            head_value(logits.f32() + (rows[k] + t) * V, head_w_.f32(), head_b_.f32()[0], V);
    }
  }
  return out;
}

std::map<std::string, double> Critic::train_step(
    const AlgorithmConfig& algo, const std::vector<Sample>& samples,
    const std::vector<std::vector<int64_t>>& step_mbs, const TokenValuesF& returns,
    const TokenValuesF& old_values, const std::vector<std::vector<float>>& masks,
    const std::vector<double>& sample_denoms, double normalizer) {
  const int64_t V = head_w_.numel();
  model::Gradients grads = trunk_->zeros_like_parameters();
  Tensor gw = Tensor::zeros({V}), gb = Tensor::zeros({1});
  std::map<std::string, double> metrics;
  AlgorithmConfig value_algo = algo;
  value_algo.loss_type = LossType::value_loss;
  for (const auto& mb : step_mbs) {
    model::ForwardOptions o;
    o.save_for_backward = true;
    model::ForwardState state;
    model::Batch batch = model::Batch::pack(seqs_of(samples, mb));
    Tensor logits = trunk_->forward(batch, o, &state);
    const auto rows = first_rows(samples, mb);
    LossBatch lb;
    for (size_t k = 0; k < mb.size(); ++k) {
      const size_t j = size_t(mb[k]);
      std::vector<float> v(size_t(samples[j].response_length));
      for (size_t t = 0; t < v.size(); ++t)
        v[t] = head_value(logits.f32() + (rows[k] + int64_t(t)) * V, head_w_.f32(),
                          head_b_.f32()[0], V);
      lb.values.push_back(std::move(v));
      lb.old_values.push_back(old_values[j]);
      lb.returns.push_back(returns[j]);
      lb.loss_masks.push_back(masks[j]);
      lb.sample_denoms.push_back(sample_denoms[j]);
    }
    LossOutput lo = value_loss(value_algo, lb, normalizer);
    // v = w·z + b: dz = dv w, dw += dv z, db += dv.
    Tensor dlogits = Tensor::zeros(logits.shape());
    const float* w = head_w_.f32();
    for (size_t k = 0; k < mb.size(); ++k)
      for (size_t t = 0; t < lo.grad_values[k].size(); ++t) {
        const float dv = lo.grad_values[k][t];
        if (dv == 0.0f) continue;
        const int64_t r = rows[k] + int64_t(t);
        const float* z = logits.f32() + r * V;
        float* dz = dlogits.f32() + r * V;
        for (int64_t c = 0; c < V; ++c) {
          dz[c] = dv * w[c];
          gw.f32()[c] += dv * z[c];
        }
        gb.f32()[0] += dv;
      }
    trunk_->backward(dlogits, state, grads);
    for (auto& [k, val] : lo.metrics) metrics[k] += val;
  }
  train::NamedTensors params, gradv;
  for (auto& p : trunk_->parameters()) params.emplace_back(p.name, p.tensor);
  for (auto& g : grads.tensors) gradv.emplace_back(g.name, g.tensor);
  params.emplace_back("value_head.weight", head_w_);
  params.emplace_back("value_head.bias", head_b_);
  gradv.emplace_back("value_head.weight", gw);
  gradv.emplace_back("value_head.bias", gb);
  auto [norm, lr] = optimizer_.step(params, gradv);
  metrics["train/critic_grad_norm"] = norm;
  metrics["train/critic_lr"] = lr;
  return metrics;
}

void Critic::save(const std::string& dir, DType dtype) const {
  std::filesystem::create_directories(dir + "/model");
  trunk_->save(dir + "/model", dtype);
  model::write_safetensors(dir + "/model/" + kHeadFile,
                           {{"value_head.weight", head_w_}, {"value_head.bias", head_b_}});
  optimizer_.save(dir);
}

void Critic::load(const std::string& dir) {
  trunk_->load_weights(dir + "/model");
  load_head(dir + "/model/" + kHeadFile);
  optimizer_.load(dir);
}

}  // namespace gyre::rl
