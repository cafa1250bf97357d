// `gyre serve --tp-size 2` under `mpirun -np 2` against a single-process `gyre serve` of the same
// model: the same tokens and log-probs (within 1e-4) for /generate and /v1/completions (greedy,
// seeded, concurrent, with log-probs), weight reloads that reach both shards (and a failed one that
// changes neither), /get_server_info's tp_size, a SIGTERM to rank 0 that ends both ranks (and
// mpirun) with exit 0, and bad topology flags that fail with the numbers. The all-or-none reload is
// also tested at the library level with one rank given a folder it cannot read.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "dist/mpi_launch.h"
#include "e2e/serve/serve_process.h"
#include "gyre/core/timer.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/dist/tp_serve.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"
#include "gyre/serve/http_client.h"

namespace gyre {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string tiny_model() { return test::source_path("tests/fixtures/models/qwen3_tiny"); }

// Same engine flags for both servers: small KV pool, chunked prefill so prompts take several
// steps (and so several plans broadcast per request).
std::vector<std::string> serve_args() {
  return {test::gyre_bin(),
          "serve",
          "--model",
          tiny_model(),
          "--port",
          "0",
          "--host",
          "127.0.0.1",
          "--page-size",
          "4",
          "--num-pages",
          "256",
          "--chunked-prefill-size",
          "16"};
}

std::vector<std::string> mpirun(int np) {
  return {"/usr/bin/mpirun",
          "--allow-run-as-root",
          "--oversubscribe",
          "--bind-to",
          "none",
          "-np",
          std::to_string(np),
          "-x",
          "GYRE_NUM_THREADS=1",
          "-x",
          "OPENBLAS_NUM_THREADS=1"};
}

std::vector<std::string> tp_serve_args(int tp) {
  std::vector<std::string> a = mpirun(tp);
  for (auto& s : serve_args()) a.push_back(s);
  a.push_back("--tp-size");
  a.push_back(std::to_string(tp));
  return a;
}

json post(const std::string& url, const std::string& path, const json& body,
          int* status = nullptr) {
  serve::HttpClient client;
  serve::ClientRequest req;
  req.method = "POST";
  req.target = path;
  req.body = body.dump();
  req.timeout_s = 120;
  serve::HttpResponse r = client.request_sync(serve::Url::parse(url), req);
  if (status) *status = r.status;
  EXPECT_TRUE(r.error.empty()) << path << ": " << r.error;
  json j = json::parse(r.body, nullptr, false);
  return j.is_discarded() ? json{{"raw", r.body}} : j;
}

json get(const std::string& url, const std::string& path) {
  serve::HttpClient client;
  serve::ClientRequest req;
  req.target = path;
  req.timeout_s = 60;
  serve::HttpResponse r = client.request_sync(serve::Url::parse(url), req);
  EXPECT_EQ(r.status, 200) << path << ": " << r.error << r.body;
  return json::parse(r.body, nullptr, false);
}

json generate_body(std::vector<int> ids, double temperature, int64_t seed, int max_new = 10) {
  json sp{{"temperature", temperature}, {"max_new_tokens", max_new}, {"ignore_eos", true}};
  if (seed >= 0) sp["sampling_seed"] = seed;
  if (temperature > 0) sp["top_k"] = 40;
  return json{{"input_ids", ids}, {"sampling_params", sp}, {"return_logprob", true}};
}

// /generate: output_ids and meta_info.output_token_logprobs ([logprob, id, text] each).
void expect_same_generate(const json& tp, const json& one, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_TRUE(tp.contains("output_ids")) << tp.dump();
  ASSERT_TRUE(one.contains("output_ids")) << one.dump();
  EXPECT_EQ(tp["output_ids"], one["output_ids"]);
  const json& a = tp["meta_info"]["output_token_logprobs"];
  const json& b = one["meta_info"]["output_token_logprobs"];
  ASSERT_EQ(a.size(), b.size());
  ASSERT_GT(a.size(), 0u);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i][0].get<double>(), b[i][0].get<double>(), 1e-4) << "token " << i;
}

