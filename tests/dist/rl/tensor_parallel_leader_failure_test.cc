// A tensor-parallel rollout engine's leader (tp rank 0) that fails, under `mpirun -np 2`; tp rank 1
// runs an EngineFollower. Two races of the leader's bookkeeping, each checked by a test that fails
// without its fix:
// (a) engage_followers() must return only once the engine thread counts the followers as engaged:
//     a leader destroyed by an error right after engaging then tells them to stop, instead of
//     leaving them in run() until their channel's timeout.
// (b) a forward that throws on the leader after its plan was broadcast leaves the followers inside
//     that forward's collectives: the leader marks them lost with the reason, so later steps and
//     release_followers() fail at once (no broadcast into mismatched collectives), and the
//     follower ends with a clear error at its communicator's timeout, not a hang.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "dist/mpi_launch.h"
#include "gyre/core/error.h"
#include "gyre/core/timer.h"
#include "gyre/dist/bootstrap.h"
#include "gyre/dist/step_channel_comm.h"
#include "gyre/dist/tensor_parallel_comm.h"
#include "gyre/infer/engine.h"
#include "gyre/infer/engine_follower.h"
#include "gyre/model/causal_lm.h"
#include "gyre/model/tensor_parallel.h"

namespace gyre::infer {
namespace {

const char* kModel = "tests/fixtures/models/qwen3_tiny";

EngineConfig config() {
  EngineConfig c;
  c.page_size = 4;
  c.num_pages = 64;
  return c;
}

GenerateRequest greedy(const std::string& rid, int32_t first_token, int32_t max_new) {
  GenerateRequest r;
  r.rid = rid;
  for (int32_t i = 0; i < 6; ++i) r.input_ids.push_back(first_token + 7 * i);
  r.sampling.max_new_tokens = max_new;
  r.sampling.ignore_eos = true;
  r.sampling.temperature = 0.0f;
  return r;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t pos = 0; (pos = s.find(what, pos)) != std::string::npos; ++pos) ++n;
  return n;
}

// ---- (a) engage, then fail at once

// GYRE_COMM_TIMEOUT=12. The leader's engine thread is busy with a slow weight update (as it may be
// in a long step) when engage_followers() is called, and the leader fails right after engaging.
// The follower, waiting in run() since the release, must get the leader's stop within a few
// seconds. Without the fix engage_followers() only queued the state change; the engine thread,
// told to stop while still in the update, never ran it, so the destroyed leader counted its
// followers as released, sent no stop, and the follower waited the whole 12 s timeout.
TEST(TensorParallelLeaderFailureWorker, DISABLED_EngageThenFail) {
  auto world = dist::init_distributed();
  ASSERT_EQ(world->size(), 2);
  auto tp = dist::make_tp_comm(*world);
  auto channel = dist::make_step_channel(*world);
  model::LoadOptions lo;
  lo.tp = tp.get();
  auto sharded = model::CausalLM::load(test::source_path(kModel), lo);
  if (world->rank() != 0) {
    EngineFollower follower(*sharded, config(), *channel);
    Timer t;
    // The leader attached released: its first message is the stop once it engaged and failed.
    const auto out = follower.run();
    ASSERT_EQ(out.exit, EngineFollower::Exit::stopped) << out.message;
    EXPECT_NE(out.message.find("destroyed by an error"), std::string::npos) << out.message;
    EXPECT_LT(t.elapsed(), 8.0) << "the follower waited for its channel's timeout";
    std::printf("FOLLOWER RETURNED after %.1f s: %s\n", t.elapsed(), out.message.c_str());
    return;
  }
  // Declared before the engine so that they outlive it: the updater is joined after the engine is
  // destroyed (see below), and the promise the engine thread fulfils outlives both.
  std::promise<void> updating;
  std::jthread updater;
  try {
    Engine leader(*sharded, nullptr, config());
    leader.attach_followers(*channel, /*engaged=*/false);  // e.g. the trainer owns the tp group
    leader.start();
    auto in_update = updating.get_future();
    // update_weights() blocks its caller until the engine thread ran the update; the update holds
    // the engine thread for 1.5 s. It returns once the engine thread set its result, touching the
    // engine no more, so joining it after the engine's destructor (which joins the engine thread
    // first) is safe.
    updater = std::jthread([&leader, &updating] {
      leader.update_weights([&updating] {
        updating.set_value();
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));
      });
    });
    in_update.wait();  // the engine thread is inside the update: the engage queues behind it
    leader.engage_followers();
    throw std::runtime_error("rank 0 failed right after engaging");
  } catch (const std::runtime_error& e) {
    std::printf("LEADER FAILED: %s\n", e.what());
  }
}

