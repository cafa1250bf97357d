// FlagSet: argv and YAML parsing for the one flag registry (see flags.h for the contract).
#include "gyre/core/flags.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gyre/core/error.h"

namespace gyre {

namespace {

std::string normalize(std::string name) {
  std::replace(name.begin(), name.end(), '_', '-');
  return name;
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_bool_literal(const std::string& s) {
  static const char* kWords[] = {"true", "false", "yes", "no", "on", "off", "1", "0"};
  std::string l = lower(s);
  return std::any_of(std::begin(kWords), std::end(kWords), [&](const char* w) { return l == w; });
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// yaml-cpp 0.7 raises "illegal EOF in scalar" for a quoted scalar left open only when no newline
// follows it; with one, the scalar silently runs to the end of the text and swallows every later
// line. So look for the closing quote of each quoted value ourselves. `m` is the node's mark (a
// byte offset past any UTF-8 BOM); anything that is not a quoted scalar there passes.
bool quote_closed(const std::string& text, const YAML::Mark& m) {
  const size_t bom = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;
  if (m.pos < 0 || bom + size_t(m.pos) >= text.size()) return true;
  const size_t open = bom + size_t(m.pos);
  const char q = text[open];
  if (q != '"' && q != '\'') return true;
  for (size_t i = open + 1; i < text.size(); ++i) {
    if (q == '"' && text[i] == '\\') {
      ++i;  // an escape: \" does not close
    } else if (text[i] == q) {
      if (q == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i;  // '' is an escaped single quote
        continue;
      }
      return true;
    }
  }
  return false;
}

bool valid_name(const std::string& name) {
  if (name.empty() || name.front() == '-' || name.back() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

}  // namespace

namespace flags_detail {

const std::string& single(const std::vector<std::string>& v, const std::string& flag,
                          const std::string& where) {
  if (v.size() != 1)
    GYRE_THROW(invalid_argument, "flag --{} takes exactly one value, got {} ({})", flag, v.size(),
               where);
  return v[0];
}

bool parse_bool(const std::string& s, const std::string& flag, const std::string& where) {
  std::string l = lower(s);
  if (l == "true" || l == "yes" || l == "on" || l == "1") return true;
  if (l == "false" || l == "no" || l == "off" || l == "0") return false;
  GYRE_THROW(invalid_argument, "flag --{} expects a bool (true/false), got '{}' ({})", flag, s,
             where);
}

int64_t parse_int(const std::string& s, int64_t lo, int64_t hi, const char* type,
                  const std::string& flag, const std::string& where) {
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (b != e && *b == '+') ++b;
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(b, e, v);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && ptr == e && (v < lo || v > hi)))
    GYRE_THROW(invalid_argument, "flag --{}: value '{}' is out of range for {} ({})", flag, s, type,
               where);
  if (ec != std::errc() || ptr != e || b == e)
    GYRE_THROW(invalid_argument, "flag --{} expects an {}, got '{}' ({})", flag, type, s, where);
  return v;
}

double parse_double(const std::string& s, const std::string& flag, const std::string& where) {
  std::string l = lower(s);
  // YAML spells infinities and NaN with a leading dot.
  if (l == ".inf" || l == "+.inf") return INFINITY;
  if (l == "-.inf") return -INFINITY;
  if (l == ".nan") return NAN;
  if (!s.empty() && !std::isspace(static_cast<unsigned char>(s[0]))) {
    char* end = nullptr;
    double v = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size()) return v;
  }
  GYRE_THROW(invalid_argument, "flag --{} expects a float, got '{}' ({})", flag, s, where);
}

std::string quote(const std::string& s) {
  // A JSON string is a valid YAML double-quoted scalar, so this always reads back verbatim.
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string double_text(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  return fmt::format("{}", v);  // shortest representation that round-trips
}

std::string float_text(float v) {
  if (std::isnan(v) || std::isinf(v)) return double_text(v);
  return fmt::format("{}", v);
}

}  // namespace flags_detail

FlagSet::Ref& FlagSet::Ref::choices(std::vector<std::string> allowed) {
  info_->choices = std::move(allowed);
  return *this;
}

FlagSet::FlagSet(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

FlagSet::Ref FlagSet::register_flag(std::unique_ptr<FlagInfo> info) {
  GYRE_CHECK(valid_name(info->name), "flag name '{}' must be lowercase words joined by dashes",
             info->name);
  GYRE_CHECK(info->name != "config" && info->name != "help", "flag name '{}' is reserved",
             info->name);
  GYRE_CHECK(!by_name_.count(info->name), "flag --{} registered twice", info->name);
  FlagInfo* raw = info.get();
  by_name_[raw->name] = raw;
  flags_.push_back(std::move(info));
  return Ref(raw);
}

const FlagInfo* FlagSet::find(const std::string& name) const {
  auto it = by_name_.find(normalize(name));
  return it == by_name_.end() ? nullptr : it->second;
}

bool FlagSet::is_set(const std::string& name) const {
  return source(name) != FlagSource::default_value;
}

FlagSource FlagSet::source(const std::string& name) const {
  const FlagInfo* f = find(name);
  if (!f) GYRE_THROW(not_found, "no flag --{} is registered", name);
  return f->source;
}

std::vector<std::string> FlagSet::names() const {
  std::vector<std::string> out;
  for (const auto& f : flags_) out.push_back(f->name);
  return out;
}

std::string FlagSet::suggest(const std::string& name) const {
  std::string n = normalize(name);
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& f : flags_) {
    size_t d = edit_distance(n, f->name);
    if (d < best_d) best_d = d, best = f->name;
  }
  // Close enough to be a typo: a couple of edits, more for long names.
  return best_d <= std::max<size_t>(2, n.size() / 3) ? best : "";
}

void FlagSet::reset() {
  for (auto& f : flags_) {
    f->reset();
    f->source = FlagSource::default_value;
  }
  positionals_.clear();
}

FlagInfo& FlagSet::lookup_or_throw(const std::string& name, const std::string& where) {
  auto it = by_name_.find(normalize(name));
  if (it != by_name_.end()) return *it->second;
  std::string s = suggest(name);
  if (!s.empty())
    GYRE_THROW(invalid_argument, "unknown flag --{} ({}); did you mean --{}?", name, where, s);
  GYRE_THROW(invalid_argument, "unknown flag --{} ({}); `{} --help` lists the flags", name, where,
             program_);
}

void FlagSet::apply(FlagInfo& flag, const std::vector<std::string>& values,
                    const std::string& where, FlagSource source) {
  if (!flag.choices.empty()) {
    for (const auto& v : values) {
      if (std::find(flag.choices.begin(), flag.choices.end(), v) == flag.choices.end())
        GYRE_THROW(invalid_argument, "flag --{}: '{}' is not one of [{}] ({})", flag.name, v,
                   fmt::join(flag.choices, ", "), where);
    }
  }
  flag.set(values, where);
  flag.source = source;
}

bool FlagSet::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

bool FlagSet::parse(const std::vector<std::string>& args) {
  const std::string kWhere = "command line";
  positionals_.clear();
  // Pass 1: --help wins over everything; --config files apply first so that argv overrides them.
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a == "--help" || a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (a == "--config") {
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)
        GYRE_THROW(invalid_argument, "--config needs a YAML file path ({})", kWhere);
      parse_yaml_file(args[++i]);
    } else if (a.rfind("--config=", 0) == 0) {
      parse_yaml_file(a.substr(9));
    }
  }
  // Pass 2: the flags themselves, in order (a flag given twice: the last one wins, as argparse).
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      for (++i; i < args.size(); ++i) positionals_.push_back(args[i]);
      break;
    }
    if (a.rfind("--", 0) != 0) {
      if (a.size() > 1 && a[0] == '-' && !std::isdigit(static_cast<unsigned char>(a[1])))
        GYRE_THROW(invalid_argument, "unknown option '{}' ({}); flags are spelled --name", a,
                   kWhere);
      positionals_.push_back(a);
      continue;
    }
    std::string body = a.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = body.find('='); eq != std::string::npos) {
      inline_value = body.substr(eq + 1);
      body = body.substr(0, eq);
    }
    std::string name = normalize(body);
    if (name == "config") {
      if (!inline_value) ++i;  // already applied in pass 1
      continue;
    }
    if (!by_name_.count(name) && name.rfind("no-", 0) == 0) {
      auto it = by_name_.find(name.substr(3));
      if (it != by_name_.end() && it->second->is_bool) {
        if (inline_value)
          GYRE_THROW(invalid_argument, "--{} takes no value, got '{}' ({}); use --{}=false", body,
                     *inline_value, kWhere, it->second->name);
        apply(*it->second, {"false"}, kWhere, FlagSource::command_line);
        continue;
      }
    }
    FlagInfo& flag = lookup_or_throw(body, kWhere);
    std::vector<std::string> values;
    if (inline_value) {
      values.push_back(*inline_value);
    } else if (flag.is_bool) {
      if (i + 1 < args.size() && is_bool_literal(args[i + 1])) {
        values.push_back(args[++i]);
      } else if (flag.is_optional && i + 1 < args.size() && lower(args[i + 1]) == "none") {
        ++i;
        flag.set_null();
        flag.source = FlagSource::command_line;
        continue;
      } else {
        values.push_back("true");
      }
    } else if (flag.is_list) {
      while (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) values.push_back(args[++i]);
    } else {
      if (i + 1 >= args.size() || args[i + 1].rfind("--", 0) == 0)
        GYRE_THROW(invalid_argument, "flag --{} needs a value ({} expected, {})", flag.name,
                   flag.type, kWhere);
      values.push_back(args[++i]);
    }
    // `--name none` resets a non-string optional to slime's None.
    if (flag.is_optional && values.size() == 1 && flag.type.find("string") == std::string::npos &&
        (lower(values[0]) == "none" || lower(values[0]) == "null")) {
      flag.set_null();
      flag.source = FlagSource::command_line;
      continue;
    }
    apply(flag, values, kWhere, FlagSource::command_line);
  }
  if (!allow_positionals_ && !positionals_.empty())
    GYRE_THROW(invalid_argument, "unexpected argument '{}' ({}); flags are spelled --name value",
               positionals_[0], kWhere);
  return true;
}

