// The CUDA vocabulary-chunked log-prob ops (backend/cuda/logprob_chunk.cu) against the CPU
// reference (backend/cpu/logprob_chunk.cc), f32, <= 1e-5 relative: the three chunk ops one by one
// (also at edge widths C = 1 .. 40000 with -inf logits, misaligned and in-place buffers: float4 and
// scalar paths give the same bits, bf16 dlogits are the f32 ones rounded), then
// linear_token_logprobs{,_backward} end to end (f32 GEMMs). Under ops::Bf16Autocast the head
// runs cuda::linear_token_logprobs{,_bwd}_autocast (cuda/logprob_head.h): checked bitwise against
// the previous composition (ops::linear / linear_backward under autocast + the chunk ops) and
// against the CPU f32 reference on the bf16-rounded operands. Skips without a visible GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "gpu/backend/gpu_test_util.h"
#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/cuda/logprob_head.h"
#include "gyre/backend/ops.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::kF32Tol;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

Tensor make_targets(int64_t T, int64_t V) {
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = t % 7 == 2 ? -1 : int32_t((t * 131 + 5) % V);
  if (T > 0) tg[0] = int32_t(V - 1);
  return Tensor::from_vector(tg, {T});
}

TEST(LogprobChunkCuda, ChunkOpsMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 70, C = 1000, v0 = 3000, V = 5000;
  const Tensor x1 = randn({T, C}, 1, 3.0f), x2 = randn({T, C}, 2, 5.0f);
  Tensor targets = make_targets(T, V);
  for (int64_t t = 1; t < T; t += 3) targets.i32()[t] = int32_t(v0 + (t * 17) % C);  // in chunk
  const float tau = 0.7f;
  // Stats: overwrite with chunk 1, fold chunk 2 (at offset v0 + C).
  Tensor st_c, st_g;
  ops::logprob_chunk_stats(x1, targets, v0, tau, false, st_c);
  ops::logprob_chunk_stats(x2, targets, v0 + C, tau, true, st_c);
  const Tensor tg_g = gpu(targets);
  ops::logprob_chunk_stats(gpu(x1), tg_g, v0, tau, false, st_g);
  ops::logprob_chunk_stats(gpu(x2), tg_g, v0 + C, tau, true, st_g);
  EXPECT_LE(rel_err(cpu(st_g), st_c), kF32Tol);
  // Finish.
  Tensor lp_c, ent_c = Tensor::empty({T}, DType::f32), lse_c, lp_g,
               ent_g = Tensor::empty({T}, DType::f32, Device::cuda),
               lse_g = Tensor::empty({T}, DType::f32, Device::cuda);
  lse_c = Tensor::empty({T}, DType::f32);
  ops::logprob_chunk_finish(st_c, targets, lp_c, ent_c, lse_c);
  ops::logprob_chunk_finish(st_g, tg_g, lp_g, ent_g, lse_g);
  EXPECT_LE(rel_err(cpu(lp_g), lp_c), kF32Tol);
  EXPECT_LE(rel_err(cpu(ent_g), ent_c), kF32Tol);
  EXPECT_LE(rel_err(cpu(lse_g), lse_c), kF32Tol);
  // Backward of one chunk, out of place and in place, with and without dentropy.
  const Tensor dlogp = randn({T}, 3), dent = randn({T}, 4, 0.3f);
  for (bool with_dent : {true, false}) {
    Tensor none, d_c, d_g;
    ops::logprob_chunk_backward(x1, targets, v0, tau, lse_c, ent_c, dlogp, with_dent ? dent : none,
                                d_c);
    ops::logprob_chunk_backward(gpu(x1), tg_g, v0, tau, lse_g, ent_g, gpu(dlogp),
                                with_dent ? gpu(dent) : none, d_g);
    EXPECT_LE(rel_err(cpu(d_g), d_c), kF32Tol) << "dentropy " << with_dent;
    Tensor inplace = gpu(x1);
    ops::logprob_chunk_backward(inplace, tg_g, v0, tau, lse_g, ent_g, gpu(dlogp),
                                with_dent ? gpu(dent) : none, inplace);
    EXPECT_LE(rel_err(cpu(inplace), d_c), kF32Tol) << "in place, dentropy " << with_dent;
  }
}

// ---- edge shapes of the chunk kernels (logprob_chunk.cu: float4 and scalar paths, warp and block
// teams, tiles that raise the running max)

// The bytes of a tensor (device or host), for bitwise comparisons (EXPECT_TRUE(a == b): a failure
// does not print the whole buffers).
std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor h = cpu(t);
  std::vector<uint8_t> b(h.nbytes());
  if (!b.empty()) std::memcpy(b.data(), h.raw(), b.size());
  return b;
}

