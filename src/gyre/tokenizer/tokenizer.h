// gyre's tokenizer: Hugging Face tokenizer.json (BPE model) loaded natively and encoding exactly as
// the HF `tokenizers` Rust library does (added tokens, normalizer, pre-tokenizer, BPE,
// post-processor, decoder), plus a streaming detokenizer for the rollout engine and server.
// Invariants: a Tokenizer is immutable after loading and safe to use from many threads at once
// (the only mutable state, the BPE word cache, is internally locked). Input text that is not valid
// UTF-8 is repaired first (each invalid subpart -> U+FFFD, as Rust's from_utf8_lossy); decode
// always returns valid UTF-8. decode skips ids that name no token, as HF does (models often have
// padded embedding rows beyond the tokenizer's vocab).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::tokenizer {

class Tokenizer {
 public:
  // Loads a tokenizer.json. Errors (gyre::Error): file missing (not_found), invalid JSON or fields
  // (invalid_argument, naming the field and line), non-BPE model types (unsupported, naming it).
  static std::shared_ptr<const Tokenizer> from_file(const std::string& tokenizer_json_path);
  // DIR/tokenizer.json plus, when present, DIR/tokenizer_config.json: bos_token / eos_token
  // strings and add_bos_token. If the config asks for a BOS (add_bos_token: true, or a bos_token
  // with add_bos_token absent) and tokenizer.json's post-processor adds no special tokens itself
  // (early Llama 3 exports lack the TemplateProcessing that later ones carry),
  // encode(add_special_tokens=true) prepends the BOS id.
  static std::shared_ptr<const Tokenizer> from_dir(const std::string& dir);
  // From the JSON text itself; `name` is used in error messages.
  static std::shared_ptr<const Tokenizer> from_json_string(std::string_view json,
                                                           const std::string& name = "<json>");

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Same as encode on each text, spread over gyre's thread pool.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const;  // model vocab + added tokens (max id + 1)
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Throws Error(not_found) for an id that names no token.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;
  std::optional<std::string> bos_token() const;
  std::optional<std::string> eos_token() const;

  ~Tokenizer();
  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streaming decode: push ids one at a time; each call returns the new text that is safe to emit
// (never a broken UTF-8 sequence, never text a later token could still change). The concatenation
// of all returns plus finish() equals tokenizer.decode(all ids). Follows HF's DecodeStream: it
// re-decodes a short window of recent ids and emits the part past the previously emitted prefix.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens);
  std::string push(int32_t id);
  // Flushes what is still held back (e.g. an incomplete UTF-8 sequence at the end, which becomes
  // U+FFFD exactly as decode() would render it).
  std::string finish();

 private:
  std::shared_ptr<const Tokenizer> tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // window: ids_[0, prefix_ids_) decode to prefix_
  size_t prefix_ids_ = 0;
  std::string prefix_;
};

}  // namespace gyre::tokenizer