void FlagSet::parse_yaml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) GYRE_THROW(io, "cannot open config file '{}' (given to --config)", path);
  std::stringstream ss;
  ss << in.rdbuf();
  parse_yaml_string(ss.str(), path);
}

void FlagSet::parse_yaml_string(const std::string& text, const std::string& source_name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    GYRE_THROW(invalid_argument, "config {}:{}: invalid YAML: {}", source_name, e.mark.line + 1,
               e.msg);
  }
  if (root.IsNull()) return;  // empty file
  if (!root.IsMap())
    GYRE_THROW(invalid_argument,
               "config {}: the top level must be a mapping of `flag-name: value` lines",
               source_name);
  auto check_closed = [&](const YAML::Node& n, const std::string& key) {
    if (!quote_closed(text, n.Mark()))
      GYRE_THROW(invalid_argument,
                 "config {}:{}: the value of `{}` opens a quote that is never closed (the rest of "
                 "the file would be read as part of it); add the closing quote",
                 source_name, n.Mark().line + 1, key);
  };
  // First line of each flag, to reject a second setting of it (yaml-cpp keeps both and the last
  // one would win silently). Keyed by the flag name: `lr_x` and `lr-x` are the same flag.
  std::map<std::string, std::pair<int, std::string>> first_seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    // Copies, not references: yaml-cpp's iterator yields a temporary pair.
    const YAML::Node key_node = it->first;
    const YAML::Node v = it->second;
    std::string where = fmt::format("{}:{}", source_name, key_node.Mark().line + 1);
    if (!key_node.IsScalar())
      GYRE_THROW(invalid_argument, "config {}: keys must be flag names", where);
    std::string key = key_node.as<std::string>();
    if (normalize(key) == "config")
      GYRE_THROW(invalid_argument, "config {}: `config` cannot be nested; pass several --config",
                 where);
    const auto [seen, fresh] =
        first_seen.try_emplace(normalize(key), key_node.Mark().line + 1, key);
    if (!fresh)
      GYRE_THROW(invalid_argument,
                 "config {}: key `{}` is set twice (first {}on line {}); keep one of them (to "
                 "override a config, pass a second --config or the flag on the command line)",
                 where, key, seen->second.second == key ? "" : "as `" + seen->second.second + "` ",
                 seen->second.first);
    FlagInfo& flag = lookup_or_throw(key, "config " + where);
    std::string vwhere = "config " + where;
    std::vector<std::string> values;
    if (v.IsNull()) {
      if (flag.is_optional) {
        flag.set_null();
        flag.source = FlagSource::yaml;
        continue;
      }
      if (!flag.is_list)
        GYRE_THROW(invalid_argument, "flag {} has no value ({}); it expects a {}", key, vwhere,
                   flag.type);
    } else if (v.IsScalar()) {
      check_closed(v, key);
      values.push_back(v.as<std::string>());
    } else if (v.IsSequence()) {
      if (!flag.is_list)
        GYRE_THROW(invalid_argument, "flag {} expects a {}, got a list ({})", key, flag.type,
                   vwhere);
      for (const auto& e : v) {
        if (!e.IsScalar())
          GYRE_THROW(invalid_argument, "flag {}: list items must be scalars ({})", key, vwhere);
        check_closed(e, key);
        values.push_back(e.as<std::string>());
      }
    } else {
      GYRE_THROW(invalid_argument, "flag {} expects a {}, got a mapping ({})", key, flag.type,
                 vwhere);
    }
    apply(flag, values, vwhere, FlagSource::yaml);
  }
}

