// Jinja lexer: template source -> tokens (text runs, tag delimiters and expression tokens).
// Whitespace control follows Jinja 3's lexer exactly, since chat templates depend on it byte for
// byte: `{%-`/`-%}` strip all whitespace on that side; with trim_blocks a block or comment end eats
// one following newline (`+%}` disables it); with lstrip_blocks the spaces and tabs between a line
// start and a block or comment tag are dropped (`{%+` disables it). transformers renders chat
// templates with trim_blocks=True and lstrip_blocks=True. Like Jinja's defaults, \r\n and \r become
// \n and one trailing newline of the source is dropped (keep_trailing_newline=False).
// Invariant: every token carries the 1-based line and column where it starts.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer::jinja {

enum class TokenType {
  kText,        // literal template text (value)
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifier or keyword (value)
  kString,      // decoded string literal (value)
  kInt,         // integer literal (value: digits, underscores removed)
  kFloat,       // float literal (value)
  kOp,          // operator or punctuation (value)
  kEof,
};

struct Token {
  TokenType type;
  std::string value;
  uint32_t line = 0;
  uint32_t col = 0;
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Throws gyre::Error "<origin>:<line>:<col>: ..." on unterminated tags, comments or strings and
// on characters that cannot start a token.
std::vector<Token> tokenize(std::string_view source, const LexerOptions& options,
                            const std::string& origin);

const char* token_type_name(TokenType t);

}  // namespace gyre::tokenizer::jinja
