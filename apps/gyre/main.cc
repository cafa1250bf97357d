#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <exception>

#include "command.h"
#include "gyre/core/error.h"
#include "gyre/core/thread_pool.h"

namespace gyre::cli {
std::map<std::string, Command>& commands() {
  static std::map<std::string, Command> m;
  return m;
}
}  // namespace gyre::cli

static void usage() {
  std::fprintf(
      stderr,
      "usage: gyre <command> [flags]   (gyre <command> --help for its flags)\n\ncommands:\n");
  for (auto& [name, c] : gyre::cli::commands())
    std::fprintf(stderr, "  %-14s %s\n", name.c_str(), c.help.c_str());
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  auto& cmds = gyre::cli::commands();
  auto it = cmds.find(argv[1]);
  if (it == cmds.end()) {
    std::fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
    usage();
    return 2;
  }
  std::string prog = std::string("gyre ") + argv[1];
  argv[1] = prog.data();
  try {
    (void)gyre::configured_num_threads();  // a bad GYRE_NUM_THREADS is an error before any work
    return it->second.fn(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    // Commands normally handle CLI11 errors themselves via CLI11_PARSE; this is the fallback.
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.get_exit_code() ? e.get_exit_code() : 0;
  } catch (const gyre::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 3;
  }
}

// LeakSanitizer: Debian's libcln (GiNaC's number library, linked through gyre_rl for the math
// rewards) leaks 26 bytes in its own static initialisation, which would turn every exit of an ASan
// build of this binary into exit code 1. Suppress that library only (the test binaries do the same
// in tests/test_util.cc); unused without ASan.
extern "C" const char* __lsan_default_suppressions() { return "leak:libcln.so\n"; }
