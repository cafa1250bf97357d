// The Hugging Face checkpoint layout implied by a ModelConfig: every tensor name and shape that a
// transformers model of that architecture saves (model.embed_tokens.weight, model.layers.{i}...,
// model.norm.weight, lm_head.weight unless tied). Used by the model loader to bind weights and by
// `gyre inspect` / checkpoint checks to report missing, unexpected or misshapen tensors.
//
// Invariants: names are in layer order (embedding, layers 0..L-1, final norm, lm_head); the sum of
// the shapes' element counts equals ModelConfig::num_parameters().
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "gyre/core/tensor.h"
#include "gyre/model/config.h"

namespace gyre::model {

std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& cfg);

// Differences between what a config expects and what a checkpoint holds.
struct TensorMismatch {
  std::vector<std::string> missing;     // expected, absent from the checkpoint
  std::vector<std::string> unexpected;  // present, not expected
  // name, expected shape, actual shape
  std::vector<std::pair<std::string, std::pair<Shape, Shape>>> wrong_shape;
  bool ok() const { return missing.empty() && unexpected.empty() && wrong_shape.empty(); }
};
// Compares expected_tensors(cfg) with (name, shape) pairs found in a checkpoint. Tensors that
// transformers also ignores on load (lm_head.weight when tied, legacy rotary_emb.inv_freq) are not
// reported as unexpected.
TensorMismatch compare_tensors(const ModelConfig& cfg,
                               const std::vector<std::pair<std::string, Shape>>& actual);

}  // namespace gyre::model
