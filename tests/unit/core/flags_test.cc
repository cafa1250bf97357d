// FlagSet: every type from argv and YAML, precedence (default < YAML < argv), bool spellings,
// lists, optionals, unknown-flag suggestions and wrong-type errors, dump_yaml round trip.
#include "gyre/core/flags.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gyre/core/error.h"
#include "test_util.h"

using namespace gyre;

namespace {

// A miniature of `gyre train`'s flags with slime's names and defaults.
struct Cfg {
  int rollout_batch_size = 0;
  int n_samples_per_prompt = 0;
  int64_t max_tokens = 0;
  double lr = 0;
  float eps_clip = 0;
  bool colocate = true;
  bool rollout_shuffle = true;
  std::string input_key;
  std::string advantage_estimator;
  std::vector<std::string> rollout_stop;
  std::vector<int> stop_ids;
  std::vector<double> weights;
  std::optional<int> rollout_max_response_len;
  std::optional<double> eps_clip_high;
  std::optional<std::string> label_key;
  std::optional<bool> offload_train;

  void declare(FlagSet& f) {
    f.add("rollout-batch-size", &rollout_batch_size, 32, "prompts per rollout step", "Rollout");
    f.add("n-samples-per-prompt", &n_samples_per_prompt, 1, "responses per prompt", "Rollout");
    f.add<int64_t>("max-tokens-per-gpu", &max_tokens, 16384, "token budget", "Train");
    f.add("lr", &lr, 1e-6, "learning rate", "Train");
    f.add("eps-clip", &eps_clip, 0.2f, "PPO clip", "Algorithm");
    f.add("colocate", &colocate, false, "share GPUs", "Cluster");
    f.add("rollout-shuffle", &rollout_shuffle, false, "shuffle prompts", "Data");
    f.add<std::string>("input-key", &input_key, "input", "prompt column", "Data");
    f.add<std::string>("advantage-estimator", &advantage_estimator, "grpo", "estimator",
                       "Algorithm")
        .choices({"grpo", "gspo", "cispo", "ppo"});
    f.add<std::vector<std::string>>("rollout-stop", &rollout_stop, {}, "stop strings", "Rollout");
    f.add<std::vector<int>>("rollout-stop-token-ids", &stop_ids, {}, "stop ids", "Rollout");
    f.add<std::vector<double>>("loss-weights", &weights, {1.0, 0.5}, "weights", "Train");
    f.add<std::optional<int>>("rollout-max-response-len", &rollout_max_response_len, std::nullopt,
                              "max new tokens", "Rollout");
    f.add<std::optional<double>>("eps-clip-high", &eps_clip_high, std::nullopt, "upper clip",
                                 "Algorithm");
    f.add<std::optional<std::string>>("label-key", &label_key, std::nullopt, "label column",
                                      "Data");
    f.add<std::optional<bool>>("offload-train", &offload_train, std::nullopt, "offload", "Cluster");
  }
};

bool parse(FlagSet& f, std::vector<std::string> args) { return f.parse(args); }

std::string error_of(FlagSet& f, std::vector<std::string> args) {
  try {
    f.parse(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The error of parsing `text` as YAML config `source` ("" when it parses).
std::string yaml_error_of(FlagSet& f, const std::string& text, const std::string& source) {
  try {
    f.parse_yaml_string(text, source);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Flags, ParseDefaultsAreStored) {
  Cfg c;
  FlagSet f("gyre train");
  c.declare(f);
  EXPECT_EQ(c.rollout_batch_size, 32);
  EXPECT_EQ(c.max_tokens, 16384);
  EXPECT_DOUBLE_EQ(c.lr, 1e-6);
  EXPECT_FALSE(c.colocate);
  EXPECT_EQ(c.input_key, "input");
  EXPECT_EQ(c.weights, (std::vector<double>{1.0, 0.5}));
  EXPECT_FALSE(c.rollout_max_response_len.has_value());
  EXPECT_FALSE(f.is_set("lr"));
}

TEST(Flags, ParseEveryTypeFromCommandLine) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  ASSERT_TRUE(parse(f, {"--rollout-batch-size",
                        "8",
                        "--max-tokens-per-gpu=9000000000",
                        "--lr",
                        "3e-5",
                        "--eps-clip",
                        "0.28",
                        "--input-key",
                        "prompt",
                        "--advantage-estimator",
                        "gspo",
                        "--rollout-stop",
                        "</s>",
                        "###",
                        "--rollout-stop-token-ids",
                        "1",
                        "-2",
                        "3",
                        "--loss-weights=0.25",
                        "--rollout-max-response-len",
                        "1024",
                        "--eps-clip-high",
                        "0.3",
                        "--label-key",
                        "answer",
                        "--offload-train"}));
  EXPECT_EQ(c.rollout_batch_size, 8);
  EXPECT_EQ(c.max_tokens, 9000000000LL);
  EXPECT_DOUBLE_EQ(c.lr, 3e-5);
  EXPECT_FLOAT_EQ(c.eps_clip, 0.28f);
  EXPECT_EQ(c.input_key, "prompt");
  EXPECT_EQ(c.advantage_estimator, "gspo");
  EXPECT_EQ(c.rollout_stop, (std::vector<std::string>{"</s>", "###"}));
  EXPECT_EQ(c.stop_ids, (std::vector<int>{1, -2, 3}));
  EXPECT_EQ(c.weights, (std::vector<double>{0.25}));
  EXPECT_EQ(c.rollout_max_response_len, 1024);
  EXPECT_EQ(c.eps_clip_high, 0.3);
  EXPECT_EQ(c.label_key, "answer");
  EXPECT_EQ(c.offload_train, true);
  EXPECT_EQ(f.source("lr"), FlagSource::command_line);
  EXPECT_EQ(f.source("colocate"), FlagSource::default_value);
}

TEST(Flags, ParseBoolSpellings) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  ASSERT_TRUE(parse(f, {"--colocate"}));
  EXPECT_TRUE(c.colocate);
  ASSERT_TRUE(parse(f, {"--no-colocate"}));
  EXPECT_FALSE(c.colocate);
  ASSERT_TRUE(parse(f, {"--colocate", "true", "--rollout-shuffle=yes"}));
  EXPECT_TRUE(c.colocate);
  EXPECT_TRUE(c.rollout_shuffle);
  ASSERT_TRUE(parse(f, {"--colocate", "false", "--rollout-shuffle=0"}));
  EXPECT_FALSE(c.colocate);
  EXPECT_FALSE(c.rollout_shuffle);
  // A bare bool followed by another flag does not eat it.
  ASSERT_TRUE(parse(f, {"--colocate", "--rollout-batch-size", "4"}));
  EXPECT_TRUE(c.colocate);
  EXPECT_EQ(c.rollout_batch_size, 4);
  ASSERT_TRUE(parse(f, {"--no-offload-train"}));
  EXPECT_EQ(c.offload_train, false);
  ASSERT_TRUE(parse(f, {"--offload-train", "none"}));
  EXPECT_FALSE(c.offload_train.has_value());
  EXPECT_NE(error_of(f, {"--colocate=maybe"}).find("'maybe'"), std::string::npos);
  EXPECT_NE(error_of(f, {"--no-colocate=true"}).find("takes no value"), std::string::npos);
}

TEST(Flags, ParseUnderscoreAliasAndOptionalNone) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  ASSERT_TRUE(parse(f, {"--rollout_batch_size", "16", "--eps-clip-high", "0.4"}));
  EXPECT_EQ(c.rollout_batch_size, 16);
  ASSERT_TRUE(parse(f, {"--eps-clip-high", "None"}));
  EXPECT_FALSE(c.eps_clip_high.has_value());
  // A string optional keeps the literal text.
  ASSERT_TRUE(parse(f, {"--label-key", "none"}));
  EXPECT_EQ(c.label_key, "none");
}

TEST(Flags, ParseYamlEveryTypeAndUnderscores) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  f.parse_yaml_string(
      "rollout_batch_size: 64\n"
      "max-tokens-per-gpu: 123\n"
      "lr: 1.0e-5\n"
      "colocate: true\n"
      "input_key: \"prompt\"\n"
      "rollout-stop: [\"\\n\\n\", stop]\n"
      "rollout_stop_token_ids:\n  - 7\n  - 8\n"
      "loss-weights: 2.5\n"
      "rollout-max-response-len: 512\n"
      "label-key: ~\n",
      "cfg.yaml");
  EXPECT_EQ(c.rollout_batch_size, 64);
  EXPECT_EQ(c.max_tokens, 123);
  EXPECT_DOUBLE_EQ(c.lr, 1e-5);
  EXPECT_TRUE(c.colocate);
  EXPECT_EQ(c.input_key, "prompt");
  EXPECT_EQ(c.rollout_stop, (std::vector<std::string>{"\n\n", "stop"}));
  EXPECT_EQ(c.stop_ids, (std::vector<int>{7, 8}));
  EXPECT_EQ(c.weights, (std::vector<double>{2.5}));  // a scalar for a list = one item
  EXPECT_EQ(c.rollout_max_response_len, 512);
  EXPECT_FALSE(c.label_key.has_value());
  EXPECT_EQ(f.source("lr"), FlagSource::yaml);
}

TEST(Flags, ParseCommandLineWinsOverYaml) {
  std::string dir = test::temp_dir("flags");
  std::string path = dir + "/c.yaml";
  test::write_file(path, "rollout-batch-size: 64\nn-samples-per-prompt: 8\nlr: 2e-6\n");
  Cfg c;
  FlagSet f;
  c.declare(f);
  // The YAML applies first even though --config comes after the flag on the command line.
  ASSERT_TRUE(parse(f, {"--rollout-batch-size", "4", "--config", path}));
  EXPECT_EQ(c.rollout_batch_size, 4);
  EXPECT_EQ(c.n_samples_per_prompt, 8);
  EXPECT_DOUBLE_EQ(c.lr, 2e-6);
  EXPECT_EQ(f.source("rollout-batch-size"), FlagSource::command_line);
  EXPECT_EQ(f.source("n-samples-per-prompt"), FlagSource::yaml);
  // Several configs: later files win over earlier ones.
  std::string path2 = dir + "/d.yaml";
  test::write_file(path2, "n-samples-per-prompt: 16\n");
  Cfg c2;
  FlagSet f2;
  c2.declare(f2);
  ASSERT_TRUE(parse(f2, {"--config=" + path, "--config", path2}));
  EXPECT_EQ(c2.n_samples_per_prompt, 16);
  EXPECT_EQ(c2.rollout_batch_size, 64);
}

TEST(Flags, ParseUnknownFlagSuggestsClosest) {
  Cfg c;
  FlagSet f("gyre train");
  c.declare(f);
  std::string e = error_of(f, {"--rollout-batch-sise", "4"});
  EXPECT_NE(e.find("unknown flag --rollout-batch-sise"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean --rollout-batch-size?"), std::string::npos) << e;
  e = error_of(f, {"--totally-unrelated-thing", "4"});
  EXPECT_NE(e.find("gyre train --help"), std::string::npos) << e;
  EXPECT_EQ(f.suggest("n_samples_per_promt"), "n-samples-per-prompt");
  try {
    f.parse_yaml_string("a: 1\ncolocat: true\n", "x.yaml");
    FAIL() << "expected an error";
  } catch (const Error& err) {
    std::string m = err.what();
    EXPECT_NE(m.find("x.yaml:1"), std::string::npos) << m;
  }
  try {
    f.parse_yaml_string("colocat: true\n", "x.yaml");
    FAIL() << "expected an error";
  } catch (const Error& err) {
    std::string m = err.what();
    EXPECT_NE(m.find("did you mean --colocate?"), std::string::npos) << m;
    EXPECT_NE(m.find("x.yaml:1"), std::string::npos) << m;
  }
}

TEST(Flags, ParseWrongTypeNamesFlagAndValue) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  std::string e = error_of(f, {"--rollout-batch-size", "abc"});
  EXPECT_NE(e.find("--rollout-batch-size"), std::string::npos) << e;
  EXPECT_NE(e.find("'abc'"), std::string::npos) << e;
  EXPECT_NE(e.find("int"), std::string::npos) << e;
  EXPECT_NE(error_of(f, {"--rollout-batch-size", "3.5"}).find("'3.5'"), std::string::npos);
  EXPECT_NE(error_of(f, {"--rollout-batch-size", "99999999999"}).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of(f, {"--lr", "fast"}).find("expects a float"), std::string::npos);
  EXPECT_NE(error_of(f, {"--rollout-stop-token-ids", "1", "x"}).find("'x'"), std::string::npos);
  EXPECT_NE(error_of(f, {"--advantage-estimator", "grp"}).find("not one of"), std::string::npos);
  EXPECT_NE(error_of(f, {"--rollout-batch-size"}).find("needs a value"), std::string::npos);
  EXPECT_NE(error_of(f, {"stray"}).find("unexpected argument 'stray'"), std::string::npos);
  EXPECT_NE(error_of(f, {"-x"}).find("unknown option"), std::string::npos);
  EXPECT_NE(error_of(f, {"--config", "/nonexistent/x.yaml"}).find("/nonexistent/x.yaml"),
            std::string::npos);
  auto yaml_error = [&](const std::string& text) { return yaml_error_of(f, text, "bad.yaml"); };
  e = yaml_error("lr: 1e-6\nrollout-batch-size: [1, 2]\n");
  EXPECT_NE(e.find("bad.yaml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("got a list"), std::string::npos) << e;
  EXPECT_NE(yaml_error("rollout-batch-size: {a: 1}\n").find("mapping"), std::string::npos);
  EXPECT_NE(yaml_error("colocate: perhaps\n").find("'perhaps'"), std::string::npos);
  EXPECT_NE(yaml_error("rollout-batch-size: ~\n").find("has no value"), std::string::npos);
  EXPECT_NE(yaml_error("- a\n- b\n").find("mapping"), std::string::npos);
  EXPECT_NE(yaml_error("a: [1, 2\n").find("invalid YAML"), std::string::npos);
}

TEST(Flags, ParseDumpYamlRoundTrips) {
  Cfg a;
  FlagSet fa;
  a.declare(fa);
  ASSERT_TRUE(parse(fa, {"--rollout-batch-size", "5", "--lr", "0.1", "--eps-clip", "0.1",
                         "--input-key", "we: \"quoted\"\n", "--rollout-stop", "a b", "--colocate",
                         "--rollout-max-response-len", "77", "--loss-weights", "1e-300", "-0.5"}));
  std::string yaml = fa.dump_yaml();
  Cfg b;
  FlagSet fb;
  b.declare(fb);
  fb.parse_yaml_string(yaml, "dump.yaml");
  EXPECT_EQ(b.rollout_batch_size, 5);
  EXPECT_EQ(b.lr, 0.1);
  EXPECT_EQ(b.eps_clip, 0.1f);
  EXPECT_EQ(b.input_key, "we: \"quoted\"\n");
  EXPECT_EQ(b.rollout_stop, (std::vector<std::string>{"a b"}));
  EXPECT_TRUE(b.colocate);
  EXPECT_EQ(b.rollout_max_response_len, 77);
  EXPECT_FALSE(b.eps_clip_high.has_value());
  EXPECT_EQ(b.weights, (std::vector<double>{1e-300, -0.5}));
  EXPECT_EQ(fb.dump_yaml(), yaml);
}

TEST(Flags, ParseHelpPrintsGroups) {
  Cfg c;
  FlagSet f("gyre train", "Train a policy with RL.");
  c.declare(f);
  std::string h = f.help();
  EXPECT_NE(h.find("Rollout:"), std::string::npos);
  EXPECT_NE(h.find("Algorithm:"), std::string::npos);
  EXPECT_NE(h.find("--rollout-batch-size <int>"), std::string::npos);
  EXPECT_NE(h.find("(default: 32)"), std::string::npos);
  EXPECT_NE(h.find("--[no-]colocate"), std::string::npos);
  EXPECT_NE(h.find("{grpo,gspo,cispo,ppo}"), std::string::npos);
  testing::internal::CaptureStdout();
  bool go_on = parse(f, {"--rollout-batch-size", "3", "--help"});
  std::string printed = testing::internal::GetCapturedStdout();
  EXPECT_FALSE(go_on);
  EXPECT_EQ(printed, h);
}

TEST(Flags, ParsePositionalsWhenAllowed) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  f.allow_positionals(true);
  ASSERT_TRUE(parse(f, {"model_dir", "--lr", "0.5", "--", "--not-a-flag"}));
  EXPECT_EQ(f.positionals(), (std::vector<std::string>{"model_dir", "--not-a-flag"}));
  EXPECT_EQ(c.lr, 0.5);
  f.reset();
  EXPECT_EQ(c.lr, 1e-6);
  EXPECT_FALSE(f.is_set("lr"));
}

// A YAML config that sets a flag twice (yaml-cpp keeps both, so the last used to win silently)
// or leaves a quote open at the end of the file (yaml-cpp 0.7 reads it as running to the end of
// the text) is an error naming the file, the line and the key. Quotes that do close stay fine,
// across lines and with escaped quotes inside.
TEST(Flags, ParseYamlDuplicateKeyAndUnclosedQuote) {
  Cfg c;
  FlagSet f;
  c.declare(f);
  auto yaml_error = [&](const std::string& text) { return yaml_error_of(f, text, "run.yaml"); };
  std::string e = yaml_error("lr: 0.001\nrollout-batch-size: 4\nlr: 0.5\n");
  EXPECT_NE(e.find("run.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("`lr` is set twice"), std::string::npos) << e;
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  // Both spellings of one flag are the same key.
  e = yaml_error("rollout-batch-size: 4\nrollout_batch_size: 8\n");
  EXPECT_NE(e.find("run.yaml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("`rollout-batch-size` on line 1"), std::string::npos) << e;

  for (const char* text : {"input-key: \"prompt\n", "lr: 1e-6\ninput-key: 'prompt\n",
                           "input-key: \"a\\\"b\nlr: 1e-6\n", "rollout-stop:\n  - a\n  - \"b\n"}) {
    e = yaml_error(text);
    EXPECT_NE(e.find("never closed"), std::string::npos) << text << ": " << e;
    EXPECT_NE(e.find("run.yaml:"), std::string::npos) << e;
  }
  e = yaml_error("lr: 1e-6\n\ninput-key: \"prompt\n");
  EXPECT_NE(e.find("run.yaml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("`input-key`"), std::string::npos) << e;

  EXPECT_EQ(yaml_error("input-key: \"two\n  lines\"\nrollout-stop: ['it''s', \"a\\\"b\"]\n"), "");
  EXPECT_EQ(c.input_key, "two lines");
  EXPECT_EQ(c.rollout_stop, (std::vector<std::string>{"it's", "a\"b"}));
}
