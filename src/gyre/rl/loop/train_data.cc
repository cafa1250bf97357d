// Prompt data of `gyre train` (see train_data.h).
#include "gyre/rl/loop/train_data.h"

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/rl/data/sft_messages.h"

namespace gyre::rl {

namespace {

// Renders chat prompts at load time (slime: --apply-chat-template renders with
// add_generation_prompt=True so Sample.prompt is a string); a plain string becomes one user turn.
// SFT keeps message-list rows as they are: sft_samples renders them turn by turn for the per-turn
// loss masks (rl/data/sft_messages.h).
void apply_chat_template(PromptDataset& data, const std::string& tokenizer_dir,
                         const std::string& kwargs_json, bool keep_message_lists) {
  auto tmpl = tokenizer::ChatTemplate::from_dir(tokenizer_dir);
  nlohmann::json kwargs = nlohmann::json::object();
  if (!kwargs_json.empty()) {
    try {
      kwargs = nlohmann::json::parse(kwargs_json);
    } catch (const nlohmann::json::exception& e) {
      GYRE_THROW(invalid_argument, "--apply-chat-template-kwargs is not JSON: {}", e.what());
    }
  }
  std::vector<Sample> rendered;
  for (size_t i = 0; i < data.size(); ++i) {
    Sample s = data[i];
    if (keep_message_lists && s.prompt.is_array()) {
      rendered.push_back(std::move(s));
      continue;
    }
    nlohmann::json messages = s.prompt;
    if (messages.is_string())
      messages = nlohmann::json::array({{{"role", "user"}, {"content", s.prompt}}});
    nlohmann::json tools = s.metadata.contains("tools") ? s.metadata["tools"] : nlohmann::json();
    s.prompt = tmpl.render(messages, tools, true, kwargs);
    rendered.push_back(std::move(s));
  }
  data = PromptDataset::from_samples(std::move(rendered), data.source());
}

}  // namespace

std::shared_ptr<PromptDataset> load_prompts(const std::string& spec, const TrainConfig& cfg,
                                            const tokenizer::Tokenizer& tok, bool eval) {
  PromptDataOptions o;
  o.input_key = eval ? cfg.eval_input_key.value_or(cfg.input_key) : cfg.input_key;
  if (eval) o.input_key_flag = "--eval-input-key (or --input-key)";
  const std::string label_key = eval ? cfg.eval_label_key.value_or(cfg.label_key) : cfg.label_key;
  if (!label_key.empty()) o.label_key = label_key;
  o.metadata_key = cfg.metadata_key;
  o.tool_key = eval ? cfg.eval_tool_key.value_or(cfg.tool_key) : cfg.tool_key;
  o.strict = cfg.strict_data;
  auto data = std::make_shared<PromptDataset>(PromptDataset::load(spec, o));
  if (cfg.apply_chat_template)
    apply_chat_template(*data, cfg.tokenizer_dir, cfg.apply_chat_template_kwargs,
                        cfg.loss_type == "sft_loss");
  const auto& st = data->stats();
  if (st.malformed)
    log::warn("{}: skipped {} malformed line(s); first at line {}: {} (--strict-data to fail)",
              spec, st.malformed, st.first_bad_line, st.first_bad_reason);
  // --rollout-max-prompt-len (default rollout_max_context_len - 1, as slime).
  std::optional<int64_t> max_len = cfg.rollout_max_prompt_len;
  if (eval && cfg.eval_max_prompt_len) max_len = cfg.eval_max_prompt_len;
  if (!max_len && cfg.rollout_max_context_len) max_len = *cfg.rollout_max_context_len - 1;
  if (max_len) {
    std::vector<Sample> kept;
    int64_t dropped = 0;
    for (auto& s : data->prompts()) {
      size_t n = s.prompt.is_string() ? tok.encode(s.prompt.get<std::string>()).size() : 0;
      if (int64_t(n) > *max_len)
        ++dropped;
      else
        kept.push_back(s);
    }
    if (dropped)
      log::warn("{}: dropped {} prompt(s) longer than {} tokens", spec, dropped, *max_len);
    data = std::make_shared<PromptDataset>(PromptDataset::from_samples(std::move(kept), spec));
  }
  if (data->empty()) GYRE_THROW(invalid_argument, "{}: no usable prompts", spec);
  return data;
}

std::vector<Sample> sft_samples(std::vector<SampleGroup> groups, const tokenizer::Tokenizer& tok,
                                const TrainConfig& cfg,
                                std::optional<tokenizer::ChatTemplate>& chat_template) {
  std::vector<Sample> out;
  for (auto& g : groups)
    for (auto& s : g) {
      const std::string where = fmt::format("SFT sample {}", s.index.value_or(-1));
      if (s.prompt.is_array()) {
        if (!chat_template) chat_template = tokenizer::ChatTemplate::from_dir(cfg.tokenizer_dir);
        nlohmann::json kwargs = nlohmann::json::object();
        if (!cfg.apply_chat_template_kwargs.empty())
          kwargs = nlohmann::json::parse(cfg.apply_chat_template_kwargs, nullptr, false);
        if (kwargs.is_discarded())
          GYRE_THROW(invalid_argument, "--apply-chat-template-kwargs is not JSON");
        nlohmann::json tools =
            s.metadata.contains("tools") ? s.metadata["tools"] : nlohmann::json();
        build_sft_messages_sample(s, s.prompt, tools, kwargs, tok, *chat_template, where);
      } else if (s.prompt.is_string() && s.label.is_string()) {
        const std::string response = s.label.get<std::string>();
        s.tokens = tok.encode(s.prompt.get<std::string>(), false);
        std::vector<int32_t> resp = tok.encode(response, false);
        if (auto eos = tok.eos_token_id()) resp.push_back(*eos);
        if (s.tokens.empty() || resp.empty())
          GYRE_THROW(invalid_argument, "{}: empty prompt or response", where);
        s.response_length = 0;
        s.append_response(resp, std::vector<float>(resp.size(), 0.0f), true, "assistant", response);
        s.rollout_log_probs.clear();  // no engine log-probs in SFT
        s.response = response;
      } else {
        GYRE_THROW(invalid_argument,
                   "{}: needs a string prompt (--input-key) with a string label (--label-key) "
                   "holding the response, or a list of chat messages (--input-key) whose "
                   "assistant turns are trained",
                   where);
      }
      s.reward = 0.0;
      s.status = SampleStatus::completed;
      out.push_back(std::move(s));
    }
  return out;
}

}  // namespace gyre::rl
