// Tokenizer encode throughput: the fixture corpus (tests/fixtures/tokenizer_cases.json) repeated to
// >= 20 MB, encoded one text at a time on one thread and with encode_batch on all threads, for the
// Qwen3 and Llama 3 tokenizers; also the tokenizer.json load time. One JSON line per figure.
// Anchor: Hugging Face tokenizers (the Rust library) through its npm binding, measured by
// bench/tokenizer_anchor.mjs on the same corpus; pass its output with --anchor FILE to get ratios.
//   bench_tokenizer_encode [--anchor anchor.jsonl] [--mb 20]
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gyre/core/thread_pool.h"
#include "gyre/core/timer.h"
#include "gyre/tokenizer/tokenizer.h"

using nlohmann::json;

static std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int main(int argc, char** argv) {
  std::string anchor_path;
  double target_mb = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--anchor")) anchor_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--mb")) target_mb = std::atof(argv[i + 1]);
  }
  const std::string root = GYRE_SOURCE_DIR;
  json cases = json::parse(read_all(root + "/tests/fixtures/tokenizer_cases.json"));
  std::vector<std::string> docs;
  size_t bytes = 0;
  while (bytes < size_t(target_mb * 1e6)) {
    for (auto& t : cases["corpus"]) {
      docs.push_back(t.get<std::string>());
      bytes += docs.back().size();
    }
  }
  // Anchor lines: {"tokenizer": name, "mode": "single"|"batch", "mb_per_s": x, "anchor": "..."}.
  std::map<std::string, json> anchor;
  if (!anchor_path.empty()) {
    std::istringstream in(read_all(anchor_path));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) {
        json a = json::parse(line);
        anchor[a["tokenizer"].get<std::string>() + "/" + a["mode"].get<std::string>()] = a;
      }
  }
  const int threads = gyre::global_thread_pool().size();
  for (std::string name : {"qwen3", "llama3"}) {
    gyre::Timer load_timer;
    auto tok = gyre::tokenizer::Tokenizer::from_dir(root + "/tests/fixtures/tokenizers/" + name);
    double load_s = load_timer.elapsed();
    for (std::string mode : {"single", "batch"}) {
      size_t ntok = 0;
      gyre::Timer t;
      if (mode == "single") {
        for (auto& d : docs) ntok += tok->encode(d).size();
      } else {
        for (auto& ids : tok->encode_batch(docs)) ntok += ids.size();
      }
      double s = t.elapsed();
      double mbps = double(bytes) / 1e6 / s;
      json out = {{"bench", "tokenizer_encode"},
                  {"tokenizer", name},
                  {"mode", mode},
                  {"threads", mode == "single" ? 1 : threads},
                  {"mb", double(bytes) / 1e6},
                  {"tokens", ntok},
                  {"seconds", s},
                  {"mb_per_s", mbps},
                  {"load_s", load_s}};
      auto it = anchor.find(name + "/" + mode);
      if (it != anchor.end()) {
        out["anchor"] = it->second["anchor"];
        out["anchor_mb_per_s"] = it->second["mb_per_s"];
        out["anchor_load_s"] = it->second.value("load_s", 0.0);
        out["ratio"] = mbps / it->second["mb_per_s"].get<double>();
        if (it->second.contains("tokens") && it->second["tokens"].get<size_t>() != ntok)
          out["warning"] = "token counts differ from the anchor";
      } else {
        out["anchor"] = nullptr;
        out["note"] = "run bench/tokenizer_anchor.mjs and pass --anchor FILE for the HF ratio";
      }
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