std::string FlagSet::dump_yaml() const {
  std::vector<std::string> groups;
  for (const auto& f : flags_)
    if (std::find(groups.begin(), groups.end(), f->group) == groups.end())
      groups.push_back(f->group);
  std::string out = fmt::format("# resolved flags of `{}`; read back with --config\n", program_);
  for (const auto& g : groups) {
    out += fmt::format("\n# {}\n", g);
    for (const auto& f : flags_)
      if (f->group == g) out += fmt::format("{}: {}\n", f->name, f->value_text());
  }
  return out;
}

std::string FlagSet::help() const {
  std::string out = fmt::format("usage: {} [--config FILE.yaml] [--flag value ...]\n", program_);
  if (!description_.empty()) out += "\n" + description_ + "\n";
  out +=
      "\nEvery flag can also be set as `name: value` in a --config YAML file; the command line "
      "wins.\n";
  std::vector<std::string> groups;
  for (const auto& f : flags_)
    if (std::find(groups.begin(), groups.end(), f->group) == groups.end())
      groups.push_back(f->group);
  for (const auto& g : groups) {
    out += fmt::format("\n{}:\n", g);
    for (const auto& f : flags_) {
      if (f->group != g) continue;
      std::string lhs = f->is_bool ? fmt::format("  --[no-]{}", f->name)
                                   : fmt::format("  --{} <{}>", f->name, f->type);
      std::string rhs = f->help;
      if (!f->choices.empty()) rhs += fmt::format(" {{{}}}", fmt::join(f->choices, ","));
      rhs += fmt::format(" (default: {})", f->default_text);
      if (lhs.size() >= 44)
        out += lhs + "\n" + std::string(46, ' ') + rhs + "\n";
      else
        out += fmt::format("{:<46}{}\n", lhs, rhs);
    }
  }
  out += "\n  --config FILE.yaml                          apply a YAML file of flags first\n";
  out += "  --help                                      print this help\n";
  return out;
}

}  // namespace gyre
