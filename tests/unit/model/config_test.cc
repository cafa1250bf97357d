// ModelConfig parsing (HF v4 and v5 spellings, defaults, sanity checks), num_parameters and
// expected_tensors against the fixture checkpoints, and `gyre inspect` end to end.
#include "gyre/model/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "gyre/core/error.h"
#include "gyre/model/param_names.h"
#include "gyre/model/safetensors.h"
#include "test_util.h"

namespace gyre::model {
namespace {

namespace fs = std::filesystem;

// Llama 3 config in the transformers v4 spelling.
const char* kLlamaV4 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 1000, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
  "torch_dtype": "bfloat16"
})";
// The same model in the v5 spelling.
const char* kLlamaV5 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 1000, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
  "num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 4096,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
  "dtype": "bfloat16"
})";

void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.factor, b.rope.factor);
  EXPECT_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position_embeddings, b.rope.original_max_position_embeddings);
  EXPECT_EQ(a.rope.beta_fast, b.rope.beta_fast);
  EXPECT_EQ(a.rope.beta_slow, b.rope.beta_slow);
  EXPECT_EQ(a.rope.mscale, b.rope.mscale);
  EXPECT_EQ(a.rope.mscale_all_dim, b.rope.mscale_all_dim);
  EXPECT_EQ(a.rope.attention_factor, b.rope.attention_factor);
  EXPECT_EQ(a.rope.truncate, b.rope.truncate);
  EXPECT_EQ(a.num_parameters(), b.num_parameters());
}

// Returns the Error thrown by `f`, failing the test if none is.
template <typename F>
Error error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected gyre::Error";
  return Error(ErrorKind::internal, "");
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

TEST(ConfigParse, LlamaV4AndV5SpellingsAgree) {
  ModelConfig v4 = parse_config_json(kLlamaV4, "v4.json");
  ModelConfig v5 = parse_config_json(kLlamaV5, "v5.json");
  expect_same(v4, v5);
  EXPECT_EQ(v4.arch, Arch::llama);
  EXPECT_EQ(v4.head_dim, 16);
  EXPECT_EQ(v4.rope.type, "llama3");
  EXPECT_EQ(v4.rope.theta, 500000.0);
  EXPECT_EQ(v4.rope.factor, 8.0);
  EXPECT_EQ(v4.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(v4.dtype, DType::bf16);
  EXPECT_EQ(v4.bos_token_id, 1);
  EXPECT_EQ(v4.eos_token_ids, (std::vector<int32_t>{2, 3}));
}

TEST(ConfigParse, YarnV4TypeKeyAndV5Agree) {
  const char* base = R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 100,
    "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 4, "head_dim": 32, "max_position_embeddings": 131072, ROPE})";
  std::string v4 = replace(base, "ROPE",
                           R"("rope_theta": 1000000.0, "torch_dtype": "float16",
      "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
                       "beta_fast": 16, "beta_slow": 2, "mscale": 0.707, "mscale_all_dim": 1.0,
                       "attention_factor": 1.1, "truncate": false})");
  std::string v5 = replace(base, "ROPE",
                           R"("dtype": "float16",
      "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                          "original_max_position_embeddings": 32768, "beta_fast": 16,
                          "beta_slow": 2, "mscale": 0.707, "mscale_all_dim": 1.0,
                          "attention_factor": 1.1, "truncate": false})");
  ModelConfig a = parse_config_json(v4, "v4.json"), b = parse_config_json(v5, "v5.json");
  expect_same(a, b);
  EXPECT_EQ(a.rope.type, "yarn");
  EXPECT_EQ(a.rope.factor, 4.0);
  EXPECT_EQ(a.rope.beta_fast, 16.0);
  EXPECT_EQ(a.rope.beta_slow, 2.0);
  EXPECT_EQ(a.rope.mscale, 0.707);
  EXPECT_EQ(a.rope.attention_factor, 1.1);
  EXPECT_FALSE(a.rope.truncate);
  EXPECT_EQ(a.dtype, DType::f16);
  EXPECT_TRUE(a.qk_norm);
  EXPECT_EQ(a.head_dim, 32);
}

