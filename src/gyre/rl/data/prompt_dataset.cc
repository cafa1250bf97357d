// JSONL prompt dataset reader (see header).
#include "gyre/rl/data/prompt_dataset.h"

#include <fstream>
#include <sstream>

#include "gyre/core/error.h"
#include "gyre/core/logging.h"
#include "gyre/core/thread_pool.h"
#include "gyre/rl/data/slice.h"

namespace gyre::rl {

namespace {

using json = nlohmann::json;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;

// FNV-1a of one record, followed by a separator byte so record boundaries count.
uint64_t fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  return (h ^ 0xff) * 0x100000001b3ull;
}

// A value that may arrive as JSON text inside a string (slime accepts tools serialized this way).
bool decode_embedded(json& v) {
  if (!v.is_string()) return true;
  json parsed = json::parse(v.get<std::string>(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return false;
  v = std::move(parsed);
  return true;
}

// Builds the prompt Sample of one row, or returns the reason the row is malformed.
std::optional<std::string> row_to_sample(std::string_view line, const PromptDataOptions& o,
                                         Sample& out) {
  json row = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (row.is_discarded()) return "invalid JSON";
  if (!row.is_object()) return "the line is not a JSON object";
  auto p = row.find(o.input_key);
  if (p == row.end())
    return "no key '" + o.input_key + "' (set " + o.input_key_flag + " to the prompt column)";
  if (!p->is_string() && !p->is_array())
    return "'" + o.input_key + "' must be a string or a list of chat messages";
  if (p->is_array()) {
    for (const auto& m : *p)
      if (!m.is_object() || !m.contains("role"))
        return "'" + o.input_key + "' is a list but not of {role, content} messages";
  }
  if (o.label_key) {  // copied before the prompt is moved out (the keys may coincide)
    auto l = row.find(*o.label_key);
    out.label = l == row.end() ? json(nullptr) : *l;
  }
  out.prompt = std::move(*p);
  out.metadata = json::object();
  if (auto m = row.find(o.metadata_key); m != row.end() && !m->is_null()) {
    json md = std::move(*m);
    if (!decode_embedded(md) || !md.is_object())
      return "'" + o.metadata_key + "' must be an object (or a JSON string of one)";
    out.metadata = std::move(md);
  }
  if (auto t = row.find(o.tool_key); t != row.end() && !t->is_null()) {
    json tools = std::move(*t);
    if (!decode_embedded(tools) || !tools.is_array())
      return "'" + o.tool_key + "' must be a list of tools (or a JSON string of one)";
    out.metadata["tools"] = std::move(tools);
  }
  return std::nullopt;
}

}  // namespace

PromptDataset PromptDataset::load(const std::string& spec, const PromptDataOptions& options) {
  DataPath dp = parse_data_path(spec);
  if (ends_with(dp.path, ".parquet"))
    GYRE_THROW(unsupported,
               "--prompt-data '{}': parquet is not supported; convert it to JSONL (one JSON object "
               "per line)",
               dp.path);
  std::ifstream in(dp.path, std::ios::binary);
  if (!in) GYRE_THROW(not_found, "--prompt-data: cannot open '{}'", dp.path);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) GYRE_THROW(io, "--prompt-data: read error on '{}'", dp.path);
  PromptDataset d = parse(ss.str(), options, dp.path, dp.slice);
  d.source_ = spec;
  return d;
}

PromptDataset PromptDataset::parse(const std::string& text, const PromptDataOptions& options,
                                   const std::string& source,
                                   const std::optional<RowSlice>& slice) {
  if (options.max_prompt_len && !options.prompt_length)
    GYRE_THROW(invalid_argument,
               "--rollout-max-prompt-len needs a tokenizer to measure prompts (no length function "
               "was given)");
  if (options.max_prompt_len && *options.max_prompt_len <= 0)
    GYRE_THROW(invalid_argument, "--rollout-max-prompt-len must be positive, got {}",
               *options.max_prompt_len);
  // Non-blank lines with their 1-based line numbers; the slice selects among these.
  std::vector<std::pair<int64_t, std::string_view>> rows;
  size_t at = 0;
  int64_t line_no = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    size_t end = nl == std::string::npos ? text.size() : nl;
    ++line_no;
    std::string_view line(text.data() + at, end - at);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") != std::string_view::npos) rows.emplace_back(line_no, line);
    at = end + 1;
  }
  auto [begin, end] = slice ? slice->resolve(int64_t(rows.size()))
                            : std::pair<int64_t, int64_t>{0, int64_t(rows.size())};
  PromptDataset d;
  d.source_ = source;
  d.stats_.rows = end - begin;
  d.prompts_.reserve(size_t(end - begin));
  // Fingerprint: the options that shape a prompt, then the text of every kept row (hashing the
  // raw lines costs far less than re-serialising the parsed prompts).
  uint64_t fp = kFnvOffset;
  for (const std::string* k : {&options.input_key, &options.metadata_key, &options.tool_key})
    fp = fnv1a(fp, *k);
  fp = fnv1a(fp, options.label_key.value_or("\x01none"));
  // Rows parse independently, so they parse in parallel; counting, strict-mode errors and the
  // length filter then run in file order (deterministic, and the length callback need not be
  // thread-safe).
  const int64_t n = end - begin;
  std::vector<Sample> parsed(static_cast<size_t>(n));
  std::vector<std::optional<std::string>> problems(static_cast<size_t>(n));
  parallel_for(n, 512, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      problems[size_t(i)] =
          row_to_sample(rows[size_t(begin + i)].second, options, parsed[size_t(i)]);
  });
  for (int64_t r = begin; r < end; ++r) {
    Sample& s = parsed[size_t(r - begin)];
    const auto& bad = problems[size_t(r - begin)];
    if (bad) {
      if (options.strict)
        GYRE_THROW(invalid_argument,
                   "--prompt-data {} line {}: {} (fix the line, or drop --strict-data to skip "
                   "malformed lines)",
                   source, rows[size_t(r)].first, *bad);
      if (d.stats_.malformed++ == 0) {
        d.stats_.first_bad_line = rows[size_t(r)].first;
        d.stats_.first_bad_reason = *bad;
      }
      continue;
    }
    if (options.max_prompt_len && int64_t(options.prompt_length(s)) > *options.max_prompt_len) {
      ++d.stats_.filtered_too_long;
      continue;
    }
    d.prompts_.push_back(std::move(s));
    fp = fnv1a(fp, rows[size_t(r)].second);
  }
  if (d.stats_.malformed)
    log::warn("--prompt-data {}: skipped {} malformed line(s); first at line {}: {}", source,
              d.stats_.malformed, d.stats_.first_bad_line, d.stats_.first_bad_reason);
  if (d.stats_.filtered_too_long)
    log::info("--prompt-data {}: dropped {} prompt(s) longer than --rollout-max-prompt-len {}",
              source, d.stats_.filtered_too_long, *options.max_prompt_len);
  d.stats_.loaded = int64_t(d.prompts_.size());
  d.fingerprint_ = fp;
  return d;
}

PromptDataset PromptDataset::from_samples(std::vector<Sample> prompts, std::string source) {
  PromptDataset d;
  d.prompts_ = std::move(prompts);
  d.source_ = std::move(source);
  d.stats_.rows = int64_t(d.prompts_.size());
  d.stats_.loaded = d.stats_.rows;
  uint64_t fp = kFnvOffset;
  for (const auto& p : d.prompts_)
    fp = fnv1a(fp, json{p.prompt, p.label, p.metadata}.dump(-1, ' ', false,
                                                            json::error_handler_t::replace));
  d.fingerprint_ = fp;
  return d;
}

}  // namespace gyre::rl
