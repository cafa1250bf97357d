// Per-turn SFT loss masks for message lists (see header).
#include "gyre/rl/data/sft_messages.h"

#include <vector>

#include "gyre/core/error.h"

namespace gyre::rl {

namespace {

struct Piece {
  std::string text;
  std::string role;
  bool trainable = false;
};

}  // namespace

void build_sft_messages_sample(Sample& sample, const nlohmann::json& messages,
                               const nlohmann::json& tools, const nlohmann::json& kwargs,
                               const tokenizer::Tokenizer& tokenizer,
                               const tokenizer::ChatTemplate& chat_template,
                               const std::string& where) {
  if (!messages.is_array() || messages.empty())
    GYRE_THROW(invalid_argument, "{}: SFT messages must be a non-empty list of {{role, content}}",
               where);
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      GYRE_THROW(invalid_argument, "{}: message {} has no string \"role\"", where, i);
    msgs.push_back(nlohmann::ordered_json(m));
  }
  const nlohmann::ordered_json tools_o =
      tools.is_null() ? nlohmann::ordered_json() : nlohmann::ordered_json(tools);
  const nlohmann::ordered_json kwargs_o =
      kwargs.is_null() ? nlohmann::ordered_json::object() : nlohmann::ordered_json(kwargs);
  auto render = [&](size_t n, bool gen_prompt) {
    nlohmann::ordered_json head = nlohmann::ordered_json::array();
    for (size_t i = 0; i < n; ++i) head.push_back(msgs[i]);
    return chat_template.render(head, tools_o, gen_prompt, kwargs_o);
  };
  // The text each turn adds, split at the assistant generation prompt.
  std::vector<Piece> pieces;
  std::string done;  // rendering of messages[:i]
  auto suffix_of = [&](const std::string& longer, const std::string& prefix, size_t turn,
                       const char* what) {
    if (longer.compare(0, prefix.size(), prefix) != 0)
      GYRE_THROW(invalid_argument,
                 "{}: the chat template's rendering of turn {} ({}) does not extend the rendering "
                 "of the turns before it, so per-turn loss masks are ambiguous (does the template "
                 "rewrite earlier turns, e.g. drop past reasoning?); give the row as a string "
                 "prompt and label instead",
                 where, turn, what);
    return longer.substr(prefix.size());
  };
  bool any_trained = false;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string role = msgs[i]["role"].get<std::string>();
    const std::string full = render(i + 1, false);
    if (role == "assistant") {
      const std::string with_gen = render(i, true);
      const std::string header = suffix_of(with_gen, done, i, "generation prompt");
      const std::string body = suffix_of(full, with_gen, i, "assistant turn");
      pieces.push_back({header, "assistant_header", false});
      pieces.push_back({body, "assistant", true});
      any_trained |= !body.empty();
    } else {
      pieces.push_back({suffix_of(full, done, i, role.c_str()), role, false});
    }
    done = full;
  }
  if (!any_trained)
    GYRE_THROW(invalid_argument,
               "{}: no assistant turn to train on (per-turn SFT trains the assistant messages)",
               where);

  sample.tokens.clear();
  sample.response_length = 0;
  sample.loss_mask.clear();
  sample.segments.clear();
  sample.rollout_log_probs.clear();
  sample.response.clear();
  bool in_response = false;
  for (const Piece& p : pieces) {
    if (p.text.empty()) continue;
    std::vector<int32_t> ids = tokenizer.encode(p.text, false);
    if (!in_response && !p.trainable) {  // still the prompt
      sample.tokens.insert(sample.tokens.end(), ids.begin(), ids.end());
      continue;
    }
    if (!in_response && sample.tokens.empty())
      GYRE_THROW(invalid_argument,
                 "{}: the first assistant turn has no prompt tokens before it (a trained token "
                 "needs a context to be predicted from)",
                 where);
    in_response = true;
    sample.append_response(
        ids, p.trainable ? std::vector<float>(ids.size(), 0.0f) : std::vector<float>(), p.trainable,
        p.role, p.text);
  }
  sample.rollout_log_probs.clear();  // SFT has no engine log-probs
  sample.validate(where);
}

}  // namespace gyre::rl
