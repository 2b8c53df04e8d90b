// AVX-VNNI GEMM kernels of Q4_0 and Q8_0 (compiled with -mavx2 -mfma -mf16c -mavxvnni, installed
// only when isa/ found AVX-VNNI and the tier allows it): gemm_avx2.cpp's design and packed layout
// (8 rows per ymm, a 16-row group as two halves, T <= 4 tokens per call, gemm_avx2_driver.h), with
// each 4-byte dot one vpdpbusd (unsigned weight bytes x signed activation bytes, exact int32
// sums) where AVX2 needs maddubs + add16 and a madd per block. As in gemm_avx512.cpp the block's
// sum starts from the activation's c term: c4 = -8 * sum x turns Q4_0's nibbles q into q - 8, and
// c128 = -128 * sum x turns Q8_0's packed bytes w ^ 0x80 = w + 128 into w. Then
// acc = fma(float(ia), d_w * d_x, acc), the canonical sequence of gemm.h: the same bits as the
// scalar, AVX2 and AVX-512 GEMMs.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "quant/gemm_avx2_driver.h"

namespace llmserve::quant {
namespace {

inline __m256i dpbusd(__m256i acc, __m256i w, const uint8_t* x) { return _mm256_dpbusd_avx_epi32(acc, w, bcast32(x)); }

// Q4_0 record: u16 d[16] | qs[4][16][4] (low nibbles: elements 4j.., high: 16+4j..).
struct Q4_0Dot {
  static constexpr size_t kRecord = kPackQ4_0;
  static constexpr size_t kCTerm = 36;  // c4
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      const __m256i v = load256(g + 32 + 64 * j + 32 * h);
      const __m256i lo = _mm256_and_si256(v, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        ia[t] = dpbusd(ia[t], lo, x[t] + xb + 4 * j);
        ia[t] = dpbusd(ia[t], hi, x[t] + xb + 16 + 4 * j);
      }
    }
  }
};

// Q8_0 record: u16 d[16] | u8 qs[8][16][4] = w ^ 0x80.
struct Q8_0Dot {
  static constexpr size_t kRecord = kPackQ8_0;
  static constexpr size_t kCTerm = 40;  // c128
  template <int T>
  static void dot(const uint8_t* g, const uint8_t* const* x, size_t xb, int h, __m256i* ia) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      const __m256i w = load256(g + 32 + 64 * j + 32 * h);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) ia[t] = dpbusd(ia[t], w, x[t] + xb + 4 * j);
    }
  }
};

// The on-the-fly packer is gemm_avx2.cpp's (same layout).
void pack_group(GgmlType t, const uint8_t* w, size_t rb, int nr, int64_t nb, uint8_t* out, const Prefetcher& pf) {
  pack_group_avx2(t, w, rb, nr, nb, out, pf.next, pf.bytes, pf.nb);
}

}  // namespace

void install_avx_vnni_gemm(KernelTable& t) {
  t.isa = "avxvnni";
  t.gemm[idx(GgmlType::Q4_0)] = gemm_quant<KBlock32Dot<Q4_0Dot>>;
  t.gemm[idx(GgmlType::Q8_0)] = gemm_quant<KBlock32Dot<Q8_0Dot>>;
}

}  // namespace llmserve::quant
