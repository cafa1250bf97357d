// --custom-rm-path: user reward functions, in two forms (the C++ analogue of slime's
// "module.path.fn" hook).
//
// (a) A shared library (path ends in .so or contains ".so."), exporting
//       extern "C" int gyre_reward_v1(const char* request_json, char* out, size_t out_cap);
//     It returns 0 and writes a NUL-terminated JSON reply into out (out_cap bytes, 1 MiB), or
//     returns non-zero with an error message in out. It may be called from several threads at
//     once only if it is thread-safe; gyre serialises calls.
// (b) Anything else is a command line run with /bin/sh -c, speaking JSON lines on stdin/stdout:
//     one request line per sample, one reply line back. stderr passes through.
//
// Requests: {"prompt", "response", "label", "metadata"} -> reply {"reward": <number or object>}
// (or {"error": "..."} to fail that sample). With --group-rm the whole group goes in one request
// {"samples": [request, ...]} -> {"rewards": [...]} (same length).
// A process that exits, does not answer within custom_rm_timeout_s (it is SIGKILLed with its
// process group) or answers with a malformed line fails that request with a clear Reward.error;
// a dead process is restarted on the next request, so score() never hangs.
#pragma once
#include <memory>

#include "gyre/rl/rewards/reward.h"

namespace gyre::rl::rewards {

std::unique_ptr<RewardFunction> make_custom_reward_function(const RewardConfig& config);

}  // namespace gyre::rl::rewards
