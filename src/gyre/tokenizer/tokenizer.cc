// Tokenizer loading and the encode/decode pipeline (see tokenizer.h). The stages and their order
// are HF tokenizers' TokenizerImpl::encode_single_sequence: added tokens on the raw text ->
// normalizer -> added tokens on the normalized text -> pre-tokenizer -> model per piece ->
// post-processor; decode: ids -> token strings (added tokens by content) -> decoder chain -> join.
#include "gyre/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/thread_pool.h"
#include "gyre/tokenizer/added_tokens.h"
#include "gyre/tokenizer/bpe.h"
#include "gyre/tokenizer/decoder.h"
#include "gyre/tokenizer/normalizer.h"
#include "gyre/tokenizer/post_processor.h"
#include "gyre/tokenizer/pretokenizer.h"
#include "gyre/tokenizer/tokenizer_json.h"
#include "gyre/tokenizer/utf8_util.h"

namespace gyre::tokenizer {

using nlohmann::json;

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  AddedVocabulary added;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  int32_t vocab_size = 0;
  std::optional<std::string> bos, eos;
  std::optional<int32_t> bos_id, eos_id;

  void encode_text(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
};

namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (!std::filesystem::exists(path))
      GYRE_THROW(not_found, "{}: file not found (expected a Hugging Face tokenizer.json)", path);
    GYRE_THROW(io, "{}: cannot open for reading", path);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::unique_ptr<BpeModel> load_model(TokenizerJson& tj, bool byte_level, const std::string& name) {
  auto mit = tj.doc.find("model");
  if (mit == tj.doc.end() || !mit->is_object())
    GYRE_THROW(invalid_argument,
               "{}: missing \"model\" object (a Hugging Face tokenizer.json has model.type, "
               "model.vocab and model.merges)",
               name);
  const json& m = *mit;
  std::string type;
  if (m.contains("type") && m["type"].is_string())
    type = m["type"].get<std::string>();
  else if (tj.has_merges)
    type = "BPE";  // old files omit the tag; HF infers the model from its fields
  if (type != "BPE")
    GYRE_THROW(unsupported,
               "{}: model.type \"{}\" is not supported: gyre implements BPE tokenizers only "
               "(Unigram, WordPiece and WordLevel are not implemented)",
               name, type.empty() ? "<missing>" : type);
  if (!tj.has_vocab) GYRE_THROW(invalid_argument, "{}: model.vocab is missing", name);
  if (!tj.has_merges) GYRE_THROW(invalid_argument, "{}: model.merges is missing", name);
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    GYRE_THROW(unsupported,
               "{}: model.dropout = {} is not supported (BPE dropout makes encodes random; set it "
               "to null for inference and RL)",
               name, m["dropout"].dump());
  BpeConfig cfg;
  cfg.vocab = std::move(tj.vocab);
  cfg.merges = std::move(tj.merges);
  auto str_or_empty = [&](const char* key) {
    return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : std::string();
  };
  if (m.contains("unk_token") && m["unk_token"].is_string())
    cfg.unk_token = m["unk_token"].get<std::string>();
  cfg.continuing_subword_prefix = str_or_empty("continuing_subword_prefix");
  cfg.end_of_word_suffix = str_or_empty("end_of_word_suffix");
  auto flag = [&](const char* key) {
    return m.contains(key) && m[key].is_boolean() && m[key].get<bool>();
  };
  cfg.fuse_unk = flag("fuse_unk");
  cfg.byte_fallback = flag("byte_fallback");
  cfg.ignore_merges = flag("ignore_merges");
  cfg.byte_level = byte_level;
  if (const char* env = std::getenv("GYRE_TOKENIZER_NO_CACHE"); env && env[0] == '1')
    cfg.use_cache = false;
  return std::make_unique<BpeModel>(std::move(cfg));
}

std::vector<AddedToken> load_added(const json& doc, const std::string& name) {
  std::vector<AddedToken> out;
  auto it = doc.find("added_tokens");
  if (it == doc.end() || it->is_null()) return out;
  if (!it->is_array()) GYRE_THROW(invalid_argument, "{}: \"added_tokens\" must be an array", name);
  for (size_t k = 0; k < it->size(); ++k) {
    const json& t = (*it)[k];
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
        !t.contains("content") || !t["content"].is_string())
      GYRE_THROW(invalid_argument,
                 "{}: added_tokens[{}] needs an integer \"id\" and a string \"content\"", name, k);
    AddedToken a;
    a.id = t["id"].get<int32_t>();
    a.content = t["content"].get<std::string>();
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    a.single_word = t.value("single_word", false);
    a.normalized = t.value("normalized", !a.special);
    out.push_back(std::move(a));
  }
  return out;
}

