// Stop tokens and stop strings (semantics in stop.h).
#include "gyre/infer/stop.h"

#include <algorithm>

namespace gyre::infer {

bool is_stop_token(int32_t token, const SamplingParams& sp, std::span<const int32_t> eos_ids) {
  for (int32_t t : sp.stop_token_ids)
    if (t == token) return true;
  if (!sp.ignore_eos)
    for (int32_t t : eos_ids)
      if (t == token) return true;
  return false;
}

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, bool no_stop_trim)
    : no_stop_trim_(no_stop_trim) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
  for (auto& s : stops_) max_len_ = std::max(max_len_, s.size());
}

bool StopStringMatcher::feed(std::string_view new_text) {
  if (matched_) return true;
  size_t old = text_.size();
  text_.append(new_text);
  if (stops_.empty()) return false;
  // Only windows that include new bytes can hold a new match.
  size_t from = old >= max_len_ - 1 ? old - (max_len_ - 1) : 0;
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const auto& s : stops_) {
    size_t pos = text_.find(s, from);
    if (pos != std::string::npos && (pos < best || (pos == best && s.size() > best_stop->size()))) {
      best = pos;
      best_stop = &s;
    }
  }
  if (!best_stop) return false;
  matched_ = *best_stop;
  text_.resize(no_stop_trim_ ? best + best_stop->size() : best);
  flushed_ = true;
  return true;
}

size_t StopStringMatcher::held_back() const {
  if (flushed_ || stops_.empty()) return 0;
  // Longest suffix of text_ that is a proper prefix of some stop string.
  size_t limit = std::min(text_.size(), max_len_ - 1);
  for (size_t len = limit; len > 0; --len) {
    std::string_view suffix(text_.data() + text_.size() - len, len);
    for (const auto& s : stops_)
      if (s.size() > len && std::string_view(s).substr(0, len) == suffix) return len;
  }
  return 0;
}

std::string StopStringMatcher::take_stream_text() {
  size_t end = text_.size() - held_back();
  if (end <= streamed_) return {};
  std::string out = text_.substr(streamed_, end - streamed_);
  streamed_ = end;
  return out;
}

}  // namespace gyre::infer
