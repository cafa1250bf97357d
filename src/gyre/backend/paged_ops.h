// Paged KV-cache ops of the rollout engine (ops::paged_kv_write, ops::paged_attention). They are
// declared in ops.h with the other ops (models call ops:: only); this header exists so rollout code
// can say what it uses. Implementation: paged_ops.cc (checks) over backend/cpu/paged_attention.cc.
#pragma once
#include "gyre/backend/ops.h"
