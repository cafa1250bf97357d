// Bad input raises gyre::Error with a message naming what/where (tests named *Parse* also run under
// ASan+UBSan in CI); results are bitwise identical for 1 and several threads; the gradient checker
// itself catches a wrong gradient.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cstring>

#include "grad_check.h"
#include "gyre/backend/cpu/parallel.h"
#include "gyre/backend/ops.h"

using namespace gyre;
using gyre::test::random_tensor;

namespace {
// Runs fn and returns the gyre::Error it throws (fails the test when it does not).
template <typename Fn>
Error thrown(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no gyre::Error thrown";
  return Error(ErrorKind::internal, "");
}

void expect_contains(const std::string& msg, std::initializer_list<const char*> parts) {
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
}
}  // namespace

TEST(OpsParse, EmbeddingIdOutOfRangeNamesIdPositionAndVocab) {
  Tensor table = Tensor::zeros({5, 3});
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 4, 7, 2}, {4});
  Tensor out;
  Error e = thrown([&] { ops::embedding(ids, table, out); });
  EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
  expect_contains(e.what(), {"embedding", "token id 7", "position 2", "[0, 5)", "vocabulary"});
  Tensor neg = Tensor::from_vector(std::vector<int32_t>{-1}, {1});
  expect_contains(thrown([&] { ops::embedding(neg, table, out); }).what(), {"-1", "position 0"});
  Tensor d = Tensor::zeros({4, 3}), dt = Tensor::zeros({5, 3});
  EXPECT_THROW(ops::embedding_backward(ids, d, dt), Error);
}

TEST(OpsParse, ShapeAndDtypeMismatchesThrow) {
  Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 5}), none, y;
  expect_contains(thrown([&] { ops::linear(x, w, none, y); }).what(), {"linear", "[2, 3]"});
  Tensor a = Tensor::zeros({3}), b = Tensor::zeros({4}), out;
  EXPECT_THROW(ops::add(a, b, out), Error);
  Tensor b64 = Tensor::zeros({3}, DType::f64);
  expect_contains(thrown([&] { ops::add(a, b64, out); }).what(), {"f64", "f32"});
  Tensor wrong_out = Tensor::zeros({5});
  EXPECT_THROW(ops::add(a, a, wrong_out), Error);
  Tensor rn_w = Tensor::zeros({4}), rn_y, rn_r;
  EXPECT_THROW(ops::rms_norm(x, rn_w, 1e-6f, rn_y, rn_r), Error);
  Tensor q = Tensor::zeros({4, 4, 8}), k = Tensor::zeros({4, 3, 8}), o, l;
  Tensor cu = Tensor::from_vector(std::vector<int32_t>{0, 4}, {2});
  expect_contains(thrown([&] { ops::attention_varlen(q, k, k, cu, 1.f, o, l); }).what(),
                  {"4 query heads", "3 kv heads"});
  Tensor cu_f = Tensor::zeros({2});  // index tensors must be i32
  Tensor k2 = Tensor::zeros({4, 2, 8});
  EXPECT_THROW(ops::attention_varlen(q, k2, k2, cu_f, 1.f, o, l), Error);
  Tensor g = Tensor::zeros({2, 3}), u = Tensor::zeros({3, 2}), s;
  EXPECT_THROW(ops::silu_mul(g, u, s), Error);
}

// bf16 activations are the CUDA autocast MLP's only (ops.h): a bf16 linear output or bf16
// SwiGLU inputs on the CPU — with or without an autocast scope, which the CPU ignores — are
// Error(invalid_argument) naming the op, the tensor and the fix, before anything is written.
TEST(OpsParse, Bf16MlpActivationsAreCudaAutocastOnly) {
  Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 3}), none;
  Tensor y16 = Tensor::zeros({2, 4}, DType::bf16);
  for (bool autocast : {false, true}) {
    ops::Bf16Autocast scope(autocast);
    Error e = thrown([&] { ops::linear(x, w, none, y16); });
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    expect_contains(e.what(), {"ops::linear", "'y' is bf16", "cpu", "f32 y"});
  }
  Tensor g16 = Tensor::zeros({2, 3}, DType::bf16), u16 = Tensor::zeros({2, 3}, DType::bf16);
  Tensor u32 = Tensor::zeros({2, 3}), out;
  Error e = thrown([&] { ops::silu_mul(g16, u16, out); });
  EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
  expect_contains(e.what(), {"silu_mul", "bf16", "cpu", "f32"});
  expect_contains(thrown([&] { ops::silu_mul(g16, u32, out); }).what(),
                  {"'gate' is bf16 but 'up' is f32", "both"});
  EXPECT_FALSE(out.defined());
  Tensor d = Tensor::zeros({2, 3}), dg, du;
  expect_contains(thrown([&] { ops::silu_mul_backward(d, g16, u16, dg, du); }).what(),
                  {"silu_mul_backward", "bf16", "cpu"});
  EXPECT_FALSE(dg.defined());
}

