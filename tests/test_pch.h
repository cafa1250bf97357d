// Precompiled header of every test binary: tests/CMakeLists.txt builds it once (gyre_test_pch) and
// every test target reuses it, so the headers nearly every test file includes are parsed once per
// build instead of once per file. Build speed only: each test file still includes what it uses,
// so it compiles without this header too. Keep it to stable third-party and standard headers (plus
// gyre's error header, which every module includes): a change to anything listed here rebuilds
// every test.
#pragma once

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "gyre/core/error.h"
