// Row slices of data paths: `path@[start:stop]` selects rows start..stop-1 of a dataset file with
// Python slice semantics (slime's _parse_generalized_path): either bound may be omitted, negative
// bounds count from the end, out-of-range bounds clamp, an empty range is allowed. Only step 1.
//   "/a/b.jsonl@[3:7]" -> rows 3,4,5,6    "@[-100:]" -> the last 100    "@[:-2]" -> all but 2
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace gyre::rl {

struct RowSlice {
  std::optional<int64_t> start, stop;  // nullopt = open end
  // [begin, end) row indices for a dataset of n rows (begin <= end, both in [0, n]).
  std::pair<int64_t, int64_t> resolve(int64_t n) const;
  bool operator==(const RowSlice&) const = default;
};

struct DataPath {
  std::string path;
  std::optional<RowSlice> slice;  // nullopt = every row
};

// Splits a trailing `@[a:b]`; a path without it is returned whole. A malformed slice (not two
// integers around one colon, or a step) raises Error naming the argument.
DataPath parse_data_path(const std::string& spec);

}  // namespace gyre::rl
