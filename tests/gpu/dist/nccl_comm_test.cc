// NcclComm on real GPUs: every collective against values computed on the host, with one thread per
// GPU in one process (the unique id is shared in memory instead of over MPI). Needs 2 visible GPUs
// for the multi-rank cases (the device machine's nvidia-h200-x2); with one GPU only the size-1 and
// error cases run; with none every test skips.
#include "gyre/dist/nccl_comm.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "gyre/backend/cuda/runtime.h"
#include "gyre/core/dtype.h"
#include "gyre/core/error.h"
#include "gyre/core/tensor.h"
#include "gyre/core/timer.h"

namespace gyre::dist {
namespace {

constexpr double kTimeout = 60;

#define SKIP_UNLESS_GPUS(n)      \
  if (cuda_device_count() < (n)) \
  GTEST_SKIP() << "needs " << (n) << " CUDA devices, " << cuda_device_count() << " visible"

template <typename T>
T* device_copy(const std::vector<T>& v) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(1, v.size() * sizeof(T))), cudaSuccess);
  if (!v.empty()) cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return d;
}

template <typename T>
std::vector<T> host_copy(const T* d, size_t n) {
  std::vector<T> v(n);
  if (n) cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

// Runs body(comm) on `n` ranks (thread r on GPU r); rethrows the first failure.
void on_ranks(int n, const std::function<void(NcclComm&)>& body, double timeout_s = kTimeout) {
  const std::string id = nccl_unique_id();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        auto c = nccl_comm_init(id, n, r, r, timeout_s, "test");
        cudaSetDevice(r);
        body(static_cast<NcclComm&>(*c));
      } catch (const std::exception& e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
}

TEST(NcclComm, AllReduceSumAndMaxOnDeviceBuffers) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    const int r = c.rank();
    std::vector<float> v = {1.0f + r, -2.0f * r, 0.5f, float(r)};
    float* d = device_copy(v);
    c.all_reduce(d, v.size(), DType::f32, ReduceOp::sum);
    EXPECT_EQ(host_copy(d, 4), (std::vector<float>{3.0f, -2.0f, 1.0f, 1.0f}));
    c.all_reduce(d, v.size(), DType::f32, ReduceOp::max);
    EXPECT_EQ(host_copy(d, 4), (std::vector<float>{3.0f, -2.0f, 1.0f, 1.0f}));
    std::vector<int64_t> w = {int64_t(10) * r, 7};
    int64_t* dw = device_copy(w);
    c.all_reduce(dw, 2, DType::i64, ReduceOp::max);
    EXPECT_EQ(host_copy(dw, 2), (std::vector<int64_t>{10, 7}));
    cudaFree(d);
    cudaFree(dw);
  });
}

TEST(NcclComm, ReduceScatterAllGatherBroadcastSendRecv) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    const int r = c.rank();
    // reduce_scatter: rank r gets block r of the sum.
    std::vector<double> in = {1.0 + r, 2.0 + r, 3.0 + r, 4.0 + r};
    double* din = device_copy(in);
    double* dout = device_copy(std::vector<double>(2, 0.0));
    c.reduce_scatter(din, dout, 2, DType::f64, ReduceOp::sum);
    EXPECT_EQ(host_copy(dout, 2),
              r == 0 ? (std::vector<double>{3, 5}) : (std::vector<double>{7, 9}));
    // all_gather: blocks in rank order.
    std::vector<int32_t> mine = {r * 100, r * 100 + 1, r * 100 + 2};
    int32_t* dm = device_copy(mine);
    int32_t* dall = device_copy(std::vector<int32_t>(6, -1));
    c.all_gather(dm, dall, 3 * sizeof(int32_t));
    EXPECT_EQ(host_copy(dall, 6), (std::vector<int32_t>{0, 1, 2, 100, 101, 102}));
    // broadcast from rank 1.
    std::vector<uint16_t> b = {uint16_t(r + 1), uint16_t(r + 2)};
    uint16_t* db = device_copy(b);
    c.broadcast(db, 2 * sizeof(uint16_t), 1);
    EXPECT_EQ(host_copy(db, 2), (std::vector<uint16_t>{2, 3}));
    // send/recv: 0 -> 1.
    std::vector<float> msg = {4.25f, -1.5f, 9.0f};
    float* dmsg = device_copy(r == 0 ? msg : std::vector<float>(3, 0.0f));
    if (r == 0) c.send(dmsg, 3 * sizeof(float), 1, 0);
    if (r == 1) {
      c.recv(dmsg, 3 * sizeof(float), 0, 0);
      EXPECT_EQ(host_copy(dmsg, 3), msg);
    }
    c.barrier();
    for (void* p : {(void*)din, (void*)dout, (void*)dm, (void*)dall, (void*)db, (void*)dmsg})
      cudaFree(p);
  });
}

