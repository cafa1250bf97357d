// The one flag registry. Every knob of every command is declared once with add<T>() (name,
// storage, default, help, group) and is then settable three ways, later winning:
//   default  <  `name: value` in `--config x.yaml` (several --config apply in order)  <  argv.
// Names use slime's spelling with dashes (`rollout-batch-size`) so slime launch scripts translate
// line by line; underscores are accepted everywhere as an alias (`rollout_batch_size`), as in YAML
// configs written from Python argparse dests.
//
// Invariants: storage pointers outlive the FlagSet; after add() the storage holds the default; a
// parse error leaves a gyre::Error naming the flag, the offending value and where it came from
// (command line, or YAML file and line); an unknown name is reported with the closest registered
// name. dump_yaml() emits every flag so that parse_yaml_string(dump_yaml()) reproduces the values
// (saved next to checkpoints to record the resolved configuration).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace gyre {

// Where a flag's current value came from.
enum class FlagSource { default_value, yaml, command_line };

// Per-type parsing and printing. Specialised for the supported storage types:
// bool, int, int64_t, double, float, std::string, std::vector<{std::string,int,int64_t,double}>,
// and std::optional<X> of those (default usually std::nullopt = slime's None; set back to it with
// YAML `null` or, for non-string optionals, `--name none` on the command line).
template <typename T>
struct FlagTraits;

// One registered flag, type-erased. Values arrive as strings (one, or several for lists); `where`
// names the origin for error messages.
struct FlagInfo {
  std::string name;   // with dashes
  std::string help;   // one line
  std::string group;  // help section, e.g. "Rollout"
  std::string type;   // "int", "list of string", "optional float", ...
  bool is_bool = false;
  bool is_list = false;
  bool is_optional = false;
  std::vector<std::string> choices;  // allowed values (string flags), empty = any
  FlagSource source = FlagSource::default_value;
  std::string default_text;  // the default rendered as YAML scalar text
  std::function<void(const std::vector<std::string>& values, const std::string& where)> set;
  std::function<void()> set_null;  // optionals only: back to std::nullopt
  std::function<void()> reset;     // back to the default
  // Current value as YAML text (scalar, `[a, b]` flow list, or `null`).
  std::function<std::string()> value_text;
};

class FlagSet {
 public:
  // A handle to refine a just-added flag (e.g. restrict a string flag's values).
  class Ref {
   public:
    explicit Ref(FlagInfo* info) : info_(info) {}
    Ref& choices(std::vector<std::string> allowed);

   private:
    FlagInfo* info_;
  };

  explicit FlagSet(std::string program = "gyre", std::string description = "");
  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  // Registers `name` bound to *storage, sets *storage = default_value. Names are lowercase words
  // joined by dashes; registering a name twice is a programming error (GYRE_CHECK).
  template <typename T>
  Ref add(const std::string& name, T* storage, T default_value, const std::string& help,
          const std::string& group = "General") {
    using Tr = FlagTraits<T>;
    *storage = default_value;
    auto info = std::make_unique<FlagInfo>();
    info->name = name;
    info->help = help;
    info->group = group;
    info->type = Tr::type_name();
    info->is_bool = Tr::kIsBool;
    info->is_list = Tr::kIsList;
    info->is_optional = Tr::kIsOptional;
    info->default_text = Tr::to_text(default_value);
    FlagInfo* raw = info.get();
    info->set = [storage, raw](const std::vector<std::string>& values, const std::string& where) {
      *storage = Tr::parse(values, raw->name, where);
    };
    if constexpr (Tr::kIsOptional) info->set_null = [storage] { *storage = T{}; };
    info->reset = [storage, default_value] { *storage = default_value; };
    info->value_text = [storage] { return Tr::to_text(*storage); };
    return register_flag(std::move(info));
  }

  // Parses argv (argv[0] is the program name and is skipped). Handles `--config FILE` (YAML,
  // applied before every command-line flag whatever its position), `--name value`, `--name=value`,
  // bools as `--flag`, `--no-flag`, `--flag true|false`; list flags take every following token up
  // to the next `--option`. Returns false when `--help`/`-h` was given (help() was printed to
  // stdout; the caller should exit 0). Throws gyre::Error on any bad input.
  bool parse(int argc, const char* const* argv);
  bool parse(const std::vector<std::string>& args);  // args without the program name

  // Applies a YAML mapping `name: value` (or `name_with_underscores: value`); scalars, sequences
  // and null (optionals only). Values set here are overridden by later command-line flags. A flag
  // set twice in one file (in either spelling) and a quoted value without its closing quote are
  // errors naming the file, line and key.
  void parse_yaml_file(const std::string& path);
  void parse_yaml_string(const std::string& text, const std::string& source_name = "<yaml>");

  // Every flag with its current value, grouped, as a YAML document that parse_yaml_* reads back.
  std::string dump_yaml() const;
  // Usage text: one section per group, each flag with type, default and help.
  std::string help() const;

  // Positional (non-flag) arguments; an error unless allow_positionals(true) was called.
  void allow_positionals(bool allow) { allow_positionals_ = allow; }
  const std::vector<std::string>& positionals() const { return positionals_; }