// Sends every body to both servers at once (several requests in flight per server, so the leader
// batches them) and compares the answers pairwise.
void compare_concurrently(const std::string& tp_url, const std::string& one_url,
                          const std::vector<json>& bodies, const std::string& what) {
  std::vector<std::future<json>> tp, one;
  for (const auto& b : bodies) {
    tp.push_back(std::async(std::launch::async, [&, b] { return post(tp_url, "/generate", b); }));
    one.push_back(std::async(std::launch::async, [&, b] { return post(one_url, "/generate", b); }));
  }
  for (size_t i = 0; i < bodies.size(); ++i)
    expect_same_generate(tp[i].get(), one[i].get(), what + " request " + std::to_string(i));
}

std::vector<json> mixed_bodies() {
  return {generate_body({1, 17, 300, 42, 7}, 0, -1),
          generate_body({260, 5, 9}, 0.9, 1234),
          generate_body({400, 401, 402, 12, 99, 100, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18},
                        0, -1),
          generate_body({77}, 1.0, 99),
          generate_body({5, 6, 7, 8}, 0.7, 7),
          generate_body({1, 17, 300, 42, 7, 8}, 0, -1)};  // shares a prefix with request 0
}

// Full random weights of the fixture's architecture (seed `seed`), written as an HF folder.
std::string random_weights_dir(uint64_t seed, const std::string& tag) {
  std::string dir = test::temp_dir(tag);
  auto m = model::CausalLM::random_init(model::load_config(tiny_model()), seed, 0.05f);
  m->save(dir, DType::f32);
  return dir;
}

// The pid of rank 0 among the children of `mpirun_pid` (OpenMPI starts local ranks as its
// children, each with OMPI_COMM_WORLD_RANK in its environment); -1 when none is found.
pid_t rank_zero_of(pid_t mpirun_pid) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat;
    try {
      stat = test::read_file(e.path() / "stat");
    } catch (...) {
      continue;  // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = -1;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != mpirun_pid)
      continue;
    std::string env;
    try {
      env = test::read_file(e.path() / "environ");
    } catch (...) {
      continue;
    }
    for (size_t at = 0; at < env.size();) {
      const size_t end = env.find('\0', at);
      if (env.compare(at, (end == std::string::npos ? env.size() : end) - at,
                      "OMPI_COMM_WORLD_RANK=0") == 0)
        return pid_t(std::stoi(name));
      if (end == std::string::npos) break;
      at = end + 1;
    }
  }
  return -1;
}

