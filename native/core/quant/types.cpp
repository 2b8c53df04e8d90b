// ggml type traits (names, block sizes, bytes per block) and scalar f16/bf16 conversions.
#include <array>
#include <cstring>

#include "quant/quant_impl.h"

namespace llmserve {
namespace {

constexpr int64_t QK_K = quant::kQK_K;

// ggml ids that quant.h's enum does not name (we only need their sizes, to skip/size tensors).
constexpr uint32_t kIQ2_XXS = 16, kIQ2_XS = 17, kIQ3_XXS = 18, kIQ1_S = 19, kIQ4_NL = 20, kIQ3_S = 21, kIQ2_S = 22,
                   kIQ4_XS = 23, kIQ1_M = 29, kTQ1_0 = 34, kTQ2_0 = 35, kMXFP4 = 39;

struct TraitsTable {
  std::array<TypeTraits, kGgmlTypeCount + 1> t;  // last entry: the "unknown" answer

  constexpr TraitsTable() : t{} {
    for (auto& e : t) e = {"unknown", 0, 0, false, false, GgmlType::F32};
    using G = GgmlType;
    // supported: the scalar references exist (dequantize, quantize, vec_dot); which weight types the
    // matmuls run is gemm_supported() (quant/gemm.h).
    auto set = [this](uint32_t id, const char* name, int64_t bs, size_t ts, bool supported, G vdt) {
      t[id] = {name, bs, ts, true, supported, vdt};
    };
    // Sizes are sizeof(block_*) from ggml-common.h (f16 = 2 bytes).
    set(0, "f32", 1, 4, true, G::F32);
    set(1, "f16", 1, 2, true, G::F16);
    set(2, "q4_0", 32, 2 + 16, true, G::Q8_0);
    set(3, "q4_1", 32, 2 * 2 + 16, true, G::Q8_1);
    set(6, "q5_0", 32, 2 + 4 + 16, true, G::Q8_0);
    set(7, "q5_1", 32, 2 * 2 + 4 + 16, true, G::Q8_1);
    set(8, "q8_0", 32, 2 + 32, true, G::Q8_0);
    set(9, "q8_1", 32, 2 * 2 + 32, true, G::Q8_1);
    set(10, "q2_K", QK_K, 2 * 2 + QK_K / 16 + QK_K / 4, true, G::Q8_K);
    set(11, "q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true, G::Q8_K);
    set(12, "q4_K", QK_K, 2 * 2 + 12 + QK_K / 2, true, G::Q8_K);
    set(13, "q5_K", QK_K, 2 * 2 + 12 + QK_K / 2 + QK_K / 8, true, G::Q8_K);
    set(14, "q6_K", QK_K, 2 + QK_K / 16 + 3 * QK_K / 4, true, G::Q8_K);
    set(15, "q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2, true, G::Q8_K);
    set(kIQ2_XXS, "iq2_xxs", QK_K, 2 + QK_K / 8 * 2, false, G::Q8_K);
    set(kIQ2_XS, "iq2_xs", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32, false, G::Q8_K);
    set(kIQ3_XXS, "iq3_xxs", QK_K, 2 + 3 * (QK_K / 8), false, G::Q8_K);
    set(kIQ1_S, "iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16, false, G::Q8_K);
    set(kIQ4_NL, "iq4_nl", 32, 2 + 16, true, G::Q8_0);
    set(kIQ3_S, "iq3_s", QK_K, 2 + 13 * (QK_K / 32) + QK_K / 64, false, G::Q8_K);
    set(kIQ2_S, "iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16, false, G::Q8_K);
    set(kIQ4_XS, "iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2, true, G::Q8_K);
    set(24, "i8", 1, 1, false, G::F32);
    set(25, "i16", 1, 2, false, G::F32);
    set(26, "i32", 1, 4, false, G::F32);
    set(27, "i64", 1, 8, false, G::F32);
    set(28, "f64", 1, 8, false, G::F32);
    set(kIQ1_M, "iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false, G::Q8_K);
    set(30, "bf16", 1, 2, true, G::BF16);
    set(kTQ1_0, "tq1_0", QK_K, 2 + QK_K / 64 + (QK_K - 4 * QK_K / 64) / 5, false, G::Q8_K);
    set(kTQ2_0, "tq2_0", QK_K, 2 + QK_K / 4, false, G::Q8_K);
    set(kMXFP4, "mxfp4", 32, 1 + 16, false, G::Q8_0);
  }
};

constexpr TraitsTable kTraits;

uint32_t f2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float u2f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

const TypeTraits& type_traits(GgmlType t) {
  uint32_t id = static_cast<uint32_t>(t);
  return kTraits.t[id < kGgmlTypeCount ? id : kGgmlTypeCount];
}

size_t row_size(GgmlType t, int64_t n) {
  const TypeTraits& tr = type_traits(t);
  if (!tr.known || n <= 0) return 0;
  return tr.type_size * static_cast<size_t>(n / tr.block_size);
}

float fp16_to_fp32(uint16_t h) { return quant::half_to_float(h); }

uint16_t fp32_to_fp16(float f) {
  const uint32_t u = f2u(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7E00;   // NaN -> quiet NaN (as ggml's scalar path)
  if (a >= 0x477FF000u) return sign | 0x7C00;  // >= 65520 rounds to inf
  if (a < 0x38800000u) {
    // Result is subnormal (or zero): adding 0.5 puts the value's 2^-24 units in the low mantissa
    // bits of a float in [0.5, 1), and the FPU's add rounds them to nearest even for us.
    float v = u2f(a) + 0.5f;
    return sign | static_cast<uint16_t>(f2u(v) - 0x3F000000u);
  }
  // Normal: rebias exponent (127 -> 15), round the 13 dropped mantissa bits to nearest even.
  // A mantissa carry correctly bumps the exponent.
  uint32_t r = a - 0x38000000u;
  r += 0x0FFFu + ((r >> 13) & 1);
  return sign | static_cast<uint16_t>(r >> 13);
}

float bf16_to_fp32(uint16_t h) { return quant::bf16_bits_to_float(h); }

uint16_t fp32_to_bf16(float f) {
  const uint32_t u = f2u(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

}  // namespace llmserve