// A device copy of t that starts `off` elements into its allocation (off = 1 for an f32 tensor:
// 4-byte but not 16-byte aligned, so the kernels must not use 16-byte accesses on it).
Tensor gpu_offset(const Tensor& t, int64_t off) {
  std::vector<float> v(size_t(off), 0.0f);
  const std::vector<float> tv = t.to_vector();
  v.insert(v.end(), tv.begin(), tv.end());
  return gpu(Tensor::from_vector(v, {int64_t(v.size())})).narrow(off, t.numel()).reshape(t.shape());
}

// Logits [T, C] with rows that rise (t % 3 == 1: later tiles raise a thread's running max, so the
// kernel rebases its partial sums) or fall along the columns.
Tensor trend_logits(int64_t T, int64_t C, uint64_t seed, float scale) {
  std::vector<float> v = randn({T, C}, seed, scale).to_vector();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < C; ++j) {
      const float r = 6.0f * float(j) / float(C);
      v[size_t(t * C + j)] += t % 3 == 1 ? r : t % 3 == 2 ? -r : 0.0f;
    }
  return Tensor::from_vector(v, {T, C});
}

// Masked vocabulary in the second chunk, by row t % 5: 1 every third column -inf, 2 all but the
// last column -inf, 3 the whole row -inf (that row adds nothing to the first chunk's statistics),
// 4 the first half -inf. The target's column stays finite where the target is in this chunk.
Tensor masked_logits(const Tensor& x, const Tensor& targets, int64_t v0) {
  const int64_t T = x.size(0), C = x.size(1);
  std::vector<float> v = x.to_vector();
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < C; ++j) {
      const int k = int(t % 5);
      const bool masked =
          (k == 1 && j % 3 == 0) || (k == 2 && j != C - 1) || k == 3 || (k == 4 && j < C / 2);
      if (masked && targets.i32()[t] != v0 + j) v[size_t(t * C + j)] = -INFINITY;
    }
  return Tensor::from_vector(v, {T, C});
}

// Targets over two chunks [v0, v0 + C) and [v0 + C, v0 + 2C): in the first, in the second (not
// for the fully masked rows t % 5 == 3), skipped (-1), or outside both.
Tensor two_chunk_targets(int64_t T, int64_t C, int64_t v0) {
  std::vector<int32_t> tg(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t k = t % 4;
    const int64_t col = (t * 37 + 3) % C;
    tg[size_t(t)] = k == 0                 ? int32_t(v0 + col)
                    : k == 1 && t % 5 != 3 ? int32_t(v0 + C + col)
                    : k == 2               ? -1
                                           : int32_t(v0 + 2 * C + 5);
  }
  return Tensor::from_vector(tg, {T});
}

