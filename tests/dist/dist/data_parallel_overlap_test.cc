// Gradient buckets and the overlapped reduction (issue 8): the model's gradient-ready hook reports
// every gradient once, when it is final; the DP optimizer's bucket layout, owned ranges and
// checkpoint layout checks; and the hooked path (reductions started from the last micro-batch's
// backward) gives bitwise the parameters of the plain path, on one process and on 2 ranks under
// mpirun (several micro-batches, one bucket, several buckets, one tensor per bucket), both equal
// to the single-process AdamW step on the whole batch within 1e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dist/mpi_launch.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/data_parallel.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/scoring.h"

namespace gyre::dist {
namespace {

using train::NamedTensors;

std::string fixture() { return test::source_path("tests/fixtures/models/qwen3_tiny"); }

train::AdamWConfig adam() {
  train::AdamWConfig c;
  c.lr = 1e-3;
  c.weight_decay = 0.01;
  c.clip_grad = 1.0;
  return c;
}

std::vector<float> flat_of(const NamedTensors& ts) {
  std::vector<float> v;
  for (auto& [name, t] : ts) v.insert(v.end(), t.f32(), t.f32() + t.numel());
  return v;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    num += double(a[i] - b[i]) * (a[i] - b[i]), den += double(b[i]) * b[i];
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Lists {
  NamedTensors params, grads;
};
Lists lists_of(model::CausalLM& m, model::Gradients& g) {
  Lists l;
  auto ps = m.parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    l.params.emplace_back(ps[i].name, ps[i].tensor);
    l.grads.emplace_back(g.tensors[i].name, g.tensors[i].tensor);
  }
  return l;
}

// Two sequences per (rank, step, micro-batch), lengths 5..10, ids < 500.
std::vector<std::vector<int32_t>> seqs_of(int rank, int step, int mb) {
  std::vector<std::vector<int32_t>> out(2);
  for (int q = 0; q < 2; ++q) {
    const int len = 5 + (rank * 7 + step * 3 + mb * 5 + q) % 6;
    for (int t = 0; t < len; ++t)
      out[size_t(q)].push_back((rank * 131 + step * 71 + mb * 37 + q * 17 + t * 11 + 3) % 500);
  }
  return out;
}

// One micro-batch of the policy-gradient loss: coefficient -a/norm on every row but each
// sequence's last, a = 1 or -0.5 by sequence. Accumulates into `g`.
void accumulate(model::CausalLM& m, const std::vector<std::vector<int32_t>>& seqs,
                model::Gradients& g, double norm) {
  model::ScoredBatch sb = model::score_for_training(m, seqs, 1.0f, false);
  const int64_t T = sb.batch.num_tokens();
  Tensor dlogp = Tensor::zeros({T});
  const int32_t* cu = sb.batch.cu_seqlens.i32();
  for (int64_t q = 0; q + 1 < sb.batch.cu_seqlens.numel(); ++q)
    for (int64_t r = cu[q]; r < cu[q + 1] - 1; ++r)
      dlogp.f32()[r] = float(-(q % 2 ? -0.5 : 1.0) / norm);
  model::backward_from_logprobs(m, sb, dlogp, Tensor(), g);
}

constexpr int kSteps = 2, kMicro = 3;
constexpr double kNorm = 40.0;  // the step's normaliser (the same on every rank)

struct Result {
  std::vector<float> params, reduced;
  std::vector<Range> owned;
  std::vector<std::pair<size_t, size_t>> buckets;
  int started_early = 0;
  std::vector<double> norms;
};

// `ranks` data-parallel ranks of `comm` train kSteps steps of kMicro micro-batches each; hooked:
// the last micro-batch's backward carries the optimizer's gradient-ready hook.
Result train_dp(Comm& comm, DpMode mode, int64_t bucket, bool hooked) {
  auto m = model::CausalLM::load(fixture());
  DataParallelOptimizer dp(comm, adam(), {}, mode, bucket);
  dp.keep_reduced_grad(true);
  model::Gradients g = m->zeros_like_parameters();
  Lists l = lists_of(*m, g);
  Result r;
  for (int s = 0; s < kSteps; ++s) {
    g.zero();
    for (int mb = 0; mb < kMicro; ++mb) {
      if (hooked && mb + 1 == kMicro) {
        dp.begin_overlap(l.params, l.grads);
        m->set_grad_ready_hook(dp.grad_ready_hook());
      }
      accumulate(*m, seqs_of(comm.rank(), s, mb), g, kNorm);
      m->set_grad_ready_hook({});
    }
    r.norms.push_back(dp.step(l.params, l.grads).first);
  }
  r.params = flat_of(l.params);
  r.reduced = dp.reduced_grad();
  r.owned = dp.owned_ranges();
  r.buckets = dp.bucket_params();
  r.started_early = dp.buckets_started_early();
  return r;
}

// The single-process reference: every rank's micro-batches into one gradient, train::AdamW.
// `full_grad`: the last step's gradient before clipping.
Result train_reference(int ranks, std::vector<float>* full_grad) {
  auto m = model::CausalLM::load(fixture());
  train::AdamW opt(adam(), {});
  model::Gradients g = m->zeros_like_parameters();
  Lists l = lists_of(*m, g);
  Result r;
  for (int s = 0; s < kSteps; ++s) {
    g.zero();
    for (int rank = 0; rank < ranks; ++rank)
      for (int mb = 0; mb < kMicro; ++mb) accumulate(*m, seqs_of(rank, s, mb), g, kNorm);
    *full_grad = flat_of(l.grads);
    r.norms.push_back(opt.step(l.params, l.grads).first);
  }
  r.params = flat_of(l.params);
  return r;
}

// The slices of `full` at `owned`, concatenated (reduced_grad()'s layout).
std::vector<float> pieces(const std::vector<float>& full, const std::vector<Range>& owned) {
  std::vector<float> out;
  for (const Range& r : owned) out.insert(out.end(), full.begin() + r.begin, full.begin() + r.end);
  return out;
}

// Hooked vs plain vs the single-process reference, for both modes and three bucket sizes.
void check_overlap(Comm& comm) {
  std::vector<float> full;
  const Result ref = train_reference(comm.size(), &full);
  for (DpMode mode : {DpMode::zero1, DpMode::all_reduce})
    for (int64_t bucket :
         {DataParallelOptimizer::kDefaultBucketElements, int64_t(20000), int64_t(1)}) {
      SCOPED_TRACE(fmt::format("{} bucket {} rank {}", dp_mode_name(mode), bucket, comm.rank()));
      const Result plain = train_dp(comm, mode, bucket, false);
      const Result hooked = train_dp(comm, mode, bucket, true);
      ASSERT_EQ(plain.buckets, hooked.buckets);
      const size_t n = plain.buckets.size();
      EXPECT_EQ(n == 1, bucket == DataParallelOptimizer::kDefaultBucketElements);
      EXPECT_EQ(plain.started_early, 0);
      EXPECT_EQ(hooked.started_early, int(n));  // every bucket started inside the backward
      // The same reductions in the same order: bitwise the same step.
      ASSERT_EQ(plain.params.size(), hooked.params.size());
      EXPECT_EQ(std::memcmp(plain.params.data(), hooked.params.data(),
                            plain.params.size() * sizeof(float)),
                0);
      EXPECT_EQ(plain.reduced, hooked.reduced);
      EXPECT_EQ(plain.norms, hooked.norms);
      // DP = N equals the single process on the whole batch (float summation order apart).
      EXPECT_LE(rel_diff(hooked.params, ref.params), 1e-6);
      for (int s = 0; s < kSteps; ++s)
        EXPECT_NEAR(hooked.norms[size_t(s)], ref.norms[size_t(s)], 1e-6 * ref.norms[size_t(s)]);
      EXPECT_LE(rel_diff(hooked.reduced, pieces(full, hooked.owned)), 1e-6);
      // The owned ranges: one per bucket (zero1) inside it, together covering the model once
      // over the ranks.
      int64_t owned = 0;
      for (const Range& r : hooked.owned) owned += r.size();
      EXPECT_EQ(comm.all_reduce(double(owned)), double(full.size() * size_t(comm.size())) /
                                                    (mode == DpMode::zero1 ? comm.size() : 1));
    }
}

TEST(GradReadyHook, ReportsEveryGradientOnceWhenItIsFinal) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    model::ModelConfig cfg = model::load_config(fixture());
    cfg.tie_word_embeddings = tied;
    auto m = model::CausalLM::random_init(cfg, 5);
    const size_t n = m->parameters().size();
    model::Gradients g = m->zeros_like_parameters();
    accumulate(*m, seqs_of(0, 0, 0), g, kNorm);  // an earlier micro-batch: gradients are nonzero
    // Each report: the reported gradients then (must equal their values after the backward).
    std::vector<std::pair<size_t, size_t>> reports;
    std::vector<std::vector<float>> at_report;
    m->set_grad_ready_hook([&](size_t b, size_t e) {
      reports.emplace_back(b, e);
      std::vector<float> v;
      for (size_t i = b; i < e; ++i) {
        auto x = g.tensors[i].tensor.to_vector();
        v.insert(v.end(), x.begin(), x.end());
      }
      at_report.push_back(v);
    });
    accumulate(*m, seqs_of(0, 0, 1), g, kNorm);  // fused log-prob path: backward_from_hidden
    m->set_grad_ready_hook({});
    std::vector<int> count(n, 0);
    for (size_t k = 0; k < reports.size(); ++k) {
      std::vector<float> now;
      for (size_t i = reports[k].first; i < reports[k].second; ++i) {
        ++count[i];
        auto x = g.tensors[i].tensor.to_vector();
        now.insert(now.end(), x.begin(), x.end());
      }
      EXPECT_EQ(at_report[k], now) << "report " << k << " came before its gradients were final";
    }
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(count[i], 1) << g.tensors[i].name;
    // Order: final norm (+ untied lm_head), the layers last to first, the embedding.
    ASSERT_EQ(reports.size(), size_t(cfg.num_hidden_layers) + 2);
    EXPECT_EQ(reports.front().second, n);
    EXPECT_EQ(g.tensors[reports.front().first].name, "model.norm.weight");
    EXPECT_EQ(reports.back(), std::make_pair(size_t(0), size_t(1)));
    for (size_t k = 1; k + 1 < reports.size(); ++k)
      EXPECT_EQ(reports[k].second, reports[k - 1].first);  // descending, contiguous blocks

