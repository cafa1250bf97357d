// DataBuffer: prompt groups with group_index/index counters, epochs, deterministic Philox shuffles,
// returned (partial/aborted) groups first, and checkpoint state that resumes identically.
#include "gyre/rl/data/data_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "gyre/core/error.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::rl;
using json = nlohmann::json;

namespace {

std::shared_ptr<const PromptDataset> dataset(int n) {
  std::vector<Sample> prompts;
  for (int i = 0; i < n; ++i) {
    Sample s;
    s.prompt = "p" + std::to_string(i);
    s.label = i;
    prompts.push_back(s);
  }
  return std::make_shared<const PromptDataset>(PromptDataset::from_samples(prompts, "mem"));
}

DataBufferOptions opts(int64_t n, bool shuffle, uint64_t seed = 42) {
  DataBufferOptions o;
  o.n_samples_per_prompt = n;
  o.shuffle = shuffle;
  o.seed = seed;
  return o;
}

// The prompt label of each group's first sample.
std::vector<int> labels(const std::vector<SampleGroup>& groups) {
  std::vector<int> out;
  for (const auto& g : groups) out.push_back(g.at(0).label.get<int>());
  return out;
}

json dump(const std::vector<SampleGroup>& groups) {
  json j = json::array();
  for (const auto& g : groups)
    for (const auto& s : g) j.push_back(s.to_json());
  return j;
}

using test::error_of;

}  // namespace

TEST(DataBuffer, GroupsCopyPromptsAndNumberThem) {
  DataBuffer b(dataset(5), opts(3, false));
  auto g = b.get_samples(2);
  ASSERT_EQ(g.size(), 2u);
  for (int gi = 0; gi < 2; ++gi) {
    ASSERT_EQ(g[gi].size(), 3u);
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(g[gi][k].group_index, gi);
      EXPECT_EQ(g[gi][k].index, gi * 3 + k);
      EXPECT_EQ(g[gi][k].prompt, "p" + std::to_string(gi));
      EXPECT_EQ(g[gi][k].status, SampleStatus::pending);
    }
  }
  EXPECT_EQ(b.next_group_index(), 2);
  EXPECT_EQ(b.next_sample_index(), 6);
  EXPECT_TRUE(b.get_samples(0).empty());
}

TEST(DataBuffer, EpochsWrapInOrderWithoutShuffle) {
  DataBuffer b(dataset(5), opts(1, false));
  EXPECT_EQ(labels(b.get_samples(3)), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(b.epoch(), 0);
  EXPECT_EQ(labels(b.get_samples(3)), (std::vector<int>{3, 4, 0}));
  EXPECT_EQ(b.epoch(), 1);
  EXPECT_EQ(b.offset(), 1);
  EXPECT_EQ(labels(b.get_samples(7)), (std::vector<int>{1, 2, 3, 4, 0, 1, 2}));
  EXPECT_EQ(b.epoch(), 2);
  EXPECT_EQ(num_rollout_for_epochs(10, 3, 2), 6);
  EXPECT_NE(error_of([] { num_rollout_for_epochs(2, 3, 1); }).find("fewer than one"),
            std::string::npos);
}

TEST(DataBuffer, ShuffleIsDeterministicPerSeedAndEpoch) {
  const int n = 50;
  DataBuffer a(dataset(n), opts(1, true, 7)), b(dataset(n), opts(1, true, 7));
  DataBuffer c(dataset(n), opts(1, true, 8));
  auto ea = labels(a.get_samples(n)), eb = labels(b.get_samples(n)), ec = labels(c.get_samples(n));
  EXPECT_EQ(ea, eb);  // same seed, same order
  EXPECT_NE(ea, ec);  // other seed, other order
  std::vector<int> sorted = ea;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);  // a permutation: each prompt once
  std::vector<int> identity(n);
  for (int i = 0; i < n; ++i) identity[i] = i;
  EXPECT_NE(ea, identity);
  auto ea1 = labels(a.get_samples(n));  // epoch 1 reshuffles
  EXPECT_EQ(a.epoch(), 1);
  EXPECT_NE(ea1, ea);
  EXPECT_EQ(ea1, labels(b.get_samples(n)));
  // The order is a pure function of (seed, epoch).
  auto order1 = a.epoch_order(1);
  for (int i = 0; i < n; ++i) EXPECT_EQ(order1[i], ea1[i]);
  EXPECT_EQ(DataBuffer(dataset(n), opts(1, true, 7)).epoch_order(3), a.epoch_order(3));
  // Every position is reachable: over many epochs each prompt shows up first at least once.
  std::set<int64_t> firsts;
  for (int e = 0; e < 2000; ++e) firsts.insert(a.epoch_order(e)[0]);
  EXPECT_EQ(firsts.size(), size_t(n));
}

