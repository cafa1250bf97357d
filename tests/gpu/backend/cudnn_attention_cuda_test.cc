// Autocast attention through cuDNN's fused SDPA (backend/cuda/cudnn_attention.h) against the CPU
// f32 reference on the same bf16-rounded operands and against the FlashAttention-2 kernels
// (GYRE_ATTENTION_BACKEND=flash), forward and backward, with the flash bounds of
// autocast_cuda_test.cc: output 1e-2, lse 1e-5, dQ/dK/dV 2e-2 relative. Cases: empty sequences,
// B = 1 at odd lengths, GQA at the Qwen2.5 shapes, T = 0, plan reuse within a bucket, the
// deterministic backward (default) and the atomic-dQ one, a forward of one backend differentiated
// by the other, the workspace cap, measured plan choice (bitwise the heuristic plan's) and the
// switch to the flash kernels. Skips without a GPU; the
// cuDNN-specific checks skip without libcudnn.so.9.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/cudnn_attention.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

// Sets GYRE_ATTENTION_BACKEND for a scope (restores "cudnn", the default, after).
struct Backend {
  explicit Backend(const char* name) { setenv("GYRE_ATTENTION_BACKEND", name, 1); }
  ~Backend() { unsetenv("GYRE_ATTENTION_BACKEND"); }
};

struct Result {
  Tensor o, lse, dq, dk, dv;
};

struct Case {
  std::vector<int32_t> cu;
  int64_t Hq, Hkv, D;
};

struct Inputs {
  Tensor cu, q, k, v, dout;
  float scale;
  Inputs(const Case& c, uint64_t seed) {
    const int64_t T = c.cu.back(), B = int64_t(c.cu.size()) - 1;
    cu = Tensor::from_vector(c.cu, {B + 1});
    q = randn({T, c.Hq, c.D}, seed);
    k = randn({T, c.Hkv, c.D}, seed + 1);
    v = randn({T, c.Hkv, c.D}, seed + 2);
    dout = randn({T, c.Hq, c.D}, seed + 3);
    scale = 1.0f / std::sqrt(float(c.D));
  }
};

Result reference(const Inputs& in) {
  Result r;
  Tensor qr = round_bf16(in.q), kr = round_bf16(in.k), vr = round_bf16(in.v);
  ops::attention_varlen(qr, kr, vr, in.cu, in.scale, r.o, r.lse);
  ops::attention_varlen_backward(round_bf16(in.dout), qr, kr, vr, r.o, r.lse, in.cu, in.scale, r.dq,
                                 r.dk, r.dv);
  return r;
}

// Forward with fwd_backend, backward with bwd_backend, under autocast on the GPU.
Result on_gpu(const Inputs& in, const char* fwd_backend, const char* bwd_backend) {
  Tensor gq = gpu(in.q), gk = gpu(in.k), gv = gpu(in.v), gcu = gpu(in.cu), go, glse, gdq, gdk, gdv;
  ops::Bf16Autocast autocast;
  {
    Backend b(fwd_backend);
    ops::attention_varlen(gq, gk, gv, gcu, in.scale, go, glse);
  }
  {
    Backend b(bwd_backend);
    ops::attention_varlen_backward(gpu(in.dout), gq, gk, gv, go, glse, gcu, in.scale, gdq, gdk,
                                   gdv);
  }
  return Result{cpu(go), cpu(glse), cpu(gdq), cpu(gdk), cpu(gdv)};
}

void expect_close(const Result& got, const Result& want, double scale, const std::string& what) {
  EXPECT_LE(rel_err(got.o, want.o), 1e-2 * scale) << what;
  EXPECT_LE(rel_err(got.lse, want.lse), 1e-5 * scale) << what;
  EXPECT_LE(rel_err(got.dq, want.dq), 2e-2 * scale) << what;
  EXPECT_LE(rel_err(got.dk, want.dk), 2e-2 * scale) << what;
  EXPECT_LE(rel_err(got.dv, want.dv), 2e-2 * scale) << what;
}

std::string name(const Case& c) {
  std::string s = "heads " + std::to_string(c.Hq) + "/" + std::to_string(c.Hkv) + " D " +
                  std::to_string(c.D) + " cu {";
  for (int32_t x : c.cu) s += std::to_string(x) + ",";
  return s + "}";
}

#define GYRE_SKIP_WITHOUT_CUDNN()                                                      \
  do {                                                                                 \
    std::string why_;                                                                  \
    if (!cuda::cudnn_attention_available(&why_)) GTEST_SKIP() << "no cuDNN: " << why_; \
  } while (0)