// Per C: stats over a plain chunk then a masked one (accumulate), finish, and the backward of the
// masked chunk, against the CPU reference; the same statistics and dlogits bit for bit from a
// misaligned copy of the logits, from a sub-batch of rows, and in place; bf16 dlogits equal to the
// f32 ones rounded by cuda::f32_to_bf16, aligned or not. C = 1, 3, 5, 4099, 2051: scalar path;
// 4, 100, 2048, 4096, 40000: float4 path (when aligned); one warp per row for the stats up to
// C = 16384 and for the backward up to 2048, else one block per row (40000: five tiles per thread).
TEST(LogprobChunkCuda, ChunkOpsEdgeShapesMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t v0 = 11;
  const float tau = 0.7f;
  for (int64_t C : {1, 3, 4, 5, 100, 2048, 2051, 4096, 4096 + 3, 40000}) {
    SCOPED_TRACE(testing::Message() << "C " << C);
    const int64_t T = C >= 40000 ? 11 : 37;
    const Tensor targets = two_chunk_targets(T, C, v0), tg_g = gpu(targets);
    const Tensor x1 = trend_logits(T, C, 40 + uint64_t(C), 3.0f);
    const Tensor x2 = masked_logits(trend_logits(T, C, 41 + uint64_t(C), 2.0f), targets, v0 + C);
    Tensor st_c, st_g;
    ops::logprob_chunk_stats(x1, targets, v0, tau, false, st_c);
    ops::logprob_chunk_stats(x2, targets, v0 + C, tau, true, st_c);
    const Tensor x1_g = gpu(x1), x2_g = gpu(x2);
    ops::logprob_chunk_stats(x1_g, tg_g, v0, tau, false, st_g);
    const std::vector<uint8_t> st1_bits = bytes_of(st_g);
    ops::logprob_chunk_stats(x2_g, tg_g, v0 + C, tau, true, st_g);
    EXPECT_LE(rel_err(cpu(st_g), st_c), kF32Tol);
    // Misaligned logits: scalar loads over the same groups in the same order, the same bits.
    Tensor st_m;
    ops::logprob_chunk_stats(gpu_offset(x1, 1), tg_g, v0, tau, false, st_m);
    EXPECT_TRUE(bytes_of(st_m) == st1_bits) << "first chunk, misaligned";
    ops::logprob_chunk_stats(gpu_offset(x2, 1), tg_g, v0 + C, tau, true, st_m);
    EXPECT_TRUE(bytes_of(st_m) == bytes_of(st_g)) << "masked chunk, misaligned";
    // A row's statistics do not depend on the other rows: rows [4, 9) alone (a view at a row
    // offset) give the bytes of those rows in the full batch.
    Tensor st_sub;
    ops::logprob_chunk_stats(x1_g.narrow(4, 5), tg_g.narrow(4, 5), v0, tau, false, st_sub);
    EXPECT_TRUE(bytes_of(st_sub) ==
                std::vector<uint8_t>(st1_bits.begin() + 4 * 16, st1_bits.begin() + 9 * 16))
        << "rows 4..8 alone";
    // Finish.
    Tensor lp_c, ent_c = Tensor::empty({T}, DType::f32), lse_c = Tensor::empty({T}, DType::f32);
    Tensor lp_g, ent_g = Tensor::empty({T}, DType::f32, Device::cuda),
                 lse_g = Tensor::empty({T}, DType::f32, Device::cuda);
    ops::logprob_chunk_finish(st_c, targets, lp_c, ent_c, lse_c);
    ops::logprob_chunk_finish(st_g, tg_g, lp_g, ent_g, lse_g);
    EXPECT_LE(rel_err(cpu(lp_g), lp_c), kF32Tol);
    EXPECT_LE(rel_err(cpu(ent_g), ent_c), kF32Tol);
    EXPECT_LE(rel_err(cpu(lse_g), lse_c), kF32Tol);
    // Backward of the masked chunk (-inf logits: p = 0, dlogits 0 there).
    const Tensor dlogp = randn({T}, 42), dent = randn({T}, 43, 0.3f);
    const Tensor dlogp_g = gpu(dlogp), dent_g = gpu(dent);
    Tensor d_c, d_g;
    ops::logprob_chunk_backward(x2, targets, v0 + C, tau, lse_c, ent_c, dlogp, dent, d_c);
    ops::logprob_chunk_backward(x2_g, tg_g, v0 + C, tau, lse_g, ent_g, dlogp_g, dent_g, d_g);
    EXPECT_LE(rel_err(cpu(d_g), d_c), kF32Tol);
    const std::vector<uint8_t> d_bits = bytes_of(d_g);
    // In place (dx == x), aligned and misaligned; out of place from misaligned logits.
    Tensor inplace = gpu(x2);
    ops::logprob_chunk_backward(inplace, tg_g, v0 + C, tau, lse_g, ent_g, dlogp_g, dent_g, inplace);
    EXPECT_TRUE(bytes_of(inplace) == d_bits) << "in place";
    Tensor inplace_m = gpu_offset(x2, 1);
    ops::logprob_chunk_backward(inplace_m, tg_g, v0 + C, tau, lse_g, ent_g, dlogp_g, dent_g,
                                inplace_m);
    EXPECT_TRUE(bytes_of(inplace_m) == d_bits) << "in place, misaligned";
    Tensor out_m = gpu_offset(Tensor::zeros({T, C}), 1);
    ops::logprob_chunk_backward(gpu_offset(x2, 1), tg_g, v0 + C, tau, lse_g, ent_g, dlogp_g, dent_g,
                                out_m);
    EXPECT_TRUE(bytes_of(out_m) == d_bits) << "misaligned logits and dlogits";
    // bf16 dlogits: the f32 ones rounded by cuda::f32_to_bf16, bit for bit; an aligned dz (8-byte
    // stores) and one offset by one element (2-byte stores); with and without dentropy.
    for (bool with_dent : {true, false}) {
      SCOPED_TRACE(with_dent ? "dentropy" : "no dentropy");
      Tensor none, d32;
      ops::logprob_chunk_backward(x2_g, tg_g, v0 + C, tau, lse_g, ent_g, dlogp_g,
                                  with_dent ? dent_g : none, d32);
      Tensor want = Tensor::empty({T, C}, DType::bf16, Device::cuda);
      cuda::f32_to_bf16(d32.f32(), want.data<uint16_t>(), T * C);
      const Tensor buf = Tensor::empty({T * C + 1}, DType::bf16, Device::cuda);
      for (int64_t off : {0, 1}) {
        const Tensor got = buf.narrow(off, T * C).reshape({T, C});
        cuda::logprob_chunk_bwd_bf16(x2_g.f32(), tg_g.i32(), T, C, v0 + C, tau, lse_g.f32(),
                                     ent_g.f32(), dlogp_g.f32(), with_dent ? dent_g.f32() : nullptr,
                                     got.data<uint16_t>());
        EXPECT_TRUE(bytes_of(got) == bytes_of(want)) << "bf16 dz at offset " << off;
      }
      // From misaligned logits as well (the scalar path, whatever dz's alignment).
      const Tensor got = buf.narrow(0, T * C).reshape({T, C}), x2_m = gpu_offset(x2, 1);
      cuda::logprob_chunk_bwd_bf16(x2_m.f32(), tg_g.i32(), T, C, v0 + C, tau, lse_g.f32(),
                                   ent_g.f32(), dlogp_g.f32(), with_dent ? dent_g.f32() : nullptr,
                                   got.data<uint16_t>());
      EXPECT_TRUE(bytes_of(got) == bytes_of(want)) << "bf16 dz from misaligned logits";
    }
  }
}

