// Sample: JSON round trip (slime's to_dict keys), finish_reason -> status, multi-turn appends with
// per-segment loss masks, invariant checks, reward selection, rollout dump files.
#include <gtest/gtest.h>

#include <cmath>

#include "gyre/core/error.h"
#include "gyre/rl/data/debug_data.h"
#include "gyre/rl/sample.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl;
using json = nlohmann::json;

namespace {

Sample full_sample() {
  Sample s;
  s.index = 17;
  s.group_index = 4;
  s.rollout_id = 17;
  s.prompt = json::array({{{"role", "user"}, {"content", "What is 2+2?"}}});
  s.tokens = {1, 2, 3, 10, 11, 12, 13};
  s.response = "4</s>";
  s.response_length = 4;
  s.label = "4";
  s.reward = {{"score", 1.0}, {"acc", true}};
  s.loss_mask = {1, 1, 0, 1};
  s.rollout_log_probs = {-0.5f, -1.25f, 0.0f, -std::numeric_limits<float>::infinity()};
  s.teacher_log_probs = {-0.1f, NAN, -0.3f, -0.4f};
  s.status = SampleStatus::truncated;
  s.metadata = {{"source_name", "gsm8k"}, {"tools", json::array({{{"name", "calc"}}})}};
  s.weight_versions = {"3", "4"};
  s.segments = {{0, 2, "assistant", true}, {2, 3, "tool", false}, {3, 4, "assistant", true}};
  s.remove_sample = true;
  s.session_id = "sess-1";
  s.extra = {{"custom_field", {1, 2}}};
  return s;
}

}  // namespace

using test::error_of;

TEST(Sample, JsonRoundTripKeepsEveryField) {
  Sample s = full_sample();
  json j = s.to_json();
  EXPECT_EQ(j["status"], "truncated");
  EXPECT_EQ(j["custom_field"], json({1, 2}));  // unknown keys written back
  EXPECT_EQ(j["rollout_log_probs"][3], "-inf");
  EXPECT_EQ(j["teacher_log_probs"][1], "nan");
  Sample r = Sample::from_json(json::parse(j.dump()));
  EXPECT_EQ(r.index, 17);
  EXPECT_EQ(r.group_index, 4);
  EXPECT_EQ(r.rollout_id, 17);
  EXPECT_EQ(r.prompt, s.prompt);
  EXPECT_EQ(r.tokens, s.tokens);
  EXPECT_EQ(r.response, s.response);
  EXPECT_EQ(r.response_length, 4);
  EXPECT_EQ(r.label, "4");
  EXPECT_EQ(r.reward, s.reward);
  EXPECT_EQ(r.loss_mask, s.loss_mask);
  ASSERT_EQ(r.rollout_log_probs.size(), 4u);
  EXPECT_EQ(r.rollout_log_probs[1], -1.25f);
  EXPECT_TRUE(std::isinf(r.rollout_log_probs[3]) && r.rollout_log_probs[3] < 0);
  EXPECT_TRUE(std::isnan(r.teacher_log_probs[1]));
  EXPECT_EQ(r.status, SampleStatus::truncated);
  EXPECT_EQ(r.metadata, s.metadata);
  EXPECT_EQ(r.weight_versions, s.weight_versions);
  EXPECT_EQ(r.segments, s.segments);
  EXPECT_TRUE(r.remove_sample);
  EXPECT_EQ(r.session_id, "sess-1");
  EXPECT_EQ(r.to_json().dump(), j.dump());
  // A minimal (pending, unscored) sample: None fields stay null.
  Sample empty;
  empty.prompt = "hi";
  json e = empty.to_json();
  EXPECT_TRUE(e["index"].is_null());
  EXPECT_TRUE(e["loss_mask"].is_null());
  EXPECT_TRUE(e["reward"].is_null());
  EXPECT_EQ(Sample::from_json(e).to_json(), e);
  // Exact float round trip of arbitrary log-probs.
  Sample f;
  f.tokens = {5, 6, 7};
  f.response_length = 3;
  f.rollout_log_probs = {-0.1f, -1e-30f, -123.456789f};
  EXPECT_EQ(Sample::from_json(json::parse(f.to_json().dump())).rollout_log_probs,
            f.rollout_log_probs);
}