TEST(CudnnAttention, MatchesReferenceAndFlash) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  const std::vector<Case> cases = {
      {{0, 0, 1, 131, 388, 452}, 4, 2, 64},   // an empty and a 1-token sequence
      {{0, 0, 1, 131, 388, 452}, 4, 2, 128},  //
      {{0, 1}, 2, 1, 64},                     // B = 1, odd lengths
      {{0, 7}, 2, 2, 128},                    //
      {{0, 129}, 4, 1, 128},                  //
      {{0, 7, 7, 136, 300}, 14, 2, 64},       // Qwen2.5-0.5B heads
      {{0, 200, 201, 333}, 16, 16, 128},      // MHA, 16 heads of 128
      {{0, 0, 65, 322, 322}, 12, 2, 128},     // Qwen2.5-1.5B heads, empty first and last
  };
  for (const Case& c : cases) {
    Inputs in(c, 10);
    const Result want = reference(in);
    const auto before = cuda::cudnn_attention_stats();
    const Result cudnn = on_gpu(in, "cudnn", "cudnn");
    const auto after = cuda::cudnn_attention_stats();
    // The cuDNN path ran (no silent fallback to the flash kernels).
    EXPECT_EQ(after.fwd_calls, before.fwd_calls + 1) << name(c);
    EXPECT_EQ(after.bwd_calls, before.bwd_calls + 1) << name(c);
    expect_close(cudnn, want, 1.0, "cudnn vs cpu, " + name(c));
    const Result flash = on_gpu(in, "flash", "flash");
    expect_close(flash, want, 1.0, "flash vs cpu, " + name(c));
    expect_close(cudnn, flash, 1.0, "cudnn vs flash, " + name(c));
    // The output went through bf16: every value is exactly representable in bf16.
    size_t inexact = 0;
    for (float x : cudnn.o.to_vector()) inexact += bf16_to_f32(f32_to_bf16(x)) != x;
    EXPECT_EQ(inexact, 0u) << name(c);
  }
  const auto s = cuda::cudnn_attention_stats();
  std::printf("cuDNN attention: %lld plans built in %.0f ms (last: %s, workspace %lld bytes)\n",
              (long long)s.plans_built, s.build_ms, s.last_engine.c_str(),
              (long long)s.last_workspace_bytes);
}

TEST(CudnnAttention, LseIsSharedAcrossBackends) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  const Case c{{0, 5, 133, 260}, 14, 2, 64};
  Inputs in(c, 20);
  const Result want = reference(in);
  expect_close(on_gpu(in, "cudnn", "flash"), want, 1.0, "cudnn forward, flash backward");
  expect_close(on_gpu(in, "flash", "cudnn"), want, 1.0, "flash forward, cudnn backward");
}

TEST(CudnnAttention, PlansAreReusedWithinABucket) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  // B 3 and 4 round up to 4, max lengths 100 and 120 to 128; past 1024 the lengths round to
  // multiples of 512 (1100 and 1500 to 1536): one forward and one backward plan per pair.
  const std::vector<std::pair<Case, Case>> pairs = {
      {{{0, 100, 150, 190}, 4, 4, 64}, {{0, 3, 123, 130, 250}, 4, 4, 64}},
      {{{0, 1100}, 2, 1, 64}, {{0, 1500}, 2, 1, 64}},
  };
  for (const auto& [a, b] : pairs) {
    Inputs ia(a, 30), ib(b, 31);
    on_gpu(ia, "cudnn", "cudnn");
    const auto before = cuda::cudnn_attention_stats();
    const Result got = on_gpu(ib, "cudnn", "cudnn");
    const auto after = cuda::cudnn_attention_stats();
    EXPECT_EQ(after.plans_built, before.plans_built) << name(b);
    EXPECT_EQ(after.fwd_calls, before.fwd_calls + 1) << name(b);
    EXPECT_EQ(after.bwd_calls, before.bwd_calls + 1) << name(b);
    expect_close(got, reference(ib), 1.0, "second batch of the bucket, " + name(b));
  }
}

TEST(CudnnAttention, BackwardIsBitwiseReproducible) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  const Case c{{0, 300, 517}, 12, 2, 128};
  Inputs in(c, 40);
  const Result r1 = on_gpu(in, "cudnn", "cudnn"), r2 = on_gpu(in, "cudnn", "cudnn");
  EXPECT_EQ(r1.o.to_vector(), r2.o.to_vector());
  EXPECT_EQ(r1.dq.to_vector(), r2.dq.to_vector());
  EXPECT_EQ(r1.dk.to_vector(), r2.dk.to_vector());
  EXPECT_EQ(r1.dv.to_vector(), r2.dv.to_vector());
}

