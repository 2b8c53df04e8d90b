// Internal to native/core/quant (and its tests): ggml block structs, shared scalar helpers and the
// per-ISA kernel tables that dispatch.cpp chooses between. Not part of the public quant.h surface.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "quant/quant.h"

namespace llmserve {
struct GemmArgs;  // quant/gemm.h
}

namespace llmserve::quant {

constexpr int kQK4_0 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK_K = 256;       // super-block size of the K-quants
constexpr int kKScaleSize = 12;  // packed 6-bit scales+mins of Q4_K

// Byte layouts exactly as ggml-common.h (ggml_half is stored as raw IEEE binary16 bits).
struct BlockQ4_0 {
  uint16_t d;              // scale (f16)
  uint8_t qs[kQK4_0 / 2];  // element j in the low nibble of qs[j], element j+16 in the high nibble
};
struct BlockQ8_0 {
  uint16_t d;  // scale (f16)
  int8_t qs[kQK8_0];
};
struct BlockQ4_K {
  uint16_t d;                   // super-block scale for the 6-bit scales (f16)
  uint16_t dmin;                // super-block scale for the 6-bit mins (f16)
  uint8_t scales[kKScaleSize];  // 8 scales + 8 mins, 6 bits each (see get_scale_min_k4)
  uint8_t qs[kQK_K / 2];        // per 64 elements: 32 bytes, low nibble = first 32, high = next 32
};
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];      // low 4 bits
  uint8_t qh[kQK_K / 4];      // high 2 bits
  int8_t scales[kQK_K / 16];  // one 8-bit scale per 16 elements
  uint16_t d;                 // super-block scale (f16)
};
// One Q6_K block's 256 weights as signed 6-bit values in [-32, 31], in element order.
static inline void unpack_q6_K(const BlockQ6_K& b, int8_t* q) {
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b.ql + 64 * h;
    const uint8_t* qh = b.qh + 32 * h;
    int8_t* o = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      o[l] = static_cast<int8_t>(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
      o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}
struct BlockQ8_K {
  float d;  // f32, not f16: activations only
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];  // sum of qs per 16 elements (lets K-quant dots fold in mins/offsets)
};
// Legacy 32-element formats with an offset or a fifth bit (ggml-common.h).
struct BlockQ4_1 {
  uint16_t d;              // scale (f16)
  uint16_t m;              // offset (f16): value = q * d + m, q unsigned 4-bit
  uint8_t qs[kQK4_0 / 2];  // as Q4_0: element j low nibble, j+16 high nibble
};
struct BlockQ5_0 {
  uint16_t d;              // scale (f16): value = (q - 16) * d, q unsigned 5-bit
  uint8_t qh[4];           // bit j (little-endian u32) = fifth bit of element j
  uint8_t qs[kQK4_0 / 2];  // low 4 bits, Q4_0's nibble order
};
struct BlockQ5_1 {
  uint16_t d;  // scale (f16): value = q * d + m
  uint16_t m;  // offset (f16)
  uint8_t qh[4];
  uint8_t qs[kQK4_0 / 2];
};
struct BlockQ8_1 {
  uint16_t d;  // scale (f16)
  uint16_t s;  // d * sum(qs), rounded to f16 (lets Q4_1/Q5_1 dots fold in the weight offset)
  int8_t qs[kQK8_0];
};
// IQ4_NL: Q4_0's layout, but the nibble indexes kIQ4NLValues (a non-linear grid) instead of q - 8.
struct BlockIQ4_NL {
  uint16_t d;  // scale (f16): value = kIQ4NLValues[nibble] * d
  uint8_t qs[kQK4_0 / 2];
};
// K-quants (super-blocks of 256).
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // per 16 elements: low nibble scale, high nibble min (4 bits each)
  uint8_t qs[kQK_K / 4];  // per 128 elements: 32 bytes, 2-bit fields at shifts 0,2,4,6 = elements l, l+32, l+64, l+96
  uint16_t d;             // super-block scale for the scales (f16)
  uint16_t dmin;          // super-block scale for the mins (f16)
};
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];  // third bit: element 32*b + l in bit b of hmask[l] (set = +0, clear = -4)
  uint8_t qs[kQK_K / 4];     // low 2 bits, Q2_K's order
  uint8_t scales[12];        // 16 signed 6-bit scales (+32 bias), see unpack_q3_K_scales
  uint16_t d;                // super-block scale (f16)
};
struct BlockQ5_K {
  uint16_t d;  // as Q4_K
  uint16_t dmin;
  uint8_t scales[kKScaleSize];  // Q4_K's packing
  uint8_t qh[kQK_K / 8];        // fifth bit: element 32*b + l in bit b of qh[l]
  uint8_t qs[kQK_K / 2];        // low 4 bits, Q4_K's order
};
struct BlockIQ4_XS {
  uint16_t d;                    // super-block scale (f16)
  uint16_t scales_h;             // high 2 bits of the 8 sub-block scales
  uint8_t scales_l[kQK_K / 64];  // low 4 bits (sub-block 2k in the low nibble of byte k)
  uint8_t qs[kQK_K / 2];         // per 32 elements 16 bytes, IQ4_NL's order
};
// ggml's kvalues_iq4nl: the 16 levels of IQ4_NL / IQ4_XS.
inline constexpr int8_t kIQ4NLValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static_assert(sizeof(BlockQ4_0) == 18, "q4_0 layout");
static_assert(sizeof(BlockQ4_1) == 20, "q4_1 layout");
static_assert(sizeof(BlockQ5_0) == 22, "q5_0 layout");
static_assert(sizeof(BlockQ5_1) == 24, "q5_1 layout");
static_assert(sizeof(BlockQ8_1) == 36, "q8_1 layout");
static_assert(sizeof(BlockIQ4_NL) == 18, "iq4_nl layout");
static_assert(sizeof(BlockQ2_K) == 84, "q2_K layout");
static_assert(sizeof(BlockQ3_K) == 110, "q3_K layout");
static_assert(sizeof(BlockQ5_K) == 176, "q5_K layout");
static_assert(sizeof(BlockIQ4_XS) == 136, "iq4_xs layout");
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 layout");
static_assert(sizeof(BlockQ4_K) == 144, "q4_K layout");
static_assert(sizeof(BlockQ6_K) == 210, "q6_K layout");
static_assert(sizeof(BlockQ8_K) == 292, "q8_K layout");

