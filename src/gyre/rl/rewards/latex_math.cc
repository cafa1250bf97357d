// LaTeX -> text and GiNaC-backed zero testing (what is supported: latex_math.h).
#include "gyre/rl/rewards/latex_math.h"

#include <ginac/ginac.h>

#include <cctype>
#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>

namespace gyre::rl::rewards {
namespace {

// ---- LaTeX -> text ------------------------------------------------------------------------------

const std::map<std::string, std::string>& macro_text() {
  static const std::map<std::string, std::string> m = {
      {"pi", "pi"},   {"infty", "inf"}, {"cup", "U"},   {"cdot", "*"},   {"times", "*"},
      {"div", "/"},   {"sin", "sin"},   {"cos", "cos"}, {"tan", "tan"},  {"log", "log"},
      {"ln", "ln"},   {"exp", "exp"},   {"alpha", "α"}, {"beta", "β"},   {"gamma", "γ"},
      {"delta", "δ"}, {"epsilon", "ε"}, {"theta", "θ"}, {"lambda", "λ"}, {"mu", "μ"},
      {"sigma", "σ"}, {"phi", "φ"},     {"omega", "ω"}, {"%", "%"},      {"$", "$"},
      {"{", "{"},     {"}", "}"},       {"_", "_"},     {"&", "&"},      {",", " "},
      {";", " "},     {":", " "},       {" ", " "},     {"!", ""},       {"quad", " "},
      {"qquad", " "}, {"le", "<="},     {"ge", ">="},   {"leq", "<="},   {"geq", ">="},
      {"pm", "±"},    {"circ", "°"},
  };
  return m;
}

bool is_content_macro(const std::string& name) {
  static const char* kNames[] = {"text",         "textbf",       "textit", "textrm", "mathrm",
                                 "mathbf",       "mathit",       "mathbb", "mbox",   "boxed",
                                 "displaystyle", "operatorname", "emph",   "mathcal"};
  for (const char* n : kNames)
    if (name == n) return true;
  return false;
}

class LatexToText {
 public:
  explicit LatexToText(const std::string& s) : s_(s) {}
  std::string run() { return nodes('\0'); }

 private:
  // Text of nodes up to the closing `close` (consumed) or the end.
  std::string nodes(char close) {
    std::string out;
    while (i_ < s_.size()) {
      const char c = s_[i_];
      if (c == close) {
        ++i_;
        return out;
      }
      out += node();
    }
    return out;
  }
  std::string node() {
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      return nodes('}');
    }
    if (c == '}') {  // stray close brace: pylatexenc keeps going; keep the character
      ++i_;
      return "}";
    }
    if (c == '%') {  // LaTeX comment to end of line
      while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      return "";
    }
    if (c == '\\') return macro();
    ++i_;
    return std::string(1, c);
  }
  std::string arg() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    if (i_ >= s_.size()) return "";
    return node();
  }
  static std::string wrap(const std::string& t) {
    bool simple = !t.empty();
    for (char ch : t)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.') simple = false;
    return simple ? t : "(" + t + ")";
  }
  std::string macro() {
    ++i_;  // backslash
    if (i_ >= s_.size()) return "";
    std::string name;
    if (std::isalpha(static_cast<unsigned char>(s_[i_]))) {
      while (i_ < s_.size() && std::isalpha(static_cast<unsigned char>(s_[i_]))) name += s_[i_++];
    } else {
      name = s_[i_++];
    }
    if (name == "frac" || name == "dfrac" || name == "tfrac") {
      const std::string num = arg(), den = arg();
      return wrap(num) + "/" + wrap(den);
    }
    if (name == "sqrt") {
      std::string degree;
      if (i_ < s_.size() && s_[i_] == '[') {
        ++i_;
        degree = nodes(']');
      }
      const std::string radicand = arg();
      if (degree.empty()) return "sqrt(" + radicand + ")";
      return "(" + radicand + ")**(1/(" + degree + "))";
    }
    if (name == "left" || name == "right" || name == "big" || name == "Big" || name == "bigl" ||
        name == "bigr") {
      if (i_ < s_.size() && s_[i_] == '.') ++i_;  // "\left." is an invisible delimiter
      return "";
    }
    if (is_content_macro(name)) return arg();
    auto it = macro_text().find(name);
    if (it != macro_text().end()) return it->second;
    if (name == "\\") return " ";
    return "";  // unknown macros render as nothing, as in pylatexenc
  }

  const std::string& s_;
  size_t i_ = 0;
};

// ---- expression parser (sympy parse_expr with implicit multiplication / application) -----------

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Tok { num, name, op, lparen, rparen, bang, end };
struct Token {
  Tok kind;
  std::string text;
};

