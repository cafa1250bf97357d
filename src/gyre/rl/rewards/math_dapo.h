// DAPO math scoring as slime's rm_hub/math_dapo_utils.py (from verl / lm-eval-harness Minerva):
// only the last 300 characters are scored; default "Minerva" mode takes the last
// `(?i)Answer\s*:\s*([^\n]+)` match (else "[INVALID]"), normalises it, and compares it with the
// label normalised and coerced to an integer string (DAPO labels are integers); strict-box mode
// compares the unwrapped last \boxed{} of the last 100 characters exactly. Score is +1 / -1.
#pragma once
#include <optional>
#include <string>

namespace gyre::rl::rewards::dapo {

std::optional<std::string> last_boxed_only_string(const std::string& s);  // "\boxed{" only
// "\boxed{X}" -> "X"; throws gyre::Error("box error: ...") otherwise (Python asserts).
std::string remove_boxed(const std::string& s);
std::string normalize_final_answer(const std::string& answer);

struct Verdict {
  bool correct = false;
  std::optional<std::string> pred;
};
// Throws gyre::Error when the label is not a number (DAPO coerces it with int(float(gt))).
Verdict is_correct_minerva(const std::string& solution, const std::string& gt);
struct StrictVerdict {
  int score = -1;  // 1 or -1
  std::optional<std::string> pred;
};
StrictVerdict is_correct_strict_box(const std::string& pred, const std::string& gt);
Verdict verify(const std::string& solution, const std::string& answer, bool strict_box_verify);

struct Score {
  double score = -1.0;  // +1 correct, -1 otherwise
  bool acc = false;
  std::optional<std::string> pred;
};
Score compute_score(const std::string& solution, const std::string& ground_truth,
                    bool strict_box_verify = false);

}  // namespace gyre::rl::rewards::dapo
