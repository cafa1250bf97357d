// Precompiled header of the CLI (apps/gyre/CMakeLists.txt): CLI11 is header-only and every
// cmd_<name>.cc includes it, with nlohmann/json; they are parsed once instead of once per
// subcommand. Build speed only: each file still includes what it uses.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gyre/core/error.h"
