// The f64 products of the randomized SVD (svd.cpp): out [l, n] = q [l, k] · b [k, n], cache-blocked,
// with an AVX2 kernel chosen by isa/. Every output element is summed over k in ascending order
// with a separate multiply and add (no fused multiply-add), starting from 0, exactly as the scalar
// reference loop (svd_nn_ref) and as the dot-product loops the SVD used before: blocking only
// changes when a partial sum goes through memory (exact for f64), so the results do not depend on
// the blocks or the instruction set, and a compressed file is the same on every machine.
#pragma once
#include <cstdint>

namespace llmserve {

// out [l, n] = q [l, k] · b [k, n] (all row-major); out is overwritten.
void svd_nn(const double* q, int64_t l, int64_t k, const double* b, int64_t n, double* out);
// The same with the coefficients given transposed: qt [k, l] (qt[j, i] = q[i, j]).
void svd_nn_qt(const double* qt, int64_t l, int64_t k, const double* b, int64_t n, double* out);
// out [l, n] += qt^T · b, each element continuing from its value: out[i, c] + qt[0,i]·b[0,c] +
// qt[1,i]·b[1,c] + ... in that order (negated coefficients subtract exactly: x + (-(s·b)) = x - s·b).
void svd_nn_qt_acc(const double* qt, int64_t l, int64_t k, const double* b, int64_t n, double* out);
// The scalar reference: out[i, c] = ((0 + q[i,0]·b[0,c]) + q[i,1]·b[1,c]) + ...
void svd_nn_ref(const double* q, int64_t l, int64_t k, const double* b, int64_t n, double* out);

// ---- tile kernel (svd_nn's blocked driver calls it) ----
// o[i·ldo + c] += s[i]·brow[c] for i < rows, c < cols (multiply, then add).
#if defined(LLMSERVE_X86)
void svd_axpy_rows_avx2(const double* s, int64_t rows, const double* brow, int64_t cols, double* o, int64_t ldo);
#endif

}  // namespace llmserve
