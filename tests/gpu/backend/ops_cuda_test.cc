// Every gyre::ops op on CUDA tensors against the CPU backend on the same random inputs (odd sizes,
// empty sequences, negative targets): f32 paths within 1e-5 relative (‖gpu − cpu‖ / ‖cpu‖); SwiGLU
// over bf16 gate/up against the CPU f32 op on the rounded values, within the same bound.
// Skips cleanly where no GPU is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gpu_test_util.h"
#include "gyre/backend/cuda/allocator.h"
#include "gyre/backend/cuda/kernels.h"
#include "gyre/backend/ops.h"
#include "gyre/backend/paged_ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using gputest::cpu;
using gputest::gpu;
using gputest::kF32Tol;
using gputest::rand_ids;
using gputest::randn;
using gputest::rel_err;
using gputest::round_bf16;

TEST(CudaDevice, CopiesZeroCloneAndPeak) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor a = randn({3, 5, 7}, 1);
  Tensor d = gpu(a);
  EXPECT_EQ(d.device(), Device::cuda);
  EXPECT_EQ(rel_err(cpu(d.clone()), a), 0.0);
  Tensor z = Tensor::zeros({1000}, DType::f32, Device::cuda);
  for (float x : z.to_vector()) ASSERT_EQ(x, 0.0f);
  Tensor h = Tensor::empty(a.shape(), DType::f32);
  h.copy_from(d);
  EXPECT_EQ(rel_err(h, a), 0.0);
  Allocator& al = cuda::device_allocator();
  al.reset_peak();
  const size_t before = al.bytes_in_use();
  { Tensor big = Tensor::empty({1 << 20}, DType::f32, Device::cuda); }
  EXPECT_GE(al.peak_bytes(), before + (4u << 20));
  EXPECT_EQ(al.bytes_in_use(), before);
  Tensor e = Tensor::empty({0}, DType::f32, Device::cuda);  // empty tensors are fine
  EXPECT_EQ(cpu(e).numel(), 0);
}

TEST(CudaDevice, MixedDevicesAndF64AreRejected) {
  GYRE_SKIP_WITHOUT_GPU();
  Tensor a = randn({4, 4}, 2), b = gpu(randn({4, 4}, 3)), out;
  try {
    ops::add(a, b, out);
    FAIL() << "mixed devices accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one device"), std::string::npos) << e.what();
  }
  Tensor d64 = Tensor::zeros({4}, DType::f64, Device::cuda);
  EXPECT_THROW(ops::scale_(d64, 2.0f), Error);
}

TEST(CudaOps, GemmAllTransposes) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t M = 37, N = 29, K = 53;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor A = randn(ta ? Shape{K, M} : Shape{M, K}, 10 + ta);
      Tensor B = randn(tb ? Shape{N, K} : Shape{K, N}, 20 + tb);
      Tensor C = randn({M, N}, 30);
      Tensor dA = gpu(A), dB = gpu(B), dC = gpu(C);
      ops::gemm(Device::cpu, ta, tb, M, N, K, 0.5f, A.f32(), ta ? M : K, B.f32(), tb ? K : N, 0.25f,
                C.f32(), N);
      ops::gemm(Device::cuda, ta, tb, M, N, K, 0.5f, dA.f32(), ta ? M : K, dB.f32(), tb ? K : N,
                0.25f, dC.f32(), N);
      EXPECT_LE(rel_err(cpu(dC), C), kF32Tol) << "ta=" << ta << " tb=" << tb;
    }
}

TEST(CudaOps, LinearForwardBackward) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t M : {0, 1, 45}) {
    const int64_t N = 31, K = 67;
    Tensor x = randn({M, K}, 1), w = randn({N, K}, 2), b = randn({N}, 3), dy = randn({M, N}, 4);
    Tensor y, gy;
    ops::linear(x, w, b, y);
    ops::linear(gpu(x), gpu(w), gpu(b), gy);
    EXPECT_EQ(gy.device(), Device::cuda);
    EXPECT_LE(rel_err(cpu(gy), y), kF32Tol);
    Tensor dx = randn({M, K}, 5), dw = randn({N, K}, 6), db = randn({N}, 7);
    Tensor gdx = gpu(dx), gdw = gpu(dw), gdb = gpu(db);
    ops::linear_backward(dy, x, w, dx, dw, db, /*accumulate_dx=*/true);
    ops::linear_backward(gpu(dy), gpu(x), gpu(w), gdx, gdw, gdb, true);
    EXPECT_LE(rel_err(cpu(gdx), dx), kF32Tol) << M;
    EXPECT_LE(rel_err(cpu(gdw), dw), kF32Tol) << M;
    EXPECT_LE(rel_err(cpu(gdb), db), kF32Tol) << M;
  }
}

