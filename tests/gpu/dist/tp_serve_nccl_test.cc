// Tensor-parallel serving on 2 GPUs over NCCL (`gyre serve --tp-size 2 --device cuda`'s engine,
// dist/tp_serve.h), launched torchrun-style like tp_nccl_test.cc (gpu/dist/env_workers.h; logs in
// /tmp/gyre_tpserve_worker_<rank>.log). Each rank joins through dist::init_tp_serve_group (what
// cmd_serve calls: rank r on GPU r, the NCCL tp group, the step channel over it) and loads its
// shard of a random Qwen2-shaped HF folder (gpu/model/small_model.h: 2 query heads and 1 kv head
// per rank, head dim 64) on its GPU. Rank 0 runs the threaded leading infer::Engine with a
// dist::TpServeLeader, rank 1 an EngineFollower in dist::run_tp_serve_follower (the serve loop,
// control messages included). Rank 0 also runs the single-GPU engine on the full model (same
// folder, same GPU, CUDA graphs on as `gyre serve --device cuda` has them) as the reference:
//   (a) greedy generation of concurrent requests of different lengths (chunked prefill): the same
//       tokens, and per-token log-probs within the bound below;
//   (b) update_weights_from_disk of a folder that does not exist: refused ("every tp rank kept its
//       previous weights"), the weight version unchanged, the outputs still the reference's;
//   (c) update_weights_from_disk of another random folder, in lockstep: the TP engine then
//       generates what the reference generates after loading the same folder (so both shards
//       changed: a stale shard on either rank would not match), and no longer what it generated
//       before; the follower saw the new weight version.
// Cases: f32 and bf16 (the GPU default of gyre serve: autocast GEMMs, bf16 weight copies, bf16 KV
// cache), each twice: the TP engine decoding eagerly (--cuda-graph-max-bs 0), then with CUDA
// graphs (the default; the NCCL collectives captured, the follower capturing and replaying as the
// leader tells it). The graph run must also give (d) the eager TP run's tokens, with log-probs
// within the graph-vs-eager bound below, and both ranks must have decoded through graphs (the
// reload in (c) drops them on both ranks: the re-capture runs too).
// Graph vs eager (same TP engine): a graph decodes the step padded to its batch-size bucket, so
// the GEMMs run with another M and cuBLASLt may pick other kernels: f32 sums regrouped again,
// 1e-5 as gpu/infer/decode_graph_gpu_test.cc; bf16 the TP bound 1e-2 (a rounding flip, see below).
// Tokens must match exactly unless a near-tie (checked as below, against the eager TP engine).
//
// Greedy tokens. TP computes the same function with f32 sums regrouped (tp_nccl_test.cc's header),
// so its log-probs differ from the reference's by at most the bound; greedy takes the argmax, which
// moves only where the reference's top two candidates are closer than twice the log-prob
// difference. A request whose tokens diverge is therefore accepted only at such a near-tie: at the
// first position where they differ, the reference scores the TP engine's token (teacher-forced, as
// a prompt log-prob) and its gap to the reference's top candidate must be <= 2 x the bound;
// positions after it have other contexts and are not compared. Every divergence is printed.
// Bounds on |Δ log-prob| (relative to max(1, |ref|)):
// - f32: 1e-5, as tp_nccl_test.cc (measured there 3.8e-7; the regrouped f32 sums move by
//   ~sqrt(n) u Σ|terms|, u = 2^-24).
// - bf16: 1e-2. The weights' bf16 copies are bitwise the same on both engines (sharding moves whole
//   rows and columns, not values); what differs is where an activation, attention operand or KV
//   entry is rounded to bf16 (2^-8 relative spacing) after f32 noise of ~1e-6 relative: it rounds
//   the same way unless the noise crosses a rounding boundary, a fraction ~1e-6 / 2^-9 ≈ 5e-4 of
//   the roundings, each then one bf16 ulp apart. Each engine's own bf16 error (every element
//   rounded) is at most 2.3e-2 nats per log-prob vs f32 on an H200 (gpu/model/bf16_model_gpu_test
//   .cc), so the triangle inequality caps the difference at 4.6e-2; with only ~5e-4 of the
//   roundings flipping, independent flips add up to ~sqrt(5e-4) x 2.3e-2 ≈ 5e-4, and tp_nccl_test
//   measured 9.3e-4 on the same model's scoring. The bound, 1e-2, is 10x that measurement (not the
//   4.6e-2 worst case: a TP engine that far off would be a bug worth seeing).
// Needs 2 visible GPUs; skips otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpu/dist/env_workers.h"
#include "gpu/model/small_model.h"
#include "gyre/core/error.h"
#include "gyre/core/philox.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/tp_serve.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/causal_lm.h"
#include "test_util.h"