TEST(TensorParallelLeaderFailure, FollowerOfALeaderFailingRightAfterEngageReturns) {
  auto r = test::run_mpi_worker("TensorParallelLeaderFailureWorker.DISABLED_EngageThenFail", 2,
                                {"GYRE_COMM_TIMEOUT=12"}, 90);
  EXPECT_EQ(r.r.exit_code, 0) << r.all();
  EXPECT_EQ(count(r.all(), "[  PASSED  ]"), 2u) << r.all();
  EXPECT_NE(r.all().find("LEADER FAILED: rank 0 failed right after engaging"), std::string::npos)
      << r.all();
  EXPECT_NE(r.all().find("FOLLOWER RETURNED"), std::string::npos) << r.all();
  EXPECT_EQ(r.all().find("did not complete within"), std::string::npos) << r.all();
}

// ---- (b) the leader's forward fails after its plan was broadcast

// The leader's collectives go through the real communicator; once armed, the next all-reduce fails
// on this rank with an io Error instead, as a broken link would (the peer is left waiting in that
// collective). Test-only: it injects the one failure, everything else is the real TpComm.
class FailOnceTpComm final : public model::TpComm {
 public:
  explicit FailOnceTpComm(model::TpComm& real) : real_(real) {}
  void arm() { armed_ = true; }
  int rank() const override { return real_.rank(); }
  int size() const override { return real_.size(); }
  void all_reduce_sum(float* buf, size_t count) override {
    if (armed_.exchange(false))
      GYRE_THROW(io, "injected failure of rank {}'s all_reduce ({} floats)", rank(), count);
    real_.all_reduce_sum(buf, count);
  }
  void all_reduce_max(float* buf, size_t count) override { real_.all_reduce_max(buf, count); }
  void all_reduce_sum(double* buf, size_t count) override { real_.all_reduce_sum(buf, count); }
  void all_gather(const void* send, void* recv, size_t send_bytes) override {
    real_.all_gather(send, recv, send_bytes);
  }

 private:
  model::TpComm& real_;
  std::atomic<bool> armed_{false};
};