    // The explicit hook of backward() (unfused logits) takes precedence over the model's.
    int model_calls = 0, explicit_calls = 0;
    m->set_grad_ready_hook([&](size_t, size_t) { ++model_calls; });
    model::ForwardState st;
    model::ForwardOptions o;
    o.save_for_backward = true;
    const Tensor logits = m->forward(model::Batch::pack(seqs_of(0, 0, 2)), o, &st);
    m->backward(Tensor::full(logits.shape(), 1e-3f), st, g,
                [&](size_t, size_t) { ++explicit_calls; });
    m->set_grad_ready_hook({});
    EXPECT_EQ(model_calls, 0);
    EXPECT_EQ(explicit_calls, cfg.num_hidden_layers + 2);
  }
}

// Small tensors: bucket layout, owned ranges and padding of ZeRO-1 with several buckets.
NamedTensors make_tensors(const std::vector<int64_t>& sizes, uint64_t seed) {
  NamedTensors ts;
  uint64_t k = seed;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor t = Tensor::zeros({sizes[i]});
    for (int64_t j = 0; j < t.numel(); ++j) {
      k = k * 6364136223846793005ull + 1442695040888963407ull;
      t.f32()[j] = float((k >> 40) % 2001) / 1000.0f - 1.0f;
    }
    ts.emplace_back(fmt::format("t{}", i), t);
  }
  return ts;
}