// HF does not trust the ids written in added_tokens: it re-adds the tokens in id order, giving each
// the id of the same content in the vocab, or else the next id after the vocab / the last added
// token (AddedVocabulary::add_tokens). Real files agree with that; we follow HF where they do not.
std::vector<AddedToken> assign_added_ids(std::vector<AddedToken> tokens, const BpeModel& model,
                                         const std::string& name) {
  std::stable_sort(tokens.begin(), tokens.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  std::vector<AddedToken> out;
  std::unordered_map<std::string, int32_t> seen;
  const int64_t vocab_len = int64_t(model.vocab_len());
  int64_t max_added = -1;
  for (auto& t : tokens) {
    if (seen.count(t.content)) continue;
    int64_t id;
    if (auto v = model.token_to_id(t.content)) {
      id = *v;
    } else {
      id = max_added < 0 ? vocab_len
                         : (max_added >= vocab_len || vocab_len == 0 ? max_added + 1 : vocab_len);
    }
    if (id != t.id)
      gyre::log::warn(
          "{}: added token \"{}\" has id {} in the file but Hugging Face assigns {}; using {}",
          name, t.content, t.id, id, id);
    t.id = int32_t(id);
    max_added = std::max(max_added, id);
    seen.emplace(t.content, t.id);
    out.push_back(std::move(t));
  }
  return out;
}

// tokenizer_config.json spells special tokens as a string or as {"content": ...}.
std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// Per-thread scratch for encode (no allocation per call once warm).
struct Scratch {
  std::vector<TextSplit> raw_splits, norm_splits;
  std::string normalized;
  Pieces pieces;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::shared_ptr<const Tokenizer> Tokenizer::from_json_string(std::string_view text,
                                                             const std::string& name) {
  TokenizerJson tj = parse_tokenizer_json(text, name);
  auto impl = std::make_unique<Impl>();
  const json& doc = tj.doc;
  auto field = [&](const char* key) -> const json& {
    static const json null_json;
    auto it = doc.find(key);
    return it == doc.end() ? null_json : *it;
  };
  impl->normalizer = Normalizer::from_json(field("normalizer"), name + ": normalizer");
  impl->pre_tokenizer = PreTokenizer::from_json(field("pre_tokenizer"), name + ": pre_tokenizer");
  impl->post_processor =
      PostProcessor::from_json(field("post_processor"), name + ": post_processor");
  impl->decoder = Decoder::from_json(field("decoder"), name + ": decoder");
  const bool byte_level = impl->pre_tokenizer && impl->pre_tokenizer->byte_level();
  impl->model = load_model(tj, byte_level, name);
  impl->added = AddedVocabulary(assign_added_ids(load_added(doc, name), *impl->model, name));
  int32_t max_id = impl->model->max_id();
  for (const auto& t : impl->added.tokens()) max_id = std::max(max_id, t.id);
  impl->vocab_size = max_id + 1;
  return std::shared_ptr<const Tokenizer>(new Tokenizer(std::move(impl)));
}

std::shared_ptr<const Tokenizer> Tokenizer::from_file(const std::string& path) {
  return from_json_string(read_text_file(path), path);
}

std::shared_ptr<const Tokenizer> Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::string tj = (fs::path(dir) / "tokenizer.json").string();
  if (!fs::exists(tj))
    GYRE_THROW(not_found, "{}: no tokenizer.json in this directory (pass a Hugging Face model dir)",
               dir);
  auto base = from_file(tj);
  std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
  if (!fs::exists(cfg_path)) return base;
  json cfg;
  try {
    cfg = json::parse(read_text_file(cfg_path));
  } catch (const json::exception& e) {
    GYRE_THROW(invalid_argument, "{}: invalid JSON: {}", cfg_path, e.what());
  }
  if (!cfg.is_object()) GYRE_THROW(invalid_argument, "{}: top level must be an object", cfg_path);
  // The shared_ptr is still the only owner: finish configuring before handing it out.
  auto* t = const_cast<Tokenizer*>(base.get());
  Impl& impl = *t->impl_;
  impl.bos = config_token(cfg, "bos_token");
  impl.eos = config_token(cfg, "eos_token");
  auto resolve = [&](const std::optional<std::string>& tok, const char* key) {
    std::optional<int32_t> id;
    if (!tok) return id;
    id = t->token_to_id(*tok);
    if (!id)
      GYRE_THROW(invalid_argument, "{}: {} \"{}\" is not a token of {}", cfg_path, key, *tok, tj);
    return id;
  };
  impl.bos_id = resolve(impl.bos, "bos_token");
  impl.eos_id = resolve(impl.eos, "eos_token");
  bool add_bos = impl.bos_id.has_value();
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
    add_bos = cfg["add_bos_token"].get<bool>() && impl.bos_id.has_value();
  bool adds = impl.post_processor && impl.post_processor->adds_special_tokens();
  if (add_bos && !adds) {
    std::vector<std::unique_ptr<PostProcessor>> v;
    auto pre = PostProcessor::prepend(*impl.bos_id);
    if (impl.post_processor) {
      // Keep the existing (offset-only) processor; BOS goes first.
      struct Chain final : PostProcessor {
        std::unique_ptr<PostProcessor> a, b;
        void process(std::vector<int32_t>& ids) const override {
          a->process(ids);
          b->process(ids);
        }
        bool adds_special_tokens() const override { return true; }
      };
      auto c = std::make_unique<Chain>();
      c->a = std::move(impl.post_processor);
      c->b = std::move(pre);
      impl.post_processor = std::move(c);
    } else {
      impl.post_processor = std::move(pre);
    }
  }
  return base;
}

void Tokenizer::Impl::encode_normalized(std::string_view text, bool at_start,
                                        std::vector<int32_t>& out) const {
  Pieces& p = scratch().pieces;
  p.clear();
  p.items.push_back({text, at_start});
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(p);
  for (const Piece& piece : p.items) model->encode_word(piece.text, out);
}

void Tokenizer::Impl::encode_text(std::string_view text, bool at_start,
                                  std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string_view norm = text;
  std::string normalized;
  if (normalizer) {
    normalized.assign(text);
    normalizer->normalize(normalized);
    norm = normalized;
  }
  if (!added.has_normalized_tokens()) return encode_normalized(norm, at_start, out);
  std::vector<TextSplit> splits;
  added.split(norm, /*normalized_set=*/true, splits);
  for (const auto& s : splits) {
    if (s.id >= 0)
      out.push_back(s.id);
    else if (s.end > s.begin)
      encode_normalized(norm.substr(s.begin, s.end - s.begin), at_start && s.begin == 0, out);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!utf8_is_valid(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  auto& splits = scratch().raw_splits;
  splits.clear();
  impl_->added.split(text, /*normalized_set=*/false, splits);
  // Copy: encode_text may reuse the scratch vector through nested calls.
  std::vector<TextSplit> local(splits.begin(), splits.end());
  for (const auto& s : local) {
    if (s.id >= 0)
      out.push_back(s.id);
    else if (s.end > s.begin)
      impl_->encode_text(text.substr(s.begin, s.end - s.begin), s.begin == 0, out);
  }
  if (add_special_tokens && impl_->post_processor) impl_->post_processor->process(out);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  gyre::parallel_for(int64_t(texts.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[size_t(i)] = encode(texts[size_t(i)], add_special_tokens);
  });
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* a = impl_->added.by_id(id)) {
      if (!(skip_special_tokens && a->special)) tokens.push_back(a->content);
    } else if (const std::string* t = impl_->model->id_to_token(id)) {
      tokens.push_back(*t);
    }
  }
  std::string out;
  if (impl_->decoder) {
    impl_->decoder->decode_chain(tokens);
    for (auto& t : tokens) out += t;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
  }
  // Token strings are valid UTF-8 by construction, but a decoder-less byte_fallback vocab or a
  // Replace decoder could still join odd pieces: keep the valid-UTF-8 promise.
  if (!utf8_is_valid(out)) out = utf8_lossy(out);
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* a = impl_->added.by_content(token)) return a->id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* a = impl_->added.by_id(id)) return a->content;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  GYRE_THROW(not_found, "token id {} is not in the vocabulary (vocab_size {})", id,
             impl_->vocab_size);
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* a = impl_->added.by_id(id);
  return a && a->special;
}

std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos_id; }
std::optional<std::string> Tokenizer::bos_token() const { return impl_->bos; }
std::optional<std::string> Tokenizer::eos_token() const { return impl_->eos; }

}  // namespace gyre::tokenizer
