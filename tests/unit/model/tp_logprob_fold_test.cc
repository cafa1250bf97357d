// model::tp_linear_token_logprobs (the fused log-probs of a vocabulary-parallel lm_head) with its
// ranks as threads of one process, over an in-process TpComm whose all_gather meets at a barrier:
// the same log-probs and entropies as one process's ops::linear_token_logprobs over the whole
// lm_head, and a NaN weight in one rank's shard makes every row NaN as it does in one process
// (the ranks' fold must not drop a shard whose sum is NaN as it drops a masked one). The MPI test
// (tests/dist/dist/tensor_parallel_test.cc) runs the whole model; this one pins the fold's cases.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "gyre/backend/ops.h"
#include "gyre/model/tensor_parallel.h"
#include "unit/backend/grad_check.h"

namespace gyre {
namespace {

// n ranks in one process: all_gather publishes each rank's buffer, waits for all, copies, waits.
class ThreadGroup {
 public:
  explicit ThreadGroup(int n) : n_(n), barrier_(n), send_(size_t(n)) {}
  int size() const { return n_; }
  void all_gather(int rank, const void* send, void* recv, size_t bytes) {
    send_[size_t(rank)] = send;
    barrier_.arrive_and_wait();
    for (int q = 0; q < n_; ++q)
      if (bytes) std::memcpy(static_cast<char*>(recv) + size_t(q) * bytes, send_[size_t(q)], bytes);
    barrier_.arrive_and_wait();  // nobody rewrites its buffer before every rank copied it
  }

 private:
  int n_;
  std::barrier<> barrier_;
  std::vector<const void*> send_;
};

class ThreadComm : public model::TpComm {
 public:
  ThreadComm(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    g_.all_gather(rank_, send, recv, bytes);
  }
  // The fused log-prob forward uses all_gather only.
  void all_reduce_sum(float*, size_t) override { FAIL() << "unexpected all_reduce_sum"; }
  void all_reduce_max(float*, size_t) override { FAIL() << "unexpected all_reduce_max"; }
  void all_reduce_sum(double*, size_t) override { FAIL() << "unexpected all_reduce_sum"; }

 private:
  ThreadGroup& g_;
  int rank_;
};

struct RankResult {
  std::vector<float> logp, entropy;
  std::string error;
};

std::vector<RankResult> run_ranks(int n, const Tensor& h, const Tensor& w, const Tensor& targets,
                                  int64_t chunk) {
  const int64_t V = w.size(0), Vl = V / n, T = h.size(0);
  ThreadGroup group(n);
  std::vector<RankResult> out(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ThreadComm comm(group, r);
      model::TpLayout tp;
      tp.comm = &comm, tp.rank = r, tp.size = n;
      tp.vocab_begin = r * Vl, tp.vocab_end = (r + 1) * Vl;
      try {
        const Tensor shard = w.narrow(r * Vl, Vl).clone();
        Tensor lp, ent = Tensor::empty({T}, DType::f32), lse;
        model::tp_linear_token_logprobs(tp, h, shard, targets, 1.0f, chunk, lp, ent, lse);
        out[size_t(r)].logp = lp.to_vector();
        out[size_t(r)].entropy = ent.to_vector();
      } catch (const std::exception& e) {
        out[size_t(r)].error = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return out;
}

TEST(TpFusedLogprobs, RanksAsThreadsMatchOneProcessAndKeepNaN) {
  const int64_t T = 6, H = 8, V = 64;
  const Tensor h = test::random_tensor({T, H}, 3, DType::f32);
  const Tensor targets =
      Tensor::from_vector(std::vector<int32_t>{0, 31, 32, 63, -1, 40}, {T});  // shard edges
  for (bool with_nan : {false, true}) {
    Tensor w = test::random_tensor({V, H}, 4, DType::f32, 0.5);
    if (with_nan) w.f32()[40 * H + 3] = NAN;  // row 40: rank 1's shard of two
    Tensor lp_ref, ent_ref = Tensor::empty({T}, DType::f32), lse_ref;
    ops::linear_token_logprobs(h, w, targets, 1.0f, 8, lp_ref, ent_ref, lse_ref);
    for (int n : {2, 4})
      for (int64_t chunk : {int64_t(8), int64_t(5), int64_t(0)}) {
        SCOPED_TRACE(testing::Message()
                     << "nan " << with_nan << " ranks " << n << " chunk " << chunk);
        const auto ranks = run_ranks(n, h, w, targets, chunk);
        for (int r = 0; r < n; ++r) {
          ASSERT_EQ(ranks[size_t(r)].error, "");
          for (int64_t t = 0; t < T; ++t) {
            const float lp = ranks[size_t(r)].logp[size_t(t)],
                        ent = ranks[size_t(r)].entropy[size_t(t)];
            if (with_nan) {
              // Every row's logits hold the NaN of row 40; a skipped target still logs 0.
              EXPECT_TRUE(std::isnan(ent)) << "rank " << r << " row " << t;
              if (targets.i32()[t] >= 0) {
                EXPECT_TRUE(std::isnan(lp)) << "rank " << r << " row " << t;
              }
              EXPECT_EQ(std::isnan(lp), std::isnan(lp_ref.f32()[t])) << "row " << t;
            } else {
              EXPECT_NEAR(lp, lp_ref.f32()[t], 1e-5) << "rank " << r << " row " << t;
              EXPECT_NEAR(ent, ent_ref.f32()[t], 1e-5) << "rank " << r << " row " << t;
            }
          }
        }
      }
  }
}

}  // namespace
}  // namespace gyre