// cuda::column_sums_add (the bias gradients' deterministic column sums; its finishing stage also
// finishes rms_norm_backward_add's dw) is bit for bit the blocking documented in column_sums.h,
// replayed on the host in f64: chunk partials of 128 rows in row order, the chunks added in order
// from 0.0, then to out in f64. Row counts around one chunk and past one shared-memory batch of
// the finishing kernel (64 chunks: 9000 rows are 71, 20000 are 157) and past the 65535 chunk
// rows one grid launches (the partial kernel strides), widths around the finishing kernel's
// 32-column blocks, and R = 0 (out unchanged, as out + 0.0).
TEST(CudaOps, ColumnSumsAddIsTheDocumentedF64Blocking) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t R : {0, 1, 127, 129, 9000, 20000, 65536 * 128 + 5}) {
    for (int64_t C : {1, 33, 896}) {
      if (R * C > 20'000'000) continue;  // the 8.4M-row case (65537 chunks: past one grid) at C = 1
      const std::vector<float> a = randn({R, C}, 40 + R + C, 3.0f).to_vector(),
                               out0 = randn({C}, 41 + C).to_vector();
      std::vector<float> want(static_cast<size_t>(C));
      for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t r0 = 0; r0 < std::max<int64_t>(R, 1); r0 += 128) {
          double part = 0;
          for (int64_t r = r0; r < std::min(R, r0 + 128); ++r) part += double(a[size_t(r * C + c)]);
          s += part;
        }
        want[size_t(c)] = float(double(out0[size_t(c)]) + s);
      }
      Tensor ga = gpu(Tensor::from_vector(a, {R, C}));
      Tensor gout = gpu(Tensor::from_vector(out0, {C}));
      cuda::column_sums_add(ga.f32(), R, C, gout.f32());
      const std::vector<float> got = cpu(gout).to_vector();
      ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0)
          << "R " << R << " C " << C;
    }
  }
}

TEST(CudaOps, ElementwiseAndSumSquares) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t n = 100003;
  Tensor a = randn({n}, 1), b = randn({n}, 2), out, gout;
  ops::add(a, b, out);
  ops::add(gpu(a), gpu(b), gout);
  EXPECT_LE(rel_err(cpu(gout), out), kF32Tol);
  Tensor ga = gpu(a);
  ops::scale_(a, 0.3f);
  ops::scale_(ga, 0.3f);
  EXPECT_LE(rel_err(cpu(ga), a), kF32Tol);
  EXPECT_NEAR(ops::sum_squares(ga), ops::sum_squares(a), 1e-9 * ops::sum_squares(a));
  Tensor dst = Tensor::empty({n}, DType::f32, Device::cuda);
  ops::copy(ga, dst);
  EXPECT_EQ(rel_err(cpu(dst), a), 0.0);
  Tensor bf = Tensor::empty({n}, DType::bf16, Device::cuda),
         back = Tensor::empty({n}, DType::f32, Device::cuda);
  ops::copy(ga, bf);
  ops::copy(bf, back);
  EXPECT_LE(rel_err(cpu(back), a.to(DType::bf16).to(DType::f32)), 0.0);
  Tensor gate = randn({33, 65}, 3), up = randn({33, 65}, 4), dout = randn({33, 65}, 5);
  Tensor s, gs, dg, du, gdg, gdu;
  ops::silu_mul(gate, up, s);
  ops::silu_mul(gpu(gate), gpu(up), gs);
  EXPECT_LE(rel_err(cpu(gs), s), kF32Tol);
  ops::silu_mul_backward(dout, gate, up, dg, du);
  ops::silu_mul_backward(gpu(dout), gpu(gate), gpu(up), gdg, gdu);
  EXPECT_LE(rel_err(cpu(gdg), dg), kF32Tol);
  EXPECT_LE(rel_err(cpu(gdu), du), kF32Tol);
  // bf16 gate/up (the autocast MLP's pre-activations): f32 math and outputs, the CPU f32 op on the
  // rounded values within f32 tolerance.
  Tensor gb = gpu(gate.to(DType::bf16)), ub = gpu(up.to(DType::bf16)), gs16, gdg16, gdu16;
  Tensor sr, dgr, dur;
  ops::silu_mul(round_bf16(gate), round_bf16(up), sr);
  ops::silu_mul(gb, ub, gs16);
  EXPECT_EQ(gs16.dtype(), DType::f32);
  EXPECT_LE(rel_err(cpu(gs16), sr), kF32Tol);
  ops::silu_mul_backward(dout, round_bf16(gate), round_bf16(up), dgr, dur);
  ops::silu_mul_backward(gpu(dout), gb, ub, gdg16, gdu16);
  EXPECT_LE(rel_err(cpu(gdg16), dgr), kF32Tol);
  EXPECT_LE(rel_err(cpu(gdu16), dur), kF32Tol);
  // Only both bf16, with f32 dout; a bf16 out (or bf16 gradients) only from bf16 gate/up:
  // anything else is a clear error.
  Tensor mixed;
  EXPECT_THROW(ops::silu_mul(gb, gpu(up), mixed), Error);
  Tensor out16 = Tensor::empty({33, 65}, DType::bf16, Device::cuda);
  EXPECT_THROW(ops::silu_mul(gpu(gate), gpu(up), out16), Error);
  Tensor dg16 = Tensor::empty({33, 65}, DType::bf16, Device::cuda), du16 = dg16.clone();
  EXPECT_THROW(ops::silu_mul_backward(gpu(dout), gpu(gate), gpu(up), dg16, du16), Error);
  Tensor d16 = gpu(dout.to(DType::bf16)), dg_bad, du_bad;
  EXPECT_THROW(ops::silu_mul_backward(d16, gb, ub, dg_bad, du_bad), Error);
}

