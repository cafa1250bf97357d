// ops::linear_group_backward (backend/linear_group_ops.h) on the CPU: bitwise the composition of
// linear_backward calls (first with the caller's accumulate_dx, the rest accumulating) for members
// with and without bias and dw (null pointers and undefined tensors), accumulate_dx on and off, an
// undefined dx, odd sizes (M = 1, 7, N = 3 / 5 / 16, K = 9; x with a leading shape), M = 0, f32
// and f64; errors that name the member before anything changes.
#include "gyre/backend/linear_group_ops.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gyre/core/error.h"
#include "test_util.h"
#include "unit/backend/philox_tensors.h"

namespace gyre::ops {
namespace {

using test::error_of;
using ::testing::HasSubstr;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) {
  return test::philox_randn(s, seed, 13, dt);
}

using test::expect_same_bytes;

// One member's tensors; `dw` / `db` undefined when the member has none.
struct Member {
  Tensor dy, w, dw, db;
};

// How a member without dw / db says so: a null pointer or a pointer to an undefined tensor.
enum class Absent { null, undefined };

// Members with N = ns[i] over x [.., K]; member i has dw unless i == 1, and a bias unless i == 2
// (so with three members every combination of "has dw" / "has db" but neither appears).
std::vector<Member> make_members(const std::vector<int64_t>& ns, int64_t M, int64_t K, DType dt,
                                 uint64_t seed) {
  std::vector<Member> ms;
  for (size_t i = 0; i < ns.size(); ++i) {
    Member m;
    m.dy = randn({M, ns[i]}, seed + 10 * i, dt);
    m.w = randn({ns[i], K}, seed + 10 * i + 1, dt);
    if (i != 1) m.dw = randn({ns[i], K}, seed + 10 * i + 2, dt);  // accumulated into
    if (i != 2) m.db = randn({ns[i]}, seed + 10 * i + 3, dt);
    ms.push_back(m);
  }
  return ms;
}

std::vector<Member> clone(const std::vector<Member>& ms) {
  std::vector<Member> out;
  for (const Member& m : ms)
    out.push_back({m.dy, m.w, m.dw.defined() ? m.dw.clone() : Tensor(),
                   m.db.defined() ? m.db.clone() : Tensor()});
  return out;
}

std::vector<LinearGroupMember> views(std::vector<Member>& ms, Absent absent) {
  std::vector<LinearGroupMember> v;
  for (Member& m : ms) {
    const bool null = absent == Absent::null;
    v.push_back({&m.dy, &m.w, null && !m.dw.defined() ? nullptr : &m.dw,
                 null && !m.db.defined() ? nullptr : &m.db});
  }
  return v;
}

// The op against the composition it is defined as, on the same inputs.
void expect_composition(const std::vector<int64_t>& ns, const Shape& x_shape, DType dt,
                        bool accumulate_dx, bool with_dx, Absent absent, uint64_t seed) {
  const int64_t K = x_shape.back();
  int64_t M = 1;
  for (size_t d = 0; d + 1 < x_shape.size(); ++d) M *= x_shape[d];
  const Tensor x = randn(x_shape, seed + 1000, dt);
  std::vector<Member> got = make_members(ns, M, K, dt, seed), want = clone(got);
  // dx holds garbage that accumulate_dx keeps and the overwrite replaces.
  Tensor dx0 = randn(x_shape, seed + 2000, dt);
  Tensor dx = with_dx ? dx0.clone() : Tensor(), dx_ref = with_dx ? dx0.clone() : Tensor();

  const std::vector<LinearGroupMember> g = views(got, absent);
  linear_group_backward(g, x, dx, accumulate_dx);
  for (size_t i = 0; i < want.size(); ++i)
    linear_backward(want[i].dy, x, want[i].w, dx_ref, want[i].dw, want[i].db,
                    i == 0 ? accumulate_dx : true);

  expect_same_bytes(dx, dx_ref, "dx");
  for (size_t i = 0; i < got.size(); ++i) {
    expect_same_bytes(got[i].dw, want[i].dw, "dw " + std::to_string(i));
    expect_same_bytes(got[i].db, want[i].db, "db " + std::to_string(i));
  }
}

TEST(LinearGroupBackwardCpu, BitwiseTheComposition) {
  uint64_t seed = 1;
  for (DType dt : {DType::f32, DType::f64})
    for (const Shape& xs : {Shape{1, 9}, Shape{7, 9}, Shape{7, 1, 9}})
      for (bool acc : {false, true})
        for (bool with_dx : {true, false})
          for (Absent absent : {Absent::null, Absent::undefined}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " x " + shape_str(xs) +
                         (acc ? " accumulate" : "") + (with_dx ? "" : " no dx") +
                         (absent == Absent::null ? " null" : " undefined"));
            expect_composition({3, 5, 16}, xs, dt, acc, with_dx, absent, seed += 100);
          }
}

