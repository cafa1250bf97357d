// Helpers shared by all test binaries: where fixtures live, running the CLI, temp dirs.
#pragma once
#include <functional>
#include <string>

namespace gyre::test {

// Absolute path of a file under the source tree, e.g.
// source_path("tests/fixtures/models/qwen3_tiny").
std::string source_path(const std::string& rel);
// Absolute path of the built `gyre` executable.
std::string gyre_bin();
// A fresh empty directory under /tmp, removed at process exit.
std::string temp_dir(const std::string& tag);
struct CommandResult {
  int exit_code;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs a shell command line, capturing stdout and stderr.
CommandResult run_command(const std::string& cmdline);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);
// The message of the gyre::Error that `f` throws; "" when it throws none (other exceptions pass).
std::string error_of(const std::function<void()>& f);

}  // namespace gyre::test
