// Trace JSON (Chrome/Perfetto format) parses and holds the spans from several threads; step timers
// accumulate phases; console progress-line formatting.
#include "gyre/obs/trace.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "gyre/core/error.h"
#include "gyre/obs/console.h"
#include "gyre/obs/step_timer.h"
#include "test_util.h"

using namespace gyre;
using namespace gyre::obs;

TEST(Trace, SpansFromThreadsParseAsTraceEvents) {
  TraceWriter w;
  w.set_thread_name("main");
  {
    TraceSpan outer(&w, "step", "train");
    outer.arg("tokens", 128);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&w, t] {
        for (int i = 0; i < 50; ++i) TraceSpan s(&w, "decode", "rollout");
        w.instant("done", "rollout", {{"thread", t}});
      });
    for (auto& th : threads) th.join();
    w.counter("kv_cache", {{"used_blocks", 12}, {"free_blocks", 4}});
  }
  std::string dir = test::temp_dir("trace");
  w.save(dir + "/trace.json");
  auto doc = nlohmann::json::parse(test::read_file(dir + "/trace.json"));
  auto& events = doc.at("traceEvents");
  ASSERT_TRUE(events.is_array());
  EXPECT_EQ(events.size(), 1u + 200u + 4u + 1u + 1u);
  EXPECT_EQ(doc["displayTimeUnit"], "ms");
  std::set<int64_t> decode_tids;
  int completes = 0;
  for (const auto& e : events) {
    ASSERT_TRUE(e.contains("pid") && e.contains("tid") && e.contains("ts") && e.contains("ph"));
    if (e["ph"] == "X") {
      ++completes;
      EXPECT_GE(e["dur"].get<double>(), 0.0);
      if (e["name"] == "decode") decode_tids.insert(e["tid"].get<int64_t>());
      if (e["name"] == "step") {
        EXPECT_EQ(e["cat"], "train");
        EXPECT_EQ(e["args"]["tokens"], 128);
      }
    }
  }
  EXPECT_EQ(completes, 201);
  EXPECT_EQ(decode_tids.size(), 4u);  // one tid per thread
  EXPECT_EQ(decode_tids.count(TraceWriter::current_tid()), 0u);
  EXPECT_THROW(w.counter("bad", 3), Error);
}

TEST(Trace, MaxEventsDropsAndCountsAndNullWriterIsNoop) {
  TraceWriter w(3);
  for (int i = 0; i < 5; ++i) w.complete("x", i, 1);
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w.dropped(), 2u);
  auto doc = nlohmann::json::parse(w.to_json());
  EXPECT_EQ(doc["otherData"]["dropped_events"], 2);
  TraceWriter::set_global(nullptr);
  { GYRE_TRACE_SPAN("nothing"); }  // tracing off: no writer, no crash
  TraceWriter g;
  TraceWriter::set_global(&g);
  { GYRE_TRACE_SPAN("something", "cat"); }
  TraceWriter::set_global(nullptr);
  EXPECT_EQ(g.size(), 1u);
}

TEST(StepTimers, PhasesAccumulateAndTakeResets) {
  TraceWriter w;
  StepTimers t(&w);
  {
    auto p = t.phase("rollout");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  t.add("rollout", 1.0);
  t.add("actor_train", 2.5);
  auto p = t.phase("update_weights");
  double s = p.stop();
  EXPECT_GE(s, 0.0);
  EXPECT_GE(t.seconds("rollout"), 1.005);
  EXPECT_EQ(t.seconds("missing"), 0.0);
  Metrics m = t.take();
  EXPECT_EQ(m.size(), 3u);
  EXPECT_EQ(m.at("perf/actor_train_time"), 2.5);
  EXPECT_TRUE(m.count("perf/rollout_time"));
  EXPECT_TRUE(m.count("perf/update_weights_time"));
  EXPECT_TRUE(t.take().empty());
  EXPECT_EQ(w.size(), 2u);  // two scoped phases became spans
  EXPECT_THROW(t.add("", 1), Error);
}

TEST(Console, ProgressLineFormatting) {
  EXPECT_EQ(format_duration(0.85), "850ms");
  EXPECT_EQ(format_duration(4.21), "4.2s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(2 * 86400 + 3 * 3600), "2d03h");
  EXPECT_EQ(format_duration(-1), "?");
  EXPECT_EQ(format_metric_value(0.123456), "0.1235");
  EXPECT_EQ(format_metric_value(1e-5), "1.000e-05");
  EXPECT_EQ(format_metric_value(0), "0");
  EXPECT_EQ(format_metric_value(NAN), "nan");
  Metrics m{{"train/loss", 0.123456}, {"rollout/raw_reward", 0.5}, {"perf/x", 1}};
  EXPECT_EQ(
      format_progress(11, 3.21, m,
                      {.keys = {"train/loss", "rollout/raw_reward", "nope"}, .total_steps = 100}),
      "[step 12/100 12%] train/loss=0.1235 rollout/raw_reward=0.5 | 3.2s/step, eta 4m42s");
  EXPECT_EQ(format_progress(0, 0, {{"b", 2}, {"a", 1}}), "[step 1] a=1 b=2");
}