namespace gyre::infer {
namespace {

using test::envw::count_of;
using test::envw::echo_lines;
using test::envw::run_env_workers;
using test::envw::worker_port;

struct Case {
  const char* name;
  model::Precision precision;
  double tol;   // max |Δ log-prob| / max(1, |ref|)
  bool graphs;  // the TP engine decodes through CUDA graphs (else cuda_graph_max_bs = 0)
};

// Eager first: each graph case is also compared with the eager case of its precision before it.
const Case kCases[] = {{"f32-eager", model::Precision::f32, 1e-5, false},
                       {"f32-graphs", model::Precision::f32, 1e-5, true},
                       {"bf16-eager", model::Precision::bf16, 1e-2, false},
                       {"bf16-graphs", model::Precision::bf16, 1e-2, true}};

// The reference keeps the single-GPU default (graphs on). Chunked prefill: the 90-token prompt
// takes two steps.
EngineConfig engine_config(bool graphs) {
  EngineConfig c;
  c.page_size = 16;
  c.num_pages = 256;
  c.max_running_requests = 16;
  c.max_num_batched_tokens = 64;
  if (!graphs) c.cuda_graph_max_bs = 0;
  return c;
}

// The eager TP engine's outputs per precision (initial weights, then after the reload), for (d).
struct EagerRun {
  std::vector<GenerateResult> initial, reloaded;
};
EagerRun g_eager[2];  // f32, bf16
EagerRun& eager_of(const Case& k) { return g_eager[k.precision == model::Precision::bf16]; }

std::vector<GenerateRequest> greedy_requests(int64_t vocab) {
  std::vector<GenerateRequest> v;
  PhiloxStream rng(21, 0);
  int i = 0;
  for (int len : {1, 6, 37, 90, 13}) {
    GenerateRequest r;
    r.rid = "r" + std::to_string(i++);
    for (int k = 0; k < len; ++k) r.input_ids.push_back(int32_t(rng.next_u32() % uint32_t(vocab)));
    r.sampling.temperature = 0.0f;
    r.sampling.max_new_tokens = 40;
    r.sampling.ignore_eos = true;
    r.return_logprob = true;
    v.push_back(std::move(r));
  }
  return v;
}

// A random full model of small_config() (seed `seed`) written as an HF folder.
std::string write_random_model(uint64_t seed, const std::string& tag) {
  const std::string dir = test::temp_dir(tag);
  model::CausalLM::random_init(model::testmodel::small_config(), seed, 0.05f)
      ->save(dir, DType::f32);
  return dir;
}

struct Compared {
  int64_t tokens = 0;    // positions compared
  int divergences = 0;   // requests whose tokens diverge (check_near_tie)
  double worst_rel = 0;  // max |Δ log-prob| / max(1, |ref|)
  double worst_abs = 0;
};

// A greedy divergence at position t (the TP engine chose `mine`, the reference `want_ids[t]`):
// the reference scores `mine` after the common prefix (teacher-forced, as a prompt log-prob) and
// its gap to the reference's top candidate must be a near-tie under the bound (see the header).
void check_near_tie(Engine& ref, const GenerateRequest& req, const std::vector<int32_t>& want_ids,
                    size_t t, int32_t mine, double tol, const std::string& what) {
  GenerateRequest probe;
  probe.rid = "near-tie-probe";
  probe.input_ids = req.input_ids;
  probe.input_ids.insert(probe.input_ids.end(), want_ids.begin(),
                         want_ids.begin() + std::ptrdiff_t(t));
  probe.input_ids.push_back(mine);
  probe.logprob_start_len = int32_t(probe.input_ids.size()) - 1;
  probe.top_logprobs_num = 1;
  probe.sampling.temperature = 0.0f;
  probe.sampling.max_new_tokens = 1;
  probe.sampling.ignore_eos = true;
  const GenerateResult p = ref.generate({probe})[0];
  ASSERT_TRUE(p.error.empty()) << p.error;
  ASSERT_EQ(p.input_logprobs.size(), 1u);
  ASSERT_EQ(p.input_top_logprobs.size(), 1u);
  ASSERT_EQ(p.input_top_logprobs[0].size(), 1u);
  const double top = p.input_top_logprobs[0][0].logprob, gap = top - p.input_logprobs[0];
  const double allowed = 2 * tol * std::max(1.0, std::fabs(top));
  EXPECT_LE(gap, allowed) << what << " token " << t << ": the TP engine chose " << mine
                          << ", the reference " << want_ids[t] << " (its top candidate "
                          << p.input_top_logprobs[0][0].token_id << "), which puts " << mine << " "
                          << gap << " nats below its top: more than a near-tie under the bound";
  std::printf("[tpserve] %s: tokens diverge at %zu (reference gap %.3e nats, allowed %.3e: %s)\n",
              what.c_str(), t, gap, allowed, gap <= allowed ? "a near-tie" : "NOT a near-tie");
}

// (a)'s check: `got` (TP) against `want` (reference engine `ref`, which scores a diverging token).
Compared compare(const std::vector<GenerateRequest>& reqs, const std::vector<GenerateResult>& got,
                 const std::vector<GenerateResult>& want, Engine& ref, double tol,
                 const std::string& what) {
  Compared c;
  EXPECT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    SCOPED_TRACE(what + " request " + got[i].rid);
    EXPECT_TRUE(got[i].error.empty()) << got[i].error;
    EXPECT_TRUE(want[i].error.empty()) << want[i].error;
    const auto &a = got[i].output_ids, &b = want[i].output_ids;
    EXPECT_EQ(a.size(), b.size());
    EXPECT_EQ(got[i].output_logprobs.size(), a.size());
    EXPECT_EQ(want[i].output_logprobs.size(), b.size());
    const size_t n = std::min(
        {a.size(), b.size(), got[i].output_logprobs.size(), want[i].output_logprobs.size()});
    size_t t = 0;
    for (; t < n && a[t] == b[t]; ++t) {
      const double want_lp = want[i].output_logprobs[t];
      const double d = std::fabs(double(got[i].output_logprobs[t]) - want_lp);
      const double rel = d / std::max(1.0, std::fabs(want_lp));
      EXPECT_LE(rel, tol) << "token " << t << ": log-prob " << got[i].output_logprobs[t] << " vs "
                          << want_lp;
      c.worst_rel = std::max(c.worst_rel, rel), c.worst_abs = std::max(c.worst_abs, d);
      ++c.tokens;
    }
    if (t == n) continue;
    // A divergence: accepted only at a near-tie of the reference.
    ++c.divergences;
    check_near_tie(ref, reqs[i], b, t, a[t], tol, what + " " + got[i].rid);
  }
  return c;
}

void report(const char* name, const char* phase, const Compared& c, double tol) {
  std::printf(
      "[tpserve] %s %s: %lld tokens compared, log-probs max |diff| %.3e (relative %.3e; bound "
      "%.0e), %d divergences (each checked for a near-tie)\n",
      name, phase, static_cast<long long>(c.tokens), c.worst_abs, c.worst_rel, tol, c.divergences);
  std::fflush(stdout);
}

bool no_reload() {
  const char* e = std::getenv("GYRE_TPSERVE_NO_RELOAD");
  return e && std::string(e) == "1";
}

void leader_case(dist::TpServeGroup& g, const Case& k, const std::string& dir1,
                 const std::string& dir2) {
  SCOPED_TRACE(k.name);
  model::LoadOptions lo{.device = Device::cuda, .precision = k.precision, .tp = g.tp_comm.get()};
  auto shard = model::CausalLM::load(dir1, lo);
  auto full = model::CausalLM::load(dir1, {.device = Device::cuda, .precision = k.precision});
  Engine ref(*full, nullptr, engine_config(true));
  Engine leader(*shard, nullptr, engine_config(k.graphs));
  leader.attach_followers(*g.step_channel, /*engaged=*/true);  // rank 1 is in its follower loop
  leader.start();
  dist::TpServeLeader control(g.tp(), leader, *shard);
  const auto reqs = greedy_requests(full->config().vocab_size);

  const auto got = leader.generate(reqs);
  const auto want = ref.generate(reqs);
  report(k.name, "initial", compare(reqs, got, want, ref, k.tol, "initial"), k.tol);
  if (k.graphs) {
    // (d) The same TP engine without graphs (the eager case before this one).
    EXPECT_GT(leader.num_cuda_graphs(), 0) << "the TP leader decoded without CUDA graphs";
    report(k.name, "graphs vs eager TP",
           compare(reqs, got, eager_of(k).initial, leader, k.tol, "graphs vs eager TP"), k.tol);
  } else {
    EXPECT_EQ(leader.num_cuda_graphs(), 0);
    eager_of(k).initial = got;
  }
  std::printf("[tpserve] %s: the TP leader holds %lld CUDA graphs\n", k.name,
              static_cast<long long>(leader.num_cuda_graphs()));
  std::printf("[tpserve] %s: the one-GPU reference captured %lld CUDA graphs\n", k.name,
              static_cast<long long>(ref.num_cuda_graphs()));

  // Diagnostic knob (session 11: the second case stalls rank 0 in its first prefill; does the
  // first case's reload matter?): GYRE_TPSERVE_NO_RELOAD=1 skips (b) and (c).
  if (no_reload()) {
    control.stop();
    return;
  }
  // (b) A folder no rank can read: refused, both shards unchanged.
  const std::string why = test::error_of(
      [&] { control.update_weights_from_disk("/nonexistent/gyre_tp_serve_gpu_weights"); });
  EXPECT_NE(why.find("every tp rank kept its previous weights"), std::string::npos) << why;
  EXPECT_EQ(leader.weight_version(), 0);
  report(k.name, "after a refused reload",
         compare(reqs, leader.generate(reqs), want, ref, k.tol, "after a refused reload"), k.tol);

  // (c) Another folder, in lockstep on both ranks.
  EXPECT_EQ(control.update_weights_from_disk(dir2), 1);
  ref.update_weights([&] { full->load_weights(dir2); });
  const auto got2 = leader.generate(reqs);
  const auto want2 = ref.generate(reqs);
  report(k.name, "after the reload", compare(reqs, got2, want2, ref, k.tol, "after the reload"),
         k.tol);
  if (k.graphs) {
    EXPECT_GT(leader.num_cuda_graphs(), 0) << "no CUDA graph re-captured after the reload";
    report(k.name, "graphs vs eager TP after the reload",
           compare(reqs, got2, eager_of(k).reloaded, leader, k.tol, "graphs vs eager (reload)"),
           k.tol);
  } else {
    eager_of(k).reloaded = got2;
  }
  int changed = 0;
  for (size_t i = 0; i < got.size() && i < got2.size(); ++i)
    changed += got[i].output_ids != got2[i].output_ids;
  EXPECT_GT(changed, 0) << "the reload changed no generation";
  control.stop();  // the follower returns from run_tp_serve_follower
}

void follower_case(dist::TpServeGroup& g, const Case& k, const std::string& dir1) {
  SCOPED_TRACE(k.name);
  model::LoadOptions lo{.device = Device::cuda, .precision = k.precision, .tp = g.tp_comm.get()};
  auto shard = model::CausalLM::load(dir1, lo);
  EngineFollower follower(*shard, engine_config(k.graphs), *g.step_channel);
  const std::string why = dist::run_tp_serve_follower(g.tp(), follower, *shard);
  EXPECT_NE(why.find("Engine::stop"), std::string::npos) << why;
  EXPECT_GT(follower.steps(), 0);
  EXPECT_EQ(follower.weight_version(), no_reload() ? 0 : 1)
      << "the follower never ran a step on the new weights";
  if (k.graphs)
    EXPECT_GT(follower.graph_steps(), 0) << "the follower never ran a decode graph step";
  else
    EXPECT_EQ(follower.graph_steps(), 0);
  std::printf(
      "[tpserve] %s rank 1: followed %lld steps, %lld through CUDA graphs, holds %lld "
      "graphs (%s)\n",
      k.name, static_cast<long long>(follower.steps()),
      static_cast<long long>(follower.graph_steps()),
      static_cast<long long>(follower.num_cuda_graphs()), why.c_str());
  std::fflush(stdout);
}

TEST(TpServeNccl, TwoGpuEngineGeneratesLikeOneGpu) {
  GYRE_SKIP_WITHOUT_GPUS(2);
  auto r = run_env_workers("TpServeNccl.DISABLED_Worker", 2, worker_port(30300), "tpserve");
  echo_lines(r.out, "[tpserve]");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(count_of(r.out, "[  PASSED  ] 1 test"), 2u) << r.out;  // on both ranks
}

// One rank of the test above.
TEST(TpServeNccl, DISABLED_Worker) {
  ::setenv("GYRE_COMM_TIMEOUT", "120", 0);  // a rank that fails makes the other fail, not hang
  const dist::LaunchInfo launch = dist::detect_launch();
  ASSERT_EQ(launch.size, 2);
  dist::check_tp_serve_topology(2, launch, model::testmodel::small_config(), "--tp-size");
  dist::TpServeGroup g = dist::init_tp_serve_group(Device::cuda, launch);
  ASSERT_EQ(g.tp().size(), 2);
  ASSERT_EQ(g.tp().buffer_device(), Device::cuda) << "the GPU tp group talks NCCL";
  ASSERT_EQ(g.tp_comm->buffer_device(), Device::cuda);
  // Rank 0 writes both folders; the paths reach rank 1 over the tp group (after the writes).
  std::string dirs;
  if (g.tp().rank() == 0)
    dirs = write_random_model(7, "tp_serve_gpu_a") + "\n" + write_random_model(8, "tp_serve_gpu_b");
  g.tp().broadcast(dirs, 0);
  const size_t nl = dirs.find('\n');
  ASSERT_NE(nl, std::string::npos) << dirs;
  const std::string dir1 = dirs.substr(0, nl), dir2 = dirs.substr(nl + 1);
  for (const Case& k : kCases) {
    if (g.tp().rank() == 0)
      leader_case(g, k, dir1, dir2);
    else
      follower_case(g, k, dir1);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace gyre::infer