TEST(OpsParse, BadCuSeqlensPositionsTargetsAndTopk) {
  Tensor q = Tensor::zeros({5, 2, 4}), k = Tensor::zeros({5, 1, 4}), o, l;
  auto attn = [&](std::vector<int32_t> cu) {
    Tensor c = Tensor::from_vector(cu, {int64_t(cu.size())});
    return thrown([&] { ops::attention_varlen(q, k, k, c, 0.5f, o, l); });
  };
  expect_contains(attn({1, 5}).what(), {"cu_seqlens[0] is 1"});
  expect_contains(attn({0, 3, 2, 5}).what(), {"decreases at index 2"});
  Error e = attn({0, 2, 4});
  EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
  expect_contains(e.what(), {"ends at 4", "5 tokens"});

  Tensor x = Tensor::zeros({2, 1, 4}), cs = Tensor::zeros({3, 2}), sn = Tensor::zeros({3, 2});
  Tensor pos = Tensor::from_vector(std::vector<int32_t>{0, 3}, {2});
  expect_contains(thrown([&] { ops::rope_(x, pos, cs, sn); }).what(),
                  {"position 3 at position 1", "[0, 3)", "max_position_embeddings"});

  Tensor logits = Tensor::zeros({2, 6}), lp, ent;
  Tensor tg = Tensor::from_vector(std::vector<int32_t>{1, 6}, {2});
  expect_contains(thrown([&] { ops::token_logprobs(logits, tg, 1.0f, lp, ent); }).what(),
                  {"target id 6", "position 1", "[0, 6)"});
  Tensor ok = Tensor::from_vector(std::vector<int32_t>{1, -1}, {2});
  expect_contains(thrown([&] { ops::token_logprobs(logits, ok, 0.0f, lp, ent); }).what(),
                  {"temperature 0"});

  Tensor rl = Tensor::zeros({3, 4}), p, i, w;
  expect_contains(thrown([&] { ops::moe_route(rl, 5, true, p, i, w); }).what(),
                  {"top-k = 5", "4 experts"});
  Tensor src = Tensor::zeros({3, 2}), idx = Tensor::from_vector(std::vector<int32_t>{0, 3}, {2});
  Tensor gathered;
  expect_contains(thrown([&] { ops::gather_rows(src, idx, gathered); }).what(),
                  {"row index 3", "position 1"});
}

TEST(OpsParse, CudaTensorIsUnsupportedNotDereferenced) {
  std::vector<float> host(8, 0.0f);
  Tensor fake_cuda = Tensor::borrow(host.data(), {2, 4}, DType::f32, Device::cuda, nullptr);
  Tensor out;
  Error e = thrown([&] { ops::softmax_rows(fake_cuda, out); });
  EXPECT_EQ(e.kind(), ErrorKind::unsupported);
  expect_contains(e.what(), {"softmax_rows", "CUDA backend"});
  float c = 0;
  EXPECT_THROW(ops::gemm(Device::cuda, false, false, 1, 1, 1, 1.f, &c, 1, &c, 1, 0.f, &c, 1),
               Error);
}

