#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "gyre/core/error.h"

namespace gyre::test {
namespace fs = std::filesystem;

std::string source_path(const std::string& rel) { return std::string(GYRE_SOURCE_DIR) + "/" + rel; }
// GYRE_BIN in the environment overrides the build's CLI (device runs carry the binary elsewhere).
std::string gyre_bin() {
  const char* env = std::getenv("GYRE_BIN");
  return env && *env ? env : GYRE_BIN;
}

namespace {
std::mutex g_mu;
std::vector<std::string>* g_dirs = nullptr;
void cleanup() {
  if (!g_dirs) return;
  for (auto& d : *g_dirs) {
    std::error_code ec;
    fs::remove_all(d, ec);
  }
}
// Open MPI 4.1's mpirun creates its session directory, $TMPDIR/ompi.<host>.<uid>, with a
// check-then-mkdir that fails with "File exists" (orte_init fails, the job exits 1) when another
// mpirun creates it at the same moment. ctest runs dist tests in parallel, so each test process
// gives the mpiruns it starts a base of their own (OMPI_MCA_orte_tmpdir_base, inherited by every
// child). Ranks started by mpirun find it set and keep their launcher's.
struct OwnMpiSessionBase {
  OwnMpiSessionBase() {
    if (std::getenv("OMPI_MCA_orte_tmpdir_base") || std::getenv("OMPI_COMM_WORLD_SIZE")) return;
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) return;
    std::string tmpl = (base / "gyre_test_ompi_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) return;  // mpirun then uses the shared default, as before
    setenv("OMPI_MCA_orte_tmpdir_base", buf.data(), 1);
    dir = buf.data();
    owner = getpid();
  }
  ~OwnMpiSessionBase() {
    if (dir.empty() || getpid() != owner) return;  // a forked child leaves its parent's alone
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string dir;
  pid_t owner = 0;
};
const OwnMpiSessionBase g_own_mpi_session_base;
}  // namespace

std::string temp_dir(const std::string& tag) {
  std::string tmpl = (fs::temp_directory_path() / ("gyre_test_" + tag + "_XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_dirs) {
    g_dirs = new std::vector<std::string>();
    std::atexit(cleanup);
  }
  g_dirs->push_back(buf.data());
  return buf.data();
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  f << content;
}

CommandResult run_command(const std::string& cmdline) {
  std::string dir = temp_dir("cmd");
  std::string out = dir + "/out", err = dir + "/err";
  std::string full = "(" + cmdline + ") >" + out + " 2>" + err;
  int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace gyre::test

// LeakSanitizer: Debian's libcln (GiNaC's number library, linked by gyre_rl for the math rewards)
// leaks 26 bytes in its own static initialisation; suppress that library so the ASan run of test
// binaries linking it (scripts/test.sh, detect_leaks=1) checks our code only. Unused without ASan.
extern "C" const char* __lsan_default_suppressions() { return "leak:libcln.so\n"; }
