// 2:4 sparse weight matrices (llmserve's own GGUF format, docs/sparse-formats.md): a matrix whose
// every group of 4 consecutive input columns holds at most 2 non-zeros is stored as its kept
// values and their positions, instead of the dense `NAME` tensor:
//   NAME.s24v  F16 or Q8_0 [n_in / 2, n_out]  the kept values of each row, in column order
//   NAME.s24i  I8  [ceil(n_in / 8), n_out]    2-bit in-group positions: value k of a row is at
//                                             column 4 * (k / 2) + ((byte[k / 4] >> 2 * (k % 4)) & 3)
// f16 values: 1.125 bytes per original weight against 2 for f16 (decode streams 56% of the bytes).
// Q8_0 values (int8 with one f16 scale per 32 kept values = 64 input columns; n_in % 64 == 0):
// 0.656 bytes per weight against q8_0's 1.0625 (62%).
//
// Numerics of y[t, r] = sum_k v[k] * x[t, col(k)] with f16 values (fixed per output element: batch
// invariant, and the AVX2 / AVX-512 kernels are bit-identical to the scalar reference); Q8_0
// values: sparse24_q8_gemm_ref below. 16 lanes, lane l sums
// k ≡ l (mod 16) in order with fused multiply-adds; then s[l] + s[l + 8] for l < 8, then
// ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)); then + bias[r]. x stays f32 (no f16
// conversion of activations, unlike the dense f16 path, which ggml runs on f16 activations).
#pragma once
#include <cstdint>

#include "../quant/quant.h"
#include "../threadpool/thread_pool.h"

namespace llmserve {

inline constexpr const char* kSparse24ValuesSuffix = ".s24v";
inline constexpr const char* kSparse24IndexSuffix = ".s24i";

inline int64_t sparse24_values_per_row(int64_t n_in) { return n_in / 2; }
inline int64_t sparse24_index_bytes_per_row(int64_t n_in) { return (n_in / 2 + 3) / 4; }
// The value types a 2:4 matrix can hold, and whether rows of n_in fit one (Q8_0: n_in % 64 == 0).
inline bool sparse24_value_type_ok(GgmlType vt, int64_t n_in) {
  return n_in % 4 == 0 && (vt == GgmlType::F16 || (vt == GgmlType::Q8_0 && n_in % 64 == 0));
}
// Bytes of one row's values.
size_t sparse24_values_row_bytes(GgmlType vt, int64_t n_in);

// Splits one dense row (n_in % 4 == 0) into its kept values (f32, [n_in/2]) and positions: per
// group, its non-zeros (padded with the group's first zero positions when fewer than 2). False if
// some group has more than 2 non-zeros. idx: [sparse24_index_bytes_per_row] bytes.
bool sparse24_split_row(const float* w, int64_t n_in, float* kept, uint8_t* idx);
// sparse24_split_row with the values encoded in vt (F16 or Q8_0, sparse24_value_type_ok) into
// vals [sparse24_values_row_bytes]. scratch: n_in / 2 floats.
bool sparse24_encode_row(GgmlType vt, const float* w, int64_t n_in, uint8_t* vals, uint8_t* idx, float* scratch);
// The dense row back (zeros elsewhere).
void sparse24_decode_row(GgmlType vt, const uint8_t* vals, const uint8_t* idx, int64_t n_in, float* w);

// One matrix: values [n_out, n_in/2] of vtype, idx [n_out, index bytes per row].
struct Sparse24Matrix {
  const uint8_t* vals = nullptr;
  const uint8_t* idx = nullptr;
  int64_t n_in = 0, n_out = 0;
  GgmlType vtype = GgmlType::F16;
};

// Kept value k of a row's values (F16 or Q8_0), as the kernels multiply it.
float sparse24_value(GgmlType vt, const uint8_t* vals, int64_t k);

// The fixed reduction of 16 lanes (s is modified): s[l] + s[l + 8], then the tree above.
float sparse24_reduce_lanes(float* s);

// The end of one (row, token) product, shared by every kernel: the 16 lanes s hold kept values
// [0, k0) (lane k % 16); adds values [k0, m) of the row (vals of type vt, idx) times x to their
// lanes with fused multiply-adds, then returns the fixed reduction above (without the bias).
float sparse24_finish_lanes(float* s, GgmlType vt, const uint8_t* vals, const uint8_t* idx, int64_t k0, int64_t m,
                            const float* x);

// F16 values only (Q8_0: the Sparse24Q8Kernel below). Rows [r0, r1) for tokens [0, n):
// y[t * ldy + r] = dot(row r, x[t * n_in ..]) (+ bias[r]).
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

// Q8_0 values run on int8 activations, as the dense q8_0 path does: act holds each token's x
// prepared by gemm_prepare_act(Q8_0) (quant/gemm.h: int8 q [n_in], then f32 scales d [n_in / 32];
// act_stride bytes per token), and
//   acc[l] = sum over steps i (64 kept values each), in order, of
//            fma(float(isum), dw[(64i + 4l) / 32] * dx[(64i + 4l) / 16], acc[l])
//   isum   = the exact int sum of q_w[k] * q_x[col(k)] for k = 64i + 4l .. 64i + 4l + 3
//   y[t, r] = sparse24_reduce_lanes(acc) (+ bias[r])
// (a last half step of 32 values, when n_in / 2 % 64 == 32, leaves lanes 8..15 alone). The AVX2
// (maddubs) and AVX-512 (VNNI) kernels are bit-identical to it.
using Sparse24Q8Kernel = void (*)(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                                  int64_t r1, const float* bias, float* y, int64_t ldy);
void sparse24_q8_gemm_ref(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                          int64_t r1, const float* bias, float* y, int64_t ldy);
void sparse24_q8_gemm_avx2(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                           int64_t r1, const float* bias, float* y, int64_t ldy);
void sparse24_q8_gemm_avx512(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                             int64_t r1, const float* bias, float* y, int64_t ldy);
// The AVX-512 kernel with VBMI byte permutes (isa.h cpu_has_avx512vbmi): same bits, fewer steps.
void sparse24_q8_gemm_avx512vbmi(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                                 int64_t r1, const float* bias, float* y, int64_t ldy);
Sparse24Q8Kernel sparse24_q8_kernel();

// The whole product over the pool: tiles of rows, every token per tile. Q8_0 values: x is
// prepared here (matmul instead shares one preparation with the call's dense q8_0 matrices).
void sparse24_matmul(const Sparse24Matrix& w, const float* x, int64_t n, const float* bias, float* y, int64_t ldy,
                     ThreadPool& pool);

}  // namespace llmserve