namespace {
// Every row-/block-parallel op once; returns all outputs' bytes.
std::vector<std::vector<char>> run_all_ops() {
  std::vector<std::vector<char>> r;
  auto keep = [&](const Tensor& t) {
    const char* p = static_cast<const char*>(t.raw());
    r.emplace_back(p, p + t.nbytes());
  };
  const DType f32 = DType::f32;
  {  // attention, GQA, uneven sequences spanning several query blocks
    std::vector<int32_t> cu = {0, 200, 201, 300, 300, 333};
    const int64_t T = 333;
    Tensor cus = Tensor::from_vector(cu, {6});
    Tensor q = random_tensor({T, 4, 16}, 1, f32), k = random_tensor({T, 2, 16}, 2, f32);
    Tensor v = random_tensor({T, 2, 16}, 3, f32), dout = random_tensor({T, 4, 16}, 4, f32);
    Tensor out, lse, dq, dk, dv;
    ops::attention_varlen(q, k, v, cus, 0.25f, out, lse);
    ops::attention_varlen_backward(dout, q, k, v, out, lse, cus, 0.25f, dq, dk, dv);
    for (auto* t : {&out, &lse, &dq, &dk, &dv}) keep(*t);
  }
  {  // norms, softmax family, logprobs, router
    Tensor x = random_tensor({97, 130}, 5, f32), w = random_tensor({130}, 6, f32);
    Tensor y, rstd, dx, dw = Tensor::zeros({130});
    ops::rms_norm(x, w, 1e-6f, y, rstd);
    ops::rms_norm_backward(x, x, w, rstd, dx, dw);
    Tensor sm, lsm;
    ops::softmax_rows(x, sm);
    ops::log_softmax_rows(x, lsm);
    Tensor logits = random_tensor({37, 5000}, 7, f32, 3.0), lp, ent = Tensor::empty({37}, f32);
    std::vector<int32_t> tg(37);
    for (int i = 0; i < 37; ++i) tg[size_t(i)] = i % 5 == 0 ? -1 : i * 131;
    Tensor targets = Tensor::from_vector(tg, {37});
    ops::token_logprobs(logits, targets, 0.7f, lp, ent);
    Tensor dlog;
    ops::token_logprobs_backward(logits, targets, 0.7f, ent, lp, dlog);
    Tensor probs, idx, rw, drl;
    ops::moe_route(x.narrow(0, 50).reshape({-1, 13}), 3, true, probs, idx, rw);
    ops::moe_route_backward(rw, probs, idx, true, drl);
    for (auto* t : {&y, &rstd, &dx, &dw, &sm, &lsm, &lp, &ent, &dlog, &probs, &idx, &rw, &drl})
      keep(*t);
    Tensor sq = Tensor::from_vector(std::vector<float>{float(ops::sum_squares(logits))}, {1});
    keep(sq);
  }
  {  // scatters, elementwise, optimizer, rope, bias gradient
    std::vector<int32_t> ids(300);
    for (int i = 0; i < 300; ++i) ids[size_t(i)] = (i * 7) % 11;
    Tensor idt = Tensor::from_vector(ids, {300});
    Tensor d = random_tensor({300, 600}, 8, f32), table = Tensor::zeros({11, 600});
    ops::embedding_backward(idt, d, table);
    Tensor sc = random_tensor({300}, 9, f32), acc = Tensor::zeros({11, 600});
    ops::scatter_add_rows(d, idt, sc, acc);
    Tensor none, db = Tensor::zeros({600}), xin = random_tensor({300, 4}, 10, f32);
    Tensor wl = random_tensor({600, 4}, 11, f32);
    ops::linear_backward(d, xin, wl, none, none, db);
    Tensor dxin = Tensor::empty({300, 4}, f32), dwl = Tensor::zeros({600, 4}), yl;
    ops::linear_backward(d, xin, wl, dxin, dwl, none);
    ops::linear(xin, wl, db, yl);
    keep(dxin), keep(dwl), keep(yl);
    Tensor s, dg, du;
    ops::silu_mul(d, d, s);
    ops::silu_mul_backward(d, d, s, dg, du);
    Tensor p = random_tensor({70000}, 12, f32), g = random_tensor({70000}, 13, f32);
    Tensor m = Tensor::zeros({70000}), vv = Tensor::zeros({70000});
    ops::AdamWParams hp;
    hp.lr = 1e-3f, hp.weight_decay = 0.01f;
    ops::adamw_step(p, g, m, vv, hp);
    Tensor rx = random_tensor({50, 4, 64}, 14, f32), cs = random_tensor({64, 32}, 15, f32);
    std::vector<int32_t> ps(50);
    for (int i = 0; i < 50; ++i) ps[size_t(i)] = (i * 3) % 64;
    ops::rope_(rx, Tensor::from_vector(ps, {50}), cs, cs);
    for (auto* t : {&table, &acc, &db, &s, &dg, &du, &p, &m, &vv, &rx}) keep(*t);
  }
  return r;
}
}  // namespace

TEST(OpsThreads, MultiThreadedEqualsSingleThreadedBitwise) {
  ThreadPool one(1), four(4);
  std::vector<std::vector<char>> a, b;
  {
    cpu::ScopedThreadPool s(one);
    a = run_all_ops();
  }
  {
    cpu::ScopedThreadPool s(four);
    b = run_all_ops();
  }
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size()) << "output " << i;
    EXPECT_EQ(std::memcmp(a[i].data(), b[i].data(), a[i].size()), 0) << "output " << i;
  }
}

TEST(OpsGradCheck, DetectsAWrongGradient) {
  Tensor x = random_tensor({4}, 1), r = random_tensor({4}, 2);
  auto loss = [&] {
    Tensor y;
    ops::softmax_rows(x, y);
    return gyre::test::weighted_sum(y, r);
  };
  // softmax'(x)ᵀ r = p ∘ (r - <p, r>); drop the <p, r> term to make it wrong.
  Tensor p;
  ops::softmax_rows(x, p);
  Tensor wrong = p.clone();
  for (int i = 0; i < 4; ++i) wrong.data<double>()[i] *= r.data<double>()[i];
  EXPECT_NONFATAL_FAILURE(gyre::test::expect_grad("wrong", loss, x, wrong), "worst relative error");
  double c = 0;
  for (int i = 0; i < 4; ++i) c += p.data<double>()[i] * r.data<double>()[i];
  Tensor right = p.clone();
  for (int i = 0; i < 4; ++i) right.data<double>()[i] *= r.data<double>()[i] - c;
  gyre::test::expect_grad("right", loss, x, right);
}
