// AVX-512 tile kernels of train_gemm.h (compiled with -mavx512f/bw/vl/dq; called only after
// train_gemm.cpp checked the CPU). dot8's lanes are 8 wide whatever the register, so an nt zmm
// carries two tokens' lanes (4 tokens × 8 outputs per tile, 16 of the 32 registers); axpy,
// elementwise, runs 16-wide zmm, 4 rows × 64 columns per tile.
#include "train_gemm_simd.h"

namespace llmserve {
namespace {

struct Z16 {
  using R = __m512;
  static constexpr int W = 16;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R loadm(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void storem(float* p, R v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
};

// dot8 lanes of TP token pairs × OO outputs: one zmm holds the 8 lanes of (t, o) in its low half
// and those of (t + 1, o) in its high half, so each multiply and add does two tokens' lanes with
// w's 8 columns broadcast to both halves (per lane the same operations as the ymm kernels).
template <int TP, int OO>
inline void nt_micro_pairs(const float* x, const float* w, int64_t k, int64_t c0, int64_t c1, float* acc, int64_t no) {
  auto pair = [](const float* lo, const float* hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo)), _mm256_loadu_ps(hi), 1);
  };
  __m512 a[TP][OO];
  for (int p = 0; p < TP; ++p)
    for (int o = 0; o < OO; ++o) a[p][o] = pair(acc + ((2 * p) * no + o) * 8, acc + ((2 * p + 1) * no + o) * 8);
  for (int64_t i = c0; i < c1; i += 8) {
    __m512 xv[TP];
    for (int p = 0; p < TP; ++p) xv[p] = pair(x + (2 * p) * k + i, x + (2 * p + 1) * k + i);
    for (int o = 0; o < OO; ++o) {
      const float* wo = w + o * k + i;
      const __m512 wv = pair(wo, wo);  // (GCC 12 warns on _mm512_broadcast_f32x8's undefined operand)
      for (int p = 0; p < TP; ++p) a[p][o] = _mm512_add_ps(a[p][o], _mm512_mul_ps(xv[p], wv));
    }
  }
  for (int p = 0; p < TP; ++p)
    for (int o = 0; o < OO; ++o) {
      _mm256_storeu_ps(acc + ((2 * p) * no + o) * 8, _mm512_extractf32x8_ps(a[p][o], 0));
      _mm256_storeu_ps(acc + ((2 * p + 1) * no + o) * 8, _mm512_extractf32x8_ps(a[p][o], 1));
    }
}

}  // namespace

void train_nt_lanes_avx512(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                           float* acc) {
  // Output groups of 8 (their w rows stay in L1) × tokens in fours, then pairs, then one (ymm).
  int64_t o = 0;
  for (; o + 8 <= no; o += 8) {
    int64_t t = 0;
    for (; t + 4 <= nt; t += 4) nt_micro_pairs<2, 8>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
    for (; t + 2 <= nt; t += 2) nt_micro_pairs<1, 8>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
    for (; t < nt; ++t) train_simd::nt_micro<1, 8>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
  }
  for (; o < no; ++o) {
    int64_t t = 0;
    for (; t + 4 <= nt; t += 4) nt_micro_pairs<2, 1>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
    for (; t < nt; ++t) train_simd::nt_micro<1, 1>(x + t * k, w + o * k, k, c0, c1, acc + (t * no + o) * 8, no);
  }
}

void train_axpy_avx512(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1) {
  train_simd::axpy<Z16, 4, 4>(p, na, b0, b1, i0, i1);
}

}  // namespace llmserve
