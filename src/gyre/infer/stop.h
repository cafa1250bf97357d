// Stop conditions of one request (SGLang semantics):
// - a sampled token stops the request when it is in stop_token_ids, or is an eos id and ignore_eos
//   is off (the token is kept in output_ids and its log-prob is returned, as slime expects);
// - stop strings are matched on the incrementally detokenized output text, so a string spanning
//   token boundaries is found; the text is cut before the earliest match (or after it with
//   no_stop_trim), text decoded after the match in the same step is dropped;
// - streamed text holds back a suffix that could still become a stop string, so a client never
//   sees text that is later trimmed.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gyre/infer/types.h"

namespace gyre::infer {

// True when `token` ends generation; `eos_ids` are the model's eos ids.
bool is_stop_token(int32_t token, const SamplingParams& sp, std::span<const int32_t> eos_ids);

class StopStringMatcher {
 public:
  StopStringMatcher(std::vector<std::string> stops, bool no_stop_trim);

  // Appends newly decoded text; returns true when a stop string completed (the text is then final).
  bool feed(std::string_view new_text);
  // Output text so far (final and trimmed once matched()).
  const std::string& text() const { return text_; }
  const std::optional<std::string>& matched() const { return matched_; }
  // Text not yet streamed that can no longer be trimmed; everything once finished (flush()).
  std::string take_stream_text();
  // No more tokens will come: the held-back suffix becomes streamable.
  void flush() { flushed_ = true; }

 private:
  size_t held_back() const;
  std::vector<std::string> stops_;
  bool no_stop_trim_;
  size_t max_len_ = 0;
  std::string text_;
  size_t streamed_ = 0;
  bool flushed_ = false;
  std::optional<std::string> matched_;
};

}  // namespace gyre::infer