// A fully masked (-inf) chunk holds no mass: folded after a plain chunk it leaves the statistics
// bit for bit as they were; as the first chunk it gives (-inf, 0, 0) and the next chunk's fold
// replaces it; its dlogits are 0. Warp (C = 64) and block (C = 3000, 4101) teams.
// NaN logits make the row NaN on the GPU as on the CPU, whatever the chunk holding them: a NaN
// among finite logits, a chunk of only NaN and -inf (which the max skips), in the first or the
// second chunk; a clean row keeps its value.
TEST(LogprobChunkCuda, NanLogitsGiveNanLikeTheCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 5, C = 40;
  Tensor x1 = randn({T, C}, 61, 2.0f), x2 = randn({T, C}, 62, 2.0f);
  x1.f32()[0 * C + 7] = NAN;   // row 0: among finite logits, first chunk
  x2.f32()[1 * C + 30] = NAN;  // row 1: among finite logits, second chunk
  for (int64_t j = 0; j < C; ++j) x2.f32()[2 * C + j] = -INFINITY;  // row 2: -inf and one NaN
  x2.f32()[2 * C + 11] = NAN;
  for (int64_t j = 0; j < C; ++j) x1.f32()[3 * C + j] = -INFINITY;  // row 3: masked first chunk
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{3, 50, 9, 41, 12}, {T});
  const Tensor tg_g = gpu(targets);
  Tensor st_c, st_g;
  ops::logprob_chunk_stats(x1, targets, 0, 1.0f, false, st_c);
  ops::logprob_chunk_stats(x2, targets, C, 1.0f, true, st_c);
  ops::logprob_chunk_stats(gpu(x1), tg_g, 0, 1.0f, false, st_g);
  ops::logprob_chunk_stats(gpu(x2), tg_g, C, 1.0f, true, st_g);
  Tensor lp_c, ent_c = Tensor::empty({T}, DType::f32), lse_c = Tensor::empty({T}, DType::f32);
  Tensor lp_g, ent_g = Tensor::empty({T}, DType::f32, Device::cuda),
               lse_g = Tensor::empty({T}, DType::f32, Device::cuda);
  ops::logprob_chunk_finish(st_c, targets, lp_c, ent_c, lse_c);
  ops::logprob_chunk_finish(st_g, tg_g, lp_g, ent_g, lse_g);
  const std::vector<float> lc = lp_c.to_vector(), lg = cpu(lp_g).to_vector(),
                           ec = ent_c.to_vector(), eg = cpu(ent_g).to_vector();
  for (int64_t t = 0; t < 3; ++t) {
    EXPECT_TRUE(std::isnan(lc[size_t(t)])) << "cpu row " << t;
    EXPECT_TRUE(std::isnan(lg[size_t(t)])) << "gpu row " << t;
    EXPECT_TRUE(std::isnan(eg[size_t(t)])) << "gpu entropy row " << t;
  }
  for (int64_t t = 3; t < T; ++t) {
    EXPECT_NEAR(lg[size_t(t)], lc[size_t(t)], 1e-5) << "row " << t;
    EXPECT_NEAR(eg[size_t(t)], ec[size_t(t)], 1e-5) << "row " << t;
  }
}

