// Temporary files of the native tests: /tmp/llmserve_test_<group>_<pid>_<name> (one name space per
// test group and process, so groups and parallel runs do not collide), removed when the test
// binary exits.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

namespace llmserve_test {

struct TmpFiles {
  std::vector<std::string> paths;
  ~TmpFiles() {
    for (auto& p : paths) std::remove(p.c_str());
  }
};
inline TmpFiles g_tmp_files;

inline std::string group_tmp_path(const std::string& group, const std::string& name) {
  std::string p = "/tmp/llmserve_test_" + group + "_" + std::to_string(static_cast<long>(::getpid())) + "_" + name;
  g_tmp_files.paths.push_back(p);
  return p;
}

}  // namespace llmserve_test
