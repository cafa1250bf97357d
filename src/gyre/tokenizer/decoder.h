// Decoders of HF tokenizers' tokenizer.json ("decoder" field): ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, Sequence. Each rewrites the list of token strings (HF's decode_chain);
// the final text is the concatenation (HF's Decoder::decode joins with "").
// Invariants: output strings are valid UTF-8 (byte sequences that do not form UTF-8 become U+FFFD,
// as String::from_utf8_lossy); immutable, thread-safe.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace gyre::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  static std::unique_ptr<Decoder> from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace gyre::tokenizer
