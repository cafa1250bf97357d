// <think>...</think> splitting (see reasoning_parser.h).
#include "gyre/tokenizer/reasoning_parser.h"

#include <optional>

#include "gyre/tokenizer/jinja/pystr.h"

namespace gyre::tokenizer {

ReasoningSplit split_reasoning(std::string_view text, bool starts_in_reasoning,
                               std::string_view start_tag, std::string_view end_tag) {
  ReasoningSplit r;
  bool has_start = !start_tag.empty() && text.find(start_tag) != std::string_view::npos;
  if (!starts_in_reasoning && !has_start) {
    r.content = std::string(text);
    r.reasoning_finished = true;
    return r;
  }
  // SGLang removes every start tag (text.replace(start, "")) before looking for the end tag.
  std::string t = has_start ? jinja::pystr::replace(text, start_tag, "", -1) : std::string(text);
  t = jinja::pystr::strip(t, std::nullopt, true, true);
  size_t end = end_tag.empty() ? std::string::npos : t.find(end_tag);
  if (end == std::string::npos) {
    r.reasoning_content = std::move(t);
    return r;
  }
  r.reasoning_content =
      jinja::pystr::strip(std::string_view(t).substr(0, end), std::nullopt, true, true);
  r.content = jinja::pystr::strip(std::string_view(t).substr(end + end_tag.size()), std::nullopt,
                                  true, true);
  r.reasoning_finished = true;
  return r;
}

}  // namespace gyre::tokenizer
