// Batched weight x activation products (GEMM) for every supported weight type, with one rule:
// the value of output (row r, token t) is a fixed function of row r and token t's activation alone
// -- bit-identical whether it is computed for 1 token or 512, in any tile or thread split.
//
// How that holds (the "canonical" order; the scalar gemm_ref spells it out):
// - Quantized weights (Q4_0, Q8_0, Q4_K, Q6_K, ...): each block's dot is an exact integer sum (sumi, and
//   for Q4_K the mins sum summ); the f32 accumulation over blocks is, in block order from 0,
//       acc = fma(float(sumi), d_w * d_x, acc)
//   (d_w * d_x rounded to f32 first), then y = acc (+ bias[r]). Q4_K keeps the mins in a second
//   accumulator, acc_min = fma(float(summ), dmin_w * d_x, acc_min), y = acc - acc_min. Q4_0 and
//   Q4_K follow llama.cpp's repacked x86 GEMV/GEMM kernels, so those matmuls reproduce llama.cpp's
//   to the bit where it runs those paths. Q8_0 uses the same one-accumulator order for speed
//   (llama.cpp's vec_dot_q8_0_q8_0 keeps 8 lane accumulators: 8 converts + fmas per block), so it
//   matches llama.cpp within rounding only; vec_dot for Q8_0 (q8_0 KV caches) keeps ggml's order.
//   Every ISA computes the same sequence (one row per vector lane; the SIMD kernels put 16 weight
//   rows in the lanes and broadcast each token's activation bytes), so for these types scalar,
//   AVX2 and AVX-512 agree bit for bit too.
//   The later 32-element types follow the same rule (gemm_ref_legacy.cpp spells them out):
//     Q5_0 (sumi over q5 - 16) and IQ4_NL (sumi over grid values): one accumulator, as Q4_0;
//     IQ4_NL so matches llama.cpp's repacked iq4_nl_8x8 kernels to the bit.
//     Q4_1, Q5_1 (vec_dot type Q8_1: x = d_x * qs, s_x = f16(d_x * sum(qs))): sumi over the
//     unsigned 4/5-bit values, acc = fma(float(sumi), d_w * d_x, acc) and in a second accumulator
//     acc_m = fma(m_w, s_x, acc_m), y = acc + acc_m (llama.cpp's vec_dot also sums the m * s terms
//     apart and adds them last, but keeps 8 lane accumulators for the rest: within rounding).
//   Q5_0, Q4_1 and Q5_1 have no repacked llama.cpp kernel on x86 (it runs lane-accumulating vec_dot
//   or, for Q5_0 batches, tinyBLAS), so they match llama.cpp within rounding only.
//   The later K-quant-style types (gemm_ref_kquants.cpp) sum per super-block of 256 exactly:
//   sumi = sum over sub-blocks of scale * (integer dot), then one fma per super-block:
//     Q5_K (8 x 32, 6-bit scales and mins, as Q4_K) and Q2_K (16 x 16, 4-bit scales and mins):
//       Q4_K's two accumulators, acc_min from summ = sum of min * bsums; y = acc - acc_min. Q2_K is
//       the order of llama.cpp's repacked q2_K_8x8 kernels (used on AVX-512 builds).
//     Q3_K (16 x 16, signed 6-bit scales, values -4..3) and IQ4_XS (8 x 32, signed 6-bit scales,
//       grid values): one accumulator, as Q6_K.
//   Q3_K, Q5_K and IQ4_XS run lane-accumulating vec_dots in llama.cpp: within rounding.
// - Float weights (F32, F16, BF16): per (row, token) one f32 accumulator of L lanes (L = 16 on
//   AVX-512, 8 on AVX2) runs fma over k in steps of L, then a fixed horizontal reduction; the
//   scalar path accumulates in double like vec_dot_ref. These agree across batch sizes within one
//   ISA, and with vec_dot_ref within rounding.
// Activations are converted once per token, with the semantics of ggml's vec_dot_type (Q8_0, Q8_1,
// Q8_K, F16, BF16, F32: the same values quantize_row makes), into a layout the kernels read
// directly (with per-block sums next to the values; quant/gemm_impl.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "quant/quant.h"

namespace llmserve {

// Weight rows per packed group: the lanes of one micro-kernel call.
constexpr int kGemmGroupRows = 16;

// Weight types gemm handles (the float types, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K,
// IQ4_XS).
bool gemm_supported(GgmlType wtype);

// Bytes of one prepared activation row for weights of type wtype and n_in inputs (a multiple of
// 64; 0 if unsupported or n_in is not a multiple of the vec_dot type's block size).
size_t gemm_act_row_bytes(GgmlType wtype, int64_t n_in);
// x: [n_in] f32 -> out: gemm_act_row_bytes(wtype, n_in) bytes. Values are exactly those of
// quantize_row(type_traits(wtype).vec_dot_type, x) (Q8_0: + per-block f32 scale and sum terms;
// Q8_K: + each 32-element sub-block's sum; F16/BF16: the rounded values stored back as f32).
void gemm_prepare_act(GgmlType wtype, const float* x, int64_t n_in, uint8_t* out);

struct GemmArgs {
  GgmlType type = GgmlType::F32;  // weight type
  int64_t n_in = 0;
  // raw rows: row r at w + r * row_bytes (ggml layout); Q8_0 and Q4_0: may be null when packed is set
  const uint8_t* w = nullptr;
  size_t row_bytes = 0;
  const uint8_t* packed = nullptr;  // optional: the same matrix packed by gemm_pack; then r0 % 16 == 0
  int64_t r0 = 0, r1 = 0;           // compute rows [r0, r1)
  const uint8_t* act = nullptr;     // n prepared activation rows, act_stride bytes apart
  size_t act_stride = 0;
  int64_t n = 0;                // tokens
  const float* bias = nullptr;  // [n_out] (indexed by row) or null
  float* y = nullptr;           // y[t * ldy + r]
  int64_t ldy = 0;
};

// y[t, r] for r in [r0, r1), t in [0, n) (dispatched ISA). Safe no-op on unsupported types.
void gemm(const GemmArgs& a);
// The portable scalar implementation (the canonical formula written out); always available.
void gemm_ref(const GemmArgs& a);

// Load-time repacking (optional; gemm works on raw rows too, packing each 16-row group on the fly).
// The packed form interleaves 16 rows per block (4-byte granularity) so that the kernels read one
// contiguous stream; it is ISA-independent and about the same size as the raw matrix.
bool gemm_packable(GgmlType wtype);                                     // every quantized gemm type
size_t gemm_packed_bytes(GgmlType wtype, int64_t n_in, int64_t n_out);  // 0 if not packable
// w: n_out raw rows of row_bytes -> out: gemm_packed_bytes(...) bytes.
void gemm_pack(GgmlType wtype, const uint8_t* w, size_t row_bytes, int64_t n_in, int64_t n_out, uint8_t* out);

}  // namespace llmserve
