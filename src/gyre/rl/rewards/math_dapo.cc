// DAPO scoring (see math_dapo.h); normalisation tables are slime's SUBSTITUTIONS and
// REMOVED_EXPRESSIONS (Hendrycks MATH / Minerva conventions).
#include "gyre/rl/rewards/math_dapo.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "gyre/core/error.h"
#include "gyre/rl/rewards/regex.h"

namespace gyre::rl::rewards::dapo {
namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

std::string py_strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// The last `n` bytes, moved forward to a UTF-8 boundary (Python slices code points).
std::string last_chars(const std::string& s, size_t n) {
  // Count code points from the end.
  size_t count = 0, i = s.size();
  while (i > 0 && count < n) {
    --i;
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++count;
  }
  return s.substr(i);
}

}  // namespace

std::optional<std::string> last_boxed_only_string(const std::string& s) {
  const size_t idx = s.rfind("\\boxed{");
  if (idx == std::string::npos) return std::nullopt;
  int open = 0;
  for (size_t i = idx; i < s.size(); ++i) {
    if (s[i] == '{') ++open;
    if (s[i] == '}' && --open == 0) return s.substr(idx, i + 1 - idx);
  }
  return std::nullopt;
}

std::string remove_boxed(const std::string& s) {
  const std::string left = "\\boxed{";
  if (s.compare(0, left.size(), left) != 0 || s.size() <= left.size() || s.back() != '}')
    GYRE_THROW(invalid_argument, "box error: {}", s);
  return s.substr(left.size(), s.size() - left.size() - 1);
}

std::string normalize_final_answer(const std::string& answer) {
  static const std::pair<const char*, const char*> kSubstitutions[] = {
      {"an ", ""},          {"a ", ""},
      {".$", "$"},          {"\\$", ""},
      {"\\ ", ""},          {" ", ""},
      {"mbox", "text"},     {",\\text{and}", ","},
      {"\\text{and}", ","}, {"\\text{m}", "\\text{}"}};
  static const char* kRemoved[] = {
      "square",     "ways",       "integers",     "dollars",      "mph",
      "inches",     "hours",      "km",           "units",        "\\ldots",
      "sue",        "points",     "feet",         "minutes",      "digits",
      "cents",      "degrees",    "cm",           "gm",           "pounds",
      "meters",     "meals",      "edges",        "students",     "childrentickets",
      "multiples",  "\\text{s}",  "\\text{.}",    "\\text{\ns}",  "\\text{}^2",
      "\\text{}^3", "\\text{\n}", "\\text{}",     "\\mathrm{th}", "^\\circ",
      "^{\\circ}",  "\\;",        ",\\!",         "{,}",          "\"",
      "\\dots",     "<|im_end|>", "<|endoftext|>"};
  std::string a = answer;
  const size_t eq = a.rfind('=');
  if (eq != std::string::npos) a = a.substr(eq + 1);
  for (const auto& [from, to] : kSubstitutions) replace_all(a, from, to);
  for (const char* r : kRemoved) replace_all(a, r, "");
  static const Regex dollars(R"((.*?)(\$)(.*?)(\$)(.*))"), text(R"((\\text\{)(.*?)(\}))"),
      textbf(R"((\\textbf\{)(.*?)(\}))"), overline(R"((\\overline\{)(.*?)(\}))"),
      boxed(R"((\\boxed\{)(.*)(\}))"), frac(R"((frac)([^{])(.))"), sqrt(R"((sqrt)([^{]))");
  a = dollars.sub(a, "$\\3$");
  a = text.sub(a, "\\2");
  a = textbf.sub(a, "\\2");
  a = overline.sub(a, "\\2");
  a = boxed.sub(a, "\\2");
  // Shorthand TeX: \fracab -> \frac{a}{b}, \sqrta -> \sqrt{a}.
  a = frac.sub(a, "frac{\\2}{\\3}");
  a = sqrt.sub(a, "sqrt{\\2}");
  replace_all(a, "$", "");
  std::string no_commas = a;
  replace_all(no_commas, ",", "");
  bool digits = !no_commas.empty();
  for (char c : no_commas) digits = digits && c >= '0' && c <= '9';
  if (digits) a = no_commas;
  return py_strip(a);
}

Verdict is_correct_minerva(const std::string& solution, const std::string& gt) {
  static const Regex answer_re(R"(Answer\s*:\s*([^\n]+))", /*ignore_case=*/true);
  const auto matches = answer_re.find_all(solution);
  const std::string extracted = matches.empty() ? "[INVALID]" : matches.back().group(1);
  const std::string pred = normalize_final_answer(extracted);
  const std::string g = normalize_final_answer(gt);
  // Python: str(int(float(gt))) -- DAPO labels are integers.
  const std::string s = py_strip(g);
  char* end = nullptr;
  const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v))
    GYRE_THROW(invalid_argument,
               "dapo: label '{}' is not a number (DAPO labels are integers, compared as "
               "str(int(float(label))))",
               gt);
  const std::string gt_int = fmt::format("{:.0f}", std::trunc(v) + 0.0);
  return {pred == gt_int, pred};
}

StrictVerdict is_correct_strict_box(const std::string& pred_in, const std::string& gt) {
  const std::string pred = last_chars(pred_in, 100);
  const auto boxed = last_boxed_only_string(pred);
  std::optional<std::string> extracted;
  if (boxed) extracted = remove_boxed(*boxed);
  return {extracted && *extracted == gt ? 1 : -1, extracted};
}

Verdict verify(const std::string& solution, const std::string& answer, bool strict_box_verify) {
  if (strict_box_verify) {
    StrictVerdict v = is_correct_strict_box(solution, answer);
    return {v.score == 1, v.pred};
  }
  return is_correct_minerva(solution, answer);
}

Score compute_score(const std::string& solution, const std::string& ground_truth,
                    bool strict_box_verify) {
  // Only the tail is scored (the longest MATH-500 answer has 159 characters).
  const Verdict v = verify(last_chars(solution, 300), ground_truth, strict_box_verify);
  return {v.correct ? 1.0 : -1.0, v.correct, v.pred};
}

}  // namespace gyre::rl::rewards::dapo