TEST(DataParallelBuckets, LayoutIsBuiltFromTheEndAndShardsEveryBucket) {
  SingleProcessComm comm;
  DataParallelOptimizer dp(comm, adam(), {}, DpMode::zero1, 10);
  NamedTensors p = make_tensors({7, 3, 4, 12, 2, 5}, 1), g = make_tensors({7, 3, 4, 12, 2, 5}, 2);
  EXPECT_TRUE(dp.bucket_params().empty());
  dp.step(p, g);
  // From the end: 5+2+12 >= 10 -> [3, 6); 4+3+7 >= 10 -> [0, 3).
  const std::vector<std::pair<size_t, size_t>> want{{0, 3}, {3, 6}};
  EXPECT_EQ(dp.bucket_params(), want);
  const std::vector<Range> owned = dp.owned_ranges();
  ASSERT_EQ(owned.size(), 2u);
  EXPECT_EQ(owned[0].begin, 0);
  EXPECT_EQ(owned[0].end, 14);
  EXPECT_EQ(owned[1].begin, 14);
  EXPECT_EQ(owned[1].end, 33);
  EXPECT_EQ(dp.state_bytes(), 33u * 8);
  EXPECT_THROW(dp.owned_range(), Error);  // several buckets: owned_ranges()
  // A single large tensor is a bucket of its own; the default size keeps everything in one.
  DataParallelOptimizer one(comm, adam(), {}, DpMode::zero1);
  NamedTensors p1 = make_tensors({7, 3, 4, 12, 2, 5}, 1), g1 = make_tensors({7, 3, 4, 12, 2, 5}, 2);
  one.step(p1, g1);
  EXPECT_EQ(one.bucket_params().size(), 1u);
  EXPECT_EQ(one.owned_range().size(), 33);
  // Several buckets or one: the same step (one rank: no reduction order to differ).
  EXPECT_LE(rel_diff(flat_of(p), flat_of(p1)), 1e-7);
  EXPECT_THROW(DataParallelOptimizer(comm, adam(), {}, DpMode::zero1, 0), Error);
}

