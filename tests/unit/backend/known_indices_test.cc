// ops::KnownIndices: scopes record index tensors the caller validated on the host; ops skip their
// device-to-host range checks only when a recorded fact implies the check, and only while the scope
// lives. (The GPU tests cover the same ops on device tensors; here the CPU backend shows the
// bookkeeping and that bad data is still rejected whenever a fact does not cover the op's check.)
#include <gtest/gtest.h>

#include "gyre/backend/ops.h"
#include "gyre/core/error.h"

namespace gyre {
namespace {

using Entry = ops::KnownIndices::Entry;

TEST(KnownIndices, FindsEntriesOnlyWhileTheirScopeLives) {
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 2, 1}, {3});
  EXPECT_EQ(ops::KnownIndices::find(ids, Entry::range), nullptr);
  {
    ops::KnownIndices outer;
    outer.add_range(ids, 0, 3);
    {
      ops::KnownIndices inner;
      inner.add_range(ids, 0, 5);  // innermost wins
      const Entry* e = ops::KnownIndices::find(ids, Entry::range);
      ASSERT_NE(e, nullptr);
      EXPECT_EQ(e->hi, 5);
      EXPECT_EQ(ops::KnownIndices::find(ids, Entry::offsets), nullptr);  // kind must match
    }
    const Entry* e = ops::KnownIndices::find(ids, Entry::range);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->hi, 3);
  }
  EXPECT_EQ(ops::KnownIndices::find(ids, Entry::range), nullptr);
}

TEST(KnownIndices, HostValuesAreRecordedForTheDeviceTensorOnly) {
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{3, 1, 2}, {3});
  Tensor host = ids.clone();
  ops::KnownIndices known;
  known.add_host_values(ids, host);
  const Entry* e = ops::KnownIndices::find(ids, Entry::host_values);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->host, host.i32());
  EXPECT_EQ(ops::KnownIndices::find(ids, Entry::range), nullptr);  // a host copy proves no range
  EXPECT_EQ(ops::KnownIndices::find(host, Entry::host_values), nullptr);
  // A copy of another length, or not i32, is a caller bug: a clear error.
  EXPECT_THROW(known.add_host_values(ids, Tensor::from_vector(std::vector<int32_t>{3, 1}, {2})),
               Error);
  EXPECT_THROW(known.add_host_values(ids, Tensor::zeros({3})), Error);
}

TEST(KnownIndices, IdentityIsStorageBytesAndLength) {
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3}, {4});
  Tensor copy = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3}, {4});
  Tensor f = Tensor::zeros({4});
  ops::KnownIndices known;
  known.add_range(ids, 0, 4);
  known.add_range(f, 0, 4);  // not i32: ignored
  EXPECT_NE(ops::KnownIndices::find(ids, Entry::range), nullptr);
  EXPECT_EQ(ops::KnownIndices::find(copy, Entry::range), nullptr);  // same values, other storage
  EXPECT_EQ(ops::KnownIndices::find(f, Entry::range), nullptr);
  EXPECT_EQ(ops::KnownIndices::find(ids.reshape({2, 2}), Entry::range),
            ops::KnownIndices::find(ids, Entry::range));
}

TEST(KnownIndices, AFactThatDoesNotCoverTheCheckStillChecks) {
  // ids hold 7 but the caller only claims [0, 9): an embedding of 4 rows must still reject them.
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 7}, {2});
  Tensor table = Tensor::zeros({4, 3}), out;
  ops::KnownIndices known;
  known.add_range(ids, 0, 9);
  EXPECT_THROW(ops::embedding(ids, table, out), Error);
  // Offsets recorded for another token count do not stand in for attention's check.
  Tensor q = Tensor::zeros({3, 1, 2}), o, lse;
  Tensor bad_cu = Tensor::from_vector(std::vector<int32_t>{0, 5}, {2});
  known.add_offsets(bad_cu, 5, 5);
  EXPECT_THROW(ops::attention_varlen(q, q, q, bad_cu, 1.0f, o, lse), Error);
}

TEST(KnownIndices, ProvenOffsetsGiveAttentionItsLongestSequence) {
  // Valid offsets recorded with their facts: attention runs and matches the unrecorded call.
  Tensor q = Tensor::full({5, 2, 4}, 0.5f), o1, o2, l1, l2;
  Tensor cu = Tensor::from_vector(std::vector<int32_t>{0, 2, 5}, {3});
  ops::attention_varlen(q, q, q, cu, 0.5f, o1, l1);
  {
    ops::KnownIndices known;
    known.add_offsets(cu, 5, 3);
    ops::attention_varlen(q, q, q, cu, 0.5f, o2, l2);
  }
  EXPECT_EQ(o1.to_vector(), o2.to_vector());
  EXPECT_EQ(l1.to_vector(), l2.to_vector());
}

}  // namespace
}  // namespace gyre