// Inline f16 -> f32 for the scalar hot loops (the public fp16_to_fp32 is this, out of line).
static inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t u;
  if (exp == 0x1F) {
    u = sign | 0x7F800000u | (mant << 13);  // inf / NaN (payload kept)
  } else if (exp == 0) {
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
    std::memcpy(&u, &v, 4);
    u |= sign;
  } else {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline float bf16_bits_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Q4_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes (ggml's get_scale_min_k4).
// Bytes 0..3: scales 0..3 (low 6 bits), bytes 4..7: mins 0..3 (low 6 bits); bytes 8..11 hold the
// low nibbles of scale/min 4..7, whose top 2 bits live in the top bits of bytes 0..3 / 4..7.
static inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Q3_K: the 16 signed 6-bit group scales (bias 32 removed) from its 12 packed bytes (k_quants2_ref.cpp).
void unpack_q3_K_scales(const uint8_t* s, int8_t out[16]);

// All 8 scales (out[0..7]) and 8 mins (out[8..15]) of a Q4_K block at once, with 32-bit word
// little-endian word arithmetic instead of 8 get_scale_min_k4 calls (per-byte masks stop bits leaking
// between neighbouring bytes).
static inline void unpack_q4_K_scales(const uint8_t* q, uint8_t out[16]) {
  uint32_t w[3];
  std::memcpy(w, q, 12);
  const uint32_t lo6 = 0x3f3f3f3f, lo4 = 0x0f0f0f0f, lo2 = 0x03030303;
  const uint32_t r[4] = {
      w[0] & lo6,                                        // scales 0..3
      (w[2] & lo4) | (((w[0] >> 6) & lo2) << 4),         // scales 4..7
      w[1] & lo6,                                        // mins 0..3
      ((w[2] >> 4) & lo4) | (((w[1] >> 6) & lo2) << 4),  // mins 4..7
  };
  std::memcpy(out, r, 16);
}

// ggml's nearest_int: round half to even via the 1.5*2^23 trick. Valid for |v| <= 2^22-1, so
// clamp first (no-op for every value ggml's quantizers produce) and map NaN to 0.
static inline int nearest_int(float v) {
  if (!(v == v)) return 0;
  if (v > 4194303.f) v = 4194303.f;
  if (v < -4194303.f) v = -4194303.f;
  float t = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &t, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

using DequantFn = void (*)(const void* x, float* y, int64_t n);
using QuantFn = void (*)(const float* x, void* y, int64_t n);
using DotFn = float (*)(int64_t n, const void* w, const void* xq);
using GemmFn = void (*)(const GemmArgs& a);  // see quant/gemm.h, quant/gemm_impl.h
// Packs rows [0, n_rows) (n_rows <= 16) of a weight matrix into one 16-row group (gemm_impl.h).
using PackGroupFn = void (*)(GgmlType t, const uint8_t* w, size_t row_bytes, int n_rows, int64_t nb, uint8_t* out);

// One complete set of kernels; null entries mean "type not supported".
struct KernelTable {
  const char* isa;
  DequantFn dequant[kGgmlTypeCount];
  QuantFn quant[kGgmlTypeCount];
  DotFn dot[kGgmlTypeCount];
  GemmFn gemm[kGgmlTypeCount];  // by weight type
  PackGroupFn pack_group;       // same bytes on every ISA
};

static inline constexpr uint32_t idx(GgmlType t) { return static_cast<uint32_t>(t); }

// Scalar references (the *_ref.cpp files). All take n elements, n % block_size == 0.
void dequantize_row_f32_ref(const void* x, float* y, int64_t n);
void quantize_row_f32_ref(const float* x, void* y, int64_t n);
float vec_dot_f32_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_f16_ref(const void* x, float* y, int64_t n);
void quantize_row_f16_ref(const float* x, void* y, int64_t n);
float vec_dot_f16_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_bf16_ref(const void* x, float* y, int64_t n);
void quantize_row_bf16_ref(const float* x, void* y, int64_t n);
float vec_dot_bf16_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q8_0_ref(const void* x, float* y, int64_t n);
void quantize_row_q8_0_ref(const float* x, void* y, int64_t n);
void quantize_row_q8_0_weights_ref(const float* x, void* y, int64_t n);
float vec_dot_q8_0_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q4_0_ref(const void* x, float* y, int64_t n);
void quantize_row_q4_0_ref(const float* x, void* y, int64_t n);
float vec_dot_q4_0_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q4_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q4_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q4_K_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q6_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q6_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q6_K_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q8_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q8_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q8_K_ref(int64_t n, const void* w, const void* xq);
// Legacy formats (legacy_ref.cpp): Q4_1/Q5_1 dot against Q8_1, Q5_0 against Q8_0.
void dequantize_row_q4_1_ref(const void* x, float* y, int64_t n);
void quantize_row_q4_1_ref(const float* x, void* y, int64_t n);
float vec_dot_q4_1_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q5_0_ref(const void* x, float* y, int64_t n);
void quantize_row_q5_0_ref(const float* x, void* y, int64_t n);
float vec_dot_q5_0_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q5_1_ref(const void* x, float* y, int64_t n);
void quantize_row_q5_1_ref(const float* x, void* y, int64_t n);
float vec_dot_q5_1_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q8_1_ref(const void* x, float* y, int64_t n);
void quantize_row_q8_1_ref(const float* x, void* y, int64_t n);
float vec_dot_q8_1_ref(int64_t n, const void* w, const void* xq);
// Non-linear 4-bit formats (iq4_ref.cpp): IQ4_NL dots against Q8_0, IQ4_XS against Q8_K.
void dequantize_row_iq4_nl_ref(const void* x, float* y, int64_t n);
void quantize_row_iq4_nl_ref(const float* x, void* y, int64_t n);
float vec_dot_iq4_nl_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_iq4_xs_ref(const void* x, float* y, int64_t n);
void quantize_row_iq4_xs_ref(const float* x, void* y, int64_t n);
float vec_dot_iq4_xs_ref(int64_t n, const void* w, const void* xq);
// With per-column importance weights qw ([n], or nullptr: the functions above).
void quantize_row_iq4_nl_w(const float* x, void* y, int64_t n, const float* qw);
void quantize_row_iq4_xs_w(const float* x, void* y, int64_t n, const float* qw);
// More K-quants (k_quants2_ref.cpp), against Q8_K.
void dequantize_row_q2_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q2_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q2_K_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q3_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q3_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q3_K_ref(int64_t n, const void* w, const void* xq);
void dequantize_row_q5_K_ref(const void* x, float* y, int64_t n);
void quantize_row_q5_K_ref(const float* x, void* y, int64_t n);
float vec_dot_q5_K_ref(int64_t n, const void* w, const void* xq);

// Per-ISA overrides; each starts from the table it is handed and replaces what it accelerates.
// Only defined when the matching *_avx2.cpp / *_avx512.cpp file is compiled (x86-64).
void install_avx2_kernels(KernelTable& t);
void install_avx512_kernels(KernelTable& t);
// GEMM entries (gemm_ref.cpp, gemm_avx2.cpp, gemm_avx512.cpp).
void install_ref_gemm(KernelTable& t);
void install_avx2_gemm(KernelTable& t);
void install_avx512_gemm(KernelTable& t);
// On top of install_avx2_gemm: the Q4_0 / Q8_0 GEMMs with AVX-VNNI dot products (gemm_avxvnni.cpp).
void install_avx_vnni_gemm(KernelTable& t);
// gemm_avx2.cpp's on-the-fly packer (the AVX-VNNI GEMMs share its packed layout).
void pack_group_avx2(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const uint8_t* next,
                     size_t next_bytes, int64_t next_nb);
// The GEMMs of the types added later, called by install_avx2_gemm / install_avx512_gemm
// (gemm_legacy_avx2.cpp, gemm_legacy_avx512.cpp, gemm_kquants_avx2.cpp, gemm_kquants_avx512.cpp).
void install_avx2_gemm_legacy(KernelTable& t);
void install_avx512_gemm_legacy(KernelTable& t);
void install_avx2_gemm_kquants(KernelTable& t);
void install_avx512_gemm_kquants(KernelTable& t);

// Tables for tests: the scalar table always; the SIMD ones only if this CPU can run them
// (nullptr otherwise).
const KernelTable& ref_kernels();
const KernelTable* avx2_kernels();
const KernelTable* avx_vnni_kernels();  // also needs AVX-VNNI
const KernelTable* avx512_kernels();

// Re-run CPU detection and re-read LLMSERVE_FORCE_SCALAR (tests only; not thread-safe against
// concurrent dispatch calls).
void reset_dispatch_for_testing();

}  // namespace llmserve::quant
