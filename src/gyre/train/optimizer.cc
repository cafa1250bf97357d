#include "gyre/train/optimizer.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "gyre/backend/multi_tensor_ops.h"
#include "gyre/model/safetensors.h"

namespace gyre::train {

double LrSchedule::lr_at(int64_t it, double max_lr, double min_lr) const {
  // Megatron: during warmup lr = max_lr * it / warmup (it counted from 1 at the first step).
  if (warmup_iters > 0 && it <= warmup_iters) return max_lr * double(it) / double(warmup_iters);
  if (decay_style == "constant" || decay_iters <= warmup_iters) return max_lr;
  if (it >= decay_iters) return min_lr;
  double ratio = double(it - warmup_iters) / double(decay_iters - warmup_iters);
  double coeff;
  if (decay_style == "linear") {
    coeff = 1.0 - ratio;
  } else if (decay_style == "cosine") {
    coeff = 0.5 * (std::cos(M_PI * ratio) + 1.0);
  } else {
    GYRE_THROW(invalid_argument, "--lr-decay-style '{}' is not one of constant, linear, cosine",
               decay_style);
  }
  return min_lr + coeff * (max_lr - min_lr);
}

namespace {

std::vector<const Tensor*> tensor_ptrs(const NamedTensors& ts) {
  std::vector<const Tensor*> out;
  out.reserve(ts.size());
  for (auto& [name, t] : ts) out.push_back(&t);
  return out;
}

}  // namespace

double AdamW::grad_norm(const NamedTensors& grads) {
  // One multi-tensor reduction (one device-to-host transfer on CUDA), bitwise the per-tensor
  // loop Σ ops::sum_squares(g).
  return std::sqrt(ops::sum_squares_many(tensor_ptrs(grads)));
}

std::pair<double, double> AdamW::step(NamedTensors& params, NamedTensors& grads) {
  GYRE_CHECK(params.size() == grads.size(), "{} params vs {} grads", params.size(), grads.size());
  double norm = sum_squares_ ? std::sqrt(sum_squares_(grads)) : grad_norm(grads);
  if (!std::isfinite(norm)) {
    // The rare path: per-tensor sums (one more reduction) to name the offending tensor. A
    // non-finite norm from the sum_squares_ hook with finite local gradients (another rank's)
    // continues as before.
    const std::vector<double> each = ops::sum_squares_each(tensor_ptrs(grads));
    for (size_t i = 0; i < grads.size(); ++i)
      if (!std::isfinite(each[i]))
        GYRE_THROW(
            invalid_argument,
            "non-finite gradient in '{}' (grad norm {}); optimizer step skipped — lower --lr "
            "or check the rewards/advantages for NaN",
            grads[i].first, norm);
  }
  // After the norm, as before: the sum_squares_ hook may be a collective every rank must join.
  for (size_t i = 0; i < params.size(); ++i)
    GYRE_CHECK(grads[i].first == params[i].first, "param/grad order mismatch at {}: {} vs {}", i,
               params[i].first, grads[i].first);
  ++iteration_;
  double lr = schedule_.lr_at(iteration_, cfg_.lr, cfg_.min_lr);
  ops::AdamWParams p;
  if (cfg_.clip_grad > 0) {
    // Global-norm clipping (torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6),
    // applied only when < 1), folded into the update's read of each gradient: bitwise scaling the
    // gradients first, without the extra pass over them (the gradients stay unscaled).
    const double coeff = cfg_.clip_grad / (norm + 1e-6);
    if (coeff < 1.0) p.grad_scale = float(coeff);
  }
  p.lr = float(lr);
  p.beta1 = float(cfg_.beta1);
  p.beta2 = float(cfg_.beta2);
  p.eps = float(cfg_.eps);
  p.weight_decay = float(cfg_.weight_decay);
  p.step = iteration_;
  bool same_list = slot_names_.size() == params.size();
  for (size_t i = 0; same_list && i < params.size(); ++i)
    same_list = slot_names_[i] == params[i].first;
  if (!same_list) {
    slot_names_.clear();
    slots_.clear();
    for (auto& [name, w] : params) {
      auto it = m_.find(name);
      if (it == m_.end()) {
        m_[name] = Tensor::zeros(w.shape(), DType::f32, w.device());
        v_[name] = Tensor::zeros(w.shape(), DType::f32, w.device());
      }
      slots_.push_back({&m_[name], &v_[name]});  // std::map nodes are stable under insertion
    }
    for (auto& [name, w] : params) slot_names_.push_back(name);
  }
  std::vector<Tensor*> ws(params.size()), ms(params.size()), vs(params.size());
  std::vector<const Tensor*> gs(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    auto& [name, w] = params[i];
    // Moments live with their parameter (GPU masters keep GPU state); state loaded from a
    // checkpoint arrives on the host and moves at its first step.
    Tensor& m = *slots_[i].first;
    Tensor& v = *slots_[i].second;
    if (m.device() != w.device()) m = m.to(w.device());
    if (v.device() != w.device()) v = v.to(w.device());
    if (m.shape() != w.shape() || v.shape() != w.shape())
      GYRE_THROW(invalid_argument,
                 "optimizer state for '{}' has shape {} (m) / {} (v) but the parameter has {}; "
                 "was the optimizer checkpoint written for another model?",
                 name, shape_str(m.shape()), shape_str(v.shape()), shape_str(w.shape()));
    ws[i] = &w;
    gs[i] = &grads[i].second;
    ms[i] = &m;
    vs[i] = &v;
  }
  // One launch for every tensor on CUDA; the per-tensor kernels' arithmetic, bitwise. With the
  // rollout engine's bf16 copies attached (colocated), the same launch writes each stepped
  // parameter's copy; the cache is stale from here until copies_written() says what was covered.
  std::vector<uint16_t*> bf16_out;
  std::vector<const Tensor*> written;
  const std::shared_ptr<ops::Bf16WeightCache> copies = bf16_copies_.lock();
  if (copies) {
    copies->mark_stale();
    bf16_out.resize(params.size(), nullptr);
    for (size_t i = 0; i < params.size(); ++i)
      if ((bf16_out[i] = copies->copy_to_write(params[i].second))) written.push_back(ws[i]);
    if (written.empty()) bf16_out.clear();  // nothing cached (yet): the plain kernel
  }
  ops::adamw_step_many(ws, gs, ms, vs, p, bf16_out);
  if (copies) copies->copies_written(written);
  return {norm, lr};
}

void AdamW::save(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  std::map<std::string, Tensor> all;
  for (auto& [k, t] : m_) all["m." + k] = t.to(Device::cpu);  // no-op for host state
  for (auto& [k, t] : v_) all["v." + k] = t.to(Device::cpu);
  model::write_safetensors(dir + "/optimizer.safetensors", all);
  nlohmann::json j = {{"iteration", iteration_}};
  std::ofstream(dir + "/optimizer.json") << j.dump(2) << "\n";
}

void AdamW::load(const std::string& dir) {
  std::string meta = dir + "/optimizer.json";
  std::ifstream f(meta);
  if (!f)
    GYRE_THROW(not_found, "optimizer state {} not found (is --load a gyre checkpoint?)", meta);
  nlohmann::json j;
  try {
    f >> j;
    iteration_ = j.at("iteration").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    GYRE_THROW(invalid_argument, "{}: {}", meta, e.what());
  }
  auto reader = model::SafetensorsReader::open(dir + "/optimizer.safetensors");
  m_.clear();
  v_.clear();
  slot_names_.clear();  // their pointers were into the cleared maps
  slots_.clear();
  for (auto& name : reader.names()) {
    Tensor t = reader.get(name).to(DType::f32).clone();
    if (name.rfind("m.", 0) == 0)
      m_[name.substr(2)] = t;
    else if (name.rfind("v.", 0) == 0)
      v_[name.substr(2)] = t;
  }
}

}  // namespace gyre::train
