// AVX-512 tile kernels of train_gemm.h (compiled with -mavx512f/bw/vl/dq; called only after
// train_gemm.cpp checked the CPU). dot8's lanes are 8 wide whatever the register, so the nt tiles
// stay ymm but use the 32 registers AVX-512VL gives (4×4 tiles); axpy, elementwise, runs 16-wide
// zmm, 4 rows × 64 columns per tile.
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

}  // namespace

void train_nt_lanes_avx512(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                           float* acc) {
  train_simd::nt_lanes<4, 4>(x, w, k, nt, no, c0, c1, acc);
}

void train_axpy_avx512(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1) {
  train_simd::axpy<Z16, 4, 4>(p, na, b0, b1, i0, i1);
}

}  // namespace llmserve
