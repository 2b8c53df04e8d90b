#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#if defined(LLMSERVE_X86)
#include <cpuid.h>
#endif

namespace llmserve {

namespace {

#if defined(LLMSERVE_X86)
// __builtin_cpu_supports("f16c") needs gcc or clang >= 16 (clang 14 rejects the string at compile
// time); CPUID leaf 1, ECX bit 29 says the same with every compiler.
bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

bool probe_avx2() {
#if defined(LLMSERVE_X86)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#else
  return false;
#endif
}

bool probe_avx512() {
#if defined(LLMSERVE_X86)
  // libgcc's probe also checks that the OS saves the zmm state (XCR0).
  return probe_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

// CPUID leaf 7 sub-leaf 1, EAX bit 4 (clang 14's __builtin_cpu_supports has no "avxvnni").
bool probe_avx_vnni() {
#if defined(LLMSERVE_X86)
  unsigned a = 0, b = 0, c = 0, d = 0;
  return probe_avx2() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4)) != 0;
#else
  return false;
#endif
}

struct Probe {
  bool avx2 = probe_avx2();
  bool avx512 = probe_avx512();
  bool avx_vnni = probe_avx_vnni();
};
const Probe& probe() {
  static const Probe p;
  return p;
}

// Whether LLMSERVE_KERNELS is `name` (read at each call: reset_isa_for_testing re-reads it).
bool kernels_cap_is(const char* name) {
  const char* cap = std::getenv("LLMSERVE_KERNELS");
  return cap && std::strcmp(cap, name) == 0;
}

Isa choose() {
  const char* force = std::getenv("LLMSERVE_FORCE_SCALAR");
  if (force && std::strcmp(force, "1") == 0) return Isa::Scalar;
  if (kernels_cap_is("scalar")) return Isa::Scalar;
  if (kernels_cap_is("avx2") || kernels_cap_is("avxvnni")) return probe().avx2 ? Isa::Avx2 : Isa::Scalar;
  if (probe().avx512) return Isa::Avx512;
  if (probe().avx2) return Isa::Avx2;
  return Isa::Scalar;
}

constexpr int kUnset = -1;
std::atomic<int> g_isa{kUnset};

}  // namespace

bool cpu_has_avx512vbmi() {
#if defined(LLMSERVE_X86)
  static const bool has = probe_avx512() && __builtin_cpu_supports("avx512vbmi");
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx_vnni() { return probe().avx_vnni; }

bool avx_vnni_active() { return active_isa() == Isa::Avx2 && probe().avx_vnni && !kernels_cap_is("avx2"); }

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return probe().avx2;
    case Isa::Avx512: return probe().avx512;
  }
  return false;
}

Isa active_isa() {
  int v = g_isa.load(std::memory_order_acquire);
  if (v == kUnset) {
    static const int first = [] {
      const int c = static_cast<int>(choose());
      int expected = kUnset;
      g_isa.compare_exchange_strong(expected, c, std::memory_order_acq_rel);
      return c;
    }();
    (void)first;
    v = g_isa.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(v);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

void reset_isa_for_testing() {
  active_isa();  // the one-time initialisation has run, so it cannot overwrite this later
  g_isa.store(static_cast<int>(choose()), std::memory_order_release);
}

}  // namespace llmserve
