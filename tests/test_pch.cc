// The source of gyre_test_pch (tests/CMakeLists.txt), the target that builds test_pch.h's
// precompiled header once for every test binary. It compiles to an empty object.
#include "test_pch.h"