// With the ids' host copy recorded (CausalLM's backward records the batch it validated), the CUDA
// embedding backward groups rows by those host values instead of copying the device ids back (a
// synchronisation): the same bits as without the record; and it is the host copy that is read —
// shown by recording other values, which a caller must never do.
TEST(CudaOps, EmbeddingBackwardReadsTheRecordedHostIds) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t V = 40, H = 67, n = 257;
  Tensor ids = rand_ids(n, int32_t(V), 7), other = rand_ids(n, int32_t(V), 8);
  Tensor dout = randn({n, H}, 9), table0 = randn({V, H}, 10);
  Tensor gids = gpu(ids), gdout = gpu(dout);
  Tensor plain = gpu(table0), recorded = gpu(table0), misled = gpu(table0),
         want_other = gpu(table0);
  ops::embedding_backward(gids, gdout, plain);
  ops::embedding_backward(gpu(other), gdout, want_other);
  {
    ops::KnownIndices known;
    known.add_host_values(gids, ids);
    ops::embedding_backward(gids, gdout, recorded);
  }
  {
    ops::KnownIndices known;
    known.add_host_values(gids, other);
    ops::embedding_backward(gids, gdout, misled);
  }
  EXPECT_EQ(cpu(recorded).to_vector(), cpu(plain).to_vector());
  EXPECT_EQ(cpu(misled).to_vector(), cpu(want_other).to_vector());
  EXPECT_NE(cpu(misled).to_vector(), cpu(plain).to_vector());
  // A host copy of another length is a caller bug, named at once.
  ops::KnownIndices known;
  EXPECT_THROW(known.add_host_values(gids, rand_ids(n - 1, int32_t(V), 7)), Error);
}

TEST(CudaOps, EmbeddingGatherScatterRowDot) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t V = 50, H = 97, n = 301;
  Tensor table = randn({V, H}, 1), ids = rand_ids(n, int32_t(V), 2), dout = randn({n, H}, 3);
  Tensor out, gout;
  ops::embedding(ids, table, out);
  ops::embedding(gpu(ids), gpu(table), gout);
  EXPECT_EQ(rel_err(cpu(gout), out), 0.0);
  Tensor dt = randn({V, H}, 4), gdt = gpu(dt);
  ops::embedding_backward(ids, dout, dt);
  ops::embedding_backward(gpu(ids), gpu(dout), gdt);
  EXPECT_LE(rel_err(cpu(gdt), dt), kF32Tol);
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{1, 2, int32_t(V)}, {3});
  Tensor bout;
  EXPECT_THROW(ops::embedding(gpu(bad), gpu(table), bout), Error);
  // MoE-style gather / weighted scatter-add / row dot
  Tensor g, gg;
  ops::gather_rows(table, ids, g);
  ops::gather_rows(gpu(table), gpu(ids), gg);
  EXPECT_EQ(rel_err(cpu(gg), g), 0.0);
  Tensor sc = randn({n}, 5), acc = randn({V, H}, 6), gacc = gpu(acc);
  ops::scatter_add_rows(dout, ids, sc, acc);
  ops::scatter_add_rows(gpu(dout), gpu(ids), gpu(sc), gacc);
  EXPECT_LE(rel_err(cpu(gacc), acc), kF32Tol);
  Tensor rd, grd;
  ops::row_dot(g, dout, rd);
  ops::row_dot(gpu(g), gpu(dout), grd);
  EXPECT_LE(rel_err(cpu(grd), rd), kF32Tol);
}