TEST(Sample, ParseRejectsIllTypedFields) {
  json good = full_sample().to_json();
  auto bad = [&](const char* key, json value) {
    json j = good;
    j[key] = std::move(value);
    return error_of([&] { Sample::from_json(j, "dump.jsonl line 9"); });
  };
  std::string e = bad("tokens", json::array({1, "x"}));
  EXPECT_NE(e.find("dump.jsonl line 9"), std::string::npos) << e;
  EXPECT_NE(e.find("tokens[1]"), std::string::npos) << e;
  EXPECT_NE(bad("tokens", json::array({-1})).find("tokens[0]"), std::string::npos);
  EXPECT_NE(bad("index", "7").find("index"), std::string::npos);
  EXPECT_NE(bad("status", "done").find("unknown sample status 'done'"), std::string::npos);
  EXPECT_NE(bad("loss_mask", json::array({1, 2, 0, 1})).find("loss_mask[1]"), std::string::npos);
  EXPECT_NE(bad("loss_mask", json::array({1, 1})).find("response_length is 4"), std::string::npos);
  EXPECT_NE(bad("rollout_log_probs", json::array({1, 2, "x", 4})).find("rollout_log_probs[2]"),
            std::string::npos);
  EXPECT_NE(bad("response_length", 99).find("outside"), std::string::npos);
  EXPECT_NE(bad("metadata", json::array()).find("metadata"), std::string::npos);
  EXPECT_NE(bad("segments", json::array({{{"begin", 0}}})).find("segments[0]"), std::string::npos);
  EXPECT_NE(bad("prompt", 5).find("prompt"), std::string::npos);
  EXPECT_NE(error_of([] { Sample::from_json(json::array()); }).find("JSON object"),
            std::string::npos);
}

TEST(Sample, FinishReasonSetsStatus) {
  struct Case {
    const char* reason;
    SampleStatus before, after;
  } cases[] = {{"length", SampleStatus::pending, SampleStatus::truncated},
               {"abort", SampleStatus::pending, SampleStatus::aborted},
               {"stop", SampleStatus::aborted, SampleStatus::completed},
               {"weird", SampleStatus::failed, SampleStatus::failed},
               {"", SampleStatus::truncated, SampleStatus::truncated}};
  for (const auto& c : cases) {
    Sample s;
    s.status = c.before;
    s.apply_finish_reason(c.reason);
    EXPECT_EQ(s.status, c.after) << c.reason;
  }
  EXPECT_EQ(parse_status("aborted"), SampleStatus::aborted);
  EXPECT_STREQ(status_name(SampleStatus::completed), "completed");
}

TEST(Sample, MultiTurnAppendKeepsMasksAndSegments) {
  Sample s;
  s.tokens = {100, 101};  // prompt
  s.append_response({1, 2, 3}, {-0.1f, -0.2f, -0.3f}, true, "assistant", "call");
  s.append_response({7, 8}, {}, false, "tool", "<result>");
  s.append_response({4, 5}, {-0.4f, -0.5f}, true, "assistant", "done");
  EXPECT_EQ(s.tokens, (std::vector<int32_t>{100, 101, 1, 2, 3, 7, 8, 4, 5}));
  EXPECT_EQ(s.prompt_length(), 2);
  EXPECT_EQ(s.response_length, 7);
  EXPECT_EQ(s.response, "call<result>done");
  EXPECT_EQ(s.loss_mask, (std::vector<uint8_t>{1, 1, 1, 0, 0, 1, 1}));
  EXPECT_EQ(s.rollout_log_probs,
            (std::vector<float>{-0.1f, -0.2f, -0.3f, 0.0f, 0.0f, -0.4f, -0.5f}));
  ASSERT_EQ(s.segments.size(), 3u);
  EXPECT_EQ(s.segments[1], (Segment{3, 5, "tool", false}));
  EXPECT_EQ(s.effective_response_length(), 5);
  s.validate();
  EXPECT_NE(error_of([&] { s.append_response({9}, {}, true); }).find("one log-prob each"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              s.append_response({9}, {-1.0f}, false, "tool");
            }).find("must not carry log-probs"),
            std::string::npos);
  // A single-turn response without segments gets an implicit first segment when a turn is added.
  Sample t;
  t.tokens = {1, 2, 3};
  t.response_length = 2;
  t.rollout_log_probs = {-1, -2};
  t.append_response({4}, {}, false, "environment");
  EXPECT_EQ(t.segments.size(), 2u);
  EXPECT_EQ(t.segments[0], (Segment{0, 2, "assistant", true}));
  t.validate();
  // Unknown log-probs of an existing response cannot be extended.
  Sample u;
  u.tokens = {1, 2};
  u.response_length = 1;
  EXPECT_NE(error_of([&] { u.append_response({3}, {-1.0f}, true); }).find("rollout_log_probs"),
            std::string::npos);
}