TEST(ServeTp, TwoRanksServeLikeOneProcess) {
  test::ChildProcess one(serve_args(), 120);
  test::ChildProcess tp(tp_serve_args(2), 180);

  EXPECT_EQ(get(tp.url(), "/get_server_info")["tp_size"], 2);
  EXPECT_EQ(get(one.url(), "/get_server_info")["tp_size"], 1);

  // Greedy and seeded, one at a time and concurrently.
  expect_same_generate(post(tp.url(), "/generate", generate_body({3, 4, 5, 6}, 0, -1)),
                       post(one.url(), "/generate", generate_body({3, 4, 5, 6}, 0, -1)), "greedy");
  expect_same_generate(post(tp.url(), "/generate", generate_body({3, 4, 5, 6}, 1.0, 42)),
                       post(one.url(), "/generate", generate_body({3, 4, 5, 6}, 1.0, 42)),
                       "seeded");
  compare_concurrently(tp.url(), one.url(), mixed_bodies(), "concurrent");

  // OpenAI /v1/completions with token-id prompts, n = 2 seeded samples and top log-probs.
  json comp{{"model", "default"}, {"prompt", {11, 12, 13}},
            {"max_tokens", 8},    {"temperature", 0.8},
            {"seed", 5},          {"n", 2},
            {"logprobs", 3},      {"return_token_ids", true}};
  int s_tp = 0, s_one = 0;
  json a = post(tp.url(), "/v1/completions", comp, &s_tp);
  json b = post(one.url(), "/v1/completions", comp, &s_one);
  ASSERT_EQ(s_tp, 200) << a.dump();
  ASSERT_EQ(s_one, 200) << b.dump();
  ASSERT_EQ(a["choices"].size(), 2u) << a.dump();
  ASSERT_EQ(b["choices"].size(), 2u);
  for (size_t c = 0; c < 2; ++c) {
    SCOPED_TRACE("choice " + std::to_string(c));
    EXPECT_EQ(a["choices"][c]["token_ids"], b["choices"][c]["token_ids"]);
    const json& la = a["choices"][c]["logprobs"]["token_logprobs"];
    const json& lb = b["choices"][c]["logprobs"]["token_logprobs"];
    ASSERT_EQ(la.size(), lb.size());
    ASSERT_GT(la.size(), 0u);
    for (size_t i = 0; i < la.size(); ++i)
      EXPECT_NEAR(la[i].get<double>(), lb[i].get<double>(), 1e-4) << "token " << i;
    EXPECT_EQ(a["choices"][c]["logprobs"]["top_logprobs"].size(),
              b["choices"][c]["logprobs"]["top_logprobs"].size());
  }

  // A weight reload reaches both shards: afterwards the TP server matches the single server with
  // the same new weights, and no longer its own old outputs.
  const json before = post(tp.url(), "/generate", generate_body({9, 8, 7}, 0, -1, 12));
  const std::string fresh = random_weights_dir(77, "serve_tp_weights");
  json upd{{"model_path", fresh}, {"weight_version", "v2"}};
  json ua = post(tp.url(), "/update_weights_from_disk", upd, &s_tp);
  json ub = post(one.url(), "/update_weights_from_disk", upd, &s_one);
  ASSERT_EQ(s_tp, 200) << ua.dump();
  ASSERT_EQ(s_one, 200) << ub.dump();
  EXPECT_EQ(ua["weight_version"], "v2");
  const json after = post(tp.url(), "/generate", generate_body({9, 8, 7}, 0, -1, 12));
  expect_same_generate(after, post(one.url(), "/generate", generate_body({9, 8, 7}, 0, -1, 12)),
                       "after reload");
  EXPECT_NE(after["meta_info"]["output_token_logprobs"][0][0],
            before["meta_info"]["output_token_logprobs"][0][0])
      << "the reload changed nothing";
  compare_concurrently(tp.url(), one.url(), mixed_bodies(), "concurrent after reload");

  // A folder that cannot load: a clear 400, and neither shard changed.
  json bad = post(tp.url(), "/update_weights_from_disk",
                  json{{"model_path", "/nonexistent/gyre_serve_tp_weights"}}, &s_tp);
  EXPECT_EQ(s_tp, 400) << bad.dump();
  EXPECT_EQ(bad["success"], false);
  EXPECT_NE(bad["message"].get<std::string>().find("every tp rank kept its previous weights"),
            std::string::npos)
      << bad.dump();
  expect_same_generate(post(tp.url(), "/generate", generate_body({9, 8, 7}, 0, -1, 12)), after,
                       "after a failed reload");
  EXPECT_EQ(get(tp.url(), "/get_weight_version")["weight_version"], "v2");

  // SIGTERM to rank 0 (how a launcher or an operator stops the server): rank 0 drains, stops its
  // follower, and both ranks exit 0, so mpirun does too, in time.
  const pid_t rank0 = rank_zero_of(tp.pid());
  ASSERT_GT(rank0, 0) << "no child of mpirun " << tp.pid() << " has OMPI_COMM_WORLD_RANK=0";
  ASSERT_EQ(kill(rank0, SIGTERM), 0);
  ASSERT_TRUE(tp.wait_exit(10)) << "the tp job did not end within 10 s of SIGTERM to rank 0";
  EXPECT_TRUE(WIFEXITED(tp.exit_status())) << "status " << tp.exit_status();
  EXPECT_EQ(WEXITSTATUS(tp.exit_status()), 0);
}

