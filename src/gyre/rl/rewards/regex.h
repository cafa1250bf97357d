// A small PCRE2 wrapper with Python `re` semantics for the patterns the rule-based rewards port
// from slime (search, findall, sub). Compiled in UTF + UCP mode so that \s, \b and case folding
// follow Unicode like Python 3 str patterns; invalid UTF-8 in the subject is tolerated.
// Invariants: a Regex is immutable after construction and safe to use from several threads;
// PCRE2 has no recursion-depth problem on long subjects (std::regex does), which matters for
// model responses of tens of kilobytes.
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace gyre::rl::rewards {

class Regex {
 public:
  struct Match {
    // [begin, end) byte offsets per group (0 = whole match); nullopt for a group that did not
    // participate.
    std::vector<std::optional<std::pair<size_t, size_t>>> spans;
    const std::string* subject = nullptr;
    std::string group(size_t i) const;  // "" for a non-participating group
    size_t begin() const { return spans[0]->first; }
    size_t end() const { return spans[0]->second; }
  };

  explicit Regex(const std::string& pattern, bool ignore_case = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // First match at or after `start` (re.search).
  std::optional<Match> search(const std::string& s, size_t start = 0) const;
  // Every non-overlapping match, left to right (re.finditer).
  std::vector<Match> find_all(const std::string& s) const;
  // re.sub with a replacement template where \1..\9 are group references.
  std::string sub(const std::string& s, const std::string& repl) const;
  std::string sub(const std::string& s, const std::function<std::string(const Match&)>& fn) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_;
};

}  // namespace gyre::rl::rewards
