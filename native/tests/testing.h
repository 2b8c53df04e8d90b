// Minimal C++ test harness: TEST(name){...} registers a case; CHECK* record failures.
// The runner (test_main.cpp) prints "N passed, N failed" as its last line.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace lt {
struct Case {
  const char* name;
  std::function<void()> fn;
};
inline std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
inline int& failures() {
  static int f = 0;
  return f;
}
struct Reg {
  Reg(const char* n, std::function<void()> f) { registry().push_back({n, std::move(f)}); }
};
}  // namespace lt

#define LT_CAT2(a, b) a##b
#define LT_CAT(a, b) LT_CAT2(a, b)
#define TEST(name)                                     \
  static void name();                                  \
  static ::lt::Reg LT_CAT(lt_reg_, name)(#name, name); \
  static void name()

#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++::lt::failures();                                                             \
    }                                                                                 \
  } while (0)

#define CHECK_EQ(a, b)                                                                                 \
  do {                                                                                                 \
    auto _a = (a);                                                                                     \
    auto _b = (b);                                                                                     \
    if (!(_a == _b)) {                                                                                 \
      std::fprintf(stderr, "  %s:%d: CHECK_EQ(%s, %s) failed: %s vs %s\n", __FILE__, __LINE__, #a, #b, \
                   std::to_string(_a).c_str(), std::to_string(_b).c_str());                            \
      ++::lt::failures();                                                                              \
    }                                                                                                  \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                                    \
  do {                                                                                                           \
    double _a = (a), _b = (b);                                                                                   \
    if (!(std::fabs(_a - _b) <= (tol))) {                                                                        \
      std::fprintf(stderr, "  %s:%d: CHECK_NEAR(%s, %s, %g) failed: %.9g vs %.9g\n", __FILE__, __LINE__, #a, #b, \
                   (double)(tol), _a, _b);                                                                       \
      ++::lt::failures();                                                                                        \
    }                                                                                                            \
  } while (0)
