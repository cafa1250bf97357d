// PromptDataset: the `--prompt-data` JSONL file as a list of prompt Samples (slime's Dataset in
// slime/utils/data.py). Each non-blank line is one JSON object; the prompt is row[--input-key]
// (a string, or a list of chat messages), the label row[--label-key] (absent key -> null label),
// row[--metadata-key] (an object, or a JSON string of one) is copied to Sample::metadata, and
// row[--tool-key] (a list, or a JSON string of one) becomes metadata["tools"] for the chat
// template. A row slice `path@[a:b]` (slice.h) selects non-blank lines of the file before parsing.
//
// Malformed lines (bad JSON, not an object, missing/ill-typed prompt, ill-typed metadata/tools) are
// skipped and counted, remembering the first one's line number and reason; with strict mode
// (--strict-data) the first one is an Error naming file and line. --rollout-max-prompt-len drops
// prompts longer than the limit, measured by a caller-supplied length function (the tokenizer
// lives in another module), counted in stats().filtered_too_long. Prompts keep file order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "gyre/rl/data/slice.h"
#include "gyre/rl/sample.h"

namespace gyre::rl {

struct PromptDataOptions {
  std::string input_key = "input";       // slime's default (its examples pass --input-key prompt)
  std::optional<std::string> label_key;  // slime default None: labels are null
  std::string metadata_key = "metadata";
  std::string tool_key = "tools";
  std::string input_key_flag = "--input-key";  // the flag named when a row lacks input_key
  bool strict = false;                         // --strict-data: malformed line -> Error
  std::optional<int64_t> max_prompt_len;       // --rollout-max-prompt-len (tokens)
  // Prompt length in tokens (e.g. tokenizer encode without special tokens of the rendered chat
  // template). Required when max_prompt_len is set.
  std::function<size_t(const Sample&)> prompt_length;
};

struct PromptDataStats {
  int64_t rows = 0;               // non-blank lines considered (after the row slice)
  int64_t loaded = 0;             // prompts kept
  int64_t malformed = 0;          // skipped as malformed
  int64_t first_bad_line = 0;     // 1-based line number of the first malformed line; 0 = none
  std::string first_bad_reason;   // why it was rejected
  int64_t filtered_too_long = 0;  // dropped by max_prompt_len
};

class PromptDataset {
 public:
  PromptDataset() = default;
  // Reads `spec` (a path, optionally with @[a:b]). Only .jsonl is supported (parquet would need
  // Arrow: convert with `python -c "import pandas; ...to_json(lines=True)"`).
  static PromptDataset load(const std::string& spec, const PromptDataOptions& options);
  // Parses JSONL text already in memory (`source` names it in errors).
  static PromptDataset parse(const std::string& text, const PromptDataOptions& options,
                             const std::string& source = "<jsonl>",
                             const std::optional<RowSlice>& slice = std::nullopt);
  // A dataset from prompts built elsewhere (custom data sources, tests).
  static PromptDataset from_samples(std::vector<Sample> prompts, std::string source = "<memory>");

  size_t size() const { return prompts_.size(); }
  bool empty() const { return prompts_.empty(); }
  const Sample& operator[](size_t i) const { return prompts_[i]; }
  const std::vector<Sample>& prompts() const { return prompts_; }
  const PromptDataStats& stats() const { return stats_; }
  const std::string& source() const { return source_; }
  // FNV-1a over the reading options and the kept rows' text (from_samples: the prompts' JSON); a
  // resumed run checks it still reads the same data.
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  std::vector<Sample> prompts_;
  PromptDataStats stats_;
  std::string source_;
  uint64_t fingerprint_ = 0;
};

}  // namespace gyre::rl
