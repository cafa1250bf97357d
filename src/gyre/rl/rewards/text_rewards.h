// Text-matching rewards as slime's rm_hub: SQuAD-style token F1 (f1.py) and GPQA multiple-choice
// letter extraction and scoring (gpqa.py). std::nullopt plays Python's None.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gyre::rl::rewards {

// lowercase, drop ASCII punctuation, replace the articles a/an/the by a space, collapse whitespace
std::string f1_normalize_answer(const std::string& s);
struct F1 {
  double f1 = 0, precision = 0, recall = 0;
};
// yes/no/noanswer on either side require an exact match (else 0).
F1 f1_score(const std::optional<std::string>& prediction, const std::string& ground_truth);

// The chosen option letter (after stripping everything up to the last </think>): the first of
// three answer patterns (case-insensitive) whose letter is valid, else the last standalone capital
// letter that is valid; nullopt when none.
std::optional<std::string> gpqa_extract_letter(const std::optional<std::string>& response,
                                               const std::vector<std::string>& valid_letters);
// 1.0 / 0.0. The correct letter comes from metadata.correct_letter, a one-letter label, an integer
// label (index), or the label text matched against metadata.choices (list, or dict values in key
// order); falls back to normalised-text containment of the correct choice / correct_answer /
// answer_text / label in the response.
double gpqa_reward(const std::optional<std::string>& response, const nlohmann::json& label,
                   const nlohmann::json& metadata);

}  // namespace gyre::rl::rewards
