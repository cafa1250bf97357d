#include <cstdio>

#include "command.h"

static int run_version(int, char**) {
  std::printf("gyre 0.1.0\n");
  return 0;
}
GYRE_COMMAND(version, "print the version", run_version);