TEST(NcclComm, HostBuffersAreStagedSoTypedHelpersWork) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    std::vector<float> v = {float(c.rank()), 1.0f};
    c.all_reduce(v);
    EXPECT_EQ(v, (std::vector<float>{1.0f, 2.0f}));
    EXPECT_EQ(c.all_reduce(0.25 * (c.rank() + 1)), 0.75);
    std::string s = c.rank() == 0 ? std::string("weights v7: ") + std::string(1000, 'x') : "";
    c.broadcast(s, 0);
    EXPECT_EQ(s.size(), 1012u);
    EXPECT_EQ(s.substr(0, 11), "weights v7:");
  });
}

TEST(NcclComm, Bf16AllReduceAndOverlapWithAsyncCalls) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    // bf16 values that are exact in bf16: the sum is exact too.
    std::vector<uint16_t> v = {f32_to_bf16(1.5f), f32_to_bf16(-4.0f)};
    uint16_t* d = device_copy(v);
    c.all_reduce_async(d, 2, DType::bf16, ReduceOp::sum);
    c.wait();
    auto got = host_copy(d, 2);
    EXPECT_EQ(bf16_to_f32(got[0]), 3.0f);
    EXPECT_EQ(bf16_to_f32(got[1]), -8.0f);
    // Large async all-reduce enqueued behind an event from another stream.
    const size_t n = size_t(1) << 22;
    float* big = nullptr;
    ASSERT_EQ(cudaMalloc(&big, n * sizeof(float)), cudaSuccess);
    cudaStream_t compute;
    cudaStreamCreate(&compute);
    cudaMemsetAsync(big, 0, n * sizeof(float), compute);
    cudaEvent_t ev;
    cudaEventCreate(&ev);
    cudaEventRecord(ev, compute);
    c.wait_for_event(ev);
    c.all_reduce_async(big, n, DType::f32, ReduceOp::sum);
    c.wait();
    EXPECT_EQ(host_copy(big, 4), (std::vector<float>{0, 0, 0, 0}));
    cudaEventDestroy(ev);
    cudaStreamDestroy(compute);
    cudaFree(big);
    cudaFree(d);
  });
}

TEST(NcclComm, SplitMakesIndependentGroups) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    auto solo = c.split(c.rank(), 0, "solo");
    EXPECT_EQ(solo->size(), 1);
    EXPECT_EQ(solo->rank(), 0);
    std::vector<float> v = {float(c.rank() + 1)};
    solo->all_reduce(v);
    EXPECT_EQ(v[0], float(c.rank() + 1));
    EXPECT_NE(solo->where().find("'solo'"), std::string::npos);
  });
}

TEST(NcclComm, ParseErrorsNameTheProblem) {
  SKIP_UNLESS_GPUS(1);
  try {
    nccl_comm_init("short", 1, 0, 0, kTimeout, "w");
    FAIL() << "accepted a bad unique id";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unique id"), std::string::npos) << e.what();
  }
  try {
    nccl_comm_init(nccl_unique_id(), 1, 0, 99, kTimeout, "w");
    FAIL() << "accepted device 99";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("device 99"), std::string::npos) << e.what();
  }
  auto c = nccl_comm_init(nccl_unique_id(), 1, 0, 0, kTimeout, "single");
  EXPECT_EQ(c->buffer_device(), Device::cuda);
  Tensor host = Tensor::zeros({4});
  try {
    c->all_reduce(host);
    FAIL() << "accepted a host tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("host memory"), std::string::npos) << e.what();
  }
}

