// RoPE inverse frequencies and cos/sin tables; formulas from transformers' modeling_rope_utils.py
// (_compute_default/linear_scaling/llama3/yarn_parameters), evaluated in double precision.
#include "gyre/model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace gyre::model {

namespace {

// YaRN (Peng et al. 2023, arXiv:2309.00071) attention temperature: 0.1 ln(s) + 1 per mscale unit.
double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// Dimension index at which a wavelength completes `num_rotations` turns within the original
// context.
double yarn_correction_dim(double num_rotations, double dim, double base, double max_pos) {
  return (dim * std::log(max_pos / (num_rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

}  // namespace

namespace {
RopeFrequencies compute_frequencies(const ModelConfig& config) {
  const RopeConfig& r = config.rope;
  const int64_t dim = config.head_dim;
  if (dim <= 0 || dim % 2 != 0)
    GYRE_THROW(invalid_argument,
               "config.json: head_dim = {} must be positive and even for rotary embeddings", dim);
  if (!(r.theta > 0.0))
    GYRE_THROW(invalid_argument, "config.json: rope_theta = {} must be positive", r.theta);
  const int64_t half = dim / 2;
  RopeFrequencies out;
  out.inv_freq.resize(size_t(half));
  // default: theta^(-2i/d)
  for (int64_t i = 0; i < half; ++i)
    out.inv_freq[size_t(i)] = 1.0 / std::pow(r.theta, double(2 * i) / double(dim));

  if (r.type == "default") return out;
  if (!(r.factor > 0.0))
    GYRE_THROW(invalid_argument, "config.json: rope_parameters.factor = {} must be positive",
               r.factor);
  if (r.type == "linear") {
    for (auto& f : out.inv_freq) f /= r.factor;
    return out;
  }
  if (r.type == "llama3") {
    // Llama 3.1: long wavelengths divided by factor, short ones kept, a smooth blend between.
    if (r.original_max_position_embeddings <= 0)
      GYRE_THROW(invalid_argument,
                 "config.json: rope_parameters.original_max_position_embeddings is required (> 0) "
                 "for rope_type llama3");
    if (!(r.high_freq_factor > r.low_freq_factor))
      GYRE_THROW(invalid_argument,
                 "config.json: rope_parameters.high_freq_factor ({}) must exceed low_freq_factor "
                 "({}) for rope_type llama3",
                 r.high_freq_factor, r.low_freq_factor);
    const double old_ctx = double(r.original_max_position_embeddings);
    const double low_freq_wavelen = old_ctx / r.low_freq_factor;
    const double high_freq_wavelen = old_ctx / r.high_freq_factor;
    for (auto& f : out.inv_freq) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      double g = wavelen > low_freq_wavelen ? f / r.factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const double smooth =
            (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        g = (1.0 - smooth) * g / r.factor + smooth * g;
      }
      f = g;
    }
    return out;
  }
  if (r.type == "yarn") {
    const double factor = r.factor;
    const double orig = r.original_max_position_embeddings > 0
                            ? double(r.original_max_position_embeddings)
                            : double(config.max_position_embeddings);
    if (!(orig > 0))
      GYRE_THROW(invalid_argument,
                 "config.json: yarn needs original_max_position_embeddings or "
                 "max_position_embeddings > 0");
    if (r.attention_factor) {
      out.attention_factor = *r.attention_factor;
    } else if (r.mscale && r.mscale_all_dim && *r.mscale != 0.0 && *r.mscale_all_dim != 0.0) {
      out.attention_factor =
          yarn_get_mscale(factor, *r.mscale) / yarn_get_mscale(factor, *r.mscale_all_dim);
    } else {
      out.attention_factor = yarn_get_mscale(factor, 1.0);
    }
    const double beta_fast = r.beta_fast != 0.0 ? r.beta_fast : 32.0;
    const double beta_slow = r.beta_slow != 0.0 ? r.beta_slow : 1.0;
    double low = yarn_correction_dim(beta_fast, double(dim), r.theta, orig);
    double high = yarn_correction_dim(beta_slow, double(dim), r.theta, orig);
    if (r.truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, double(dim - 1));
    if (low == high) high += 0.001;  // HF: prevent a singular ramp
    for (int64_t i = 0; i < half; ++i) {
      const double pos_freq = std::pow(r.theta, double(2 * i) / double(dim));
      const double extrapolation = 1.0 / pos_freq;
      const double interpolation = 1.0 / (factor * pos_freq);
      const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
      const double extrapolation_factor = 1.0 - ramp;
      out.inv_freq[size_t(i)] =
          interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    return out;
  }
  GYRE_THROW(unsupported,
             "config.json: rope type '{}' is not supported (supported: default, linear, llama3, "
             "yarn)",
             r.type);
}

}  // namespace

RopeFrequencies rope_frequencies(const ModelConfig& config) {
  RopeFrequencies f = compute_frequencies(config);
  // transformers loads a bf16/f16 checkpoint with the model cast to that dtype, and the cast
  // includes the rotary inv_freq buffer: HF's cos/sin are then built from inv_freq rounded to the
  // checkpoint dtype (visible in the qwen3_tiny_bf16 fixture: ~4e-3 logit error at position 32
  // without this rounding). Reproduce it so scores match HF for such checkpoints.
  if (config.dtype == DType::bf16)
    for (auto& x : f.inv_freq) x = double(bf16_to_f32(f32_to_bf16(float(x))));
  if (config.dtype == DType::f16)
    for (auto& x : f.inv_freq) x = double(f16_to_f32(f32_to_f16(float(x))));
  return f;
}

void rope_tables(const RopeFrequencies& f, int64_t num_positions, Tensor& cos, Tensor& sin) {
  const int64_t half = int64_t(f.inv_freq.size());
  cos = Tensor::empty({num_positions, half}, DType::f32);
  sin = Tensor::empty({num_positions, half}, DType::f32);
  float* c = cos.f32();
  float* s = sin.f32();
  for (int64_t p = 0; p < num_positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(p) * f.inv_freq[size_t(i)];
      c[p * half + i] = float(std::cos(angle) * f.attention_factor);
      s[p * half + i] = float(std::sin(angle) * f.attention_factor);
    }
  }
}

RopeCache::RopeCache(const ModelConfig& config) : freq_(rope_frequencies(config)) {
  int64_t mpe = config.max_position_embeddings > 0 ? config.max_position_embeddings : 4096;
  initial_ = std::min<int64_t>(mpe, 4096);
}

void RopeCache::get(int64_t min_positions, Tensor* cos, Tensor* sin, Device device) {
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t have = cos_.defined() ? cos_.size(0) : 0;
  if (have < min_positions) {
    int64_t n = std::max<int64_t>(initial_, 1);
    while (n < min_positions) n *= 2;
    rope_tables(freq_, n, cos_, sin_);
    dev_cos_ = dev_sin_ = Tensor();  // stale: rebuilt from the grown host tables on demand
  }
  if (device == Device::cpu) {
    *cos = cos_;
    *sin = sin_;
    return;
  }
  // One device copy is cached; a model lives on one device, so it is rebuilt only after growth
  // (or if the model moves to another device).
  if (!dev_cos_.defined() || dev_cos_.device() != device) {
    dev_cos_ = cos_.to(device);
    dev_sin_ = sin_.to(device);
  }
  *cos = dev_cos_;
  *sin = dev_sin_;
}

}  // namespace gyre::model
