// ChatTemplate: locate, parse and render a model folder's chat template (see chat_template.h).
#include "gyre/tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gyre/core/error.h"

namespace gyre::tokenizer {
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) GYRE_THROW(io, "cannot read {}; check the path and permissions", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// transformers' SPECIAL_TOKENS_ATTRIBUTES, in its order.
const char* const kSpecialTokenKeys[] = {
    "bos_token", "eos_token", "unk_token",  "sep_token",
    "pad_token", "cls_token", "mask_token", "additional_special_tokens"};

// A token entry is a string or an AddedToken object {"content": ..., ...}.
nlohmann::ordered_json token_text(const nlohmann::ordered_json& v) {
  if (v.is_object() && v.contains("content")) return v["content"];
  return v;
}

nlohmann::ordered_json extract_special_tokens(const nlohmann::ordered_json& cfg) {
  auto out = nlohmann::ordered_json::object();
  if (!cfg.is_object()) return out;
  for (const char* key : kSpecialTokenKeys) {
    auto it = cfg.find(key);
    if (it == cfg.end() || it->is_null()) continue;
    if (it->is_array()) {
      auto arr = nlohmann::ordered_json::array();
      for (const auto& e : *it) arr.push_back(token_text(e));
      out[key] = arr;
    } else {
      nlohmann::ordered_json t = token_text(*it);
      if (t.is_string()) out[key] = t;
    }
  }
  return out;
}

jinja::Template parse_template(const std::string& source, const std::string& origin) {
  jinja::TemplateOptions opt;
  opt.origin = origin;
  return jinja::Template::parse(source, opt);
}

}  // namespace

ChatTemplate ChatTemplate::from_string(const std::string& source,
                                       const nlohmann::ordered_json& special_tokens,
                                       const std::string& origin) {
  ChatTemplate ct;
  ct.origin_ = origin;
  ct.templates_.emplace("default", parse_template(source, origin));
  if (special_tokens.is_object()) ct.special_tokens_ = extract_special_tokens(special_tokens);
  return ct;
}

ChatTemplate ChatTemplate::from_dir(const std::string& dir, const std::string& name) {
  ChatTemplate ct;
  ct.requested_ = name;
  ct.origin_ = dir;
  const fs::path root(dir);
  const fs::path cfg_path = root / "tokenizer_config.json";
  nlohmann::ordered_json cfg;
  if (fs::exists(cfg_path)) {
    try {
      cfg = nlohmann::ordered_json::parse(read_text(cfg_path));
    } catch (const nlohmann::json::parse_error& e) {
      GYRE_THROW(invalid_argument, "{}: invalid JSON ({}); fix or re-download the file",
                 cfg_path.string(), e.what());
    }
    ct.special_tokens_ = extract_special_tokens(cfg);
  }
  const fs::path jinja_path = root / "chat_template.jinja";
  if (fs::exists(jinja_path)) {
    ct.templates_.emplace("default", parse_template(read_text(jinja_path), jinja_path.string()));
  } else if (cfg.is_object() && cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
    const auto& t = cfg["chat_template"];
    const std::string origin = cfg_path.string() + ":chat_template";
    if (t.is_string()) {
      ct.templates_.emplace("default", parse_template(t.get<std::string>(), origin));
    } else if (t.is_array()) {
      for (size_t i = 0; i < t.size(); ++i) {
        const auto& e = t[i];
        if (!e.is_object() || !e.contains("name") || !e.contains("template") ||
            !e["name"].is_string() || !e["template"].is_string())
          GYRE_THROW(invalid_argument,
                     "{}: chat_template[{}] must be an object {{\"name\": str, \"template\": str}}",
                     cfg_path.string(), i);
        std::string n = e["name"].get<std::string>();
        ct.templates_.emplace(n, parse_template(e["template"].get<std::string>(),
                                                fmt::format("{}[{}] ({})", origin, i, n)));
      }
    } else {
      GYRE_THROW(invalid_argument,
                 "{}: chat_template must be a string or a list of {{name, template}} objects",
                 cfg_path.string());
    }
  }
  const fs::path extra = root / "additional_chat_templates";
  if (fs::is_directory(extra)) {
    for (const auto& entry : fs::directory_iterator(extra)) {
      if (entry.path().extension() != ".jinja") continue;
      std::string n = entry.path().stem().string();
      if (!ct.templates_.count(n))
        ct.templates_.emplace(n, parse_template(read_text(entry.path()), entry.path().string()));
    }
  }
  if (ct.templates_.empty())
    GYRE_THROW(not_found,
               "{}: no chat template (looked for chat_template.jinja and 'chat_template' in "
               "tokenizer_config.json); pass a folder of a chat/instruct model",
               dir);
  if (!name.empty() && !ct.templates_.count(name)) {
    std::string have;
    for (const auto& n : ct.names()) have += (have.empty() ? "" : ", ") + n;
    GYRE_THROW(not_found, "{}: no chat template named '{}'; available: {}", dir, name, have);
  }
  return ct;
}

std::vector<std::string> ChatTemplate::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : templates_) out.push_back(n);
  return out;
}

const jinja::Template& ChatTemplate::pick(bool has_tools) const {
  if (!requested_.empty()) return templates_.at(requested_);
  if (has_tools && templates_.count("tool_use")) return templates_.at("tool_use");
  if (templates_.count("default")) return templates_.at("default");
  std::string have;
  for (const auto& n : names()) have += (have.empty() ? "" : ", ") + n;
  GYRE_THROW(invalid_argument,
             "{}: several chat templates and none named 'default'; choose one by name ({})",
             origin_, have);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                 const nlohmann::ordered_json& kwargs) const {
  if (!messages.is_array())
    GYRE_THROW(invalid_argument, "chat template: 'messages' must be a JSON array, got {}",
               messages.type_name());
  for (size_t i = 0; i < messages.size(); ++i)
    if (!messages[i].is_object())
      GYRE_THROW(invalid_argument,
                 "chat template: messages[{}] must be an object like {{\"role\": \"user\", "
                 "\"content\": \"...\"}}, got {}",
                 i, messages[i].type_name());
  if (!tools.is_null() && !tools.is_array())
    GYRE_THROW(invalid_argument, "chat template: 'tools' must be a JSON array or null, got {}",
               tools.type_name());
  if (!kwargs.is_null() && !kwargs.is_object())
    GYRE_THROW(invalid_argument, "chat template: 'kwargs' must be a JSON object or null, got {}",
               kwargs.type_name());
  const jinja::Template& t = pick(!tools.is_null());
  jinja::Value ctx = jinja::Value::dict();
  jinja::Dict& d = ctx.as_dict();
  d.set("messages", jinja::Value::from_json(messages));
  d.set("tools", jinja::Value::from_json(tools));
  d.set("documents", jinja::Value::none());
  d.set("add_generation_prompt", jinja::Value(add_generation_prompt));
  for (auto it = special_tokens_.begin(); it != special_tokens_.end(); ++it)
    d.set(it.key(), jinja::Value::from_json(*it));
  if (kwargs.is_object())
    for (auto it = kwargs.begin(); it != kwargs.end(); ++it)
      d.set(it.key(), jinja::Value::from_json(*it));
  return t.render(ctx);
}

}  // namespace gyre::tokenizer