bool known_name(const std::string& s) {
  return s == "sqrt" || s == "sin" || s == "cos" || s == "tan" || s == "log" || s == "ln" ||
         s == "exp" || s == "pi";
}

std::vector<Token> tokenize(const std::string& s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    if (std::isspace(c)) {
      ++i;
    } else if (std::isdigit(c) ||
               (c == '.' && i + 1 < s.size() && std::isdigit((unsigned char)s[i + 1]))) {
      size_t j = i;
      while (j < s.size() && std::isdigit((unsigned char)s[j])) ++j;
      if (j < s.size() && s[j] == '.') {
        ++j;
        while (j < s.size() && std::isdigit((unsigned char)s[j])) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit((unsigned char)s[k])) {
          while (k < s.size() && std::isdigit((unsigned char)s[k])) ++k;
          j = k;
        }
      }
      out.push_back({Tok::num, s.substr(i, j - i)});
      i = j;
    } else if (std::isalpha(c) || c >= 0x80) {
      // A run of letters; known names stay whole, others split into one symbol per letter.
      size_t j = i;
      std::vector<std::string> letters;
      while (j < s.size() && (std::isalpha((unsigned char)s[j]) || (unsigned char)s[j] >= 0x80)) {
        size_t k = j + 1;
        if ((unsigned char)s[j] >= 0x80)
          while (k < s.size() && ((unsigned char)s[k] & 0xC0) == 0x80) ++k;
        letters.push_back(s.substr(j, k - j));
        j = k;
      }
      const std::string run = s.substr(i, j - i);
      if (known_name(run)) {
        out.push_back({Tok::name, run});
      } else {
        for (auto& l : letters) out.push_back({Tok::name, l});
      }
      i = j;
    } else if (c == '*' && i + 1 < s.size() && s[i + 1] == '*') {
      out.push_back({Tok::op, "^"});
      i += 2;
    } else if (c == '+' || c == '-' || c == '*' || c == '/' || c == '^') {
      out.push_back({Tok::op, std::string(1, char(c))});
      ++i;
    } else if (c == '(') {
      out.push_back({Tok::lparen, "("}), ++i;
    } else if (c == ')') {
      out.push_back({Tok::rparen, ")"}), ++i;
    } else if (c == '!') {
      out.push_back({Tok::bang, "!"}), ++i;
    } else {
      throw ParseError(std::string("unsupported character '") + char(c) + "'");
    }
  }
  out.push_back({Tok::end, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Token> toks, std::map<std::string, GiNaC::symbol>* syms)
      : t_(std::move(toks)), syms_(syms) {}
  GiNaC::ex parse() {
    GiNaC::ex e = expr();
    if (peek().kind != Tok::end) throw ParseError("trailing input '" + peek().text + "'");
    return e;
  }

 private:
  const Token& peek() const { return t_[p_]; }
  bool is_op(const char* o) const { return peek().kind == Tok::op && peek().text == o; }
  bool starts_atom() const {
    return peek().kind == Tok::num || peek().kind == Tok::name || peek().kind == Tok::lparen;
  }
  GiNaC::ex expr() {
    GiNaC::ex e = term();
    while (is_op("+") || is_op("-")) {
      const bool plus = peek().text == "+";
      ++p_;
      GiNaC::ex r = term();
      e = plus ? e + r : e - r;
    }
    return e;
  }
  GiNaC::ex term() {
    GiNaC::ex e = factor();
    for (;;) {
      if (is_op("*")) {
        ++p_, e = e * factor();
      } else if (is_op("/")) {
        ++p_;
        GiNaC::ex d = factor();
        if (d.is_zero()) throw ParseError("division by zero");
        e = e / d;
      } else if (starts_atom()) {
        e = e * power();  // implicit multiplication
      } else {
        return e;
      }
    }
  }
  GiNaC::ex factor() {
    if (is_op("-")) return ++p_, -factor();
    if (is_op("+")) return ++p_, factor();
    return power();
  }
  GiNaC::ex power() {
    GiNaC::ex base = postfix();
    if (is_op("^")) {
      ++p_;
      GiNaC::ex ex = factor();  // right-associative, binds a unary sign
      if (GiNaC::is_a<GiNaC::numeric>(ex) &&
          GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(ex)) > GiNaC::numeric(10000))
        throw ParseError("exponent too large");
      return GiNaC::pow(base, ex);
    }
    return base;
  }
  GiNaC::ex postfix() {
    GiNaC::ex e = atom();
    while (peek().kind == Tok::bang) {
      ++p_;
      if (!GiNaC::is_a<GiNaC::numeric>(e) || !GiNaC::ex_to<GiNaC::numeric>(e).is_nonneg_integer() ||
          GiNaC::ex_to<GiNaC::numeric>(e) > GiNaC::numeric(1000))
        throw ParseError("factorial of a non-integer or too large value");
      e = GiNaC::factorial(e);
    }
    return e;
  }
  GiNaC::ex atom() {
    const Token tok = peek();
    if (tok.kind == Tok::num) {
      ++p_;
      return number(tok.text);
    }
    if (tok.kind == Tok::lparen) {
      ++p_;
      GiNaC::ex e = expr();
      if (peek().kind != Tok::rparen) throw ParseError("missing ')'");
      ++p_;
      return e;
    }
    if (tok.kind == Tok::name) {
      ++p_;
      if (tok.text == "pi") return GiNaC::Pi;
      if (known_name(tok.text)) {
        GiNaC::ex a;
        if (peek().kind == Tok::lparen) {
          a = atom();
        } else if (starts_atom()) {
          a = postfix();  // implicit application: sqrt2 -> sqrt(2)
        } else {
          throw ParseError("function " + tok.text + " without argument");
        }
        if (tok.text == "sqrt") return GiNaC::sqrt(a);
        if (tok.text == "sin") return GiNaC::sin(a);
        if (tok.text == "cos") return GiNaC::cos(a);
        if (tok.text == "tan") return GiNaC::tan(a);
        if (tok.text == "exp") return GiNaC::exp(a);
        if (a.is_zero()) throw ParseError("log(0)");
        return GiNaC::log(a);
      }
      auto it = syms_->find(tok.text);
      if (it == syms_->end()) it = syms_->emplace(tok.text, GiNaC::symbol(tok.text)).first;
      return it->second;
    }
    throw ParseError("unexpected '" + tok.text + "'");
  }
  static GiNaC::ex number(const std::string& text) {
    // Exact rational value of a decimal literal (sympy Float compares equal to the same decimal).
    std::string mant = text, exp_part;
    const size_t e = text.find_first_of("eE");
    if (e != std::string::npos) mant = text.substr(0, e), exp_part = text.substr(e + 1);
    std::string digits;
    long scale = 0;
    bool frac = false;
    for (char ch : mant) {
      if (ch == '.') {
        frac = true;
        continue;
      }
      digits += ch;
      if (frac) ++scale;
    }
    long ex = exp_part.empty() ? 0 : std::stol(exp_part);
    if (std::abs(ex - scale) > 400) throw ParseError("number out of range");
    GiNaC::numeric v(digits.empty() ? "0" : digits.c_str());
    const long p = ex - scale;
    return p >= 0 ? v * GiNaC::pow(GiNaC::numeric(10), GiNaC::numeric(p))
                  : v / GiNaC::pow(GiNaC::numeric(10), GiNaC::numeric(-p));
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  std::map<std::string, GiNaC::symbol>* syms_;
};

