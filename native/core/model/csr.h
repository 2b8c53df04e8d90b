// CSR sparse weight matrices (llmserve's own GGUF format, docs/sparse-formats.md): W [n_out, n_in]
// stored as its non-zeros, row by row:
//   ptr [n_out + 1] i32   row i's entries are [ptr[i], ptr[i+1]); ptr[0] = 0, ptr[n_out] = nnz
//   col [nnz]       i32   their columns, ascending within a row
//   val [nnz]       f16 or f32
// Used for unstructured pruning (`compress --prune F --format csr`: NAME.sp_* in place of NAME) and
// for the sparse residual of low-rank factors (model/factored.h). A decode step streams 6 bytes per
// kept f16 weight instead of 2 per weight: CSR moves fewer bytes below 1/3 density (the kernels'
// scattered x reads move the break-even lower, see kCsrMaxDensity).
//
// Numerics of y[t, i] (fixed per output element, so a token's result never depends on the other
// tokens of its batch, the tiling or the thread count, and every SIMD kernel is bit-identical to
// csr_gemm_ref):
//   lane l (8 lanes) = fma chain, from 0.0f, over row i's entries ptr[i] + j with j % 8 == l, in order:
//                      l = fma(val, x[t, col], l)
//   s = ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))
//   y[t, i] = accumulate ? y[t, i] + s : s;  then y[t, i] += bias[i] when there is a bias
// The activations stay f32 (no f16 rounding of x, unlike ggml's dense f16 path).
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"

namespace llmserve {

struct CsrMatrix {
  const int32_t* ptr = nullptr;  // [n_out + 1]
  const int32_t* col = nullptr;  // [nnz]
  const void* val = nullptr;     // [nnz] f16 bits (uint16_t) or f32
  bool f32 = false;              // value type
  int64_t n_in = 0, n_out = 0;
  // Entries of these rows (ptr[0] > 0 for a row view of a fused matrix: the pointers are absolute).
  int64_t nnz() const { return ptr ? ptr[n_out] - ptr[0] : 0; }
};

// Element e's value as f32 (exact for f16).
float csr_value(const CsrMatrix& w, int64_t e);

// Scalar reference: rows [r0, r1) for tokens [0, n). x: [n, n_in] rows of n_in; y: [n, ldy].
void csr_gemm_ref(const CsrMatrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                  bool accumulate, float* y, int64_t ldy);

// One token (decode): the 8 lanes are the 8 lanes of a vector; x values are loaded by column.
// x: [n_in], y: [n_out] (rows [r0, r1) written).
using CsrGemvKernel = void (*)(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias,
                               bool accumulate, float* y);
void csr_gemv_avx2(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                   float* y);
void csr_gemv_avx512(const CsrMatrix& w, const float* x, int64_t r0, int64_t r1, const float* bias, bool accumulate,
                     float* y);

// A tile of T tokens (batch): xt is the tile transposed, [n_in, T] (xt[c * T + j] = x[token j, c];
// tokens j >= nt padded with anything finite). For each entry its value is broadcast and multiplied
// into the accumulators of all T tokens at once: 8 accumulator vectors (the 8 lanes) of T tokens.
// Writes y[j * ldy + r] for j < nt, r in [r0, r1). T = 8 (AVX2), 16 or 32 (AVX-512: 32 from 32 tokens on).
using CsrTileKernel = void (*)(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1,
                               const float* bias, bool accumulate, float* y, int64_t ldy);
void csr_tile8_avx2(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                    bool accumulate, float* y, int64_t ldy);
void csr_tile16_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                       bool accumulate, float* y, int64_t ldy);
void csr_tile32_avx512(const CsrMatrix& w, const float* xt, int64_t nt, int64_t r0, int64_t r1, const float* bias,
                       bool accumulate, float* y, int64_t ldy);

// The tile kernels' output step: out [rows, T] (the sums of rows r0 .. r0 + rows - 1 for the T
// tokens) into y, token by token, each token's rows contiguous (y[j * ldy + r0 + r] for j < nt):
// y = accumulate ? y + s : s, then + bias.
void csr_store_tile(const float* out, int64_t rows, int64_t T, int64_t nt, int64_t r0, const float* bias,
                    bool accumulate, float* y, int64_t ldy);

// Tokens [t0, t0 + nt) of x [*, n_in] transposed into xt [n_in, T], tokens beyond nt zero.
void csr_transpose_tile(const float* x, int64_t n_in, int64_t t0, int64_t nt, int64_t T, float* xt);

// The whole product on the active ISA (isa/isa.h), over the pool in tiles of rows: one token per
// GEMV kernel call below kCsrTileMinTokens tokens, else token tiles of T (AVX-512: 32 or 16 when
// there are at least that many tokens, else 8). x: [n, n_in]; y: [n, ldy].
inline constexpr int64_t kCsrTileMinTokens = 4;
inline constexpr int64_t kCsrTileRows = 16;  // rows whose tile outputs are buffered before the stores
void csr_matmul(const CsrMatrix& w, const float* x, int64_t n, const float* bias, bool accumulate, float* y,
                int64_t ldy, ThreadPool& pool);

// A row back in dense form: row i of w into out [n_in] (zeros elsewhere).
void csr_decode_row(const CsrMatrix& w, int64_t i, float* out);
// The whole matrix as n_out dense rows of n_in values of its own type (f16 bits or f32), exact.
void csr_to_dense(const CsrMatrix& w, uint8_t* dst);

// Checks a CSR read from a file: ptr[0] == 0, non-decreasing, ptr[n_out] == nnz, columns in
// [0, n_in) and ascending within each row. False on the first violation.
bool csr_valid(const int32_t* ptr, const int32_t* col, int64_t n_out, int64_t n_in, int64_t nnz);

// Unstructured-pruned matrices at a density (nnz / (n_in * n_out)) above this run dense: at load
// the executor expands them (csr_to_dense; backend/cpu_executor.cpp). Measured with
// `llmserve_bench_kernels --csr` (bench/README.md), 2 threads, against the dense f16 product of the
// same matrix: at 20% CSR is 1.2-1.3x faster in decode (1 token) and 0.6-1.05x in prefill (64
// tokens); at 50% 0.55x in both; at 10% 1.9-2.7x and 1.85x. The AVX2 tier gains more in decode.
inline constexpr double kCsrMaxDensity = 0.2;

}  // namespace llmserve
