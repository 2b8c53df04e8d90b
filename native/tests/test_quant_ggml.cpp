// Our scalar references against ggml itself: the libggml-base / libggml-cpu shared libraries that
// node-llama-cpp (the parity oracle, pinned in package.json) ships are loaded with dlopen, and
// - every reference quantizer writes exactly ggml's bytes (quantize_row_*_ref; quantize_iq4_nl/xs
//   without an importance matrix, as llama-quantize does) on rows built to hit the quantizers'
//   branches (zero, constant, one-signed, tiny, huge, outlier and tie blocks);
// - the activation quantizers (Q8_0, Q8_1, Q8_K) write exactly the bytes of ggml's CPU backend on
//   x86 (its from_float, which is what llama.cpp runs on this hardware);
// - dequantize_row_ref gives ggml's floats bit for bit on random block bytes;
// - vec_dot_ref agrees with ggml's vec_dot within 1e-5 * sum|w x| (ggml's SIMD order differs).
// The libraries are looked up in $LLMSERVE_GGML_LIB_DIR, else node_modules/@node-llama-cpp/
// linux-x64/bins/linux-x64 under the working directory or the test binary's ../..; without them
// (another platform, no npm install) the test says so and passes: the known-block and round-trip
// tests of test_quant*.cpp stand on their own.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant/quant.h"
#include "quant/quant_impl.h"
#include "testing.h"

using namespace llmserve;

namespace {

using Bytes = std::vector<uint8_t>;
using FromFloat = void (*)(const float*, void*, int64_t);
using ToFloat = void (*)(const void*, float*, int64_t);
using QuantizeIq4 = size_t (*)(const float*, void*, int64_t, int64_t, const float*);
using QuantizeChunk = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);
using VecDot = void (*)(int, float*, size_t, const void*, size_t, const void*, size_t, int);

// ggml.h / ggml-cpu.h (the version node-llama-cpp 3.21.1 bundles).
struct GgmlTypeTraits {
  const char* type_name;
  int64_t blck_size;
  int64_t blck_size_interleave;
  size_t type_size;
  bool is_quantized;
  ToFloat to_float;
  FromFloat from_float_ref;
};
struct GgmlTypeTraitsCpu {
  FromFloat from_float;
  VecDot vec_dot;
  int vec_dot_type;
  int64_t nrows;
};

struct Ggml {
  void* base = nullptr;
  void* cpu = nullptr;
  const GgmlTypeTraits* (*traits)(int) = nullptr;
  const GgmlTypeTraitsCpu* (*traits_cpu)(int) = nullptr;
  QuantizeIq4 quantize_iq4_nl = nullptr;
  QuantizeIq4 quantize_iq4_xs = nullptr;
  QuantizeChunk quantize_chunk = nullptr;
  std::string why_not;
};

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.find_last_of('/'));
}