TEST(Sample, ParseValidateCatchesBrokenSegments) {
  Sample s = full_sample();
  s.validate();
  s.segments[1].begin = 1;  // overlaps
  EXPECT_NE(error_of([&] { s.validate("x"); }).find("segments[1]"), std::string::npos);
  s = full_sample();
  s.segments.pop_back();  // does not cover the response
  EXPECT_NE(error_of([&] { s.validate("x"); }).find("cover 3 response tokens of 4"),
            std::string::npos);
  s = full_sample();
  s.loss_mask = {1, 1, 1, 1};  // the tool segment is trained on
  EXPECT_NE(error_of([&] { s.validate("x"); }).find("non-trainable segment 1"), std::string::npos);
}

TEST(Sample, RewardValueSelection) {
  Sample s;
  s.index = 3;
  EXPECT_NE(error_of([&] { s.reward_value(); }).find("not a number"), std::string::npos);
  s.reward = 0.75;
  EXPECT_EQ(s.reward_value(), 0.75);
  s.reward = {{"score", -1.0}, {"pred", "42"}};
  EXPECT_EQ(s.reward_value("score"), -1.0);
  EXPECT_NE(error_of([&] { s.reward_value(); }).find("--reward-key"), std::string::npos);
  EXPECT_NE(error_of([&] { s.reward_value("acc"); }).find("no key 'acc'"), std::string::npos);
  EXPECT_NE(error_of([&] { s.reward_value("pred"); }).find("not a number"), std::string::npos);
  s.reward = true;
  EXPECT_EQ(s.reward_value(), 1.0);
}

TEST(Sample, RolloutDumpRoundTrip) {
  std::string dir = test::temp_dir("dump");
  EXPECT_EQ(rollout_dump_path(dir + "/r_{rollout_id}.jsonl", 12), dir + "/r_12.jsonl");
  EXPECT_NE(error_of([] { rollout_dump_path("/tmp/r.jsonl", 1); }).find("{rollout_id}"),
            std::string::npos);
  std::vector<Sample> samples = {full_sample(), full_sample()};
  samples[1].index = 18;
  samples[1].reward = 0.0;
  std::string path = rollout_dump_path(dir + "/sub/r_{rollout_id}.jsonl", 3);
  save_rollout_dump(path, 3, samples);
  RolloutDump d = load_rollout_dump(path);
  EXPECT_EQ(d.rollout_id, 3);
  ASSERT_EQ(d.samples.size(), 2u);
  EXPECT_EQ(d.samples[0].to_json(), samples[0].to_json());
  EXPECT_EQ(d.samples[1].to_json(), samples[1].to_json());
  // A corrupted sample line is reported with file and line number; a truncated file by count.
  std::string text = test::read_file(path);
  size_t second = text.find('\n', text.find('\n') + 1);
  test::write_file(path, text.substr(0, second + 1) + "{\"tokens\": [1, \"a\"]}\n");
  std::string e = error_of([&] { load_rollout_dump(path); });
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
  test::write_file(path, text.substr(0, second + 1));
  EXPECT_NE(error_of([&] { load_rollout_dump(path); }).find("holds 1 samples"), std::string::npos);
  test::write_file(path, "{\"hello\": 1}\n");
  EXPECT_NE(error_of([&] { load_rollout_dump(path); }).find("line 1"), std::string::npos);
  EXPECT_THROW(load_rollout_dump(dir + "/missing.jsonl"), Error);
}