// DP x TP's clipping norm (set_model_parallel) sums the shard per parameter piece: over several
// buckets (each piece one block of a bucket), a one-rank tp group gives the plain norm.
TEST(DataParallelBuckets, ModelParallelNormCoversEveryBucket) {
  const std::vector<int64_t> sizes{7, 3, 4, 12, 2, 5};
  for (DpMode mode : {DpMode::zero1, DpMode::all_reduce}) {
    SingleProcessComm comm, tp("tp");
    DataParallelOptimizer plain(comm, adam(), {}, mode, 10), mp(comm, adam(), {}, mode, 10);
    mp.set_model_parallel(tp, {true, false, false, true, false, true});
    NamedTensors p1 = make_tensors(sizes, 1), g1 = make_tensors(sizes, 2);
    NamedTensors p2 = make_tensors(sizes, 1), g2 = make_tensors(sizes, 2);
    const double n1 = plain.step(p1, g1).first, n2 = mp.step(p2, g2).first;
    EXPECT_NEAR(n1, n2, 1e-12 * n1) << dp_mode_name(mode);
    EXPECT_GT(n1, 1.0);  // clipping is active
    EXPECT_LE(rel_diff(flat_of(p1), flat_of(p2)), 1e-7);
  }
}

TEST(DataParallelBuckets, HookMisuseIsAnError) {
  SingleProcessComm comm;
  DataParallelOptimizer dp(comm, adam(), {}, DpMode::zero1, 10);
  NamedTensors p = make_tensors({7, 3, 4}, 1), g = make_tensors({7, 3, 4}, 2);
  EXPECT_THROW(dp.grads_ready(0, 1), Error);  // not armed
  dp.begin_overlap(p, g);
  EXPECT_THROW(dp.begin_overlap(p, g), Error);  // armed twice
  dp.grads_ready(2, 3);
  try {
    dp.grads_ready(1, 3);
    ADD_FAILURE() << "a gradient reported twice was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reported ready twice"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dp.grads_ready(0, 4), Error);  // out of range
  // A backward that threw: the trainer disarms, and the next step's arm is not "twice"; a step
  // after it reduces every bucket itself as usual.
  dp.abort_overlap();
  EXPECT_THROW(dp.grads_ready(0, 1), Error);  // no longer armed
  EXPECT_EQ(dp.buckets_started_early(), 0);
  dp.begin_overlap(p, g);
  dp.grads_ready(0, 3);
  EXPECT_EQ(dp.buckets_started_early(), int(dp.bucket_params().size()));
  EXPECT_NO_THROW(dp.step(p, g));
  dp.abort_overlap();  // not armed: nothing to do
}