// Sets an environment variable for a scope.
struct Env {
  const char* name;
  Env(const char* n, const char* value) : name(n) { setenv(n, value, 1); }
  ~Env() { unsetenv(name); }
};

TEST(CudnnAttention, AtomicDqVariantMatches) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  Env nondet("GYRE_CUDNN_ATTENTION_DETERMINISTIC", "0");
  for (const Case& c : {Case{{0, 0, 65, 322, 322}, 12, 2, 128},
                        Case{{0, 7, 7, 136, 300}, 14, 2, 64}, Case{{0, 129}, 4, 4, 128}}) {
    Inputs in(c, 70);
    const Result want = reference(in);
    // Twice: the second run reuses the first one's scratch blocks (the f32 dQ accumulator must not
    // keep the previous sums).
    for (int rep = 0; rep < 2; ++rep) {
      const auto before = cuda::cudnn_attention_stats();
      const Result got = on_gpu(in, "cudnn", "cudnn");
      EXPECT_EQ(cuda::cudnn_attention_stats().bwd_calls, before.bwd_calls + 1) << name(c);
      expect_close(got, want, 1.0, "atomic dQ, " + name(c));
    }
  }
}

// GYRE_CUDNN_ATTENTION_TUNE=1: a key's first call that fills its bucket measures the graph's
// alternative plans and may replace the heuristic's — results must stay byte for byte the
// heuristic plan's: on the tuning call (whose outputs the trials must not touch), on the calls
// after it, and on another batch of the same key (shorter sequences), whose call before tuning
// must not tune (it does not fill the bucket).
TEST(CudnnAttention, TunedPlansKeepTheHeuristicPlansBits) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  // One key no other test uses: B 4, longest sequence bucketed to 640.
  const Case fills{{0, 640, 1000, 1640, 1650}, 14, 2, 64};  // B 4, longest 640: the bucket
  const Case shorter{{0, 600, 630, 631, 1144}, 14, 2, 64};  // B 4, longest 600: same key
  Inputs in_fill(fills, 90), in_short(shorter, 91);
  const Result untuned_fill = on_gpu(in_fill, "cudnn", "cudnn");
  const Result untuned_short = on_gpu(in_short, "cudnn", "cudnn");
  Env on("GYRE_CUDNN_ATTENTION_TUNE", "1"), plans("GYRE_CUDNN_ATTENTION_TUNE_PLANS", "6"),
      budget("GYRE_CUDNN_ATTENTION_TUNE_MS", "20000");
  auto same_bytes = [](const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
  };
  auto expect_same = [&](const Result& got, const Result& want, const char* what) {
    EXPECT_TRUE(same_bytes(got.o, want.o)) << what;
    EXPECT_TRUE(same_bytes(got.lse, want.lse)) << what;
    EXPECT_TRUE(same_bytes(got.dq, want.dq)) << what;
    EXPECT_TRUE(same_bytes(got.dk, want.dk)) << what;
    EXPECT_TRUE(same_bytes(got.dv, want.dv)) << what;
  };
  const auto before = cuda::cudnn_attention_stats();
  expect_same(on_gpu(in_short, "cudnn", "cudnn"), untuned_short, "shorter batch, tuning on");
  EXPECT_EQ(cuda::cudnn_attention_stats().plans_tuned, before.plans_tuned);  // not the bucket
  expect_same(on_gpu(in_fill, "cudnn", "cudnn"), untuned_fill, "the tuning call");
  const auto after = cuda::cudnn_attention_stats();
  EXPECT_EQ(after.plans_tuned, before.plans_tuned + 2);  // the forward's key and the backward's
  expect_same(on_gpu(in_fill, "cudnn", "cudnn"), untuned_fill, "after tuning");
  expect_same(on_gpu(in_short, "cudnn", "cudnn"), untuned_short, "shorter batch after tuning");
  EXPECT_EQ(cuda::cudnn_attention_stats().plans_tuned, after.plans_tuned);  // once per key
  std::printf("cuDNN attention tuning: %lld keys tuned, %lld plans replaced\n",
              (long long)after.plans_tuned, (long long)after.plans_replaced);
}

TEST(CudnnAttention, WorkspaceCapFallsBackToFlash) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  // The deterministic backward at B 2, S 512 needs B·Hq·S²·2 = 4 MB of dP scratch: over 1 MB.
  Env cap("GYRE_CUDNN_ATTENTION_MAX_WORKSPACE_MB", "1");
  const Case c{{0, 400, 450}, 4, 2, 64};
  Inputs in(c, 80);
  const auto before = cuda::cudnn_attention_stats();
  const Result got = on_gpu(in, "cudnn", "cudnn");
  const auto after = cuda::cudnn_attention_stats();
  EXPECT_EQ(after.fwd_calls, before.fwd_calls + 1);  // the forward's workspace is small
  EXPECT_EQ(after.bwd_calls, before.bwd_calls);      // the backward ran the flash kernels
  expect_close(got, reference(in), 1.0, "capped");
}