TEST(LogprobChunkCuda, FullyMaskedChunkAddsNothing) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 19, v0 = 7;
  const float tau = 1.3f;
  for (int64_t C : {64, 3000, 4101}) {
    SCOPED_TRACE(testing::Message() << "C " << C);
    // Targets in the plain chunk at [v0, v0 + C) or skipped, never in the masked one.
    std::vector<int32_t> tv(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) tv[size_t(t)] = t % 4 == 3 ? -1 : int32_t(v0 + (t * 53) % C);
    const Tensor targets = Tensor::from_vector(tv, {T}), tg_g = gpu(targets);
    const Tensor x = trend_logits(T, C, 50, 2.5f);
    const Tensor masked = Tensor::from_vector(std::vector<float>(size_t(T * C), -INFINITY), {T, C});
    // Plain then masked (at v0 + C): unchanged, bit for bit; the CPU agrees.
    Tensor st_g, st_c;
    ops::logprob_chunk_stats(gpu(x), tg_g, v0, tau, false, st_g);
    const std::vector<uint8_t> before = bytes_of(st_g);
    ops::logprob_chunk_stats(gpu(masked), tg_g, v0 + C, tau, true, st_g);
    EXPECT_TRUE(bytes_of(st_g) == before);
    ops::logprob_chunk_stats(x, targets, v0, tau, false, st_c);
    ops::logprob_chunk_stats(masked, targets, v0 + C, tau, true, st_c);
    EXPECT_LE(rel_err(cpu(st_g), st_c), kF32Tol);
    // Masked first (overwrite), then the plain chunk folded in: the same bits as the plain chunk
    // alone (an empty triple folds exactly: a = exp(0) = 1); the CPU agrees.
    Tensor st2_g, st2_c;
    ops::logprob_chunk_stats(gpu(masked), tg_g, v0 + C, tau, false, st2_g);
    const std::vector<float> m = cpu(st2_g).to_vector();
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(m[size_t(t * 4)], -INFINITY) << "row " << t;
      EXPECT_EQ(m[size_t(t * 4 + 1)], 0.0f) << "row " << t;
      EXPECT_EQ(m[size_t(t * 4 + 2)], 0.0f) << "row " << t;
    }
    ops::logprob_chunk_stats(gpu(x), tg_g, v0, tau, true, st2_g);
    ops::logprob_chunk_stats(masked, targets, v0 + C, tau, false, st2_c);
    ops::logprob_chunk_stats(x, targets, v0, tau, true, st2_c);
    EXPECT_LE(rel_err(cpu(st2_g), st2_c), kF32Tol);
    EXPECT_TRUE(bytes_of(st2_g) == before);
    // dlogits of the masked chunk: 0 everywhere (targets are elsewhere).
    Tensor lp, ent = Tensor::empty({T}, DType::f32, Device::cuda),
               lse = Tensor::empty({T}, DType::f32, Device::cuda), d;
    ops::logprob_chunk_finish(st_g, tg_g, lp, ent, lse);
    ops::logprob_chunk_backward(gpu(masked), tg_g, v0 + C, tau, lse, ent, gpu(randn({T}, 51)),
                                gpu(randn({T}, 52)), d);
    for (float v : cpu(d).to_vector()) ASSERT_EQ(v, 0.0f);
  }
}

TEST(LogprobChunkCuda, LinearTokenLogprobsMatchCpu) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 300, H = 64, V = 3001;
  const Tensor h = randn({T, H}, 5), w = randn({V, H}, 6, 0.3f);
  const Tensor targets = make_targets(T, V), dlogp = randn({T}, 7), dent = randn({T}, 8, 0.3f);
  for (int64_t chunk : {int64_t(0), int64_t(128), int64_t(1000), int64_t(V)}) {
    SCOPED_TRACE(testing::Message() << "chunk " << chunk);
    Tensor lp_c, ent_c = Tensor::empty({T}, DType::f32), lse_c, dh_c, dw_c = Tensor::zeros({V, H});
    ops::linear_token_logprobs(h, w, targets, 0.8f, chunk, lp_c, ent_c, lse_c);
    ops::linear_token_logprobs_backward(h, w, targets, 0.8f, chunk, lse_c, ent_c, dlogp, dent, dh_c,
                                        dw_c);
    Tensor lp_g, ent_g = Tensor::empty({T}, DType::f32, Device::cuda), lse_g, dh_g,
                 dw_g = Tensor::zeros({V, H}, DType::f32, Device::cuda);
    const Tensor hg = gpu(h), wg = gpu(w), tg = gpu(targets);
    ops::linear_token_logprobs(hg, wg, tg, 0.8f, chunk, lp_g, ent_g, lse_g);
    ops::linear_token_logprobs_backward(hg, wg, tg, 0.8f, chunk, lse_g, ent_g, gpu(dlogp),
                                        gpu(dent), dh_g, dw_g);
    EXPECT_LE(rel_err(cpu(lp_g), lp_c), kF32Tol);
    EXPECT_LE(rel_err(cpu(ent_g), ent_c), kF32Tol);
    EXPECT_LE(rel_err(cpu(dh_g), dh_c), kF32Tol);
    EXPECT_LE(rel_err(cpu(dw_g), dw_c), kF32Tol);
  }
  // T = 0 on the device.
  Tensor lp, ent, lse, dh;
  const Tensor h0 = Tensor::empty({0, H}, DType::f32, Device::cuda);
  const Tensor t0 = gpu(Tensor::from_vector(std::vector<int32_t>{}, {0}));
  ops::linear_token_logprobs(h0, gpu(w), t0, 1.0f, 0, lp, ent, lse);
  EXPECT_EQ(lp.numel(), 0);
}

