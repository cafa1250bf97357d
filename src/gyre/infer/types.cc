// Names of the rollout types' enums (SGLang's finish_reason.type strings).
#include "gyre/infer/types.h"

namespace gyre::infer {

const char* finish_type_name(FinishType t) {
  switch (t) {
    case FinishType::none: return "none";
    case FinishType::stop: return "stop";
    case FinishType::length: return "length";
    case FinishType::abort: return "abort";
  }
  return "unknown";
}

}  // namespace gyre::infer
