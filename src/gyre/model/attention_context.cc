// AttentionContext's default rope_attend (attention_context.h): the two ops it stands for.
#include "gyre/model/attention_context.h"

#include "gyre/backend/fused_rope_ops.h"

namespace gyre::model {

void AttentionContext::rope_attend(int64_t layer, Tensor& q, Tensor& k, const Tensor& v,
                                   const Tensor& positions, const Tensor& cos, const Tensor& sin,
                                   float scale, Tensor& out) {
  ops::rope_qk_(q, k, positions, cos, sin);
  attend(layer, q, k, v, scale, out);
}

}  // namespace gyre::model