// ---- the bf16 autocast head (cuda/logprob_head.h)

struct HeadResult {
  Tensor logp, entropy, lse, dh, dw;
};

// The composition linear_token_logprobs{,_backward} ran before the fused autocast head, from public
// ops, one vocabulary chunk at a time: under Bf16Autocast every ops::linear / linear_backward
// rounds its operands to bf16 (h per chunk and GEMM, dz after the f32 chunk backward). `dw` is
// accumulated into when defined (dw0 its starting value), skipped when undefined.
HeadResult composed_head(const Tensor& h, const Tensor& w, const Tensor& tg, float tau,
                         int64_t chunk, const Tensor& dlogp, const Tensor& dentropy,
                         const Tensor& dw0) {
  const int64_t T = h.size(0), H = h.size(1), V = w.size(0);
  const int64_t C = chunk > 0 ? std::min(chunk, V) : ops::default_logprob_chunk(V);
  const Device dev = h.device();
  HeadResult r;
  Tensor stats, none;
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    Tensor z;
    ops::linear(h, w.narrow(v0, c), none, z);
    ops::logprob_chunk_stats(z, tg, v0, tau, v0 > 0, stats);
  }
  r.entropy = Tensor::empty({T}, DType::f32, dev);
  r.lse = Tensor::empty({T}, DType::f32, dev);
  ops::logprob_chunk_finish(stats, tg, r.logp, r.entropy, r.lse);
  r.dh = Tensor::empty({T, H}, DType::f32, dev);
  if (dw0.defined()) r.dw = dw0.clone();
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    const Tensor wc = w.narrow(v0, c);
    Tensor z;
    ops::linear(h, wc, none, z);
    ops::logprob_chunk_backward(z, tg, v0, tau, r.lse, r.entropy, dlogp, dentropy, z);
    Tensor dwc = r.dw.defined() ? r.dw.narrow(v0, c) : Tensor();
    ops::linear_backward(z, h, wc, r.dh, dwc, none, /*accumulate_dx=*/v0 > 0);
  }
  return r;
}

// The op under test: linear_token_logprobs + its backward (dw as composed_head).
HeadResult fused_head(const Tensor& h, const Tensor& w, const Tensor& tg, float tau, int64_t chunk,
                      const Tensor& dlogp, const Tensor& dentropy, const Tensor& dw0) {
  const int64_t T = h.size(0);
  HeadResult r;
  r.entropy = Tensor::empty({T}, DType::f32, h.device());
  ops::linear_token_logprobs(h, w, tg, tau, chunk, r.logp, r.entropy, r.lse);
  if (dw0.defined()) r.dw = dw0.clone();
  ops::linear_token_logprobs_backward(h, w, tg, tau, chunk, r.lse, r.entropy, dlogp, dentropy, r.dh,
                                      r.dw);
  return r;
}

