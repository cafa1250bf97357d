// F1 and GPQA rewards (see text_rewards.h).
#include "gyre/rl/rewards/text_rewards.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

#include "gyre/rl/rewards/regex.h"

namespace gyre::rl::rewards {
namespace {

std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string strip_chain_of_thought(const std::string& text) {
  const size_t p = text.rfind("</think>");
  return p == std::string::npos ? text : text.substr(p + 8);
}

std::string normalize_text(const std::string& text) {
  std::string out;
  bool gap = false;
  for (unsigned char c : text) {
    const char l = char(std::tolower(c));
    if ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9')) {
      if (gap && !out.empty()) out += ' ';
      out += l;
      gap = false;
    } else {
      gap = true;
    }
  }
  return out;
}

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Python str() of a JSON scalar.
std::string py_str(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  return v.dump();
}

bool truthy(const nlohmann::json& v) {
  if (v.is_null()) return false;
  if (v.is_string()) return !v.get<std::string>().empty();
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return v.get<double>() != 0;
  return !v.empty();
}

}  // namespace

std::string f1_normalize_answer(const std::string& s) {
  std::string t;
  for (unsigned char c : s) {
    const char l = char(std::tolower(c));
    if (!std::ispunct(static_cast<unsigned char>(l))) t += l;
  }
  static const Regex articles(R"(\b(a|an|the)\b)");
  t = articles.sub(t, " ");
  std::string out;
  for (const auto& w : split_ws(t)) out += (out.empty() ? "" : " ") + w;
  return out;
}

F1 f1_score(const std::optional<std::string>& prediction, const std::string& ground_truth) {
  if (!prediction) return {};
  const std::string p = f1_normalize_answer(*prediction), g = f1_normalize_answer(ground_truth);
  auto special = [](const std::string& s) { return s == "yes" || s == "no" || s == "noanswer"; };
  if ((special(p) || special(g)) && p != g) return {};
  const auto pt = split_ws(p), gt = split_ws(g);
  std::map<std::string, int> pc, gc;
  for (const auto& w : pt) ++pc[w];
  for (const auto& w : gt) ++gc[w];
  int same = 0;
  for (const auto& [w, n] : pc)
    if (auto it = gc.find(w); it != gc.end()) same += std::min(n, it->second);
  if (same == 0) return {};
  const double precision = double(same) / double(pt.size());
  const double recall = double(same) / double(gt.size());
  return {2 * precision * recall / (precision + recall), precision, recall};
}

std::optional<std::string> gpqa_extract_letter(const std::optional<std::string>& response,
                                               const std::vector<std::string>& valid_letters) {
  if (!response || response->empty()) return std::nullopt;
  const std::string text = strip_chain_of_thought(*response);
  static const Regex p1(R"((?:answer|option|choice)\s*(?:is|:)?\s*([A-Z]))", true),
      p2(R"(([A-Z])\s*(?:is\s*(?:the)?\s*correct))", true),
      p3(R"(final\s*(?:answer|option)\s*(?:is|:)?\s*([A-Z]))", true);
  std::vector<std::string> valid;
  for (const auto& l : valid_letters) valid.push_back(upper(l));
  auto is_valid = [&](const std::string& l) {
    return std::find(valid.begin(), valid.end(), l) != valid.end();
  };
  for (const Regex* p : {&p1, &p2, &p3})
    if (auto m = p->search(text)) {
      const std::string letter = upper(m->group(1));
      if (is_valid(letter)) return letter;
    }
  static const Regex standalone(R"(\b([A-Z])\b)");
  const auto all = standalone.find_all(text);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string letter = upper(it->group(1));
    if (is_valid(letter)) return letter;
  }
  return std::nullopt;
}

double gpqa_reward(const std::optional<std::string>& response, const nlohmann::json& label,
                   const nlohmann::json& metadata_in) {
  if (!response) return 0.0;
  const nlohmann::json metadata = metadata_in.is_object() ? metadata_in : nlohmann::json::object();
  std::vector<nlohmann::json> choices;
  bool has_choices = false;
  if (metadata.contains("choices") && !metadata["choices"].is_null()) {
    has_choices = true;
    for (const auto& c : metadata["choices"]) choices.push_back(c);  // list, or dict values
  }
  std::vector<std::string> valid;
  if (metadata.contains("valid_letters") && truthy(metadata["valid_letters"])) {
    for (const auto& l : metadata["valid_letters"]) valid.push_back(upper(py_str(l)));
  } else if (has_choices && !choices.empty()) {
    for (size_t i = 0; i < choices.size(); ++i) valid.push_back(std::string(1, char('A' + i)));
  } else {
    for (char c = 'A'; c <= 'J'; ++c) valid.push_back(std::string(1, c));
  }
  std::optional<std::string> correct;
  if (metadata.contains("correct_letter") && metadata["correct_letter"].is_string()) {
    correct = upper(strip(metadata["correct_letter"].get<std::string>()));
    if (correct->empty()) correct.reset();
  }
  std::optional<std::string> label_text;
  if (label.is_string()) {
    label_text = strip(label.get<std::string>());
    if (label_text->size() == 1 && !correct &&
        std::find(valid.begin(), valid.end(), upper(*label_text)) != valid.end())
      correct = upper(*label_text);
  } else if (label.is_number() || label.is_boolean()) {
    const long idx = label.is_boolean() ? long(label.get<bool>()) : long(label.get<double>());
    if (idx >= 0 && size_t(idx) < valid.size()) correct = valid[size_t(idx)];
  }
  std::optional<std::string> matched_answer;  // Python: metadata.setdefault("correct_answer", ...)
  if (!correct && !choices.empty() && label_text && !label_text->empty()) {
    const std::string nl = normalize_text(*label_text);
    for (size_t i = 0; i < choices.size() && i < valid.size(); ++i)
      if (normalize_text(py_str(choices[i])) == nl) {
        correct = valid[i];
        matched_answer = py_str(choices[i]);
        break;
      }
  }
  const auto extracted = gpqa_extract_letter(response, valid);
  if (extracted && correct) return *extracted == *correct ? 1.0 : 0.0;

  std::vector<std::string> candidates;
  if (correct && !choices.empty()) {
    auto it = std::find(valid.begin(), valid.end(), *correct);
    if (it != valid.end() && size_t(it - valid.begin()) < choices.size())
      candidates.push_back(py_str(choices[size_t(it - valid.begin())]));
  }
  if (metadata.contains("correct_answer") && truthy(metadata["correct_answer"]))
    candidates.push_back(py_str(metadata["correct_answer"]));
  else if (matched_answer)
    candidates.push_back(*matched_answer);
  if (metadata.contains("answer_text") && truthy(metadata["answer_text"]))
    candidates.push_back(py_str(metadata["answer_text"]));
  if (label_text && !label_text->empty()) candidates.push_back(*label_text);
  const std::string resp = normalize_text(strip_chain_of_thought(*response));
  for (const auto& c : candidates) {
    const std::string t = normalize_text(c);
    if (!t.empty() && resp.find(t) != std::string::npos) return 1.0;
  }
  if (extracted && !correct && label_text && !label_text->empty())
    return *extracted == upper(*label_text) ? 1.0 : 0.0;
  return 0.0;
}

}  // namespace gyre::rl::rewards
