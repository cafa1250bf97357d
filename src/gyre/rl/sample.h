// Sample: one trajectory of an RL step — slime's `Sample` (slime/utils/types.py) in C++.
//
// tokens = prompt ids followed by the response ids (token in, token out: never re-tokenized);
// the last `response_length` of them are the response. Per-response-token arrays (loss_mask,
// rollout_log_probs, teacher_log_probs) are either empty (loss_mask empty = all ones, as slime's
// None) or exactly response_length long. Multi-turn trajectories record `segments`: contiguous runs
// of the response with their role and whether they are trained on (generated turns are; tool and
// environment output is not, and carries log-prob 0 and loss mask 0 as slime's
// append_response_tokens does). validate() checks all of this with errors that name the field.
//
// JSON (to_json/from_json) uses slime's to_dict keys (status as lowercase string; unknown keys kept
// in `extra` and written back) so --save-debug-rollout-data dumps round-trip exactly; non-finite
// log-probs are written as the strings "nan", "inf", "-inf" because JSON has no such numbers.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gyre::rl {

enum class SampleStatus { pending, completed, truncated, aborted, failed };

const char* status_name(SampleStatus status);  // "pending", "completed", ...
// Parses a status name; Error naming `where` and the accepted names otherwise.
SampleStatus parse_status(std::string_view name, const std::string& where = "status");

// A contiguous run [begin, end) of response positions (0 = first response token).
struct Segment {
  int64_t begin = 0, end = 0;
  std::string role = "assistant";  // "assistant" (generated), "tool", "user", "environment", ...
  bool trainable = true;           // the segment's loss mask: 1 for every token, or 0
  bool operator==(const Segment&) const = default;
};

struct Sample {
  std::optional<int64_t> index;        // global running sample counter (data buffer)
  std::optional<int64_t> group_index;  // one per prompt; the n copies of a prompt share it
  std::optional<int64_t> rollout_id;   // fan-out siblings of one rollout share it
  nlohmann::json prompt = "";          // a string, or a list of chat messages
  std::vector<int32_t> tokens;         // prompt + response ids
  std::string response;                // decoded response text (for rewards / logs)
  int64_t response_length = 0;
  nlohmann::json label;   // null when the dataset has no --label-key
  nlohmann::json reward;  // null until scored; a number, or an object (pick with --reward-key)
  std::vector<uint8_t> loss_mask;        // empty = all ones
  std::vector<float> rollout_log_probs;  // engine log-probs of the response tokens
  std::vector<float> teacher_log_probs;  // on-policy distillation teacher
  SampleStatus status = SampleStatus::pending;
  nlohmann::json metadata = nlohmann::json::object();
  std::vector<std::string> weight_versions;         // engine weight version per generation call
  std::vector<Segment> segments;                    // multi-turn structure; empty for single-turn
  bool remove_sample = false;                       // kept for reward stats, loss mask zeroed
  std::string session_id;                           // router affinity key (consistent hashing)
  nlohmann::json extra = nlohmann::json::object();  // unknown JSON keys, preserved

  int64_t prompt_length() const { return int64_t(tokens.size()) - response_length; }
  // Tokens that count in the loss: sum of loss_mask (response_length when the mask is empty), 0
  // when remove_sample is set.
  int64_t effective_response_length() const;
  // The scalar reward: `reward` itself, or reward[key] when it is an object (--reward-key).
  double reward_value(const std::string& key = "") const;
  // SGLang finish_reason.type -> status: "length" truncated, "abort" aborted, "stop" completed;
  // anything else leaves the status unchanged (slime behaviour).
  void apply_finish_reason(std::string_view reason);
  // Appends one turn to the response (slime's append_response_tokens): trainable tokens need one
  // log-prob each; non-trainable (tool/environment) tokens must not pass log-probs and get log-prob
  // 0 and loss mask 0. Records a Segment. Error when the sample's arrays are inconsistent.
  void append_response(const std::vector<int32_t>& new_tokens, const std::vector<float>& log_probs,
                       bool trainable, const std::string& role = "assistant",
                       const std::string& text = "");
  // Checks the invariants in the header comment; Error names `where`, the field and the sizes.
  void validate(const std::string& where = "sample") const;

  nlohmann::json to_json() const;
  // Strict: wrong types or sizes raise Error naming `where` and the field.
  static Sample from_json(const nlohmann::json& j, const std::string& where = "sample");
};

}  // namespace gyre::rl
