// Shared by the GPU tests of the engine's bf16 weight copies
// (tests/gpu/infer/weight_sync_gpu_test.cc, tests/gpu/rl/colocated_bf16_copies_gpu_test.cc): the
// bf16 test model and engine geometry, and the check that every cached copy is the exact bf16
// rounding of its parameter's current value.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gpu/model/small_model.h"
#include "gyre/core/dtype.h"
#include "gyre/infer/engine.h"
#include "gyre/model/causal_lm.h"

namespace gyre::gputest {

// The small test model on the GPU in bf16 mixed precision (random weights, seed 11).
inline std::unique_ptr<model::CausalLM> bf16_model() {
  auto m = model::CausalLM::random_init(model::testmodel::small_config(), 11, 0.08f);
  m->to(Device::cuda);
  m->set_precision(model::Precision::bf16);
  return m;
}

inline infer::EngineConfig copies_engine_config() {
  infer::EngineConfig c;
  c.page_size = 16;
  c.num_pages = 512;
  c.max_num_batched_tokens = 512;
  return c;
}

// n bf16 values at device address p, copied to the host.
inline std::vector<uint16_t> bits_at(const uint16_t* p, int64_t n) {
  Tensor h = Tensor::borrow(const_cast<uint16_t*>(p), {n}, DType::bf16, Device::cuda, nullptr)
                 .to(Device::cpu);
  std::vector<uint16_t> out(static_cast<size_t>(n));
  std::memcpy(out.data(), h.raw(), size_t(n) * 2);
  return out;
}

// Every copy the engine holds equals f32_to_bf16 of its parameter now, bit for bit; returns how
// many parameters have one.
inline size_t expect_copies_match(infer::Engine& engine, model::CausalLM& m,
                                  const std::string& when) {
  size_t n = 0;
  for (auto& p : m.parameters()) {
    const uint16_t* c = engine.weight_cache().copy_to_write(p.tensor);
    if (!c) continue;
    ++n;
    std::vector<uint16_t> want;
    for (float x : p.tensor.to(Device::cpu).to_vector()) want.push_back(f32_to_bf16(x));
    EXPECT_EQ(bits_at(c, p.tensor.numel()), want) << when << ": stale copy of " << p.name;
  }
  return n;
}

}  // namespace gyre::gputest
