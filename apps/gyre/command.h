// Subcommand registry of the `gyre` CLI. Each cmd_<name>.cc defines
//   static int run_x(int argc, char** argv);   // argv[0] is "gyre <name>"
//   GYRE_COMMAND(x, "one-line help", run_x);
// main() dispatches on argv[1]; a gyre::Error escaping a command prints "error: <message>" and
// exits 2; CLI11 parse errors exit with CLI11's code (help: 0, bad flags: non-zero).
#pragma once
#include <functional>
#include <map>
#include <string>

namespace gyre::cli {

using CommandFn = std::function<int(int argc, char** argv)>;
struct Command {
  std::string help;
  CommandFn fn;
};
std::map<std::string, Command>& commands();

struct Registrar {
  Registrar(const char* name, const char* help, CommandFn fn) {
    commands()[name] = {help, std::move(fn)};
  }
};

}  // namespace gyre::cli

#define GYRE_COMMAND(name, help, fn) static ::gyre::cli::Registrar gyre_cmd_##name(#name, help, fn)
