// Hermes/Qwen tool-call parser (see tool_parser.h for the format and rules).
#include "gyre/tokenizer/tool_parser.h"

#include <fmt/format.h>

#include <optional>

#include "gyre/tokenizer/jinja/pystr.h"
#include "gyre/tokenizer/jinja/value.h"

namespace gyre::tokenizer {
namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";

uint64_t fnv1a(std::string_view s, uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string make_id(size_t index, const std::string& name, const std::string& args) {
  std::string key = fmt::format("{}\n{}\n{}", index, name, args);
  uint64_t a = fnv1a(key, 1469598103934665603ull);
  uint64_t b = fnv1a(key, a ^ 0x9E3779B97F4A7C15ull);
  return fmt::format("call_{:016x}{:08x}", a, uint32_t(b));
}

std::string strip(std::string_view s) { return jinja::pystr::strip(s, std::nullopt, true, true); }

// Parses one block body; on failure returns nullopt and sets `why`.
std::optional<ToolCall> parse_call(std::string_view body, size_t index, std::string& why) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    why = fmt::format("tool call {}: invalid JSON ({})", index, e.what());
    return std::nullopt;
  }
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    why = fmt::format("tool call {}: expected a JSON object with a string \"name\"", index);
    return std::nullopt;
  }
  ToolCall c;
  c.name = j["name"].get<std::string>();
  nlohmann::ordered_json args = nlohmann::ordered_json::object();
  if (j.contains("arguments"))
    args = j["arguments"];
  else if (j.contains("parameters"))
    args = j["parameters"];
  if (args.is_string()) {
    c.arguments = args.get<std::string>();
  } else {
    jinja::JsonDumpOptions o;  // Python json.dumps defaults, ensure_ascii=False
    c.arguments = jinja::dump_json(jinja::Value::from_json(args), o);
  }
  c.id = make_id(index, c.name, c.arguments);
  return c;
}

void append_content(std::string& content, std::string_view piece) {
  std::string p = strip(piece);
  if (p.empty()) return;
  if (!content.empty()) content += "\n";
  content += p;
}

}  // namespace

ParsedToolCalls parse_hermes_tool_calls(std::string_view text) {
  ParsedToolCalls r;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t open = text.find(kOpen, pos);
    if (open == std::string_view::npos) {
      append_content(r.content, text.substr(pos));
      break;
    }
    append_content(r.content, text.substr(pos, open - pos));
    size_t body = open + kOpen.size();
    size_t close = text.find(kClose, body);
    bool closed = close != std::string_view::npos;
    size_t body_end = closed ? close : text.size();
    size_t block_end = closed ? close + kClose.size() : text.size();
    std::string why;
    auto call = parse_call(text.substr(body, body_end - body), r.tool_calls.size(), why);
    if (call) {
      r.tool_calls.push_back(std::move(*call));
    } else {
      if (!closed) why += " (the block is not closed with </tool_call>)";
      r.errors.push_back(why);
      append_content(r.content, text.substr(open, block_end - open));
    }
    pos = block_end;
    if (!closed) break;
  }
  return r;
}

nlohmann::ordered_json ParsedToolCalls::to_openai() const {
  nlohmann::ordered_json m = nlohmann::ordered_json::object();
  if (content.empty() && !tool_calls.empty())
    m["content"] = nullptr;
  else
    m["content"] = content;
  auto calls = nlohmann::ordered_json::array();
  for (const auto& c : tool_calls) {
    nlohmann::ordered_json f = nlohmann::ordered_json::object();
    f["name"] = c.name;
    f["arguments"] = c.arguments;
    nlohmann::ordered_json tc = nlohmann::ordered_json::object();
    tc["id"] = c.id;
    tc["type"] = "function";
    tc["function"] = f;
    calls.push_back(tc);
  }
  m["tool_calls"] = calls;
  return m;
}

HermesToolCallStream::Delta HermesToolCallStream::push(std::string_view text) {
  buf_.append(text);
  return drain(false);
}

HermesToolCallStream::Delta HermesToolCallStream::finish() { return drain(true); }

HermesToolCallStream::Delta HermesToolCallStream::drain(bool final) {
  Delta d;
  while (true) {
    if (!in_call_) {
      size_t open = buf_.find(kOpen);
      if (open != std::string::npos) {
        d.content += buf_.substr(0, open);
        buf_.erase(0, open + kOpen.size());
        in_call_ = true;
        continue;
      }
      // Hold back a suffix that could still grow into "<tool_call>".
      size_t keep = 0;
      if (!final)
        for (size_t k = std::min(buf_.size(), kOpen.size() - 1); k > 0; --k)
          if (buf_.compare(buf_.size() - k, k, kOpen.substr(0, k)) == 0) {
            keep = k;
            break;
          }
      d.content += buf_.substr(0, buf_.size() - keep);
      buf_.erase(0, buf_.size() - keep);
      return d;
    }
    size_t close = buf_.find(kClose);
    if (close == std::string::npos && !final) return d;
    bool closed = close != std::string::npos;
    std::string body = closed ? buf_.substr(0, close) : buf_;
    std::string why;
    auto call = parse_call(body, n_calls_, why);
    if (call) {
      ++n_calls_;
      d.tool_calls.push_back(std::move(*call));
    } else {
      if (!closed) why += " (the block is not closed with </tool_call>)";
      d.errors.push_back(why);
      d.content += std::string(kOpen) + body + (closed ? std::string(kClose) : "");
    }
    buf_.erase(0, closed ? close + kClose.size() : buf_.size());
    in_call_ = false;
    if (!closed) return d;
  }
}

}  // namespace gyre::tokenizer
