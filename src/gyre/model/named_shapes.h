// Named model shapes: the config.json values of real models (Qwen/Qwen2.5-0.5B, -1.5B, -7B,
// Qwen/Qwen3-8B) and a
// tiny Qwen2 shape for CPU tests, for benchmarks that run random weights of a real shape without
// its checkpoint (`gyre bench --shape`, bench_model_gpu, bench_rollout_gpu). Every shape is
// complete: CausalLM::random_init accepts it as is.
#pragma once
#include <string>
#include <vector>

#include "gyre/model/config.h"

namespace gyre::model {

// The known names, in a fixed order (smallest first): "tiny", "qwen2.5-0.5b", ...
std::vector<std::string> named_shape_names();
// The shape called `name`; an unknown name is an Error(invalid_argument) listing the known ones.
ModelConfig named_shape(const std::string& name);

}  // namespace gyre::model