TEST(CudaOps, RmsNormAndRope) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t R = 300, H = 257;
  Tensor x = randn({R, H}, 1), w = randn({H}, 2), dy = randn({R, H}, 3);
  Tensor y, rs, gy, grs;
  ops::rms_norm(x, w, 1e-6f, y, rs);
  ops::rms_norm(gpu(x), gpu(w), 1e-6f, gy, grs);
  EXPECT_LE(rel_err(cpu(gy), y), kF32Tol);
  EXPECT_LE(rel_err(cpu(grs), rs), kF32Tol);
  Tensor dx, dw = randn({H}, 4), gdx, gdw = gpu(dw);
  ops::rms_norm_backward(dy, x, w, rs, dx, dw);
  ops::rms_norm_backward(gpu(dy), gpu(x), gpu(w), grs, gdx, gdw);
  EXPECT_LE(rel_err(cpu(gdx), dx), kF32Tol);
  EXPECT_LE(rel_err(cpu(gdw), dw), kF32Tol);
  const int64_t T = 19, Hh = 3, D = 10, P = 40;
  Tensor q = randn({T, Hh, D}, 5), cs = randn({P, D / 2}, 6), sn = randn({P, D / 2}, 7);
  Tensor pos = rand_ids(T, int32_t(P), 8), gq = gpu(q);
  for (bool inv : {false, true}) {
    ops::rope_(q, pos, cs, sn, inv);
    ops::rope_(gq, gpu(pos), gpu(cs), gpu(sn), inv);
    EXPECT_LE(rel_err(cpu(gq), q), kF32Tol) << inv;
  }
}

TEST(CudaOps, SoftmaxAndTokenLogprobs) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t R = 21, C = 5003;
  Tensor x = randn({R, C}, 1, 3.0f), o, go, lo, glo;
  ops::softmax_rows(x, o);
  ops::softmax_rows(gpu(x), go);
  EXPECT_LE(rel_err(cpu(go), o), kF32Tol);
  ops::log_softmax_rows(x, lo);
  ops::log_softmax_rows(gpu(x), glo);
  EXPECT_LE(rel_err(cpu(glo), lo), kF32Tol);
  std::vector<int32_t> tg(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) tg[size_t(i)] = i % 5 == 3 ? -1 : int32_t((i * 977) % C);
  Tensor targets = Tensor::from_vector(tg, {R});
  for (float temp : {1.0f, 0.7f}) {
    Tensor lp, ent, glp, gent = Tensor::empty({R}, DType::f32, Device::cuda);
    ent = Tensor::empty({R}, DType::f32);
    ops::token_logprobs(x, targets, temp, lp, ent);
    ops::token_logprobs(gpu(x), gpu(targets), temp, glp, gent);
    EXPECT_LE(rel_err(cpu(glp), lp), kF32Tol) << temp;
    EXPECT_LE(rel_err(cpu(gent), ent), kF32Tol) << temp;
    Tensor dlp = randn({R}, 2), dent = randn({R}, 3), dl, gdl;
    ops::token_logprobs_backward(x, targets, temp, dlp, dent, dl);
    ops::token_logprobs_backward(gpu(x), gpu(targets), temp, gpu(dlp), gpu(dent), gdl);
    EXPECT_LE(rel_err(cpu(gdl), dl), kF32Tol) << temp;
  }
  Tensor bad = Tensor::from_vector(std::vector<int32_t>(size_t(R), int32_t(C)), {R}), blp, bent;
  EXPECT_THROW(ops::token_logprobs(gpu(x), gpu(bad), 1.0f, blp, bent), Error);
}

