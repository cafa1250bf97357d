// Post-processor implementations (see post_processor.h), as HF's processors/*.rs do for a single
// sequence with add_special_tokens.
#include "gyre/tokenizer/post_processor.h"

#include <nlohmann/json.hpp>

#include "gyre/core/error.h"

namespace gyre::tokenizer {
namespace {

using nlohmann::json;

class TemplateProcessor final : public PostProcessor {
 public:
  TemplateProcessor(const json& j, const std::string& where) {
    auto single = j.find("single");
    if (single == j.end() || !single->is_array())
      GYRE_THROW(invalid_argument, "{}: TemplateProcessing needs an array \"single\"", where);
    const json empty = json::object();
    const json& specials = j.contains("special_tokens") ? j["special_tokens"] : empty;
    for (size_t k = 0; k < single->size(); ++k) {
      const json& item = (*single)[k];
      std::string w = fmt::format("{}.single[{}]", where, k);
      if (item.contains("Sequence")) {
        pieces_.push_back({});  // a sequence slot
        has_sequence_ = true;
      } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
        std::string name = item["SpecialToken"]["id"].get<std::string>();
        auto it = specials.find(name);
        if (it == specials.end() || !it->contains("ids") || !(*it)["ids"].is_array())
          GYRE_THROW(invalid_argument,
                     "{}: special token \"{}\" is not defined in {}.special_tokens", w, name,
                     where);
        std::vector<int32_t> ids;
        for (auto& v : (*it)["ids"]) ids.push_back(v.get<int32_t>());
        pieces_.push_back(std::move(ids));
      } else {
        GYRE_THROW(invalid_argument,
                   "{}: expected {{\"Sequence\": ...}} or {{\"SpecialToken\": ...}}", w);
      }
    }
    if (!has_sequence_)
      GYRE_THROW(invalid_argument, "{}: the \"single\" template has no $A sequence", where);
  }
  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& p : pieces_) {
      if (p.empty())
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), p.begin(), p.end());
    }
    ids = std::move(out);
  }
  bool adds_special_tokens() const override { return true; }

 private:
  std::vector<std::vector<int32_t>> pieces_;  // empty entry = the sequence itself
  bool has_sequence_ = false;
};

// BertProcessing / RobertaProcessing: [CLS] ids [SEP] (given as ["token", id] pairs).
class ClsSepProcessor final : public PostProcessor {
 public:
  ClsSepProcessor(const json& j, const std::string& where) {
    auto get = [&](const char* key) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer())
        GYRE_THROW(invalid_argument, "{}.{}: expected [\"token\", id]", where, key);
      return (*it)[1].get<int32_t>();
    };
    cls_ = get("cls");
    sep_ = get("sep");
  }
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), cls_);
    ids.push_back(sep_);
  }
  bool adds_special_tokens() const override { return true; }

 private:
  int32_t cls_, sep_;
};

class NoopProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
  bool adds_special_tokens() const override { return false; }
};

class PrependProcessor final : public PostProcessor {
 public:
  explicit PrependProcessor(int32_t id) : id_(id) {}
  void process(std::vector<int32_t>& ids) const override { ids.insert(ids.begin(), id_); }
  bool adds_special_tokens() const override { return true; }

 private:
  int32_t id_;
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> v)
      : items_(std::move(v)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (auto& p : items_) p->process(ids);
  }
  bool adds_special_tokens() const override {
    for (auto& p : items_)
      if (p->adds_special_tokens()) return true;
    return false;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

}  // namespace

std::unique_ptr<PostProcessor> PostProcessor::prepend(int32_t bos) {
  return std::make_unique<PrependProcessor>(bos);
}

std::unique_ptr<PostProcessor> PostProcessor::from_json(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    GYRE_THROW(invalid_argument, "{}: expected an object with a string \"type\"", where);
  std::string type = j["type"].get<std::string>();
  if (type == "TemplateProcessing") return std::make_unique<TemplateProcessor>(j, where);
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return std::make_unique<ClsSepProcessor>(j, where);
  if (type == "ByteLevel") return std::make_unique<NoopProcessor>();
  if (type == "Sequence") {
    auto it = j.find("processors");
    if (it == j.end() || !it->is_array())
      GYRE_THROW(invalid_argument, "{}: Sequence needs an array \"processors\"", where);
    std::vector<std::unique_ptr<PostProcessor>> v;
    for (size_t k = 0; k < it->size(); ++k) {
      auto p = from_json((*it)[k], fmt::format("{}.processors[{}]", where, k));
      if (p) v.push_back(std::move(p));
    }
    return std::make_unique<SequenceProcessor>(std::move(v));
  }
  GYRE_THROW(unsupported,
             "{}: post-processor type \"{}\" is not supported (supported: TemplateProcessing, "
             "BertProcessing, RobertaProcessing, ByteLevel, Sequence)",
             where, type);
}

}  // namespace gyre::tokenizer