// GYRE_COMM_TIMEOUT=6. Without the fix the leader still counted the followers as engaged after the
// failed forward: the next step broadcast its plan into the follower's pending all-reduce (a
// mismatched collective: it hangs until the timeout or completes with garbage), and
// release_followers() did the same, instead of both failing at once with the reason.
TEST(TensorParallelLeaderFailureWorker, DISABLED_LeaderForwardFailsAfterPlanSent) {
  auto world = dist::init_distributed();
  ASSERT_EQ(world->size(), 2);
  auto tp = dist::make_tp_comm(*world);
  FailOnceTpComm faulty(*tp);
  auto channel = dist::make_step_channel(*world);
  model::LoadOptions lo;
  lo.tp = world->rank() == 0 ? static_cast<model::TpComm*>(&faulty) : tp.get();
  auto sharded = model::CausalLM::load(test::source_path(kModel), lo);
  if (world->rank() != 0) {
    EngineFollower follower(*sharded, config(), *channel);
    Timer t;
    try {
      const auto out = follower.run();
      std::printf("FOLLOWER DID NOT FAIL (exit %d: %s)\n", int(out.exit), out.message.c_str());
    } catch (const Error& e) {
      // Left in the failed step's all-reduce: it ends at the communicator's timeout, naming the
      // step and the collective.
      std::printf("FOLLOWER FAILED after %.1f s with %lld steps: %s\n", t.elapsed(),
                  static_cast<long long>(follower.steps()), e.what());
    }
    std::fflush(stdout);
    // The communicator is broken (a collective timed out): MPI_Finalize would wait for the leader
    // in that collective, so end the job here as a trainer would.
    world->abort(3, "the follower lost its leader");
  }
  {
    Engine leader(*sharded, nullptr, config());
    leader.attach_followers(*channel);
    leader.start();
    auto ok = leader.generate({greedy("ok", 3, 4)});
    ASSERT_NE(ok[0].finish.type, FinishType::abort) << ok[0].finish.message;
    EXPECT_EQ(ok[0].output_ids.size(), 4u);

    faulty.arm();  // the next forward fails on this rank, after its plan went to the follower
    auto failed = leader.generate({greedy("boom", 11, 4)});
    // A failed step aborts its requests with the error (Engine::fail_plan).
    EXPECT_EQ(failed[0].finish.type, FinishType::abort);
    EXPECT_NE(failed[0].finish.message.find("injected failure"), std::string::npos)
        << failed[0].finish.message;

    const std::string reason = "the leader's forward failed after its plan was sent";
    Timer t;
    auto later = leader.generate({greedy("later", 21, 4)});
    EXPECT_EQ(later[0].finish.type, FinishType::abort);
    EXPECT_NE(later[0].finish.message.find(reason), std::string::npos) << later[0].finish.message;
    EXPECT_NE(later[0].finish.message.find("injected failure"), std::string::npos)
        << later[0].finish.message;
    try {
      leader.release_followers();
      ADD_FAILURE() << "release_followers() succeeded with the followers out of lockstep";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
    // At once: no broadcast into the follower's pending collective (that waits for the timeout).
    EXPECT_LT(t.elapsed(), 2.0) << "a later step or the release waited on the lost followers";
    std::printf("LEADER CHECKS %s in %.2f s\n", HasFailure() ? "FAILED" : "PASSED", t.elapsed());
    std::fflush(stdout);
  }  // destroyed: no stop is sent to lost followers
  // Stay in the job until the follower ends it (MPI_Finalize here would wait for it anyway).
  std::this_thread::sleep_for(std::chrono::seconds(60));
  std::printf("THE FOLLOWER DID NOT END THE JOB\n");
}

TEST(TensorParallelLeaderFailure, LeaderForwardFailingAfterItsPlanWasSentLosesTheFollowers) {
  auto r = test::run_mpi_worker(
      "TensorParallelLeaderFailureWorker.DISABLED_LeaderForwardFailsAfterPlanSent", 2,
      {"GYRE_COMM_TIMEOUT=6"}, 90);
  const std::string all = r.all();
  EXPECT_NE(r.r.exit_code, 124) << "the job hung:\n" << all;
  EXPECT_NE(all.find("LEADER CHECKS PASSED"), std::string::npos) << all;
  // The follower's error names its step, the failed collective and the timeout.
  EXPECT_NE(all.find("FOLLOWER FAILED"), std::string::npos) << all;
  EXPECT_EQ(all.find("with 0 steps"), std::string::npos) << "it followed the first request:\n"
                                                         << all;
  EXPECT_NE(all.find("(6 tokens in 1 sequences) failed: "), std::string::npos) << all;  // "boom"
  EXPECT_NE(all.find("did not complete within 6 s"), std::string::npos) << all;
  EXPECT_EQ(all.find("FOLLOWER DID NOT FAIL"), std::string::npos) << all;
  EXPECT_EQ(all.find("THE FOLLOWER DID NOT END THE JOB"), std::string::npos) << all;
  EXPECT_LT(r.seconds, 45.0) << all;
}

}  // namespace
}  // namespace gyre::infer