TEST(DataParallelBuckets, SingleRankHookedEqualsPlain) {
  SingleProcessComm comm;
  check_overlap(comm);
}

// ZeRO-1 state written in another layout is refused at the first step with a message, not mapped
// onto the wrong elements; the pre-bucket layout loads when the model fits one bucket.
TEST(DataParallelBuckets, CheckpointOfAnotherLayoutIsRefused) {
  SingleProcessComm comm;
  const std::vector<int64_t> sizes{7, 3, 4, 12, 2, 5};
  const std::string dir = test::temp_dir("dp_buckets_ckpt");
  {
    DataParallelOptimizer a(comm, adam(), {}, DpMode::zero1, 10);
    NamedTensors p = make_tensors(sizes, 1), g = make_tensors(sizes, 2);
    a.step(p, g);
    a.save(dir);
  }
  const std::string meta = dir + "/dp_rank_000_of_001/data_parallel.json";
  nlohmann::json j;
  std::ifstream(meta) >> j;
  ASSERT_EQ(j.at("buckets").size(), 2u);
  auto first_step_error = [&](int64_t bucket) -> std::string {
    DataParallelOptimizer b(comm, adam(), {}, DpMode::zero1, bucket);
    b.load(dir);
    NamedTensors p = make_tensors(sizes, 1), g = make_tensors(sizes, 3);
    try {
      b.step(p, g);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(first_step_error(10), "");  // the same layout
  EXPECT_NE(first_step_error(1000).find("another bucket size"), std::string::npos);
  // The pre-bucket format (no "buckets"): fine for one bucket, refused for several.
  j.erase("buckets");
  j.erase("bucket_elements");
  std::ofstream(meta) << j.dump(2);
  EXPECT_EQ(first_step_error(1000), "");
  const std::string e = first_step_error(10);
  EXPECT_NE(e.find("single-shard layout"), std::string::npos) << e;
  // Loading into an optimizer whose layout is already fixed fails at once.
  DataParallelOptimizer c(comm, adam(), {}, DpMode::zero1, 10);
  NamedTensors p = make_tensors(sizes, 1), g = make_tensors(sizes, 2);
  c.step(p, g);
  EXPECT_THROW(c.load(dir), Error);
  std::filesystem::remove_all(dir);
}

TEST(DistWorker, DISABLED_OverlappedBuckets) {
  auto world = init_distributed({.timeout_s = 120});
  ASSERT_EQ(world->size(), 2);
  check_overlap(*world);
  std::printf("overlap ok on rank %d\n", world->rank());
}

TEST(DataParallelBuckets, TwoRanksHookedEqualsPlainAndSingleProcess) {
  auto m = test::run_mpi_worker("DistWorker.DISABLED_OverlappedBuckets", 2, {}, 300);
  ASSERT_EQ(m.r.exit_code, 0) << m.all();
  EXPECT_NE(m.r.out.find("overlap ok on rank 0"), std::string::npos) << m.all();
  EXPECT_NE(m.r.out.find("overlap ok on rank 1"), std::string::npos) << m.all();
}

}  // namespace
}  // namespace gyre::dist
