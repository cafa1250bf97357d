// Reasoning parser: split model output into reasoning_content and content at <think>...</think>
// (Qwen3, QwQ, DeepSeek-R1 style), following SGLang's BaseReasoningFormatDetector:
// - the output is "in reasoning" if it contains the start tag, or if `starts_in_reasoning` is set
//   (the prompt already ended with "<think>\n", as DeepSeek-R1's template and Qwen3 with thinking
//   forced do, so the completion begins inside the thinking);
// - in reasoning: the start tag is removed and the text stripped; without an end tag all of it is
//   reasoning (generation stopped while thinking); otherwise reasoning is the stripped part before
//   the first end tag and content the stripped part after it;
// - not in reasoning: everything is content.
// Invariant: no input text is lost except the tags and the whitespace around them.
#pragma once
#include <string>
#include <string_view>

namespace gyre::tokenizer {

struct ReasoningSplit {
  std::string reasoning_content;
  std::string content;
  bool reasoning_finished = false;  // an end tag was seen (or there was no reasoning at all)
};

ReasoningSplit split_reasoning(std::string_view text, bool starts_in_reasoning = false,
                               std::string_view start_tag = "<think>",
                               std::string_view end_tag = "</think>");

}  // namespace gyre::tokenizer
