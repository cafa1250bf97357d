// Math answer checking as slime's rm_hub/math_utils.py (itself deepscaler's, from Hendrycks' MATH
// grader): boxed-answer extraction, the Hendrycks `_strip_string` normalisation ("mathd"), the
// PRM800K-style `_normalize` + symbolic equality ("sympy" grading, done here with GiNaC, see
// latex_math.h), and the combined `grade_answer_verl` used by --rm-type math and deepscaler.
// `std::nullopt` plays Python's None. Nothing here throws on odd input: malformed LaTeX falls back
// to string comparison exactly where the Python code's try/except does.
#pragma once
#include <optional>
#include <string>

namespace gyre::rl::rewards {

using MaybeString = std::optional<std::string>;

// The last "\boxed..." (or, if there is none, "\fbox...") up to its balancing '}'; nullopt when
// absent or unbalanced.
MaybeString last_boxed_only_string(const std::string& s);
// "\boxed{X}" -> "X"; nullopt for anything else (no throw, unlike the DAPO variant).
MaybeString remove_boxed(const MaybeString& s);
MaybeString extract_boxed_answer(const std::string& solution);
// extract_boxed_answer when "\boxed" occurs in the passage, else nullopt.
MaybeString extract_answer(const std::string& passage);

// Hendrycks normalisation: \tfrac/\dfrac -> \frac, \frac12 -> \frac{1}{2}, drop \left \right
// degrees \$ \% units spaces, ".5" -> "0.5", "0.5" -> "\frac{1}{2}", "a/b" -> "\frac{a}{b}", ...
// nullopt when the Python version raises (the caller then keeps the unnormalised answer).
MaybeString strip_string(const std::string& s);
MaybeString mathd_normalize_answer(const MaybeString& answer);
bool grade_answer_mathd(const std::string& given, const std::string& ground_truth);

// PRM800K-style normalisation before symbolic comparison (deepscaler `_normalize`).
MaybeString normalize_for_sympy(const MaybeString& expr);
bool grade_answer_sympy(const std::string& given, const std::string& ground_truth);

// --rm-type math: label unboxed if boxed; answer = last \boxed{} of the solution; mathd OR sympy.
bool grade_answer_verl(const std::string& solution, const std::string& ground_truth);
// --rm-type deepscaler: solution after the last </think>, else after the first ###Response,
// else 0; then boxed extraction and mathd OR sympy against the (unboxed) label. 1 or 0.
int deepscaler_reward(const std::string& response, const std::string& label);

}  // namespace gyre::rl::rewards
