// --rm-type remote_rm: POST {"prompt","response","label"} as JSON to --rm-url and take the JSON
// reply as the reward (slime's remote_rm). Each attempt has a total timeout (connect + write +
// read); a connection error, timeout, non-2xx status or non-JSON body is retried up to
// rm_max_retries attempts with backoff min(2^k, rm_backoff_cap_s) + U(0,1) seconds, then the sample
// gets Reward.error (slime raises; here the sample is marked failed instead of killing the run).
// Requests of one score() call run concurrently (up to 16 in flight, like a connection pool).
#pragma once
#include <string>
#include <vector>

#include "gyre/rl/rewards/reward.h"

namespace gyre::rl::rewards {

struct HttpResult {
  int status = 0;  // 0: no HTTP response (connection error / timeout, see error)
  std::string body;
  std::string error;
};
// One blocking HTTP/1.1 POST with a total deadline. URL form: http://host[:port][/path].
HttpResult http_post_json(const std::string& url, const std::string& body, double timeout_s);

class RemoteRewardModel : public RewardFunction {
 public:
  explicit RemoteRewardModel(const RewardConfig& config);
  std::vector<Reward> score(const std::vector<RewardInput>& inputs) override;
  Reward score_one(const RewardInput& input);

 private:
  RewardConfig config_;
};

}  // namespace gyre::rl::rewards
