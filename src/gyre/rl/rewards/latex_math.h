// Symbolic equality of math answers, standing in for what slime's math grader does with
// pylatexenc + sympy (deepscaler `_parse_latex` / `are_equal_under_sympy`), implemented on GiNaC.
//
// Supported input (after latex_to_text):
//   numbers (integers, decimals -> exact rationals), + - * / ^ ** (right-associative powers),
//   unary signs, parentheses, postfix factorial `n!`, implicit multiplication ("2x", "2(x+1)",
//   "(a)(b)", "2pi"), implicit application ("sqrt2", "sqrt x"), functions sqrt sin cos tan log ln
//   exp, the constant pi, and one-letter symbols (multi-letter unknown names split into letters,
//   as sympy's split_symbols does; non-ASCII letters such as Greek are symbols too).
// latex_to_text understands \frac \dfrac \tfrac \sqrt (and \sqrt[n]) \cdot \times \div \pi \infty
// \cup \left \right \text \mathrm \mathbf \textbf \operatorname \, \; \! spacing, \% \$ \{ \},
// Greek letters, \sin \cos \tan \log \ln \exp; other macros are dropped (pylatexenc drops unknown
// macros too); `^`, `_` and braces pass through as in pylatexenc 2.x.
// Equality: GiNaC normal() of the difference is 0, or the difference evaluates numerically to
// ~0 (|d| <= 1e-9 (1 + |a| + |b|)) with no free symbols, or at three fixed non-integer points
// (positive and negative) when it has symbols. This is at least as lenient as sympy.simplify for
// the answers graders see (it also accepts 1/sqrt(2) = sqrt(2)/2 and 2\cdot 3 = 6, which
// pylatexenc+sympy miss), never accepts expressions that differ at the test points.
#pragma once
#include <string>

namespace gyre::rl::rewards {

// pylatexenc LatexNodes2Text subset (see above); output uses "sqrt", "pi", "inf", "U", "*".
std::string latex_to_text(const std::string& latex);
// True when `difference` (an expression string in sympy's input syntax, e.g. "(x+1)-(1+x)")
// parses and is identically zero. Parse failures return false (slime catches sympy errors).
bool expression_is_zero(const std::string& difference);

}  // namespace gyre::rl::rewards