TEST(CudnnAttention, EmptyBatchRunsNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  const Case c{{0, 0, 0}, 4, 2, 64};
  Inputs in(c, 50);
  const Result r = on_gpu(in, "cudnn", "cudnn");
  EXPECT_EQ(r.o.shape(), (Shape{0, 4, 64}));
  EXPECT_EQ(r.dk.shape(), (Shape{0, 2, 64}));
}

TEST(CudnnAttention, FlashSwitchBypassesCudnn) {
  GYRE_SKIP_WITHOUT_GPU();
  {
    Backend b("flash");
    EXPECT_EQ(cuda::attention_backend(), cuda::AttentionBackend::flash);
  }
  EXPECT_EQ(cuda::attention_backend(), cuda::AttentionBackend::cudnn);
  const Case c{{0, 1, 70, 201}, 14, 2, 64};
  Inputs in(c, 60);
  const auto before = cuda::cudnn_attention_stats();
  const Result r1 = on_gpu(in, "flash", "flash");
  const auto after = cuda::cudnn_attention_stats();
  EXPECT_EQ(after.fwd_calls, before.fwd_calls);
  EXPECT_EQ(after.bwd_calls, before.bwd_calls);
  expect_close(r1, reference(in), 1.0, "flash");
  // The flash kernels are deterministic: the switch gives exactly their result every time.
  const Result r2 = on_gpu(in, "flash", "flash");
  EXPECT_EQ(r1.dq.to_vector(), r2.dq.to_vector());
}

// The cuDNN path declines (returns false, writes nothing, counts no call) what its graphs cannot
// take, so the caller runs the flash kernels: a buffer that is not 16-byte aligned, and packed
// offsets T·H·D beyond int32 (checked before any memory is touched, so small buffers suffice).
TEST(CudnnAttention, DeclinesUnalignedBuffersAndInt32Overflow) {
  GYRE_SKIP_WITHOUT_GPU();
  GYRE_SKIP_WITHOUT_CUDNN();
  const int64_t Hq = 4, Hkv = 2, D = 64, T = 64;
  Tensor q = Tensor::zeros({T + 8, Hq, D}, DType::bf16, Device::cuda);
  Tensor k = Tensor::zeros({T, Hkv, D}, DType::bf16, Device::cuda);
  Tensor v = Tensor::zeros({T, Hkv, D}, DType::bf16, Device::cuda);
  Tensor sentinel = Tensor::full({T, Hq, D}, 3.0f);
  Tensor out = sentinel.to(DType::bf16).to(Device::cuda);  // 3.0 is exact in bf16
  Tensor lse = Tensor::full({T, Hq}, 7.0f).to(Device::cuda);
  Tensor cu = gpu(Tensor::from_vector(std::vector<int32_t>{0, int32_t(T)}, {2}));
  const auto before = cuda::cudnn_attention_stats();
  const auto* qp = q.data<uint16_t>();
  EXPECT_FALSE(cuda::cudnn_attention_fwd(qp + 1, k.data<uint16_t>(), v.data<uint16_t>(), cu.i32(),
                                         1, T, T, Hq, Hkv, D, 0.125f, out.data<uint16_t>(),
                                         lse.f32()));
  const int64_t huge_T = (int64_t(1) << 31) / (Hq * D) + 1;  // T·Hq·D crosses 2^31
  EXPECT_FALSE(cuda::cudnn_attention_fwd(qp, k.data<uint16_t>(), v.data<uint16_t>(), cu.i32(), 1, T,
                                         huge_T, Hq, Hkv, D, 0.125f, out.data<uint16_t>(),
                                         lse.f32()));
  const auto after = cuda::cudnn_attention_stats();
  EXPECT_EQ(after.fwd_calls, before.fwd_calls);
  EXPECT_EQ(cpu(lse).to_vector(), Tensor::full({T, Hq}, 7.0f).to_vector());  // nothing written
  EXPECT_EQ(cpu(out).to(DType::f32).to_vector(), sentinel.to_vector());
}

// A typo in the switch is an error naming the variable, not a silent run of the default backend.
TEST(CudnnAttention, UnknownBackendValueIsAnError) {
  GYRE_SKIP_WITHOUT_GPU();
  Backend b("flsh");
  EXPECT_THROW(cuda::attention_backend(), Error);
}

}  // namespace
}  // namespace gyre
