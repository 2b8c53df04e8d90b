// node-llama-cpp's own llama.cpp libraries as the oracle of the quantize tests, loaded with dlopen
// (test_quant_ggml.cpp explains the lookup: $LLMSERVE_GGML_LIB_DIR, else node_modules/@node-llama-cpp/
// linux-x64/bins/linux-x64 under the working directory or the test binary's ../..):
// ggml_quantize_chunk from libggml-base and llama_model_quantize from libllama, declared as in the
// ggml.h / llama.h of the bundled llama.cpp. Absent (another platform, no npm install): why_not says so
// and the tests that need them print a skip line.
#pragma once
#include <dirent.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace llmserve::oracle {

using QuantizeChunk = size_t (*)(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row,
                                 const float* imatrix);

// llama.h's llama_model_imatrix_data, llama_model_kv_override and llama_model_tensor_override.
struct ImatrixData {
  const char* name;
  const float* data;
  size_t size;
};
enum KvTag : int32_t { kKvInt = 0, kKvFloat = 1, kKvBool = 2, kKvStr = 3 };
struct KvOverride {
  int32_t tag;
  char key[128];
  union {
    int64_t val_i64;
    double val_f64;
    bool val_bool;
    char val_str[128];
  };
};
struct TensorOverride {
  const char* pattern;
  int32_t type;  // enum ggml_type
};

// llama_model_quantize_params, field for field; the padding leaves room should a build append
// fields (the struct is returned through a hidden pointer, so the callee writes all of it).
struct QuantizeParams {
  int32_t nthread;
  int32_t ftype;
  int32_t output_tensor_type;    // GGML_TYPE_COUNT: the recipe's
  int32_t token_embedding_type;  // GGML_TYPE_COUNT: the recipe's
  bool allow_requantize;
  bool quantize_output_tensor;
  bool only_copy;
  bool pure;
  bool keep_split;
  bool dry_run;
  const ImatrixData* imatrix;
  const KvOverride* kv_overrides;
  const TensorOverride* tt_overrides;
  const int32_t* prune_layers;
  size_t max_buf_size;
  unsigned char padding[192];
};

struct Libs {
  QuantizeChunk quantize_chunk = nullptr;
  QuantizeParams (*default_params)() = nullptr;
  uint32_t (*model_quantize)(const char*, const char*, const QuantizeParams*) = nullptr;
  std::string why_not;
};

inline std::string exe_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

inline void silent_log(int, const char*, void*) {}

inline const Libs& libs() {
  static const Libs g = [] {
    Libs r;
    std::vector<std::string> dirs;
    if (const char* e = std::getenv("LLMSERVE_GGML_LIB_DIR")) dirs.push_back(e);
    const std::string rel = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
    dirs.push_back(rel);
    dirs.push_back(exe_dir() + "/../../" + rel);
    for (const std::string& d : dirs) {
      void* base = dlopen((d + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!base) continue;
      r.quantize_chunk = reinterpret_cast<QuantizeChunk>(dlsym(base, "ggml_quantize_chunk"));
      std::string llama;
      if (DIR* dir = ::opendir(d.c_str())) {  // libllama.vX.Y.Z.so (not libllama-common)
        while (dirent* e = ::readdir(dir))
          if (std::strncmp(e->d_name, "libllama.", 9) == 0) llama = d + "/" + e->d_name;
        ::closedir(dir);
      }
      if (void* l = llama.empty() ? nullptr : dlopen(llama.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        r.default_params = reinterpret_cast<QuantizeParams (*)()>(dlsym(l, "llama_model_quantize_default_params"));
        r.model_quantize = reinterpret_cast<uint32_t (*)(const char*, const char*, const QuantizeParams*)>(
            dlsym(l, "llama_model_quantize"));
        auto log_set = reinterpret_cast<void (*)(void (*)(int, const char*, void*), void*)>(dlsym(l, "llama_log_set"));
        if (log_set) log_set(silent_log, nullptr);
      }
      break;
    }
    if (!r.quantize_chunk) r.why_not = "libggml-base.so not found (set LLMSERVE_GGML_LIB_DIR)";
    return r;
  }();
  return g;
}

}  // namespace llmserve::oracle