const Ggml& ggml() {
  static const Ggml g = [] {
    Ggml r;
    std::vector<std::string> dirs;
    if (const char* e = std::getenv("LLMSERVE_GGML_LIB_DIR")) dirs.push_back(e);
    const std::string rel = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
    dirs.push_back(rel);
    dirs.push_back(exe_dir() + "/../../" + rel);
    for (const std::string& d : dirs) {
      r.base = dlopen((d + "/libggml-base.so").c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!r.base) continue;
#if defined(__x86_64__)
      // The AVX2 build of the CPU backend (the x86 code paths llama.cpp runs on AVX2 and AVX-512
      // machines alike for these functions).
      if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        r.cpu = dlopen((d + "/libggml-cpu-haswell.so").c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
      break;
    }
    if (!r.base) {
      r.why_not = "libggml-base.so not found (set LLMSERVE_GGML_LIB_DIR)";
      return r;
    }
    r.traits = reinterpret_cast<const GgmlTypeTraits* (*)(int)>(dlsym(r.base, "ggml_get_type_traits"));
    r.quantize_iq4_nl = reinterpret_cast<QuantizeIq4>(dlsym(r.base, "quantize_iq4_nl"));
    r.quantize_iq4_xs = reinterpret_cast<QuantizeIq4>(dlsym(r.base, "quantize_iq4_xs"));
    r.quantize_chunk = reinterpret_cast<QuantizeChunk>(dlsym(r.base, "ggml_quantize_chunk"));
    if (r.cpu) {
      r.traits_cpu = reinterpret_cast<const GgmlTypeTraitsCpu* (*)(int)>(dlsym(r.cpu, "ggml_get_type_traits_cpu"));
      auto init = reinterpret_cast<void (*)()>(dlsym(r.cpu, "ggml_cpu_init"));
      if (init) init();
    }
    if (!r.traits || !r.quantize_iq4_nl || !r.quantize_iq4_xs || !r.quantize_chunk)
      r.why_not = "libggml-base.so lacks the expected symbols";
    return r;
  }();
  return g;
}

bool have_ggml(const char* test) {
  if (!ggml().why_not.empty()) {
    std::printf("  (%s skipped: %s)\n", test, ggml().why_not.c_str());
    return false;
  }
  return true;
}

// Rows that reach the quantizers' branches: per block (of 32) a kind chosen at random.
// tame: no huge blocks (Q8_1's s = d * sum(qs) would overflow f16 and make the dots inf).
std::vector<float> nasty_row(int64_t n, uint32_t seed, bool tame = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t b = 0; b * 32 < n; ++b) {
    float* p = x.data() + 32 * b;
    const int kind = static_cast<int>(rng() % 12);
    const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 16) - 8);
    for (int j = 0; j < 32; ++j) {
      float v = g(rng) * scale;
      switch (kind) {
        case 0: v = 0.0f; break;                                                         // all zero
        case 1: v = 0.75f * scale; break;                                                // constant
        case 2: v = std::fabs(v); break;                                                 // all positive
        case 3: v = -std::fabs(v); break;                                                // all negative
        case 4: v *= 1e-18f; break;                                                      // below GROUP_MAX_EPS
        case 5: v = static_cast<float>(static_cast<int>(rng() % 33) - 16); break;        // integers: ties
        case 6: v = static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.25f; break;  // few levels
        case 7:
          if (j == 5) v = 40.0f * scale;  // one outlier
          break;
        case 8: v *= tame ? 1.0f : 3e3f; break;
        default: break;  // plain gaussian
      }
      p[j] = v;
    }
  }
  return x;
}

// Our type -> ggml's id is the same number (quant.h uses ggml's ids).
int id(GgmlType t) { return static_cast<int>(t); }

std::string first_diff(const Bytes& a, const Bytes& b, size_t block_bytes) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return "block " + std::to_string(i / block_bytes) + " byte " + std::to_string(i % block_bytes) + ": ours " +
             std::to_string(a[i]) + " ggml " + std::to_string(b[i]);
  return "";
}

}  // namespace

TEST(quant_ggml_reference_quantizers_bit_exact) {
  if (!have_ggml("quant_ggml_reference_quantizers_bit_exact")) return;
  struct Case {
    GgmlType t;
    bool iq4;  // ggml's quantize_iq4_nl/xs (no imatrix) rather than from_float_ref
  };
  const Case cases[] = {{GgmlType::Q4_0, false},  {GgmlType::Q4_1, false}, {GgmlType::Q5_0, false},
                        {GgmlType::Q5_1, false},  {GgmlType::Q2_K, false}, {GgmlType::Q3_K, false},
                        {GgmlType::Q4_K, false},  {GgmlType::Q5_K, false}, {GgmlType::Q6_K, false},
                        {GgmlType::IQ4_NL, true}, {GgmlType::IQ4_XS, true}};
  const Ggml& g = ggml();
  for (const Case& c : cases) {
    const size_t bb = type_traits(c.t).type_size;
    int bad_rows = 0;
    std::string what;
    for (uint32_t seed = 0; seed < 40; ++seed) {
      const int64_t n = 256 * (1 + seed % 4);
      std::vector<float> x = nasty_row(n, 1000 * id(c.t) + seed);
      Bytes ours(row_size(c.t, n), 0x11), theirs(row_size(c.t, n), 0x22);
      quantize_row_ref(c.t, x.data(), ours.data(), n);
      if (c.t == GgmlType::IQ4_NL) g.quantize_iq4_nl(x.data(), theirs.data(), 1, n, nullptr);
      else if (c.t == GgmlType::IQ4_XS) g.quantize_iq4_xs(x.data(), theirs.data(), 1, n, nullptr);
      else g.traits(id(c.t))->from_float_ref(x.data(), theirs.data(), n);
      if (ours != theirs) {
        if (!bad_rows) what = first_diff(ours, theirs, bb);
        ++bad_rows;
      }
    }
    if (bad_rows)
      std::fprintf(stderr, "  %s: %d of 40 rows differ from ggml (first: %s)\n", type_traits(c.t).name, bad_rows,
                   what.c_str());
    CHECK_EQ(bad_rows, 0);
  }
}

