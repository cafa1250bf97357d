// Hendrycks / PRM800K / deepscaler math grading as slime's rm_hub/math_utils.py (math_utils.h).
#include "gyre/rl/rewards/math_utils.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <vector>

#include "gyre/rl/rewards/latex_math.h"
#include "gyre/rl/rewards/regex.h"

namespace gyre::rl::rewards {
namespace {

struct StripFailed : std::runtime_error {
  StripFailed() : std::runtime_error("strip") {}
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0, pos;
  while ((pos = s.find(sep, start)) != std::string::npos) {
    out.push_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::string py_strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

bool contains(const std::string& s, const std::string& sub) {
  return s.find(sub) != std::string::npos;
}

// Python float(): optional surrounding whitespace, sign, digits/decimal/exponent, inf/nan.
std::optional<double> py_float(const std::string& text) {
  const std::string s = py_strip(text);
  if (s.empty()) return std::nullopt;
  for (char c : s)
    if (c == 'x' || c == 'X' || c == 'p' || c == 'P' || c == '(') return std::nullopt;
  const char* b = s.c_str();
  char* end = nullptr;
  const double v = std::strtod(b, &end);
  if (end != b + s.size()) return std::nullopt;
  return v;
}

// Python int(round(x)) printed (exact for large doubles too).
std::string int_text(double x) { return fmt::format("{:.0f}", std::nearbyint(x) + 0.0); }

bool canonical_int(const std::string& s) {
  static const Regex re(R"(^-?(0|[1-9][0-9]*)$)");
  return s != "-0" && re.search(s).has_value();
}

std::string fix_fracs(const std::string& string) {
  std::vector<std::string> substrs = split(string, "\\frac");
  std::string out = substrs[0];
  for (size_t k = 1; k < substrs.size(); ++k) {
    const std::string& sub = substrs[k];
    out += "\\frac";
    if (sub.empty()) throw StripFailed();  // Python: IndexError on substr[0]
    if (sub[0] == '{') {
      out += sub;
      continue;
    }
    if (sub.size() < 2) return string;
    const std::string a(1, sub[0]), b(1, sub[1]);
    if (b != "{")
      out += "{" + a + "}{" + b + "}" + sub.substr(2);
    else
      out += "{" + a + "}" + b + sub.substr(2);
  }
  return out;
}

std::string fix_a_slash_b(const std::string& s) {
  std::vector<std::string> parts = split(s, "/");
  if (parts.size() != 2) return s;
  if (!canonical_int(parts[0]) || !canonical_int(parts[1])) return s;
  return "\\frac{" + parts[0] + "}{" + parts[1] + "}";
}

std::string remove_right_units(const std::string& s) {
  if (!contains(s, "\\text{ ")) return s;
  std::vector<std::string> parts = split(s, "\\text{ ");
  if (parts.size() != 2) throw StripFailed();  // Python: assert
  return parts[0];
}

std::string fix_sqrt(const std::string& s) {
  if (!contains(s, "\\sqrt")) return s;
  std::vector<std::string> parts = split(s, "\\sqrt");
  std::string out = parts[0];
  for (size_t k = 1; k < parts.size(); ++k) {
    const std::string& p = parts[k];
    if (p.empty()) throw StripFailed();  // Python: IndexError on split[0]
    if (p[0] != '{')
      out += "\\sqrt{" + std::string(1, p[0]) + "}" + p.substr(1);
    else
      out += "\\sqrt" + p;
  }
  return out;
}

std::string strip_properly_formatted_commas(std::string expr) {
  static const Regex re(R"((\d)(,)(\d\d\d)($|\D))");
  for (;;) {
    std::string next = re.sub(expr, "\\1\\3\\4");
    if (next == expr) return next;
    expr = next;
  }
}

bool str_is_int(const std::string& x) {
  auto v = py_float(strip_properly_formatted_commas(x));
  return v && std::isfinite(*v) && std::abs(*v - std::nearbyint(*v)) <= 1e-7;
}

std::string str_to_int(std::string x) {
  replace_all(x, ",", "");
  return fmt::format("{:.0f}", std::trunc(*py_float(x)) + 0.0);
}

bool is_frac(const std::string& e) {
  static const Regex re(R"(^-?[0-9]+.?/0*[1-9][0-9]*.?$)");
  return re.search(e).has_value();
}

std::vector<std::string> split_tuple(const std::string& in) {
  const std::string expr = strip_properly_formatted_commas(in);
  if (expr.empty()) return {};
  const std::string tuple_chars = "()[]";
  auto is_tc = [&](char c) { return tuple_chars.find(c) != std::string::npos; };
  if (expr.size() > 2 && is_tc(expr.front()) && is_tc(expr.back())) {
    const std::string inner = expr.substr(1, expr.size() - 2);
    bool clean = true;
    for (char c : inner) clean = clean && !is_tc(c);
    if (clean) {
      std::vector<std::string> elems;
      for (auto& e : split(inner, ",")) elems.push_back(py_strip(e));
      return elems;
    }
  }
  return {expr};
}

bool should_allow_eval(std::string expr) {
  replace_all(expr, "sqrt", "");
  replace_all(expr, "frac", "");
  std::string letters;
  for (size_t i = 0; i < expr.size(); ++i) {
    const unsigned char c = expr[i];
    if (std::isalpha(c) && letters.find(char(c)) == std::string::npos) letters += char(c);
  }
  if (letters.size() > 2) return false;
  if (contains(expr, "^{") || contains(expr, "^(")) return false;
  static const Regex bad1(R"(\^[0-9]+\^)"), bad2(R"(\^[0-9][0-9]+)");
  return !bad1.search(expr) && !bad2.search(expr);
}

bool are_equal_under_sympy(const std::string& gt, const std::string& given) {
  const std::string expr = "(" + gt + ")-(" + given + ")";
  return should_allow_eval(expr) && expression_is_zero(expr);
}

}  // namespace

MaybeString last_boxed_only_string(const std::string& s) {
  size_t idx = s.rfind("\\boxed");
  if (idx == std::string::npos) idx = s.rfind("\\fbox");
  if (idx == std::string::npos) return std::nullopt;
  int open = 0;
  for (size_t i = idx; i < s.size(); ++i) {
    if (s[i] == '{') ++open;
    if (s[i] == '}') {
      --open;
      if (open == 0) return s.substr(idx, i + 1 - idx);
    }
  }
  return std::nullopt;
}

MaybeString remove_boxed(const MaybeString& s) {
  static const std::string left = "\\boxed{";
  if (!s || s->compare(0, left.size(), left) != 0 || s->empty() || s->back() != '}')
    return std::nullopt;
  if (s->size() < left.size() + 1) return std::nullopt;
  return s->substr(left.size(), s->size() - left.size() - 1);
}

MaybeString extract_boxed_answer(const std::string& solution) {
  return remove_boxed(last_boxed_only_string(solution));
}

MaybeString extract_answer(const std::string& passage) {
  if (contains(passage, "\\boxed")) return extract_boxed_answer(passage);
  return std::nullopt;
}

MaybeString strip_string(const std::string& in) {
  try {
    std::string s = in;
    replace_all(s, "\n", "");
    replace_all(s, "\\!", "");
    replace_all(s, "\\\\", "\\");
    replace_all(s, "tfrac", "frac");
    replace_all(s, "dfrac", "frac");
    replace_all(s, "\\left", "");
    replace_all(s, "\\right", "");
    replace_all(s, "^{\\circ}", "");
    replace_all(s, "^\\circ", "");
    replace_all(s, "\\$", "");
    s = remove_right_units(s);
    replace_all(s, "\\%", "");
    replace_all(s, " .", " 0.");
    replace_all(s, "{.", "{0.");
    if (s.empty()) return s;
    if (s[0] == '.') s = "0" + s;
    std::vector<std::string> eq = split(s, "=");
    if (eq.size() == 2 && eq[0].size() <= 2) s = eq[1];
    s = fix_sqrt(s);
    replace_all(s, " ", "");
    s = fix_fracs(s);
    if (s == "0.5") s = "\\frac{1}{2}";
    return fix_a_slash_b(s);
  } catch (const StripFailed&) {
    return std::nullopt;
  }
}

MaybeString mathd_normalize_answer(const MaybeString& answer) {
  if (!answer) return std::nullopt;
  std::string a = py_strip(*answer);
  static const Regex text_re(R"(^\\text\{(?P<text>.+?)\}$)");
  if (auto m = text_re.search(a)) a = py_strip(m->group(1));
  MaybeString stripped = strip_string(a);
  return stripped ? stripped : MaybeString(a);  // Python: `except Exception: return answer`
}

bool grade_answer_mathd(const std::string& given, const std::string& ground_truth) {
  return mathd_normalize_answer(ground_truth) == mathd_normalize_answer(given);
}

MaybeString normalize_for_sympy(const MaybeString& in) {
  if (!in) return std::nullopt;
  std::string expr = *in;
  static const Regex text_re(R"(^\\text\{(?P<text>.+?)\}$)");
  if (auto m = text_re.search(expr)) expr = m->group(1);
  replace_all(expr, "\\%", "%");
  replace_all(expr, "\\$", "$");
  replace_all(expr, "$", "");
  replace_all(expr, "%", "");
  replace_all(expr, " or ", " , ");
  replace_all(expr, " and ", " , ");
  replace_all(expr, "million", "*10^6");
  replace_all(expr, "billion", "*10^9");
  replace_all(expr, "trillion", "*10^12");
  static const std::vector<std::string> kUnits = {
      "degree", "cm",   "centimeter", "meter", "mile", "second", "minute", "hour",
      "day",    "week", "month",      "year",  "foot", "feet",   "inch",   "yard"};
  static const std::vector<std::unique_ptr<Regex>> unit_res = [] {
    std::vector<std::unique_ptr<Regex>> v;
    for (const auto& u : kUnits)
      v.push_back(std::make_unique<Regex>(u + R"((es)?(s)? *(\^[0-9]+)?)"));
    return v;
  }();
  for (const auto& re : unit_res) expr = re->sub(expr, "");
  static const Regex circ(R"(\^ *\\circ)");
  expr = circ.sub(expr, "");
  if (!expr.empty() && expr.front() == '{' && expr.back() == '}')
    expr = expr.substr(1, expr.size() - 2);
  static const Regex comma_space(R"(,\\! *)");
  expr = comma_space.sub(expr, "");
  if (auto f = py_float(expr); f && std::isfinite(*f) && std::abs(*f - std::nearbyint(*f)) <= 1e-7)
    expr = int_text(*f);
  if (contains(expr, "\\")) {
    // deepscaler `_parse_latex`: \tfrac/\dfrac -> \frac, a space before \frac so "7\frac34"
    // reads as a mixed number, then LaTeX -> text.
    std::string e = expr;
    replace_all(e, "\\tfrac", "\\frac");
    replace_all(e, "\\dfrac", "\\frac");
    replace_all(e, "\\frac", " \\frac");
    expr = py_strip(latex_to_text(e));
  }
  static const Regex minus_space("- *");
  expr = minus_space.sub(expr, "-");
  static const Regex mixed("([0-9]) +([0-9])");
  expr = mixed.sub(expr, "\\1+\\2");
  replace_all(expr, " ", "");
  replace_all(expr, "{", "");
  replace_all(expr, "}", "");
  for (char& c : expr) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (str_is_int(expr)) expr = str_to_int(expr);
  return expr;
}

bool grade_answer_sympy(const std::string& given, const std::string& ground_truth) {
  const MaybeString gt = normalize_for_sympy(ground_truth);
  const MaybeString gv = normalize_for_sympy(given);
  if (!gt) return false;
  if (*gt == *gv) return true;
  if (gv->empty()) return false;
  const auto gt_elems = split_tuple(*gt), gv_elems = split_tuple(*gv);
  if (gt_elems.size() > 1 && (gt->front() != gv->front() || gt->back() != gv->back())) return false;
  if (gt_elems.size() != gv_elems.size()) return false;
  for (size_t k = 0; k < gt_elems.size(); ++k) {
    const std::string &a = gt_elems[k], &b = gv_elems[k];
    bool ok;
    if (is_frac(a) && is_frac(b))
      ok = a == b;  // unreduced fractions must match literally
    else if (str_is_int(a) != str_is_int(b))
      ok = false;  // an integer answer requires an integer
    else
      ok = are_equal_under_sympy(a, b);
    if (!ok) return false;
  }
  return !gt_elems.empty();
}

bool grade_answer_verl(const std::string& solution, const std::string& ground_truth_in) {
  if (ground_truth_in.empty()) return false;
  MaybeString gt = ground_truth_in;
  if (contains(*gt, "\\boxed")) gt = extract_answer(*gt);
  const MaybeString given = extract_answer(solution);
  if (!given || !gt) return false;
  return grade_answer_mathd(*given, *gt) || grade_answer_sympy(*given, *gt);
}

int deepscaler_reward(const std::string& response, const std::string& label) {
  std::string solution;
  if (contains(response, "</think>")) {
    solution = response.substr(response.rfind("</think>") + 8);
  } else if (contains(response, "###Response")) {
    solution = split(response, "###Response")[1];
  } else {
    return 0;
  }
  const MaybeString answer = extract_answer(solution);
  if (!answer || label.empty()) return 0;
  MaybeString truth = label;
  if (contains(label, "\\boxed")) truth = extract_answer(label);
  if (!truth) return 0;
  return grade_answer_mathd(*answer, *truth) || grade_answer_sympy(*answer, *truth) ? 1 : 0;
}

}  // namespace gyre::rl::rewards
