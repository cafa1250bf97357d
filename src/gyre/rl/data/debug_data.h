// Rollout dumps for --save-debug-rollout-data / --load-debug-rollout-data (slime saves
// `path_{rollout_id}.pt` pickles; we write JSON Lines): a header line
//   {"format": "gyre-rollout-v1", "rollout_id": N, "num_samples": K}
// followed by one Sample::to_json() per line, so a dump can be grepped, streamed and replayed into
// training without a rollout engine. Loading checks the header, the count and every sample, and
// errors name the file and line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gyre/rl/sample.h"

namespace gyre::rl {

struct RolloutDump {
  int64_t rollout_id = 0;
  std::vector<Sample> samples;
};

// Replaces every `{rollout_id}` in `pattern` (slime's path template); a pattern without the
// placeholder is an Error (each rollout would overwrite the previous dump).
std::string rollout_dump_path(const std::string& pattern, int64_t rollout_id);
void save_rollout_dump(const std::string& path, int64_t rollout_id,
                       const std::vector<Sample>& samples);
RolloutDump load_rollout_dump(const std::string& path);

}  // namespace gyre::rl
