// SAX loader of tokenizer.json (see tokenizer_json.h).
#include "gyre/tokenizer/tokenizer_json.h"

#include "gyre/core/error.h"

namespace gyre::tokenizer {
namespace {

using nlohmann::json;

class Sax final : public nlohmann::json_sax<json> {
 public:
  Sax(TokenizerJson& out, std::string_view text, const std::string& name)
      : out_(out), text_(text), name_(name) {}

  bool null() override { return value(json(nullptr)); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::vocab) return vocab_entry(v);
    return value(json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::vocab) return vocab_entry(int64_t(v));
    return value(json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
  bool string(string_t& v) override {
    if (mode_ == Mode::merges) {
      if (merge_depth_ == 0) {
        size_t sp = v.find(' ');
        if (sp == std::string::npos)
          fail(fmt::format("model.merges[{}] = \"{}\" is not \"left right\"", out_.merges.size(),
                           v));
        out_.merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
      } else {
        pair_.push_back(std::move(v));
      }
      return true;
    }
    return value(json(std::move(v)));
  }
  bool binary(binary_t&) override { return value(json(nullptr)); }

  bool start_object(std::size_t) override {
    if (mode_ != Mode::normal)
      fail(mode_ == Mode::vocab ? "model.vocab must map strings to ids"
                                : "model.merges entries must be strings");
    if (in_model() && key_ == "vocab") {
      mode_ = Mode::vocab;
      out_.has_vocab = true;
      // Reserving avoids re-copying a 150k-entry vector while it grows (untouched capacity costs
      // no memory pages).
      out_.vocab.reserve(text_.size() / 32);
      return true;
    }
    return open(json::object());
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool end_object() override {
    if (mode_ == Mode::vocab) {
      mode_ = Mode::normal;
      return true;
    }
    stack_.pop_back();
    stack_keys_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::vocab) fail("model.vocab values must be integer ids");
    if (mode_ == Mode::merges) {
      if (++merge_depth_ > 1) fail("model.merges entries must be \"a b\" or [\"a\", \"b\"]");
      pair_.clear();
      return true;
    }
    if (in_model() && key_ == "merges") {
      mode_ = Mode::merges;
      merge_depth_ = 0;
      out_.has_merges = true;
      out_.merges.reserve(text_.size() / 32);
      return true;
    }
    return open(json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::merges) {
      if (merge_depth_ == 0) {
        mode_ = Mode::normal;
        return true;
      }
      --merge_depth_;
      if (pair_.size() != 2)
        fail(fmt::format("model.merges[{}] has {} strings, expected 2", out_.merges.size(),
                         pair_.size()));
      out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      return true;
    }
    stack_.pop_back();
    stack_keys_.pop_back();
    return true;
  }
  bool parse_error(std::size_t pos, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    auto [line, col] = line_col(pos);
    GYRE_THROW(invalid_argument, "{}: invalid JSON at line {}, column {}: {}", name_, line, col,
               ex.what());
  }

 private:
  enum class Mode { normal, vocab, merges };

  bool in_model() const {
    return mode_ == Mode::normal && stack_.size() == 2 && stack_keys_[1] == "model";
  }
  [[noreturn]] void fail(const std::string& msg) {
    GYRE_THROW(invalid_argument, "{}: {}", name_, msg);
  }
  bool vocab_entry(int64_t id) {
    if (id < 0 || id > INT32_MAX)
      fail(fmt::format("model.vocab[\"{}\"] = {} is not a valid id", key_, id));
    out_.vocab.emplace_back(std::move(key_), int32_t(id));
    return true;
  }
  json* insert(json&& v) {
    if (stack_.empty()) {
      out_.doc = std::move(v);
      return &out_.doc;
    }
    json* top = stack_.back();
    if (top->is_object()) {
      json& slot = (*top)[key_];
      slot = std::move(v);
      return &slot;
    }
    top->push_back(std::move(v));
    return &top->back();
  }
  bool value(json&& v) {
    if (mode_ == Mode::vocab) fail(fmt::format("model.vocab[\"{}\"] must be an integer id", key_));
    if (mode_ == Mode::merges) fail("model.merges entries must be strings");
    insert(std::move(v));
    return true;
  }
  bool open(json&& v) {
    std::string k = !stack_.empty() && stack_.back()->is_object() ? key_ : std::string();
    stack_.push_back(insert(std::move(v)));
    stack_keys_.push_back(std::move(k));
    return true;
  }
  std::pair<size_t, size_t> line_col(size_t pos) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return {line, col};
  }

  TokenizerJson& out_;
  std::string_view text_;
  const std::string& name_;
  std::vector<json*> stack_;
  std::vector<std::string> stack_keys_;
  std::string key_;
  Mode mode_ = Mode::normal;
  int merge_depth_ = 0;
  std::vector<std::string> pair_;
};

}  // namespace

TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& name) {
  TokenizerJson out;
  Sax sax(out, text, name);
  json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json, true);
  if (!out.doc.is_object())
    GYRE_THROW(invalid_argument, "{}: the top level must be a JSON object", name);
  return out;
}

}  // namespace gyre::tokenizer
