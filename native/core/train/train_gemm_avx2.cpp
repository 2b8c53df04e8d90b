// AVX2 tile kernels of train_gemm.h (compiled with -mavx2 -mfma -mf16c; called only after
// train_gemm.cpp checked the CPU). 16 ymm registers: 3×3 dot8 tiles (9 accumulators, 3 w rows, one
// x row; measured faster than 4×2 or 4×3), 4 rows × 16 columns of axpy.
#include "train_gemm_simd.h"

namespace llmserve {

void train_nt_lanes_avx2(const float* x, const float* w, int64_t k, int64_t nt, int64_t no, int64_t c0, int64_t c1,
                         float* acc) {
  train_simd::nt_lanes<3, 3>(x, w, k, nt, no, c0, c1, acc);
}

void train_axpy_avx2(const AxpyArgs& p, int64_t na, int64_t b0, int64_t b1, int64_t i0, int64_t i1) {
  train_simd::axpy<train_simd::Y8, 4, 2>(p, na, b0, b1, i0, i1);
}

}  // namespace llmserve
