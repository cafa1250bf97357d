// Jinja parser: tokens -> AST, with Jinja 3's operator precedence (or < and < not < comparisons <
// + - < ~ < * / // % < ** < unary - + < filters, tests and calls < postfix . [] ()).
// Statements: if/elif/else, for (with `if` filter and else), set (plain, tuple, namespace attribute
// and block form), macro, call, filter, with, raw (in the lexer), break, continue and transformers'
// generation block. include/extends/import/block are rejected (chat templates are one file).
// Invariant: nesting deeper than kMaxDepth raises an Error instead of overflowing the stack.
#pragma once
#include <string>
#include <vector>

#include "gyre/tokenizer/jinja/ast.h"
#include "gyre/tokenizer/jinja/lexer.h"

namespace gyre::tokenizer::jinja {

inline constexpr int kMaxParseDepth = 200;

// Throws gyre::Error "<origin>:<line>:<col>: template syntax error: ..." on malformed input.
Body parse(const std::vector<Token>& tokens, const std::string& origin);

}  // namespace gyre::tokenizer::jinja
