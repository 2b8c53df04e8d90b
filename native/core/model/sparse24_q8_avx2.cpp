// AVX2 2:4 sparse GEMM with q8_0 values on int8 activations (sparse24.h, sparse24_q8_gemm_ref's
// numerics; compiled with -mavx2 -mfma -mf16c, called only when the CPU has them). One half step
// = 32 kept values = one q8_0 block = 64 input columns (two ymm of int8 x), the reference's lanes
// 0..7 (first half of a 64-value step) or 8..15 (second half), kept in two accumulators:
//   positions: the half step's 8 index bytes, each 2-bit field spread to a byte by shifting copies
//     of the dword that holds it; plus the group's column base;
//   x: 128-bit lane L holds kept values 16L .. 16L+15, whose columns are the 16-byte chunks 2L and
//     2L+1: two lane permutes gather the even and the odd chunks, one in-lane byte shuffle each picks
//     the kept columns (the other half of each lane zeroed), OR joins them;
//   vpmaddubsw(|w|, x with w's sign) + vpmaddwd(1) sum each 4 consecutive products exactly into an
//     int32 lane (|w| <= 128, |x| <= 127: no 16-bit saturation), the reference's isum; then
//     fma(float(isum), dw * dx, acc).
// Bit-identical to sparse24_q8_gemm_ref.
#include <immintrin.h>

#include <cstring>

#include "sparse24.h"
#include "sparse24_q8_driver.h"

namespace llmserve {
namespace {

struct Consts {
  __m256i place;  // dword q of lane L <- index byte 4L + q (zero-extended)
  __m256i base;   // byte p of a lane: its group's column within the chunk, 4 * ((p % 8) / 2)
  __m256i lo8;    // 0x80 in bytes 8..15 of each lane (shuffle zeroes them): picks from the even chunk
  __m256i hi8;    // 0x80 in bytes 0..7 of each lane: picks from the odd chunk
};

Consts make_consts() {
  Consts c;
  alignas(32) int8_t place[32], base[32], lo8[32], hi8[32];
  for (int i = 0; i < 32; ++i) {
    const int lane = i / 16, p = i % 16;
    place[i] = p % 4 == 0 ? static_cast<int8_t>(4 * lane + p / 4) : static_cast<int8_t>(-128);
    base[i] = static_cast<int8_t>(4 * ((p % 8) / 2));
    lo8[i] = p < 8 ? 0 : static_cast<int8_t>(-128);
    hi8[i] = p < 8 ? static_cast<int8_t>(-128) : 0;
  }
  c.place = _mm256_load_si256(reinterpret_cast<const __m256i*>(place));
  c.base = _mm256_load_si256(reinterpret_cast<const __m256i*>(base));
  c.lo8 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo8));
  c.hi8 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi8));
  return c;
}

constexpr int64_t kPrefetchValues = 8192;  // bytes of values fetched ahead (1/4 of it for positions)

// Row r against T tokens (act: the prepared activations; bias: this row's, or null).
template <int T>
void row_tokens(const Consts& c, const uint8_t* v, const uint8_t* id, int64_t m, const uint8_t* act, size_t stride,
                int64_t n_in, int64_t t0, const float* bias, float* y, int64_t ldy, int64_t r) {
  __m256 a[T][2];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) a[t][0] = a[t][1] = _mm256_setzero_ps();
  const __m256i ones = _mm256_set1_epi16(1), three = _mm256_set1_epi8(3);
  for (int64_t k = 0; k < m; k += 32) {
    const int h = static_cast<int>((k / 32) % 2);  // which 8 of the reference's 16 lanes
    const uint8_t* blk = v + (k / 32) * 34;        // block_q8_0: f16 d, 32 int8
    // The rows of a tile are contiguous: fetch ahead across the row's end into the next row's.
    _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchValues), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(id + k / 4 + kPrefetchValues / 4), _MM_HINT_T0);
    uint16_t d;
    std::memcpy(&d, blk, 2);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i wabs = _mm256_abs_epi8(w);
    const __m256 dw = _mm256_set1_ps(_cvtsh_ss(d));
    int64_t bits;
    std::memcpy(&bits, id + k / 4, 8);
    const __m256i dq = _mm256_shuffle_epi8(_mm256_set1_epi64x(bits), c.place);
    // Byte j of dword (B, 0, 0, 0) | << 6 | << 12 | << 18 holds B >> 2j in its low 2 bits.
    const __m256i spread = _mm256_or_si256(_mm256_or_si256(dq, _mm256_slli_epi32(dq, 6)),
                                           _mm256_or_si256(_mm256_slli_epi32(dq, 12), _mm256_slli_epi32(dq, 18)));
    const __m256i idx = _mm256_add_epi8(_mm256_and_si256(spread, three), c.base);
    const __m256i idx_even = _mm256_or_si256(idx, c.lo8), idx_odd = _mm256_or_si256(idx, c.hi8);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      const uint8_t* xt = act + static_cast<size_t>(t0 + t) * stride;
      const uint8_t* xq = xt + 2 * k;
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32));
      const __m256i ev = _mm256_permute2x128_si256(x0, x1, 0x20), od = _mm256_permute2x128_si256(x0, x1, 0x31);
      const __m256i g = _mm256_or_si256(_mm256_shuffle_epi8(ev, idx_even), _mm256_shuffle_epi8(od, idx_odd));
      const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(g, w)), ones);
      const float* xd = reinterpret_cast<const float*>(xt + n_in) + k / 16;
      const __m256 dx = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(xd[0])), _mm_set1_ps(xd[1]), 1);
      a[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), a[t][h]);
    }
  }
  for (int t = 0; t < T; ++t) {
    // sparse24_reduce_lanes in registers: s[l] + s[l + 8], then (s0+s4)+(s2+s6) and (s1+s5)+(s3+s7).
    const __m256 h = _mm256_add_ps(a[t][0], a[t][1]);
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    float acc = _mm_cvtss_f32(_mm_add_ss(p, _mm_shuffle_ps(p, p, 1)));
    if (bias) acc += *bias;
    y[(t0 + t) * ldy + r] = acc;
  }
}

void gemm(const Consts& c, const Sparse24Matrix& w, const uint8_t* act, size_t stride, int64_t n, int64_t r0,
          int64_t r1, const float* bias, float* y, int64_t ldy) {
  const int64_t m = sparse24_values_per_row(w.n_in);
  sparse24_q8_drive(w, n, r0, r1, bias,
                    [&](auto tn, const uint8_t* v, const uint8_t* id, int64_t t, const float* b, int64_t r) {
                      row_tokens<decltype(tn)::value>(c, v, id, m, act, stride, w.n_in, t, b, y, ldy, r);
                    });
}

}  // namespace

void sparse24_q8_gemm_avx2(const Sparse24Matrix& w, const uint8_t* act, size_t act_stride, int64_t n, int64_t r0,
                           int64_t r1, const float* bias, float* y, int64_t ldy) {
  static const Consts c = make_consts();
  gemm(c, w, act, act_stride, n, r0, r1, bias, y, ldy);
}

}  // namespace llmserve