std::string cmdline(const std::vector<std::string>& argv) {
  std::string s = "timeout 120";
  for (const auto& a : argv) s += " '" + a + "'";
  return s;
}

TEST(ServeTp, BadTopologyFailsWithTheNumbers) {
  {  // --tp-size 2 without a launcher
    std::vector<std::string> a = serve_args();
    a.insert(a.end(), {"--tp-size", "2"});
    auto r = test::run_command(cmdline(a));
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("mpirun -np 2 gyre serve"), std::string::npos) << r.err;
  }
  {  // 2 processes, --tp-size 3
    std::vector<std::string> a = mpirun(2);
    for (auto& s : serve_args()) a.push_back(s);
    a.insert(a.end(), {"--tp-size", "3"});
    auto r = test::run_command(cmdline(a));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE((r.out + r.err).find("--tp-size 3 but mpirun started 2 processes"), std::string::npos)
        << r.out << r.err;
  }
  {  // 2 processes without --tp-size: two servers on one port would be a mistake
    std::vector<std::string> a = mpirun(2);
    for (auto& s : serve_args()) a.push_back(s);
    auto r = test::run_command(cmdline(a));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE((r.out + r.err).find("--tp-size 1 but mpirun started 2 processes"), std::string::npos)
        << r.out << r.err;
  }
  {  // 3 ranks: qwen3_tiny's 4 query heads do not split in 3
    std::vector<std::string> a = mpirun(3);
    for (auto& s : serve_args()) a.push_back(s);
    a.insert(a.end(), {"--tp-size", "3"});
    auto r = test::run_command(cmdline(a));
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE((r.out + r.err).find("num_attention_heads = 4 does not divide by 3"),
              std::string::npos)
        << r.out << r.err;
  }
}

// One rank that cannot start (mpirun's MPMD form gives rank 1 other flags) stops the whole group
// at once: before the start-up agreement (dist::run_on_every_rank) rank 0 served on as if the group
// were whole, until a request met the communicator's timeout.
std::vector<std::string> mpmd_serve(const std::vector<std::string>& rank0_extra,
                                    const std::vector<std::string>& rank1_extra) {
  std::vector<std::string> a = mpirun(1);
  for (auto& s : serve_args()) a.push_back(s);
  a.insert(a.end(), {"--tp-size", "2"});
  a.insert(a.end(), rank0_extra.begin(), rank0_extra.end());
  a.push_back(":");
  a.insert(a.end(), {"-np", "1"});
  for (auto& s : serve_args()) a.push_back(s);
  a.insert(a.end(), {"--tp-size", "2"});
  a.insert(a.end(), rank1_extra.begin(), rank1_extra.end());
  return a;
}

TEST(ServeTp, OneRankThatCannotStartStopsTheGroup) {
  {  // rank 1's model file is unreadable garbage: the shard load fails there only
    const std::string dir = test::temp_dir("serve_tp_bad_shard");
    for (const char* f : {"config.json", "generation_config.json"})
      fs::copy_file(fs::path(tiny_model()) / f, fs::path(dir) / f,
                    fs::copy_options::overwrite_existing);
    {
      std::FILE* w = std::fopen((fs::path(dir) / "model.safetensors").c_str(), "wb");
      ASSERT_NE(w, nullptr);
      std::fputs("not a safetensors file", w);
      std::fclose(w);
    }
    std::vector<std::string> a = mpmd_serve({}, {});
    // The second serve_args() copy (rank 1's) names tiny_model(): point it at the broken folder.
    auto it = std::find(a.rbegin(), a.rend(), tiny_model());
    ASSERT_NE(it, a.rend());
    *it = dir;
    Timer t;
    auto r = test::run_command(cmdline(a));
    EXPECT_NE(r.exit_code, 0) << r.out << r.err;
    EXPECT_LT(t.elapsed(), 60.0) << "rank 0 did not stop with rank 1";
    EXPECT_NE((r.out + r.err).find("loading the tokenizer and the model failed on tp rank 1 of 2"),
              std::string::npos)
        << r.out << r.err;
  }
  {  // rank 1 asks for a GPU: on a machine without one it fails its device check; with one, the
     // ranks disagree on the device. Either way both stop at once and rank 0 names rank 1.
    Timer t;
    auto r = test::run_command(cmdline(mpmd_serve({"--device", "cpu"}, {"--device", "cuda"})));
    EXPECT_NE(r.exit_code, 0) << r.out << r.err;
    EXPECT_LT(t.elapsed(), 60.0) << "rank 0 did not stop with rank 1";
    const std::string all = r.out + r.err;
    EXPECT_TRUE(all.find("failed on tp rank 1 of 2") != std::string::npos ||
                all.find("started for different devices") != std::string::npos ||
                all.find("built without NCCL") != std::string::npos)
        << all;
  }
}