double magnitude(const GiNaC::ex& e) {
  GiNaC::ex v = e.evalf();
  if (!GiNaC::is_a<GiNaC::numeric>(v)) throw ParseError("not numeric");
  return GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(v)).to_double();
}

std::mutex& ginac_mutex() {
  static std::mutex mu;  // GiNaC keeps global caches and is not thread-safe
  return mu;
}

}  // namespace

std::string latex_to_text(const std::string& latex) { return LatexToText(latex).run(); }

bool expression_is_zero(const std::string& difference) {
  std::lock_guard<std::mutex> lock(ginac_mutex());
  try {
    std::map<std::string, GiNaC::symbol> syms;
    GiNaC::ex d = ExprParser(tokenize(difference), &syms).parse();
    if (GiNaC::normal(d).is_zero()) return true;
    if (syms.empty()) {
      // Compare against the size of the terms so 1e-30 answers are not all "equal".
      double scale = 1.0;
      if (GiNaC::is_a<GiNaC::add>(d))
        for (size_t k = 0; k < d.nops(); ++k) scale += magnitude(d.op(k));
      return magnitude(d) <= 1e-9 * scale;
    }
    // Probabilistic identity test at fixed non-integer points of both signs.
    const double points[3][3] = {
        {0.7341, -1.3719, 2.2113}, {-0.5527, 1.9031, 0.3173}, {1.6183, 0.4142, -2.7183}};
    for (const auto& pt : points) {
      GiNaC::exmap sub;
      size_t k = 0;
      for (auto& [name, sym] : syms) {
        sub[sym] = GiNaC::numeric(pt[k % 3] + 0.1 * double(k / 3));
        ++k;
      }
      if (magnitude(d.subs(sub)) > 1e-9) return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;  // unparseable or undefined (division by zero, ...): not equal, as in slime
  }
}

}  // namespace gyre::rl::rewards