TEST(DataBuffer, ReturnedGroupsComeFirstFifo) {
  DataBuffer b(dataset(10), opts(2, false));
  auto first = b.get_samples(4);  // prompts 0..3
  // Groups 1 and 3 were aborted mid-generation (partial rollout): give them back with their
  // partial responses.
  for (auto* g : {&first[1], &first[3]})
    for (auto& s : *g) {
      s.tokens = {1, 2, 3};
      s.response_length = 2;
      s.rollout_log_probs = {-0.5f, -0.25f};
      s.status = SampleStatus::aborted;
      s.metadata["start_rollout_id"] = 0;
    }
  b.add_samples({first[1], first[3]});
  EXPECT_EQ(b.buffered_groups(), 2);
  auto next = b.get_samples(3);
  EXPECT_EQ(labels(next), (std::vector<int>{1, 3, 4}));
  EXPECT_EQ(next[0][0].status, SampleStatus::aborted);
  EXPECT_EQ(next[0][0].response_length, 2);
  EXPECT_EQ(next[0][1].index, 3);  // indices kept from the first hand-out
  EXPECT_EQ(next[2][0].group_index, 4);
  EXPECT_EQ(b.buffered_groups(), 0);
  // Only whole, numbered groups can come back.
  EXPECT_NE(error_of([&] { b.add_samples({{next[2][0]}}); }).find("expected --n-samples"),
            std::string::npos);
  SampleGroup anon(2);
  EXPECT_NE(error_of([&] { b.add_samples({anon}); }).find("without index"), std::string::npos);
  DataBuffer empty(dataset(0), opts(1, false));
  EXPECT_NE(error_of([&] { empty.get_samples(1); }).find("empty"), std::string::npos);
  EXPECT_THROW(DataBuffer(dataset(3), opts(0, false)), Error);
}

TEST(DataBuffer, StateSaveRestoreContinuesIdentically) {
  std::string dir = test::temp_dir("buffer");
  auto data = dataset(7);
  DataBuffer a(data, opts(2, true, 123));
  a.get_samples(5);
  auto partial = a.get_samples(3);  // crosses into epoch 1
  partial[0][0].tokens = {9, 9};
  partial[0][0].response_length = 1;
  partial[0][0].rollout_log_probs = {-0.75f};
  partial[0][0].status = SampleStatus::aborted;
  a.add_samples({partial[0], partial[2]});
  a.save_state_file(dir + "/state.json");
  json saved = a.state();
  EXPECT_EQ(saved["epoch_id"], 1);
  EXPECT_EQ(saved["buffer"].size(), 2u);

  DataBuffer b(data, opts(2, true, 123));
  b.load_state_file(dir + "/state.json");
  EXPECT_EQ(b.state(), saved);
  for (int step = 0; step < 6; ++step) {
    auto ga = a.get_samples(4), gb = b.get_samples(4);
    ASSERT_EQ(dump(ga), dump(gb)) << "step " << step;
    if (step == 2) {  // returns after the restore behave the same too
      a.add_samples({ga[1]});
      b.add_samples({gb[1]});
    }
  }
  EXPECT_EQ(a.state(), b.state());
  EXPECT_GE(a.epoch(), 3);
}

TEST(DataBuffer, ParseStateMismatchesAreRejected) {
  DataBuffer a(dataset(7), opts(2, true, 1));
  a.get_samples(2);
  json s = a.state();
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(8), opts(2, true, 1)).load_state(s);
            }).find("saved for 7 prompts"),
            std::string::npos);
  std::vector<Sample> other;
  for (int i = 0; i < 7; ++i) {
    Sample p;
    p.prompt = "other" + std::to_string(i);
    other.push_back(p);
  }
  auto other_data =
      std::make_shared<const PromptDataset>(PromptDataset::from_samples(other, "other"));
  EXPECT_NE(error_of([&] {
              DataBuffer(other_data, opts(2, true, 1)).load_state(s);
            }).find("different prompts"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(7), opts(4, true, 1)).load_state(s);
            }).find("--n-samples-per-prompt"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(7), opts(2, true, 2)).load_state(s);
            }).find("--rollout-seed"),
            std::string::npos);
  json broken = s;
  broken.erase("sample_offset");
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(7), opts(2, true, 1)).load_state(broken);
            }).find("sample_offset"),
            std::string::npos);
  broken = s;
  broken["buffer"] = json::array({json::array({{{"tokens", "x"}}})});
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(7), opts(2, true, 1)).load_state(broken);
            }).find("buffer[0][0]"),
            std::string::npos);
  std::string dir = test::temp_dir("buffer_bad");
  test::write_file(dir + "/s.json", "{\"version\": 1, ");
  EXPECT_NE(error_of([&] {
              DataBuffer(dataset(7), opts(2, true, 1)).load_state_file(dir + "/s.json");
            }).find("not valid JSON"),
            std::string::npos);
}
