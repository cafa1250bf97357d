// IncrementalDetokenizer (declared in tokenizer.h): HF tokenizers' DecodeStream algorithm. The
// window holds the ids already emitted as context (so decoders that treat the first token
// specially, e.g. Metaspace, see the same neighbours as a full decode) plus the pending ids.
#include <string>

#include "gyre/tokenizer/tokenizer.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {

IncrementalDetokenizer::IncrementalDetokenizer(std::shared_ptr<const Tokenizer> tokenizer,
                                               bool skip_special_tokens)
    : tok_(std::move(tokenizer)), skip_special_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  std::string text = tok_->decode(ids_, skip_special_);
  // Hold back while the tail is an incomplete UTF-8 sequence (rendered as U+FFFD) or nothing new.
  if (text.size() <= prefix_.size()) return {};
  if (text.size() >= kReplacementChar.size() &&
      text.compare(text.size() - kReplacementChar.size(), kReplacementChar.size(),
                   kReplacementChar) == 0)
    return {};
  if (text.compare(0, prefix_.size(), prefix_) != 0) return {};
  std::string out = text.substr(prefix_.size());
  // The pending ids become the context of the next step.
  ids_.erase(ids_.begin(), ids_.begin() + std::ptrdiff_t(prefix_ids_));
  prefix_ids_ = ids_.size();
  prefix_ = tok_->decode(ids_, skip_special_);
  return out;
}

std::string IncrementalDetokenizer::finish() {
  std::string out;
  if (ids_.size() > prefix_ids_) {
    std::string text = tok_->decode(ids_, skip_special_);
    if (text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0)
      out = text.substr(prefix_.size());
  }
  ids_.clear();
  prefix_ids_ = 0;
  prefix_.clear();
  return out;
}

}  // namespace gyre::tokenizer