TEST(LinearGroupBackwardCpu, OneMemberAndManyMembers) {
  expect_composition({5}, {7, 9}, DType::f32, false, true, Absent::null, 11);
  expect_composition({5}, {7, 9}, DType::f32, true, true, Absent::null, 12);
  expect_composition({3, 5, 16, 1, 2, 7, 4, 8, 9, 3}, {7, 9}, DType::f32, false, true,
                     Absent::undefined, 13);
}

TEST(LinearGroupBackwardCpu, EmptyProducts) {
  // M = 0: dw / db unchanged, dx empty; N_i = 0 members; K = 0: dx empty, dw empty, db summed.
  for (bool acc : {false, true}) {
    SCOPED_TRACE(acc ? "accumulate" : "overwrite");
    expect_composition({3, 5, 16}, {0, 9}, DType::f32, acc, true, Absent::null, 21);
    expect_composition({3, 0, 16}, {7, 9}, DType::f32, acc, true, Absent::null, 22);
    expect_composition({0, 0}, {7, 9}, DType::f32, acc, true, Absent::null, 23);
    expect_composition({3, 5}, {7, 0}, DType::f32, acc, true, Absent::null, 24);
  }
  // An overwritten dx with nothing to sum is zeros.
  const Tensor x = randn({4, 6}, 25);
  Tensor dy = randn({4, 0}, 26), w = randn({0, 6}, 27), dx = randn({4, 6}, 28);
  const LinearGroupMember m{&dy, &w, nullptr, nullptr};
  linear_group_backward({&m, 1}, x, dx);
  EXPECT_EQ(dx.to_vector(), std::vector<float>(24, 0.0f));
}

TEST(LinearGroupBackwardCpu, ErrorsNameTheMemberAndChangeNothing) {
  const int64_t M = 7, K = 9;
  const Tensor x = randn({M, K}, 1);
  std::vector<Member> ms = make_members({3, 5, 16}, M, K, DType::f32, 2);
  Tensor dx = randn({M, K}, 3);
  const std::vector<float> dx_before = dx.to_vector(), dw0_before = ms[0].dw.to_vector(),
                           db0_before = ms[0].db.to_vector();
  auto call = [&](std::vector<LinearGroupMember> g, const Tensor& xin, Tensor& dxin) {
    return error_of([&] { linear_group_backward(g, xin, dxin, true); });
  };
  auto good = [&] { return views(ms, Absent::null); };

  EXPECT_THAT(call({}, x, dx), HasSubstr("linear_group_backward: no members"));
  {
    auto g = good();
    g[1].dy = nullptr;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[1].dy' is a null pointer"));
  }
  {
    auto g = good();
    Tensor undefined;
    g[2].w = &undefined;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[2].w' is undefined"));
  }
  {
    auto g = good();
    Tensor w_bad = randn({16, K + 1}, 4);
    g[2].w = &w_bad;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[2].w' has shape [16, 10], expected [N, 9]"));
  }
  {
    auto g = good();
    Tensor dy_bad = randn({M - 1, 16}, 5);
    g[2].dy = &dy_bad;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[2].dy' has shape [6, 16], expected 7 rows"));
  }
  {
    auto g = good();
    Tensor dy_bad = randn({M, 4}, 6);
    g[1].dy = &dy_bad;
    EXPECT_THAT(call(g, x, dx),
                HasSubstr("'members[1].dy' has shape [7, 4], expected 7 rows of 5"));
  }
  {
    auto g = good();
    Tensor dw_bad = randn({5, K - 1}, 7);
    g[1].dw = &dw_bad;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[1].dw' has shape [5, 8], expected [5, 9]"));
  }
  {
    auto g = good();
    Tensor db_bad = randn({15}, 8);
    g[2].db = &db_bad;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[2].db' has shape [15], expected [16]"));
  }
  {
    Tensor dx_bad = randn({M, K + 1}, 9);
    EXPECT_THAT(call(good(), x, dx_bad), HasSubstr("'dx' has shape [7, 10], expected 7 rows of 9"));
  }
  {
    auto g = good();
    Tensor db64 = randn({16}, 10, DType::f64);
    g[2].db = &db64;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[2].db' is f64 but 'x' is f32"));
  }
  {
    auto g = good();
    Tensor dy16 = Tensor::zeros({M, 5}, DType::bf16);
    g[1].dy = &dy16;
    EXPECT_THAT(call(g, x, dx), HasSubstr("'members[1].dy' is bf16, but this op rounds"));
  }
  {
    Tensor x16 = Tensor::zeros({M, K}, DType::bf16);
    EXPECT_THAT(call(good(), x16, dx),
                HasSubstr("'x' is bf16, which only the CUDA backend takes under "
                          "ops::Bf16Autocast with f32 weights and gradients (here: cpu"));
  }
  {
    Tensor undefined;
    EXPECT_THAT(call(good(), undefined, dx), HasSubstr("input 'x' is undefined"));
  }
  // Every rejected call ran after member 0 could have been processed: nothing changed.
  EXPECT_EQ(dx.to_vector(), dx_before);
  EXPECT_EQ(ms[0].dw.to_vector(), dw0_before);
  EXPECT_EQ(ms[0].db.to_vector(), db0_before);
}

}  // namespace
}  // namespace gyre::ops
