// Strict parsing of GYRE_* environment switches (core/env.h).
#include "gyre/core/env.h"

#include <gtest/gtest.h>

#include "gyre/core/error.h"

namespace gyre {
namespace {

TEST(Env, ChoiceDefaultsAndAcceptedValues) {
  EXPECT_EQ(parse_env_choice("GYRE_X", nullptr, {"cudnn", "flash"}, "cudnn"), "cudnn");
  EXPECT_EQ(parse_env_choice("GYRE_X", "", {"cudnn", "flash"}, "cudnn"), "cudnn");
  EXPECT_EQ(parse_env_choice("GYRE_X", "flash", {"cudnn", "flash"}, "cudnn"), "flash");
  EXPECT_EQ(parse_env_choice("GYRE_X", "cudnn", {"cudnn", "flash"}, "cudnn"), "cudnn");
}

TEST(Env, UnknownChoiceIsAnErrorNamingVariableValueAndChoices) {
  try {
    parse_env_choice("GYRE_ATTENTION_BACKEND", "flsh", {"cudnn", "flash"}, "cudnn");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("GYRE_ATTENTION_BACKEND"), std::string::npos) << m;
    EXPECT_NE(m.find("'flsh'"), std::string::npos) << m;
    EXPECT_NE(m.find("cudnn, flash"), std::string::npos) << m;
  }
  EXPECT_THROW(parse_env_choice("GYRE_X", "FLASH", {"cudnn", "flash"}, "cudnn"), Error);
  EXPECT_THROW(parse_env_choice("GYRE_X", "flash ", {"cudnn", "flash"}, "cudnn"), Error);
}

TEST(Env, IntegerRangeAndSyntax) {
  EXPECT_EQ(parse_env_int("GYRE_N", nullptr, 4096, 1, 1 << 24), 4096);
  EXPECT_EQ(parse_env_int("GYRE_N", "", 4096, 1, 1 << 24), 4096);
  EXPECT_EQ(parse_env_int("GYRE_N", "512", 4096, 1, 1 << 24), 512);
  EXPECT_EQ(parse_env_int("GYRE_N", "1", 4096, 1, 1 << 24), 1);
  for (const char* bad :
       {"0", "-5", "12MB", "1e3", "abc", " 7", "99999999999999999999", "16777217"})
    EXPECT_THROW(parse_env_int("GYRE_N", bad, 4096, 1, 1 << 24), Error) << bad;
}

TEST(Env, ReadsTheProcessEnvironment) {
  ::setenv("GYRE_ENV_TEST_CHOICE", "b", 1);
  EXPECT_EQ(env_choice("GYRE_ENV_TEST_CHOICE", {"a", "b"}, "a"), "b");
  ::setenv("GYRE_ENV_TEST_CHOICE", "c", 1);
  EXPECT_THROW(env_choice("GYRE_ENV_TEST_CHOICE", {"a", "b"}, "a"), Error);
  ::unsetenv("GYRE_ENV_TEST_CHOICE");
  EXPECT_EQ(env_choice("GYRE_ENV_TEST_CHOICE", {"a", "b"}, "a"), "a");
}

}  // namespace
}  // namespace gyre
