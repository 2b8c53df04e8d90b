// Runs the registered TESTs: every one, or with arguments, those whose name contains one of the
// plain arguments (all when there are none) and none of the "-substring" ones; e.g.
// `llmserve_native_tests -quantize_` (the sanitizer run's forced-scalar pass skips the file-level
// quantize tests, whose code is scalar anyway). Each line shows the test's wall time, so the slow
// ones are easy to find when CI's budget gets tight.
#include <chrono>
#include <cstring>
#include "testing.h"

int main(int argc, char** argv) {
  auto selected = [&](const char* name) {
    bool any_include = false, included = false;
    for (int i = 1; i < argc; i++) {
      if (argv[i][0] == '-') {
        if (std::strstr(name, argv[i] + 1)) return false;
      } else {
        any_include = true;
        included = included || std::strstr(name, argv[i]) != nullptr;
      }
    }
    return !any_include || included;
  };
  int passed = 0, failed = 0;
  for (auto& c : lt::registry()) {
    if (!selected(c.name)) continue;
    int before = lt::failures();
    auto t0 = std::chrono::steady_clock::now();
    c.fn();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    bool ok = lt::failures() == before;
    std::printf("%s %s (%lld ms)\n", ok ? "ok  " : "FAIL", c.name, static_cast<long long>(ms));
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