TEST(ServeTp, RanksWithDifferentFlagsStopBeforeServing) {
  // mpirun's MPMD form gives rank 1 another --context-length: the followers would size their
  // context (RoPE tables, graph checks) from it, so the group must refuse to start, naming the
  // flag and both values on the rank that differs.
  Timer t;
  auto r = test::run_command(
      cmdline(mpmd_serve({"--context-length", "256"}, {"--context-length", "128"})));
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_LT(t.elapsed(), 60.0) << "rank 0 did not stop with rank 1";
  const std::string all = r.out + r.err;
  EXPECT_NE(all.find("tp rank 1 has --context-length 128 where tp rank 0 has --context-length 256"),
            std::string::npos)
      << all;
  EXPECT_NE(all.find("failed on tp rank 1 of 2"), std::string::npos) << all;
}

// ---- library level: the all-or-none reload, with rank 1 given a folder it cannot read.

std::vector<std::vector<float>> snapshot(model::CausalLM& m) {
  std::vector<std::vector<float>> out;
  for (const auto& p : m.parameters()) {
    const float* d = p.tensor.data<float>();
    out.emplace_back(d, d + p.tensor.numel());
  }
  return out;
}

TEST(ServeTpWorker, DISABLED_ReloadIsAllOrNone) {
  auto world = dist::init_distributed();
  auto tp = dist::make_tp_comm(*world);
  model::LoadOptions lo;
  lo.tp = tp.get();
  auto m = model::CausalLM::load(tiny_model(), lo);
  const auto old_weights = snapshot(*m);
  // Each rank writes the same new weights into its own folder (no shared temp dir needed).
  const std::string fresh = random_weights_dir(31, "serve_tp_lockstep");
  const std::string mine = world->rank() == 1 ? fresh + "/missing" : fresh;
  auto err = dist::load_weights_in_lockstep(*world, *m, mine);
  ASSERT_TRUE(err.has_value()) << "rank 1 could not load, so no rank may keep new weights";
  EXPECT_NE(err->find("tp rank 1 of 2"), std::string::npos) << *err;
  EXPECT_EQ(snapshot(*m), old_weights) << "rank " << world->rank() << " changed its shard";

  // Both ranks can load: both shards change, to the shards of the new full checkpoint.
  err = dist::load_weights_in_lockstep(*world, *m, fresh);
  ASSERT_FALSE(err.has_value()) << *err;
  auto want = model::CausalLM::load(fresh, lo);
  EXPECT_EQ(snapshot(*m), snapshot(*want));
  EXPECT_NE(snapshot(*m), old_weights);
}

TEST(ServeTpLib, ReloadIsAllOrNone) {
  auto r = test::run_mpi_worker("ServeTpWorker.DISABLED_ReloadIsAllOrNone");
  EXPECT_EQ(r.r.exit_code, 0) << r.all();
  size_t n = 0, pos = 0;
  while ((pos = r.all().find("[       OK ]", pos)) != std::string::npos) ++n, ++pos;
  EXPECT_EQ(n, 2u) << r.all();
}

}  // namespace
}  // namespace gyre