TEST(ConfigParse, DefaultsFollowTransformersConfigClasses) {
  // Minimal Qwen2: q/k/v bias is implied; no rope keys -> default rope, theta 10000; f32.
  ModelConfig q2 = parse_config_json(
      R"({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
          "attention_bias": false})",
      "q2.json");
  EXPECT_TRUE(q2.attention_bias);
  EXPECT_FALSE(q2.has_o_proj_bias());
  EXPECT_EQ(q2.num_key_value_heads, 2);
  EXPECT_EQ(q2.head_dim, 4);
  EXPECT_EQ(q2.rope.type, "default");
  EXPECT_EQ(q2.rope.theta, 10000.0);
  EXPECT_EQ(q2.dtype, DType::f32);
  EXPECT_EQ(q2.model_type, "qwen2");
  EXPECT_FALSE(q2.bos_token_id.has_value());
  // Qwen3 without head_dim uses Qwen3Config's default of 128, not hidden / heads.
  ModelConfig q3 = parse_config_json(
      R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 10, "hidden_size": 64,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
          "rope_scaling": {"type": "linear", "factor": 2}})",
      "q3.json");
  EXPECT_EQ(q3.head_dim, 128);
  EXPECT_EQ(q3.rope.type, "linear");
  EXPECT_EQ(q3.rope.factor, 2.0);
  // Llama with attention_bias puts a bias on o_proj as well (LlamaAttention).
  ModelConfig ll = parse_config_json(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
          "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
          "attention_bias": true, "mlp_bias": true, "tie_word_embeddings": true})",
      "ll.json");
  EXPECT_TRUE(ll.has_o_proj_bias());
  // 10*8 embed + (q,k,v,o 4*64 + biases 3*8 + 8) + mlp (3*128 + 2*16 + 8) + 2*8 + final 8.
  EXPECT_EQ(ll.num_parameters(), 80 + 256 + 32 + 384 + 40 + 16 + 8);
  int64_t sum = 0;
  for (auto& [n, s] : expected_tensors(ll)) sum += shape_numel(s);
  EXPECT_EQ(sum, ll.num_parameters());
}

TEST(ConfigParse, MoeLayerRuleAndParameterCount) {
  ModelConfig c = parse_config_json(
      R"({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 50, "hidden_size": 16,
          "intermediate_size": 40, "num_hidden_layers": 6, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
          "moe_intermediate_size": 12, "decoder_sparse_step": 2, "mlp_only_layers": [3],
          "norm_topk_prob": true})",
      "moe.json");
  std::vector<bool> moe;
  for (int64_t i = 0; i < 6; ++i) moe.push_back(c.is_moe_layer(i));
  EXPECT_EQ(moe, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_TRUE(c.norm_topk_prob);
  int64_t attn = 16 * 32 + 2 * 16 * 16 + 32 * 16 + 2 * 8;
  int64_t dense = 3 * 16 * 40, sparse = 4 * 16 + 4 * 3 * 16 * 12;
  EXPECT_EQ(c.num_parameters(), 2 * 50 * 16 + 16 + 6 * (attn + 2 * 16) + 4 * dense + 2 * sparse);
  int64_t sum = 0;
  for (auto& [n, s] : expected_tensors(c)) sum += shape_numel(s);
  EXPECT_EQ(sum, c.num_parameters());
}

TEST(ConfigParse, EveryFixtureLoadsAndMatchesItsCheckpoint) {
  const char* names[] = {"llama3_tiny", "qwen2_tiny", "qwen3_tiny", "qwen3_tiny_bf16",
                         "qwen3moe_tiny"};
  for (const char* name : names) {
    SCOPED_TRACE(name);
    std::string dir = test::source_path(std::string("tests/fixtures/models/") + name);
    ModelConfig c = load_config(dir);
    SafetensorsReader r = SafetensorsReader::open(dir);
    int64_t total = 0;
    std::vector<std::pair<std::string, Shape>> actual;
    for (auto& n : r.names()) {
      total += shape_numel(r.info(n).shape);
      actual.push_back({n, r.info(n).shape});
      EXPECT_EQ(r.info(n).dtype, c.dtype) << n;
    }
    EXPECT_EQ(c.num_parameters(), total);
    TensorMismatch mm = compare_tensors(c, actual);
    EXPECT_TRUE(mm.ok()) << mm.missing.size() << " missing, " << mm.unexpected.size()
                         << " unexpected, " << mm.wrong_shape.size() << " wrong shape";
    EXPECT_EQ(expected_tensors(c).size(), actual.size());
  }
  ModelConfig llama = load_config(test::source_path("tests/fixtures/models/llama3_tiny"));
  EXPECT_EQ(llama.rope.type, "llama3");
  EXPECT_EQ(llama.rope.theta, 500000.0);
  EXPECT_EQ(llama.rope.original_max_position_embeddings, 64);
  EXPECT_EQ(llama.eos_token_ids, (std::vector<int32_t>{2}));
  EXPECT_EQ(llama.bos_token_id, 1);
  ModelConfig q2 = load_config(test::source_path("tests/fixtures/models/qwen2_tiny"));
  EXPECT_TRUE(q2.attention_bias && q2.tie_word_embeddings);
  EXPECT_TRUE(q2.eos_token_ids.empty());
  ModelConfig q3 = load_config(test::source_path("tests/fixtures/models/qwen3_tiny"));
  EXPECT_EQ(q3.head_dim, 32);
  EXPECT_TRUE(q3.qk_norm);
  EXPECT_EQ(load_config(test::source_path("tests/fixtures/models/qwen3_tiny_bf16")).dtype,
            DType::bf16);
  ModelConfig moe = load_config(test::source_path("tests/fixtures/models/qwen3moe_tiny"));
  EXPECT_EQ(moe.num_experts, 8);
  EXPECT_EQ(moe.num_experts_per_tok, 2);
  EXPECT_EQ(moe.moe_intermediate_size, 32);
  EXPECT_TRUE(moe.norm_topk_prob && moe.is_moe_layer(0) && moe.is_moe_layer(1));
}

