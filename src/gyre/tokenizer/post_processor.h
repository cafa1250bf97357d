// Post-processors of tokenizer.json ("post_processor"), applied by encode(add_special_tokens=true)
// to a single sequence: TemplateProcessing (its "single" template), BertProcessing,
// RobertaProcessing, ByteLevel (offsets only: ids unchanged), Sequence.
// Invariants: immutable; `adds_special_tokens()` says whether any part inserts ids.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace gyre::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;
  virtual bool adds_special_tokens() const = 0;
  static std::unique_ptr<PostProcessor> from_json(const nlohmann::json& j,
                                                  const std::string& where);
  // Prepends `bos` (used by Tokenizer::from_dir when tokenizer_config.json asks for a BOS that
  // tokenizer.json's post-processor does not add).
  static std::unique_ptr<PostProcessor> prepend(int32_t bos);
};

}  // namespace gyre::tokenizer
