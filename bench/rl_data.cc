// RL data layer and observability throughput: --prompt-data JSONL loading (rows/s, MB/s), data
// buffer hand-out of n_samples_per_prompt groups, buffer state save, metrics.jsonl + TensorBoard
// logging (steps/s) and trace-span cost. One JSON line per figure.
// Anchor for loading: slime's reader, i.e. Python `json.loads` per line of the same file (run
// through python3 when it is on PATH; skipped otherwise) -> "ratio" = gyre rows/s / python rows/s.
// Rows parse on the global thread pool; GYRE_NUM_THREADS=1 gives the single-thread figure.
//   bench_rl_data [--rows 200000]
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gyre/core/thread_pool.h"
#include "gyre/core/timer.h"
#include "gyre/obs/metrics.h"
#include "gyre/obs/trace.h"
#include "gyre/rl/data/data_buffer.h"
#include "gyre/rl/data/prompt_dataset.h"

using nlohmann::json;

static void emit(const json& j) { std::printf("%s\n", j.dump().c_str()); }

static double python_rows_per_s(const std::string& path) {
  std::string cmd =
      "python3 -c \"import json,time,sys\nt=time.perf_counter()\nn=0\nfor l in open(sys.argv[1], "
      "encoding='utf-8'):\n  l=l.strip()\n  if l:\n    json.loads(l); n+=1\nprint(n/(time.perf_"
      "counter()-t))\" " +
      path + " 2>/dev/null";
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) return 0;
  double v = 0;
  if (std::fscanf(p, "%lf", &v) != 1) v = 0;
  pclose(p);
  return v;
}

int main(int argc, char** argv) {
  int64_t rows = 200000;
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], "--rows")) rows = std::atoll(argv[i + 1]);
  std::string dir = "/tmp/gyre_bench_rl_data_" + std::to_string(getpid());
  std::filesystem::create_directories(dir);
  std::string path = dir + "/prompts.jsonl";
  {
    std::ofstream out(path);
    for (int64_t i = 0; i < rows; ++i) {
      json row = {{"prompt",
                   json::array({{{"role", "system"}, {"content", "You are a careful solver."}},
                                {{"role", "user"},
                                 {"content",
                                  "Problem " + std::to_string(i) +
                                      ": compute the sum of the first " + std::to_string(i % 977) +
                                      " odd numbers and put the answer in \\boxed{}."}}})},
                  {"label", std::to_string((i % 977) * (i % 977))},
                  {"metadata", {{"source_name", "synthetic"}, {"row", i}}}};
      out << row.dump() << '\n';
    }
  }
  double mb = double(std::filesystem::file_size(path)) / 1e6;

  gyre::rl::PromptDataOptions o;
  o.input_key = "prompt";
  o.label_key = "label";
  gyre::Timer t;
  auto data =
      std::make_shared<const gyre::rl::PromptDataset>(gyre::rl::PromptDataset::load(path, o));
  double load_s = t.elapsed();
  double gyre_rps = double(data->size()) / load_s;
  double py_rps = python_rows_per_s(path);
  json load = {{"bench", "rl_data/prompt_load"},
               {"rows", data->size()},
               {"mb", mb},
               {"threads", gyre::global_thread_pool().size()},
               {"rows_per_s", gyre_rps},
               {"mb_per_s", mb / load_s}};
  if (py_rps > 0) {
    load["anchor"] = "python json.loads per line (slime read_file)";
    load["anchor_rows_per_s"] = py_rps;
    load["ratio"] = gyre_rps / py_rps;
  }
  emit(load);

  gyre::rl::DataBufferOptions bo;
  bo.n_samples_per_prompt = 8;
  bo.shuffle = true;
  gyre::rl::DataBuffer buffer(data, bo);
  t.reset();
  int64_t groups = 0;
  while (groups < int64_t(data->size())) groups += int64_t(buffer.get_samples(256).size());
  double get_s = t.elapsed();
  emit({{"bench", "rl_data/buffer_get_samples"},
        {"groups", groups},
        {"n_samples_per_prompt", 8},
        {"groups_per_s", double(groups) / get_s}});
  buffer.add_samples(buffer.get_samples(64));
  t.reset();
  buffer.save_state_file(dir + "/state.json");
  emit({{"bench", "rl_data/buffer_state_save"},
        {"buffered_groups", 64},
        {"bytes", std::filesystem::file_size(dir + "/state.json")},
        {"ms", t.elapsed() * 1e3}});

  gyre::obs::MetricsOptions mo;
  mo.dir = dir;
  mo.tensorboard = true;
  gyre::obs::MetricsLogger logger(mo);
  gyre::obs::Metrics m;
  for (int k = 0; k < 50; ++k) m["train/metric_" + std::to_string(k)] = k * 0.5;
  const int steps = 2000;
  t.reset();
  for (int s = 0; s < steps; ++s) logger.log(s, m);
  double log_s = t.elapsed();
  emit({{"bench", "obs/metrics_log"},
        {"metrics_per_step", 50},
        {"steps_per_s", steps / log_s},
        {"us_per_step", log_s / steps * 1e6}});

  gyre::obs::TraceWriter tw;
  const int spans = 1000000;
  t.reset();
  for (int s = 0; s < spans; ++s) gyre::obs::TraceSpan span(&tw, "decode_step", "rollout");
  double span_s = t.elapsed();
  emit({{"bench", "obs/trace_span"}, {"spans", spans}, {"ns_per_span", span_s / spans * 1e9}});
  std::filesystem::remove_all(dir);
  return 0;
}