// max |a - b| over all elements (host copies); infinite on a shape mismatch or a NaN.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<float> x = cpu(a).to_vector(), y = cpu(b).to_vector();
  if (x.size() != y.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = std::fabs(double(x[i]) - double(y[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

struct HeadCase {
  int64_t T, H, V, chunk;
  float tau;
  bool dentropy, dw, cache;
};

// Sizes: T = 1 / 7 (the bf16 GEMV for the logits when H % 8 == 0, the GEMM when H = 60) and 129;
// V = 3001 with chunk 1000 (a 1-column last chunk), V = 200 < chunk 256, V = 500 with the default
// chunk (128: a 116-column last chunk); temperature 0.7 / 1; dentropy, dw and a Bf16WeightCache on
// and off. H = 72 with chunk 1000 puts the cached weight rows at offsets that are not 256-byte
// aligned (the head then rounds the rows into scratch); H = 64 with chunk 128 uses the cached rows.
const HeadCase kHeadCases[] = {
    {1, 64, 3001, 1000, 0.7f, true, true, false},  {7, 64, 3001, 1000, 1.0f, false, true, false},
    {7, 60, 3001, 1000, 0.7f, true, true, false},  {129, 64, 3001, 1000, 0.7f, true, true, false},
    {129, 64, 200, 256, 1.0f, true, false, false}, {129, 96, 500, 0, 0.7f, false, true, false},
    {129, 72, 3001, 1000, 0.7f, true, true, true}, {129, 64, 3001, 128, 1.0f, true, true, true},
    {7, 64, 3001, 128, 0.7f, true, true, true},
};

std::string case_name(const HeadCase& c) {
  return testing::PrintToString(c.T) + "x" + testing::PrintToString(c.H) + " V " +
         testing::PrintToString(c.V) + " chunk " + testing::PrintToString(c.chunk) + " tau " +
         testing::PrintToString(c.tau) + (c.dentropy ? " dentropy" : "") + (c.dw ? " dw" : "") +
         (c.cache ? " cache" : "");
}

// Bitwise: the fused head makes the same bf16 operands (round to nearest even of the same f32
// values: h, the weight rows, and dz — the chunk kernel evaluates the f32 dz expression of the f32
// kernel, then rounds) and hands them to the same cuBLASLt calls (one algorithm per problem shape
// and thread, gemm.cc) or the same bf16 GEMV, so every output equals the composition's exactly.
TEST(LogprobChunkCuda, AutocastHeadEqualsComposedAutocastOps) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const HeadCase& k : kHeadCases) {
    SCOPED_TRACE(case_name(k));
    const Tensor h = gpu(randn({k.T, k.H}, 21)), w = gpu(randn({k.V, k.H}, 22, 0.3f));
    const Tensor tg = gpu(make_targets(k.T, k.V)), dlogp = gpu(randn({k.T}, 23));
    const Tensor dent = k.dentropy ? gpu(randn({k.T}, 24, 0.3f)) : Tensor();
    const Tensor dw0 = k.dw ? gpu(randn({k.V, k.H}, 25, 0.01f)) : Tensor();
    ops::Bf16Autocast autocast;
    ops::Bf16WeightCache cache;
    ops::UseBf16WeightCache use(k.cache ? &cache : nullptr);
    const HeadResult want = composed_head(h, w, tg, k.tau, k.chunk, dlogp, dent, dw0);
    const HeadResult got = fused_head(h, w, tg, k.tau, k.chunk, dlogp, dent, dw0);
    EXPECT_EQ(max_abs_diff(got.logp, want.logp), 0.0);
    EXPECT_EQ(max_abs_diff(got.entropy, want.entropy), 0.0);
    EXPECT_EQ(max_abs_diff(got.lse, want.lse), 0.0);
    EXPECT_EQ(max_abs_diff(got.dh, want.dh), 0.0);
    if (k.dw) {
      EXPECT_EQ(max_abs_diff(got.dw, want.dw), 0.0);
      EXPECT_GT(max_abs_diff(got.dw, dw0), 0.0);  // the gradient was added
    }
    EXPECT_FALSE(got.dw.defined() != k.dw);
  }
}

// Against the CPU f32 reference run on the bf16-rounded h and w (what the GEMMs multiply): the
// forward differs only in f32 summation order (<= 1e-5 relative, the autocast linear bound). The
// backward also rounds dz to bf16 (relative change <= 2^-8 per element), so dh and dw stay within
// u = 2^-8 relative of the reference. dw accumulates onto its starting value; an undefined dw is
// skipped and leaves dh unchanged; the unrounded f32 reference is within the bf16 bound 1e-2.
TEST(LogprobChunkCuda, AutocastHeadMatchesCpuOnRoundedOperands) {
  GYRE_SKIP_WITHOUT_GPU();
  constexpr double kU = 1.0 / 256;  // bf16 unit roundoff 2^-8
  for (const HeadCase& k : kHeadCases) {
    SCOPED_TRACE(case_name(k));
    const Tensor h = randn({k.T, k.H}, 31), w = randn({k.V, k.H}, 32, 0.3f);
    const Tensor tg = make_targets(k.T, k.V), dlogp = randn({k.T}, 33);
    const Tensor dent = k.dentropy ? randn({k.T}, 34, 0.3f) : Tensor();
    const Tensor dw0 = randn({k.V, k.H}, 35, 0.01f);
    const HeadResult ref =
        fused_head(round_bf16(h), round_bf16(w), tg, k.tau, k.chunk, dlogp, dent, dw0);
    const HeadResult ref32 = fused_head(h, w, tg, k.tau, k.chunk, dlogp, dent, dw0);
    HeadResult got, got_nodw;
    {
      ops::Bf16Autocast autocast;
      ops::Bf16WeightCache cache;
      ops::UseBf16WeightCache use(k.cache ? &cache : nullptr);
      got = fused_head(gpu(h), gpu(w), gpu(tg), k.tau, k.chunk, gpu(dlogp),
                       k.dentropy ? gpu(dent) : Tensor(), gpu(dw0));
      got_nodw = fused_head(gpu(h), gpu(w), gpu(tg), k.tau, k.chunk, gpu(dlogp),
                            k.dentropy ? gpu(dent) : Tensor(), Tensor());
    }
    EXPECT_LE(rel_err(cpu(got.logp), ref.logp), 1e-5);
    EXPECT_LE(rel_err(cpu(got.entropy), ref.entropy), 1e-5);
    EXPECT_LE(rel_err(cpu(got.lse), ref.lse), 1e-5);
    EXPECT_LE(rel_err(cpu(got.dh), ref.dh), kU);
    // Compare the accumulated part: dw - dw0 (the f32 add of dw0 is exact enough not to matter).
    Tensor gdw = cpu(got.dw).clone(), rdw = ref.dw.clone(), neg = dw0.clone();
    ops::scale_(neg, -1.0f);
    ops::add_(gdw, neg);
    ops::add_(rdw, neg);
    EXPECT_LE(rel_err(gdw, rdw), kU);
    EXPECT_LE(rel_err(cpu(got.logp), ref32.logp), 1e-2);
    EXPECT_LE(rel_err(cpu(got.dh), ref32.dh), 1e-2);
    // Skipped (negative) targets: logp 0.
    const std::vector<float> lp = cpu(got.logp).to_vector();
    for (size_t i = 0; i < lp.size(); ++i) {
      if (tg.i32()[i] < 0) {
        EXPECT_EQ(lp[i], 0.0f) << "position " << i;
      }
    }
    // dw undefined: no dw GEMM, the same dh.
    EXPECT_FALSE(got_nodw.dw.defined());
    EXPECT_EQ(max_abs_diff(got_nodw.dh, got.dh), 0.0);
  }
}

// Issue 7's memory goal on the device: the fused forward + backward adds at most 1/8 of one f32
// [T, V] tensor (T·V·4/8 bytes) on top of h, w, dw; the unfused path needs >= [T, V] logits +
// dlogits. Measured with the device allocator's peak (bytes of live tensors), f32 and bf16.
TEST(LogprobChunkCuda, PeakExtraMemoryIsAtMostAnEighthOfTheLogits) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t T = 2048, H = 128, V = 32768;
  const Tensor h = gpu(randn({T, H}, 9)), w = gpu(randn({V, H}, 10, 0.1f));
  const Tensor targets = gpu(make_targets(T, V)), dlogp = gpu(randn({T}, 11)),
               dent = gpu(randn({T}, 12, 0.1f));
  Tensor dw = Tensor::zeros({V, H}, DType::f32, Device::cuda);
  Allocator& a = cuda::device_allocator();
  const double anchor = double(T) * double(V) * 4.0 / 8.0;
  for (bool bf16 : {false, true}) {
    ops::Bf16Autocast autocast(bf16);
    auto extra = [&](bool fused) {
      const size_t before = a.bytes_in_use();
      a.reset_peak();
      {
        Tensor none, lp, ent = Tensor::empty({T}, DType::f32, Device::cuda), dh;
        if (fused) {
          Tensor lse;
          ops::linear_token_logprobs(h, w, targets, 1.0f, 0, lp, ent, lse);
          ops::linear_token_logprobs_backward(h, w, targets, 1.0f, 0, lse, ent, dlogp, dent, dh,
                                              dw);
        } else {
          Tensor logits, dlogits;
          ops::linear(h, w, none, logits);
          ops::token_logprobs(logits, targets, 1.0f, lp, ent);
          ops::token_logprobs_backward(logits, targets, 1.0f, dlogp, dent, dlogits);
          logits = Tensor();
          ops::linear_backward(dlogits, h, w, dh, dw, none);
        }
        (void)cpu(lp);
      }
      return double(a.peak_bytes() - before);
    };
    const double fused = extra(true), unfused = extra(false);
    std::printf("%s: peak extra fused %.1f MiB, unfused %.1f MiB, anchor T*V*4/8 = %.1f MiB\n",
                bf16 ? "bf16" : "f32", fused / 1048576.0, unfused / 1048576.0, anchor / 1048576.0);
    EXPECT_LE(fused, anchor);
    EXPECT_GE(unfused, 2 * double(T) * double(V) * 4.0);
  }
}

}  // namespace
}  // namespace gyre
