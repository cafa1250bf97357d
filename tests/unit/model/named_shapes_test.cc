// model::named_shape: the Qwen2.5 shapes have the parameter counts of the hub checkpoints (so the
// config values are the real ones), every shape builds a model, and an unknown name lists the
// known ones.
#include "gyre/model/named_shapes.h"

#include <gtest/gtest.h>

#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"

using namespace gyre;

TEST(NamedShapes, QwenParameterCountsMatchTheCheckpoints) {
  // Qwen/Qwen2.5-0.5B, -1.5B (tied embeddings) and -7B (separate lm_head): safetensors totals.
  EXPECT_EQ(model::named_shape("qwen2.5-0.5b").num_parameters(), 494032768);
  EXPECT_EQ(model::named_shape("qwen2.5-1.5b").num_parameters(), 1543714304);
  EXPECT_EQ(model::named_shape("qwen2.5-7b").num_parameters(), 7615616512);
  // Qwen/Qwen3-8B (untied lm_head, q/k norms, no biases): 8,190,735,360.
  const auto q3 = model::named_shape("qwen3-8b");
  EXPECT_EQ(q3.num_parameters(), 8190735360);
  EXPECT_EQ(q3.arch, model::Arch::qwen3);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_EQ(q3.num_attention_heads % 8, 0);
  EXPECT_EQ(q3.num_key_value_heads % 8, 0);
}

TEST(NamedShapes, TinyBuildsAModel) {
  const auto cfg = model::named_shape("tiny");
  EXPECT_EQ(cfg.arch, model::Arch::qwen2);
  auto m = model::CausalLM::random_init(cfg, 1);
  EXPECT_EQ(m->num_parameters(), cfg.num_parameters());
  EXPECT_EQ(model::named_shape_names().front(), "tiny");
}

TEST(NamedShapes, UnknownNameListsTheKnownOnes) {
  try {
    model::named_shape("qwen2.5-3b");
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("known shapes: tiny, qwen2.5-0.5b, qwen2.5-1.5b, "
                                         "qwen2.5-7b, qwen3-8b"),
              std::string::npos)
        << e.what();
  }
}
