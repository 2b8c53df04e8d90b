// 2:4 sparse weight matrices (llmserve's own GGUF format, docs/sparse-formats.md): a matrix whose
// every group of 4 consecutive input columns holds at most 2 non-zeros is stored as its kept
// values and their positions, instead of the dense `NAME` tensor:
//   NAME.s24v  F16 [n_in / 2, n_out]          the kept values of each row, in column order
//   NAME.s24i  I8  [ceil(n_in / 8), n_out]    2-bit in-group positions: value k of a row is at
//                                             column 4 * (k / 2) + ((byte[k / 4] >> 2 * (k % 4)) & 3)
// 1.125 bytes per original weight against 2 for f16: decode streams 56% of the bytes.
//
// Numerics of y[t, r] = sum_k v[k] * x[t, col(k)] (fixed per output element: batch invariant, and
// the AVX2 / AVX-512 kernels are bit-identical to the scalar reference): 16 lanes, lane l sums
// k ≡ l (mod 16) in order with fused multiply-adds; then s[l] + s[l + 8] for l < 8, then
// ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)); then + bias[r]. x stays f32 (no f16
// conversion of activations, unlike the dense f16 path, which ggml runs on f16 activations).
#pragma once
#include <cstdint>

#include "../threadpool/thread_pool.h"

namespace llmserve {

inline constexpr const char* kSparse24ValuesSuffix = ".s24v";
inline constexpr const char* kSparse24IndexSuffix = ".s24i";

inline int64_t sparse24_values_per_row(int64_t n_in) { return n_in / 2; }
inline int64_t sparse24_index_bytes_per_row(int64_t n_in) { return (n_in / 2 + 3) / 4; }

// Encodes one dense row (n_in % 4 == 0): per group, its non-zeros (padded with the group's first
// zero positions when fewer than 2). False if some group has more than 2 non-zeros. vals: [n_in/2]
// f16 bits; idx: [sparse24_index_bytes_per_row] bytes.
bool sparse24_encode_row(const float* w, int64_t n_in, uint16_t* vals, uint8_t* idx);
// The dense row back (zeros elsewhere).
void sparse24_decode_row(const uint16_t* vals, const uint8_t* idx, int64_t n_in, float* w);

// One matrix: values [n_out, n_in/2] f16, idx [n_out, index bytes per row].
struct Sparse24Matrix {
  const uint16_t* vals = nullptr;
  const uint8_t* idx = nullptr;
  int64_t n_in = 0, n_out = 0;
};

// The end of one (row, token) product, shared by every kernel: the 16 lanes s hold kept values
// [0, k0) (lane k % 16); adds values [k0, m) of the row (vals, idx) times x to their lanes with
// fused multiply-adds, then returns the fixed reduction above (without the bias).
float sparse24_finish_lanes(float* s, const uint16_t* vals, const uint8_t* idx, int64_t k0, int64_t m, const float* x);

// Rows [r0, r1) for tokens [0, n): y[t * ldy + r] = dot(row r, x[t * n_in ..]) (+ bias[r]).
using Sparse24Kernel = void (*)(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1,
                                const float* bias, float* y, int64_t ldy);
void sparse24_gemm_ref(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                       float* y, int64_t ldy);
void sparse24_gemm_avx2(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                        float* y, int64_t ldy);
void sparse24_gemm_avx512(const Sparse24Matrix& w, const float* x, int64_t n, int64_t r0, int64_t r1, const float* bias,
                          float* y, int64_t ldy);
// The kernel of the active ISA (isa/isa.h: LLMSERVE_FORCE_SCALAR caps it).
Sparse24Kernel sparse24_kernel();

// The whole product over the pool: tiles of rows, every token per tile.
void sparse24_matmul(const Sparse24Matrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool);

}  // namespace llmserve