TEST(ConfigParse, GenerationConfigEosIsMerged) {
  std::string dir = test::temp_dir("cfg_eos");
  test::write_file(dir + "/config.json", kLlamaV4);
  test::write_file(dir + "/generation_config.json",
                   R"({"eos_token_id": [3, 7], "bos_token_id": 1})");
  ModelConfig c = load_config(dir);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2, 3, 7}));
  test::write_file(dir + "/generation_config.json", "{\"eos_token_id\": [3,");
  Error e = error_of([&] { load_config(dir); });
  EXPECT_NE(std::string(e.what()).find("generation_config.json"), std::string::npos) << e.what();
}

TEST(ConfigParse, UnknownArchitectureListsSupported) {
  std::string j = replace(kLlamaV4, "LlamaForCausalLM", "MistralForCausalLM");
  Error e = error_of([&] { parse_config_json(j, "/m/config.json"); });
  EXPECT_EQ(e.kind(), ErrorKind::unsupported);
  EXPECT_STREQ(e.what(),
               "unsupported architecture 'MistralForCausalLM' in /m/config.json; supported: "
               "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM");
}

TEST(ConfigParse, MissingConfigIsNotFoundNamingThePath) {
  std::string dir = test::temp_dir("cfg_missing");
  Error e = error_of([&] { load_config(dir); });
  EXPECT_EQ(e.kind(), ErrorKind::not_found);
  EXPECT_NE(std::string(e.what()).find(dir + "/config.json"), std::string::npos) << e.what();
}

TEST(ConfigParse, InvalidJsonNamesFileAndPosition) {
  std::string dir = test::temp_dir("cfg_badjson");
  test::write_file(dir + "/config.json", "{\n  \"vocab_size\": 10,\n  \"hidden_size\": ,\n}");
  Error e = error_of([&] { load_config(dir); });
  EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
  std::string m = e.what();
  EXPECT_NE(m.find(dir + "/config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("line 3"), std::string::npos) << m;
}

TEST(ConfigParse, MissingOrMistypedKeysNameFileAndKey) {
  struct Case {
    std::string from, to, key;
  } cases[] = {
      {R"("hidden_size": 128,)", "", "'hidden_size'"},
      {R"("hidden_size": 128)", R"("hidden_size": "128")", "'hidden_size'"},
      {R"("vocab_size": 1000)", R"("vocab_size": 10.5)", "'vocab_size'"},
      {R"("tie_word_embeddings": false)", R"("tie_word_embeddings": "no")",
       "'tie_word_embeddings'"},
      {R"("factor": 8.0,)", "", "'rope_scaling.factor'"},
      {R"("factor": 8.0)", R"("factor": "8")", "'rope_scaling.factor'"},
      {R"("rope_theta": 500000.0)", R"("rope_theta": [1])", "'rope_theta'"},
      {R"("eos_token_id": [2, 3])", R"("eos_token_id": ["x"])", "'eos_token_id'"},
      {R"("torch_dtype": "bfloat16")", R"("torch_dtype": "int4")", "'torch_dtype'"},
      {R"("rope_type": "llama3")", R"("rope_type": "dynamic")", "rope_type"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.to);
    Error e =
        error_of([&] { parse_config_json(replace(kLlamaV4, c.from, c.to), "cfg/config.json"); });
    std::string m = e.what();
    EXPECT_NE(m.find("cfg/config.json"), std::string::npos) << m;
    EXPECT_NE(m.find(c.key), std::string::npos) << m;
  }
}

TEST(ConfigParse, SanityChecksRejectInconsistentSizes) {
  struct Case {
    std::string from, to, needle;
  } cases[] = {
      {R"("num_key_value_heads": 2)", R"("num_key_value_heads": 3)", "not divisible"},
      {R"("vocab_size": 1000)", R"("vocab_size": -5)", "vocab_size"},
      {R"("num_attention_heads": 8)", R"("num_attention_heads": 0)", "num_attention_heads"},
      {R"("hidden_size": 128)", R"("hidden_size": 130)", "head_dim"},
      {R"("high_freq_factor": 4.0)", R"("high_freq_factor": 1.0)", "high_freq_factor"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.to);
    Error e = error_of([&] { parse_config_json(replace(kLlamaV4, c.from, c.to), "x.json"); });
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
  }
  const char* moe = R"({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 50,
      "hidden_size": 16, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
      "head_dim": 4, "num_experts": 4, "num_experts_per_tok": 5, "moe_intermediate_size": 12})";
  Error e = error_of([&] { parse_config_json(moe, "moe.json"); });
  EXPECT_NE(std::string(e.what()).find("num_experts_per_tok 5"), std::string::npos) << e.what();
  Error e2 =
      error_of([&] { parse_config_json(replace(moe, R"("num_experts": 4,)", ""), "moe.json"); });
  EXPECT_NE(std::string(e2.what()).find("num_experts"), std::string::npos) << e2.what();
}