  bool has(const std::string& name) const { return find(name) != nullptr; }
  // True when the flag was given on the command line or in a YAML config.
  bool is_set(const std::string& name) const;
  FlagSource source(const std::string& name) const;
  const FlagInfo* find(const std::string& name) const;  // accepts dashes or underscores
  std::vector<std::string> names() const;               // registration order
  // The registered name closest to `name` (edit distance), or "" when none is close.
  std::string suggest(const std::string& name) const;
  // Restores every flag to its default (sources too).
  void reset();

 private:
  Ref register_flag(std::unique_ptr<FlagInfo> info);
  FlagInfo& lookup_or_throw(const std::string& name, const std::string& where);
  void apply(FlagInfo& flag, const std::vector<std::string>& values, const std::string& where,
             FlagSource source);

  std::string program_, description_;
  std::vector<std::unique_ptr<FlagInfo>> flags_;
  std::map<std::string, FlagInfo*> by_name_;
  std::vector<std::string> positionals_;
  bool allow_positionals_ = false;
};

// ---- traits -------------------------------------------------------------------------------------

namespace flags_detail {
// Strict scalar parsers: the whole string must be consumed; errors name flag, value and origin.
bool parse_bool(const std::string& s, const std::string& flag, const std::string& where);
int64_t parse_int(const std::string& s, int64_t lo, int64_t hi, const char* type,
                  const std::string& flag, const std::string& where);
double parse_double(const std::string& s, const std::string& flag, const std::string& where);
const std::string& single(const std::vector<std::string>& v, const std::string& flag,
                          const std::string& where);
std::string quote(const std::string& s);  // YAML scalar text, quoted when needed
std::string double_text(double v);        // shortest text that reads back exactly
std::string float_text(float v);          // same, shortest for the float
}  // namespace flags_detail

template <>
struct FlagTraits<bool> {
  static constexpr bool kIsBool = true, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "bool"; }
  static bool parse(const std::vector<std::string>& v, const std::string& f, const std::string& w) {
    return flags_detail::parse_bool(flags_detail::single(v, f, w), f, w);
  }
  static std::string to_text(bool v) { return v ? "true" : "false"; }
};

template <>
struct FlagTraits<int> {
  static constexpr bool kIsBool = false, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "int"; }
  static int parse(const std::vector<std::string>& v, const std::string& f, const std::string& w) {
    return int(
        flags_detail::parse_int(flags_detail::single(v, f, w), INT32_MIN, INT32_MAX, "int", f, w));
  }
  static std::string to_text(int v) { return std::to_string(v); }
};

template <>
struct FlagTraits<int64_t> {
  static constexpr bool kIsBool = false, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "int64"; }
  static int64_t parse(const std::vector<std::string>& v, const std::string& f,
                       const std::string& w) {
    return flags_detail::parse_int(flags_detail::single(v, f, w), INT64_MIN, INT64_MAX, "int64", f,
                                   w);
  }
  static std::string to_text(int64_t v) { return std::to_string(v); }
};

template <>
struct FlagTraits<double> {
  static constexpr bool kIsBool = false, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "float"; }
  static double parse(const std::vector<std::string>& v, const std::string& f,
                      const std::string& w) {
    return flags_detail::parse_double(flags_detail::single(v, f, w), f, w);
  }
  static std::string to_text(double v) { return flags_detail::double_text(v); }
};

template <>
struct FlagTraits<float> {
  static constexpr bool kIsBool = false, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "float"; }
  static float parse(const std::vector<std::string>& v, const std::string& f,
                     const std::string& w) {
    return float(flags_detail::parse_double(flags_detail::single(v, f, w), f, w));
  }
  static std::string to_text(float v) { return flags_detail::float_text(v); }
};

template <>
struct FlagTraits<std::string> {
  static constexpr bool kIsBool = false, kIsList = false, kIsOptional = false;
  static std::string type_name() { return "string"; }
  static std::string parse(const std::vector<std::string>& v, const std::string& f,
                           const std::string& w) {
    return flags_detail::single(v, f, w);
  }
  static std::string to_text(const std::string& v) { return flags_detail::quote(v); }
};

template <typename E>
struct FlagTraits<std::vector<E>> {
  static constexpr bool kIsBool = false, kIsList = true, kIsOptional = false;
  static std::string type_name() { return "list of " + FlagTraits<E>::type_name(); }
  static std::vector<E> parse(const std::vector<std::string>& v, const std::string& f,
                              const std::string& w) {
    std::vector<E> out;
    out.reserve(v.size());
    for (const auto& s : v) out.push_back(FlagTraits<E>::parse({s}, f, w));
    return out;
  }
  static std::string to_text(const std::vector<E>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + FlagTraits<E>::to_text(v[i]);
    return s + "]";
  }
};

template <typename E>
struct FlagTraits<std::optional<E>> {
  // An optional bool still takes `--flag`/`--no-flag`; an optional list still takes several
  // tokens (slime's `--rollout-stop` defaults to None but is nargs="+").
  static constexpr bool kIsBool = FlagTraits<E>::kIsBool, kIsList = FlagTraits<E>::kIsList;
  static constexpr bool kIsOptional = true;
  static std::string type_name() { return "optional " + FlagTraits<E>::type_name(); }
  static std::optional<E> parse(const std::vector<std::string>& v, const std::string& f,
                                const std::string& w) {
    return FlagTraits<E>::parse(v, f, w);
  }
  static std::string to_text(const std::optional<E>& v) {
    return v ? FlagTraits<E>::to_text(*v) : "null";
  }
};

}  // namespace gyre
