// SFT samples from chat message lists with per-turn loss masks (--loss-type sft_loss on rows whose
// --input-key holds [{role, content}, ...]): the loss covers the assistant turns only, as slime's
// MultiTurnLossMaskGenerator does.
//
// The conversation is tokenized turn by turn: turn i contributes the token ids of the text that
// rendering messages[:i+1] adds to rendering messages[:i] (the chat template's own output, so the
// trajectory is what the template produces, token in, token out). An assistant turn is split in
// two: the generation prompt the template puts before it (e.g. "<|im_start|>assistant\n",
// untrained — the model is given it at inference) and the rest, the turn's content and its end
// marker (trained). Tokens up to the first trained token form the prompt; the rest is the
// response, recorded as Sample::segments with loss mask 1 on assistant content and 0 elsewhere.
//
// Invariants: every rendering of a prefix is a prefix of the next rendering (else Error naming the
// row and turn: the template rewrites earlier turns, e.g. drops past reasoning, and per-turn masks
// would be ambiguous); at least one assistant turn with a non-empty rendering.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "gyre/rl/sample.h"
#include "gyre/tokenizer/chat_template.h"
#include "gyre/tokenizer/tokenizer.h"

namespace gyre::rl {

// Fills sample.tokens / response_length / loss_mask / segments / response from `messages` (a JSON
// array of {role, content}); `tools` (array or null) and `kwargs` go to the template. `where` names
// the row in errors.
void build_sft_messages_sample(Sample& sample, const nlohmann::json& messages,
                               const nlohmann::json& tools, const nlohmann::json& kwargs,
                               const tokenizer::Tokenizer& tokenizer,
                               const tokenizer::ChatTemplate& chat_template,
                               const std::string& where);

}  // namespace gyre::rl