TEST(ParamNames, CompareTensorsReportsDifferences) {
  ModelConfig c = load_config(test::source_path("tests/fixtures/models/qwen2_tiny"));  // tied
  auto actual = expected_tensors(c);
  ASSERT_EQ(actual.front().first, "model.embed_tokens.weight");
  ASSERT_EQ(actual.back().first, "model.norm.weight");
  // Tolerated like transformers does: lm_head next to tied embeddings, the legacy RoPE buffer.
  actual.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  actual.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {8}});
  EXPECT_TRUE(compare_tensors(c, actual).ok());
  actual.push_back({"model.layers.9.mlp.up_proj.weight", {1}});
  actual[1].second = {1, 2};
  std::string dropped = actual[2].first;
  actual.erase(actual.begin() + 2);
  TensorMismatch m = compare_tensors(c, actual);
  EXPECT_EQ(m.missing, std::vector<std::string>{dropped});
  EXPECT_EQ(m.unexpected, std::vector<std::string>{"model.layers.9.mlp.up_proj.weight"});
  ASSERT_EQ(m.wrong_shape.size(), 1u);
  EXPECT_EQ(m.wrong_shape[0].first, actual[1].first);
  EXPECT_EQ(m.wrong_shape[0].second.second, (Shape{1, 2}));
}

TEST(InspectCli, ReportsFixtureAndCrossChecksTensors) {
  std::string dir = test::source_path("tests/fixtures/models/qwen3moe_tiny");
  auto r = test::run_command(test::gyre_bin() + " inspect --model " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Qwen3MoeForCausalLM"), std::string::npos) << r.out;
  ModelConfig c = load_config(dir);
  EXPECT_NE(r.out.find(std::to_string(c.num_parameters())), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("experts"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpoint tensors match"), std::string::npos) << r.out;

  auto j = test::run_command(test::gyre_bin() + " inspect --json --model " +
                             test::source_path("tests/fixtures/models/qwen2_tiny"));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  EXPECT_NE(j.out.find("\"architecture\": \"Qwen2ForCausalLM\""), std::string::npos) << j.out;
  EXPECT_NE(j.out.find("\"tensors_ok\": true"), std::string::npos) << j.out;
}

TEST(InspectCli, ReportsMismatchedCheckpoint) {
  // A qwen3 config whose checkpoint lacks one tensor and has another of the wrong shape.
  std::string src = test::source_path("tests/fixtures/models/qwen3_tiny");
  std::string dir = test::temp_dir("inspect_bad");
  fs::copy_file(src + "/config.json", dir + "/config.json");
  SafetensorsReader r = SafetensorsReader::open(src);
  std::map<std::string, Tensor> t;
  for (auto& n : r.names()) t[n] = r.get(n);
  t.erase("model.norm.weight");
  t["model.layers.0.self_attn.q_norm.weight"] = Tensor::zeros({7});
  write_safetensors(dir + "/model.safetensors", t);
  auto out = test::run_command(test::gyre_bin() + " inspect --model " + dir);
  EXPECT_EQ(out.exit_code, 1) << out.out << out.err;
  EXPECT_NE(out.out.find("missing: model.norm.weight"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("model.layers.0.self_attn.q_norm.weight"), std::string::npos) << out.out;
}

TEST(InspectCli, ParseMissingConfigExitsTwoNamingPath) {
  std::string dir = test::temp_dir("inspect_empty");
  auto r = test::run_command(test::gyre_bin() + " inspect --model " + dir);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir + "/config.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gyre::model
