// gyre init-model: writes an HF model folder with randomly initialised weights for a config.json
// or a named real shape (--shape qwen2.5-1.5b: model/named_shapes.h). The quick-start's base model
// starts this way before SFT; benchmarks and the scale run (bench/scale_device_run.sh) serve real
// shapes with random weights this way.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/config.h"
#include "gyre/model/named_shapes.h"

static int run_init_model(int argc, char** argv) {
  CLI::App app{"Random-initialised HF model folder from a config.json or a named shape",
               "gyre init-model"};
  std::string config, shape, output, dtype = "f32";
  uint64_t seed = 0;
  float stddev = 0.02f;
  auto* config_opt = app.add_option("--config", config, "config.json of the architecture");
  std::string shapes;
  for (const auto& n : gyre::model::named_shape_names()) shapes += (shapes.empty() ? "" : ", ") + n;
  app.add_option("--shape", shape, "a named real shape instead of --config: " + shapes)
      ->excludes(config_opt);
  app.add_option("--output", output, "output folder")->required();
  app.add_option("--seed", seed, "Philox seed");
  app.add_option("--std", stddev, "weight init standard deviation (HF initializer_range)");
  app.add_option("--dtype", dtype, "f32|bf16|f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  bool force = false;
  app.add_flag("--force", force, "write into an --output folder that already holds a model");
  CLI11_PARSE(app, argc, argv);
  if (config.empty() == shape.empty()) {
    std::fprintf(stderr, "error: give exactly one of --config FILE or --shape NAME (%s)\n",
                 shapes.c_str());
    return 2;
  }
  if (!std::isfinite(stddev) || stddev <= 0) {
    std::fprintf(stderr, "error: --std must be a finite number > 0 (got %g)\n", double(stddev));
    return 2;
  }
  // Random weights over a trained model would lose it: refuse unless asked.
  for (const char* f : {"config.json", "model.safetensors", "model.safetensors.index.json"})
    if (!force && std::filesystem::exists(std::filesystem::path(output) / f)) {
      std::fprintf(stderr,
                   "error: --output %s already holds %s; pick an empty folder or pass --force to "
                   "overwrite it\n",
                   output.c_str(), f);
      return 2;
    }
  gyre::model::ModelConfig cfg;
  if (!shape.empty()) {
    cfg = gyre::model::named_shape(shape);  // an unknown name lists the known ones
  } else {
    std::ifstream f(config);
    if (!f) {
      std::fprintf(stderr, "error: cannot open --config %s\n", config.c_str());
      return 2;
    }
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    cfg = gyre::model::parse_config_json(text, config);
  }
  // Before the (possibly long) random init; a path that cannot be a folder is the user's to fix.
  std::error_code ec;
  std::filesystem::create_directories(output, ec);
  if (ec)
    GYRE_THROW(io, "--output {}: cannot create the model folder: {}; pass a writable folder path",
               output, ec.message());
  auto m = gyre::model::CausalLM::random_init(cfg, seed, stddev);
  const gyre::DType dt = dtype == "bf16"  ? gyre::DType::bf16
                         : dtype == "f16" ? gyre::DType::f16
                                          : gyre::DType::f32;
  m->save(output, dt);
  std::printf("{\"output\": \"%s\", \"parameters\": %lld}\n", output.c_str(),
              static_cast<long long>(m->num_parameters()));
  return 0;
}
// (a name with a dash, so the registrar is spelled out instead of GYRE_COMMAND)
static gyre::cli::Registrar reg_init_model(
    "init-model", "write a randomly initialised HF model folder for a config.json or a named shape",
    run_init_model);