// Importance weights as llama-imatrix writes them (mean squared activations per column), made
// nasty: mostly lognormal, some zero (unused columns), some tiny and some huge.
std::vector<float> nasty_weights(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::lognormal_distribution<float> ln(0.0f, 1.5f);
  std::vector<float> w(static_cast<size_t>(n));
  for (float& v : w) {
    const int kind = static_cast<int>(rng() % 16);
    v = kind == 0 ? 0.0f : kind == 1 ? 1e-12f * ln(rng) : kind == 2 ? 1e6f * ln(rng) : ln(rng);
  }
  return w;
}

// With an importance matrix, llama-quantize calls ggml_quantize_chunk(type, rows, ..., imatrix):
// every type's weighted quantizer (ggml's *_impl with quant_weights) must give its bytes, several
// rows at once with one weight vector (the per-column imatrix), on rows of 1 to 4 super-blocks.
TEST(quant_ggml_imatrix_quantizers_bit_exact) {
  if (!have_ggml("quant_ggml_imatrix_quantizers_bit_exact")) return;
  const Ggml& g = ggml();
  const GgmlType types[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,   GgmlType::Q5_1,  GgmlType::Q8_0,
                            GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K,   GgmlType::Q5_K,  GgmlType::Q6_K,
                            GgmlType::F16,  GgmlType::BF16, GgmlType::IQ4_NL, GgmlType::IQ4_XS};
  for (GgmlType t : types) {
    int bad = 0;
    std::string what;
    for (uint32_t seed = 0; seed < 12; ++seed) {
      const int64_t n = 256 * (1 + seed % 4), rows = 3;
      std::vector<float> x(static_cast<size_t>(n * rows));
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<float> row = nasty_row(n, 4000 + 97 * id(t) + 7 * seed + static_cast<uint32_t>(r));
        std::copy(row.begin(), row.end(), x.begin() + r * n);
      }
      const std::vector<float> qw = nasty_weights(n, 9000 + seed);
      const size_t rs = row_size(t, n);
      Bytes ours(rs * rows, 0x11), theirs(rs * rows, 0x22);
      for (int64_t r = 0; r < rows; ++r) quantize_row_imatrix(t, x.data() + r * n, ours.data() + r * rs, n, qw.data());
      CHECK_EQ(g.quantize_chunk(id(t), x.data(), theirs.data(), 0, rows, n, qw.data()), rs * rows);
      if (ours != theirs) {
        if (!bad) what = first_diff(ours, theirs, type_traits(t).type_size);
        ++bad;
      }
    }
    if (bad)
      std::fprintf(stderr, "  %s with imatrix: %d of 12 inputs differ from ggml_quantize_chunk (first: %s)\n",
                   type_traits(t).name, bad, what.c_str());
    CHECK_EQ(bad, 0);
  }
}

TEST(quant_ggml_activation_quantizers_match_x86_backend) {
  if (!have_ggml("quant_ggml_activation_quantizers_match_x86_backend")) return;
  const Ggml& g = ggml();
  if (!g.traits_cpu) {
    std::printf("  (skipped: no AVX2 build of ggml's CPU backend can run here)\n");
    return;
  }
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
    int bad_rows = 0;
    std::string what;
    for (uint32_t seed = 0; seed < 40; ++seed) {
      const int64_t n = 256 * (1 + seed % 4);
      std::vector<float> x = nasty_row(n, 7000 + 100 * id(t) + seed);
      Bytes ours(row_size(t, n), 0x11), theirs(row_size(t, n), 0x22);
      quantize_row_ref(t, x.data(), ours.data(), n);
      g.traits_cpu(id(t))->from_float(x.data(), theirs.data(), n);
      if (t == GgmlType::Q8_K) {
        // ggml leaves an all-zero block's bsums as they were; ours zeroes them (quantize_row_q8_K_ref).
        for (int64_t b = 0; b < n / 256; ++b) {
          quant::BlockQ8_K* q = reinterpret_cast<quant::BlockQ8_K*>(theirs.data()) + b;
          if (q->d == 0.0f) std::memset(q->bsums, 0, sizeof q->bsums);
        }
      }
      if (ours != theirs) {
        if (!bad_rows) what = first_diff(ours, theirs, type_traits(t).type_size);
        ++bad_rows;
      }
    }
    if (bad_rows)
      std::fprintf(stderr, "  %s: %d of 40 rows differ from ggml's from_float (first: %s)\n", type_traits(t).name,
                   bad_rows, what.c_str());
    CHECK_EQ(bad_rows, 0);
  }
}