TEST(CudaOps, TokenLogprobsAlignedRows) {  // V % 8 == 0: the 16-byte load path
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t R = 9, V = 4096;
  Tensor x = randn({R, V}, 3, 4.0f);
  Tensor targets = rand_ids(R, int32_t(V), 4);
  Tensor lp, ent = Tensor::empty({R}, DType::f32), glp;
  Tensor gent = Tensor::empty({R}, DType::f32, Device::cuda);
  ops::token_logprobs(x, targets, 1.3f, lp, ent);
  ops::token_logprobs(gpu(x), gpu(targets), 1.3f, glp, gent);
  EXPECT_LE(rel_err(cpu(glp), lp), kF32Tol);
  EXPECT_LE(rel_err(cpu(gent), ent), kF32Tol);
  Tensor dlp = randn({R}, 5), dl, gdl;
  ops::token_logprobs_backward(x, targets, 1.3f, dlp, Tensor(), dl);
  ops::token_logprobs_backward(gpu(x), gpu(targets), 1.3f, gpu(dlp), Tensor(), gdl);
  EXPECT_LE(rel_err(cpu(gdl), dl), kF32Tol);
}

// Few rows (decode): the forward splits each row over several blocks and merges the partial
// statistics; a part whose logits are all -inf must add nothing.
TEST(CudaOps, TokenLogprobsSplitRows) {
  GYRE_SKIP_WITHOUT_GPU();
  for (const int64_t R : {int64_t(1), int64_t(3)})
    for (const int64_t V : {int64_t(151936), int64_t(50001)}) {
      Tensor x = randn({R, V}, 11 + R, 4.0f);
      for (int64_t j = 4096; j < 30000; ++j) x.f32()[j] = -INFINITY;  // row 0: masked parts
      std::vector<int32_t> tg(static_cast<size_t>(R));
      for (int64_t i = 0; i < R; ++i) tg[size_t(i)] = i == 2 ? -1 : int32_t((i * 7919 + 40000) % V);
      Tensor targets = Tensor::from_vector(tg, {R});
      for (float temp : {1.0f, 0.6f}) {
        Tensor lp, ent = Tensor::empty({R}, DType::f32), glp;
        Tensor gent = Tensor::empty({R}, DType::f32, Device::cuda);
        ops::token_logprobs(x, targets, temp, lp, ent);
        ops::token_logprobs(gpu(x), gpu(targets), temp, glp, gent);
        EXPECT_LE(rel_err(cpu(glp), lp), kF32Tol) << R << " " << V << " " << temp;
        EXPECT_LE(rel_err(cpu(gent), ent), kF32Tol) << R << " " << V << " " << temp;
        Tensor glp2;  // deterministic: the same bits again
        Tensor no_entropy;
        ops::token_logprobs(gpu(x), gpu(targets), temp, glp2, no_entropy);
        Tensor a = cpu(glp), b = cpu(glp2);
        for (int64_t i = 0; i < R; ++i) EXPECT_EQ(a.f32()[i], b.f32()[i]);
      }
    }
}

TEST(CudaOps, MoeRoute) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t n = 77, E = 12, k = 3;
  Tensor logits = randn({n, E}, 1);
  for (bool norm : {false, true}) {
    Tensor p, idx, w, gp, gidx, gw;
    ops::moe_route(logits, k, norm, p, idx, w);
    ops::moe_route(gpu(logits), k, norm, gp, gidx, gw);
    EXPECT_LE(rel_err(cpu(gp), p), kF32Tol);
    std::vector<int32_t> a(static_cast<size_t>(n * k)), b(size_t(n * k));
    Tensor hidx = cpu(gidx);
    for (int64_t i = 0; i < n * k; ++i) {
      a[size_t(i)] = idx.i32()[i];
      b[size_t(i)] = hidx.i32()[i];
    }
    EXPECT_EQ(a, b);
    EXPECT_LE(rel_err(cpu(gw), w), kF32Tol);
    Tensor dw = randn({n, k}, 2), dl, gdl;
    ops::moe_route_backward(dw, p, idx, norm, dl);
    ops::moe_route_backward(gpu(dw), gp, gidx, norm, gdl);
    EXPECT_LE(rel_err(cpu(gdl), dl), kF32Tol);
  }
}

TEST(CudaOps, AdamW) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t n = 4099;
  Tensor p = randn({n}, 1), g = randn({n}, 2), m = randn({n}, 3, 0.1f), v = randn({n}, 4, 0.1f);
  for (int64_t i = 0; i < n; ++i) v.f32()[i] = std::abs(v.f32()[i]);
  Tensor gp = gpu(p), gg = gpu(g), gm = gpu(m), gv = gpu(v);
  ops::AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  hp.step = 3;
  ops::adamw_step(p, g, m, v, hp);
  ops::adamw_step(gp, gg, gm, gv, hp);
  EXPECT_LE(rel_err(cpu(gp), p), kF32Tol);
  EXPECT_LE(rel_err(cpu(gm), m), kF32Tol);
  EXPECT_LE(rel_err(cpu(gv), v), kF32Tol);
}

