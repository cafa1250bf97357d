// Rollout dump files (see header).
#include "gyre/rl/data/debug_data.h"

#include <filesystem>
#include <fstream>

#include "gyre/core/error.h"

namespace gyre::rl {

namespace {
using json = nlohmann::json;
constexpr const char* kFormat = "gyre-rollout-v1";
}  // namespace

std::string rollout_dump_path(const std::string& pattern, int64_t rollout_id) {
  static const std::string kKey = "{rollout_id}";
  if (pattern.find(kKey) == std::string::npos)
    GYRE_THROW(invalid_argument,
               "debug rollout data path '{}' has no {{rollout_id}} placeholder; e.g. "
               "/tmp/rollout_{{rollout_id}}.jsonl",
               pattern);
  std::string out = pattern;
  for (size_t at; (at = out.find(kKey)) != std::string::npos;)
    out.replace(at, kKey.size(), std::to_string(rollout_id));
  return out;
}

void save_rollout_dump(const std::string& path, int64_t rollout_id,
                       const std::vector<Sample>& samples) {
  std::filesystem::path p(path);
  if (p.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(p.parent_path(), ec);
    if (ec)
      GYRE_THROW(io,
                 "--save-debug-rollout-data: cannot create the folder {} of rollout dump '{}': {}",
                 p.parent_path().string(), path, ec.message());
  }
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) GYRE_THROW(io, "cannot write rollout dump '{}' (--save-debug-rollout-data)", path);
    out << json{{"format", kFormat}, {"rollout_id", rollout_id}, {"num_samples", samples.size()}}
               .dump()
        << '\n';
    for (const auto& s : samples)
      out << s.to_json().dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
    if (!out) GYRE_THROW(io, "write to rollout dump '{}' failed (disk full?)", path);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) GYRE_THROW(io, "cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

RolloutDump load_rollout_dump(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) GYRE_THROW(not_found, "rollout dump '{}' not found (--load-debug-rollout-data)", path);
  RolloutDump dump;
  std::string line;
  if (!std::getline(in, line)) GYRE_THROW(invalid_argument, "rollout dump '{}' is empty", path);
  json header = json::parse(line, nullptr, false);
  if (header.is_discarded() || !header.is_object() || header.value("format", "") != kFormat ||
      !header.value("rollout_id", json()).is_number_integer() ||
      !header.value("num_samples", json()).is_number_unsigned())
    GYRE_THROW(invalid_argument,
               "rollout dump '{}' line 1: expected header {{\"format\": \"{}\", \"rollout_id\", "
               "\"num_samples\"}} (was it written by gyre --save-debug-rollout-data?)",
               path, kFormat);
  dump.rollout_id = header["rollout_id"].get<int64_t>();
  size_t expected = header["num_samples"].get<size_t>();
  for (int64_t line_no = 2; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    std::string where = fmt::format("rollout dump {} line {}", path, line_no);
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) GYRE_THROW(invalid_argument, "{}: invalid JSON", where);
    dump.samples.push_back(Sample::from_json(j, where));
  }
  if (dump.samples.size() != expected)
    GYRE_THROW(invalid_argument,
               "rollout dump '{}' holds {} samples but its header says {} "
               "(truncated file?)",
               path, dump.samples.size(), expected);
  return dump;
}

}  // namespace gyre::rl