TEST(quant_ggml_dequantize_bit_exact) {
  if (!have_ggml("quant_ggml_dequantize_bit_exact")) return;
  const Ggml& g = ggml();
  std::mt19937 rng(99);
  for (GgmlType t :
       {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
        GgmlType::Q5_K, GgmlType::IQ4_XS, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0}) {
    const int64_t n = 4 * 256;
    Bytes w(row_size(t, n));
    for (auto& b : w) b = static_cast<uint8_t>(rng());
    // Random bytes (any scale bits, NaN included: NaN equals NaN here) and quantized rows.
    std::vector<float> x = nasty_row(n, 5 + id(t));
    Bytes q(row_size(t, n));
    quantize_row_ref(t, x.data(), q.data(), n);
    int bad = 0;
    for (const Bytes* src : {&q, &w}) {
      std::vector<float> ours(n), theirs(n);
      dequantize_row_ref(t, src->data(), ours.data(), n);
      g.traits(id(t))->to_float(src->data(), theirs.data(), n);
      for (int64_t i = 0; i < n; ++i)
        bad += std::memcmp(&ours[i], &theirs[i], 4) != 0 && !(ours[i] != ours[i] && theirs[i] != theirs[i]);
    }
    if (bad) std::fprintf(stderr, "  %s: %d dequantized values differ from ggml\n", type_traits(t).name, bad);
    CHECK_EQ(bad, 0);
  }
}

TEST(quant_ggml_vec_dot_agrees) {
  if (!have_ggml("quant_ggml_vec_dot_agrees")) return;
  const Ggml& g = ggml();
  if (!g.traits_cpu) {
    std::printf("  (skipped: no AVX2 build of ggml's CPU backend can run here)\n");
    return;
  }
  for (GgmlType t : {GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL, GgmlType::Q2_K, GgmlType::Q3_K,
                     GgmlType::Q5_K, GgmlType::IQ4_XS}) {
    const GgmlType vt = type_traits(t).vec_dot_type;
    CHECK_EQ(g.traits_cpu(id(t))->vec_dot_type, id(vt));
    int bad = 0;
    for (uint32_t seed = 0; seed < 20; ++seed) {
      const int64_t n = 256 * (1 + seed % 8);
      std::vector<float> wf = nasty_row(n, 300 + seed, true), xf = nasty_row(n, 600 + seed, true);
      Bytes w(row_size(t, n)), xq(row_size(vt, n));
      quantize_row_ref(t, wf.data(), w.data(), n);
      quantize_row_ref(vt, xf.data(), xq.data(), n);
      float theirs = 0;
      g.traits_cpu(id(t))->vec_dot(static_cast<int>(n), &theirs, 0, w.data(), 0, xq.data(), 0, 1);
      const float ours = vec_dot_ref(t, n, w.data(), xq.data());
      std::vector<float> a(n), b(n);
      dequantize_row_ref(t, w.data(), a.data(), n);
      dequantize_row_ref(vt, xq.data(), b.data(), n);
      double mag = 0;
      for (int64_t i = 0; i < n; ++i) mag += std::fabs(double(a[i]) * b[i]);
      // Q4_1/Q5_1 add m * s per block, where s = d * sum(qs) was rounded to f16: measured against
      // the magnitude of that term too.
      if (t == GgmlType::Q4_1 || t == GgmlType::Q5_1) {
        const size_t ws = type_traits(t).type_size;
        for (int64_t blk = 0; blk < n / 32; ++blk) {
          uint16_t m, s;
          std::memcpy(&m, w.data() + blk * ws + 2, 2);
          std::memcpy(&s, xq.data() + blk * 36 + 2, 2);
          mag += std::fabs(double(fp16_to_fp32(m)) * fp16_to_fp32(s));
        }
      }
      if (!(std::fabs(double(ours) - theirs) <= 1e-5 * mag + 1e-6)) {
        if (!bad)
          std::fprintf(stderr, "  %s n=%lld: ours %.9g ggml %.9g (scale %.3g)\n", type_traits(t).name, (long long)n,
                       ours, theirs, mag);
        ++bad;
      }
    }
    CHECK_EQ(bad, 0);
  }
}
