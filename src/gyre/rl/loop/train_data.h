// Prompt data of `gyre train` (train_loop.cc): prompt sets loaded as slime's data loader does
// (the chat template applied at load time, over-long prompts dropped), and SFT's "rollout", which
// is the data itself turned into trainable samples.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gyre/rl/data/data_buffer.h"
#include "gyre/rl/data/prompt_dataset.h"
#include "gyre/rl/loop/train_config.h"
#include "gyre/rl/sample.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

// Loads the prompt set `spec` (--prompt-data, or an --eval-prompt-data path) with the data flags of
// `cfg`: --apply-chat-template renders chat prompts, prompts longer than --rollout-max-prompt-len
// tokens are dropped (logged), malformed lines skipped (logged) or, with --strict-data, an Error.
// An Error when no prompt is left.
// `eval`: an --eval-prompt-data set, read with the --eval-input-key / --eval-label-key /
// --eval-tool-key / --eval-max-prompt-len overrides where set (slime: --eval-* > the rollout's).
std::shared_ptr<PromptDataset> load_prompts(const std::string& spec, const TrainConfig& cfg,
                                            const tokenizer::Tokenizer& tok, bool eval = false);

// SFT (--loss-type sft_loss): the "rollout" is the data itself. A row with a string prompt and a
// string label: the response is the label text followed by EOS and the loss mask covers it. A row
// whose prompt (--input-key) is a message list: rendered turn by turn with the chat template, loss
// on the assistant turns only (rl/data/sft_messages.h). `chat_template` is loaded on the first
// message-list row and kept for the next calls. Errors name the sample.
std::vector<Sample> sft_samples(std::vector<SampleGroup> groups, const tokenizer::Tokenizer& tok,
                                const TrainConfig& cfg,
                                std::optional<tokenizer::ChatTemplate>& chat_template);

}  // namespace gyre::rl
