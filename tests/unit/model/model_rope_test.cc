// RoPE frequency tables against values worked out independently (Python, float64) from the formulas
// of transformers' modeling_rope_utils.py, plus the table layout ops::rope_ expects.
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/model/rope.h"

namespace gyre::model {
namespace {

ModelConfig rope_config(const std::string& type, int64_t head_dim, double theta) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.max_position_embeddings = 4096;
  c.rope.type = type;
  c.rope.theta = theta;
  return c;
}

void expect_freqs(const RopeFrequencies& f, const std::vector<double>& want) {
  ASSERT_EQ(f.inv_freq.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(f.inv_freq[i], want[i], 1e-12 * want[i] + 1e-18) << "index " << i;
}

TEST(ModelRope, DefaultAndLinear) {
  ModelConfig c = rope_config("default", 8, 10000.0);
  expect_freqs(rope_frequencies(c), {1.0, 0.1, 0.01, 0.001});
  c.rope.type = "linear";
  c.rope.factor = 4.0;
  expect_freqs(rope_frequencies(c), {0.25, 0.025, 0.0025, 0.00025});
  EXPECT_EQ(rope_frequencies(c).attention_factor, 1.0);
}

TEST(ModelRope, Llama3BandsMatchFixtureConfig) {
  // tests/fixtures/models/llama3_tiny: head_dim 16, theta 5e5, factor 8, low 1, high 4, original
  // 64; index 0 is high-frequency (kept), 1 is in the smooth band, 2.. are low-frequency (divided).
  ModelConfig c = rope_config("llama3", 16, 500000.0);
  c.rope.factor = 8.0;
  c.rope.low_freq_factor = 1.0;
  c.rope.high_freq_factor = 4.0;
  c.rope.original_max_position_embeddings = 64;
  expect_freqs(
      rope_frequencies(c),
      {1.0, 0.0794030091792082, 0.004700753866357992, 0.0009115830921521386, 0.00017677669529663688,
       3.428102195952591e-05, 6.647869871181236e-06, 1.2891731721515574e-06});
}

TEST(ModelRope, YarnRampAndAttentionFactor) {
  ModelConfig c = rope_config("yarn", 32, 10000.0);
  c.rope.factor = 4.0;
  c.rope.original_max_position_embeddings = 2048;
  const std::vector<double> truncated = {1.0,
                                         0.5623413251903491,
                                         0.31622776601683794,
                                         0.17782794100389226,
                                         0.1,
                                         0.05020904689199546,
                                         0.024846467329894407,
                                         0.012066895996692691,
                                         0.005714285714285714,
                                         0.0026108704383837637,
                                         0.001129384878631564,
                                         0.00044456985250973074,
                                         0.00025,
                                         0.00014058533129758727,
                                         7.905694150420948e-05,
                                         4.445698525097307e-05};
  RopeFrequencies f = rope_frequencies(c);
  expect_freqs(f, truncated);
  EXPECT_NEAR(f.attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-15);

  c.rope.truncate = false;
  f = rope_frequencies(c);
  EXPECT_NEAR(f.inv_freq[5], 0.04945308694591044, 1e-15);
  EXPECT_NEAR(f.inv_freq[10], 0.0008112903817014309, 1e-16);

  c.rope.mscale = 0.707;
  c.rope.mscale_all_dim = 1.0;
  EXPECT_NEAR(rope_frequencies(c).attention_factor, 0.964326914892074, 1e-12);
  c.rope.attention_factor = 1.5;
  EXPECT_EQ(rope_frequencies(c).attention_factor, 1.5);
}

TEST(ModelRope, TablesCarryAttentionFactorAndGrow) {
  ModelConfig c = rope_config("yarn", 8, 10000.0);
  c.rope.factor = 4.0;
  c.rope.original_max_position_embeddings = 32;
  RopeFrequencies f = rope_frequencies(c);
  Tensor cos, sin;
  rope_tables(f, 5, cos, sin);
  ASSERT_EQ(cos.shape(), (Shape{5, 4}));
  for (int64_t p = 0; p < 5; ++p)
    for (int64_t i = 0; i < 4; ++i) {
      const double a = double(p) * f.inv_freq[size_t(i)];
      EXPECT_FLOAT_EQ(cos.f32()[p * 4 + i], float(std::cos(a) * f.attention_factor));
      EXPECT_FLOAT_EQ(sin.f32()[p * 4 + i], float(std::sin(a) * f.attention_factor));
    }
  RopeCache cache(c);
  cache.get(10, &cos, &sin);
  EXPECT_GE(cos.size(0), 10);
  cache.get(10000, &cos, &sin);
  EXPECT_GE(cos.size(0), 10000);
}

TEST(ModelRope, ParseBadRopeConfigRejected) {
  ModelConfig c = rope_config("dynamic", 8, 10000.0);
  EXPECT_THROW(rope_frequencies(c), Error);
  c = rope_config("llama3", 8, 10000.0);  // no original_max_position_embeddings
  c.rope.factor = 8.0;
  EXPECT_THROW(rope_frequencies(c), Error);
  c = rope_config("default", 7, 10000.0);  // odd head_dim
  EXPECT_THROW(rope_frequencies(c), Error);
}

}  // namespace
}  // namespace gyre::model