TEST(CudaOps, AttentionVarlenGqaWithEmptySequences) {
  GYRE_SKIP_WITHOUT_GPU();
  for (int64_t D : {72, 128}) {
    const std::vector<int32_t> cu_v = {0, 1, 1, 38, 108, 108};
    const int64_t T = cu_v.back(), Hq = 4, Hkv = 2;
    Tensor cu = Tensor::from_vector(cu_v, {int64_t(cu_v.size())});
    Tensor q = randn({T, Hq, D}, 1), k = randn({T, Hkv, D}, 2), v = randn({T, Hkv, D}, 3);
    const float scale = 1.0f / std::sqrt(float(D));
    Tensor o, lse, go, glse;
    ops::attention_varlen(q, k, v, cu, scale, o, lse);
    ops::attention_varlen(gpu(q), gpu(k), gpu(v), gpu(cu), scale, go, glse);
    EXPECT_LE(rel_err(cpu(go), o), kF32Tol) << D;
    EXPECT_LE(rel_err(cpu(glse), lse), kF32Tol) << D;
    Tensor dout = randn({T, Hq, D}, 4), dq, dk, dv, gdq, gdk, gdv;
    ops::attention_varlen_backward(dout, q, k, v, o, lse, cu, scale, dq, dk, dv);
    ops::attention_varlen_backward(gpu(dout), gpu(q), gpu(k), gpu(v), go, glse, gpu(cu), scale, gdq,
                                   gdk, gdv);
    EXPECT_LE(rel_err(cpu(gdq), dq), kF32Tol) << D;
    EXPECT_LE(rel_err(cpu(gdk), dk), kF32Tol) << D;
    EXPECT_LE(rel_err(cpu(gdv), dv), kF32Tol) << D;
  }
}

TEST(CudaOps, PagedKvWriteAndAttention) {
  GYRE_SKIP_WITHOUT_GPU();
  const int64_t P = 12, page = 4, Hkv = 2, Hq = 6, D = 32;
  // Two sequences: a decode step over 9 cached+new tokens and a 3-token prefill chunk over 6.
  const std::vector<int32_t> lens = {9, 6}, cu_q = {0, 1, 4}, indptr = {0, 3, 5};
  const std::vector<int32_t> pages = {7, 2, 10, 0, 5};
  Tensor kc = randn({P, page, Hkv, D}, 1), vc = randn({P, page, Hkv, D}, 2);
  Tensor gkc = gpu(kc), gvc = gpu(vc);
  // Write 4 new rows (one skipped) into the cache.
  Tensor k = randn({4, Hkv, D}, 3), v = randn({4, Hkv, D}, 4);
  Tensor slots =
      Tensor::from_vector(std::vector<int32_t>{2 * 4 + 0, -1, 0 * 4 + 1, 5 * 4 + 1}, {4});
  ops::paged_kv_write(k, v, slots, kc, vc);
  ops::paged_kv_write(gpu(k), gpu(v), gpu(slots), gkc, gvc);
  EXPECT_EQ(rel_err(cpu(gkc), kc), 0.0);
  EXPECT_EQ(rel_err(cpu(gvc), vc), 0.0);
  Tensor q = randn({4, Hq, D}, 5), o = Tensor::empty({4, Hq, D}, DType::f32);
  Tensor go = Tensor::empty({4, Hq, D}, DType::f32, Device::cuda);
  Tensor tcu = Tensor::from_vector(cu_q, {3}), tl = Tensor::from_vector(lens, {2});
  Tensor tip = Tensor::from_vector(indptr, {3}), tp = Tensor::from_vector(pages, {5});
  ops::paged_attention(q, kc, vc, tcu, tl, tip, tp, 0.2f, o);
  ops::paged_attention(gpu(q), gkc, gvc, gpu(tcu), gpu(tl), gpu(tip), gpu(tp), 0.2f, go);
  EXPECT_LE(rel_err(cpu(go), o), kF32Tol);
  Tensor bad = Tensor::from_vector(std::vector<int32_t>{7, 2, 10, 0, int32_t(P)}, {5});
  EXPECT_THROW(
      ops::paged_attention(gpu(q), gkc, gvc, gpu(tcu), gpu(tl), gpu(tip), gpu(bad), 0.2f, go),
      Error);
}

}  // namespace
}  // namespace gyre