// The stream-ordered all-reduce (tensor parallelism's activations): the result is there for the
// caller's stream without a host wait, and several calls queue up in order.
TEST(NcclComm, OrderedAllReduceRunsOnTheCallersStreamOrder) {
  SKIP_UNLESS_GPUS(2);
  on_ranks(2, [](NcclComm& c) {
    const int r = c.rank();
    std::vector<float> v(1000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * float(r + 1);
    float* d = device_copy(v);
    for (int k = 0; k < 3; ++k) c.all_reduce_ordered(d, v.size(), DType::f32, ReduceOp::sum);
    ASSERT_EQ(cudaStreamSynchronize(gyre::cuda::stream()), cudaSuccess);
    const std::vector<float> got = host_copy(d, v.size());
    // rank 0 holds i, rank 1 2i: the first sum gives 3i on both, the next two double it: 12i.
    for (size_t i = 0; i < v.size(); i += 97) EXPECT_EQ(got[i], float(i) * 12.0f) << i;
    cudaFree(d);
  });
}

// A peer that stops joining ordered all-reduces: the watchdog aborts the communicator after the
// timeout, so the caller's stream does not wait forever, and the next call throws the reason.
// (Both ranks first complete one all-reduce: NCCL connects lazily, and a first collective whose
// peer never arrives already fails while enqueueing, bounded by the same timeout.)
TEST(NcclComm, OrderedAllReduceWithAStalledPeerAbortsAfterTheTimeout) {
  SKIP_UNLESS_GPUS(2);
  const std::string id = nccl_unique_id();
  std::string error0;
  double waited = 0;
  std::thread rank1([&] {
    try {
      auto c = nccl_comm_init(id, 2, 1, 1, 3.0, "stall");
      cudaSetDevice(1);
      float* d = device_copy(std::vector<float>(256, 1.0f));
      static_cast<NcclComm&>(*c).all_reduce_ordered(d, 256, DType::f32, ReduceOp::sum);
      cudaStreamSynchronize(gyre::cuda::stream());
      std::this_thread::sleep_for(std::chrono::seconds(6));  // never joins the second one
    } catch (const std::exception&) {
    }
  });
  try {
    auto c = nccl_comm_init(id, 2, 0, 0, 3.0, "stall");
    cudaSetDevice(0);
    float* d = device_copy(std::vector<float>(256, 1.0f));
    static_cast<NcclComm&>(*c).all_reduce_ordered(d, 256, DType::f32, ReduceOp::sum);
    cudaStreamSynchronize(gyre::cuda::stream());
    Timer t;
    static_cast<NcclComm&>(*c).all_reduce_ordered(d, 256, DType::f32, ReduceOp::sum);
    cudaStreamSynchronize(gyre::cuda::stream());  // returns once the watchdog aborted
    waited = t.elapsed();
    cudaGetLastError();
    c->barrier();
    ADD_FAILURE() << "a call on the aborted communicator returned";
  } catch (const Error& e) {
    error0 = e.what();
  }
  rank1.join();
  EXPECT_LT(waited, 20.0);
  EXPECT_GE(waited, 2.5);
  EXPECT_NE(error0.find("did not complete within"), std::string::npos) << error0;
  EXPECT_NE(error0.find("stall"), std::string::npos) << error0;
}

// A rank whose peer never starts fails after the timeout with a message naming the group.
TEST(NcclComm, MissingPeerTimesOutInsteadOfHanging) {
  SKIP_UNLESS_GPUS(1);
  try {
    nccl_comm_init(nccl_unique_id(), 2, 0, 0, 3.0, "lonely");
    FAIL() << "init without the peer returned";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did not join"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("lonely"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace gyre::dist
